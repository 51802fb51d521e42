"""``build_detector``: torchvision detectors whose heads compute a chosen loss preset."""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Optional

import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet, ssdlite320_mobilenet_v3_large
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.ssd import SSD
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from .fcos import HarmonicFCOSHead
from .presets import harmonic_options
from .rcnn import HarmonicRoIHeads
from .retinanet import HarmonicRetinaNetHead
from .ssd import HarmonicSSD

ARCHS = ("faster_rcnn", "mask_rcnn", "retinanet", "fcos", "ssd")
RESNETS = ("resnet18", "resnet34", "resnet50")
BACKBONES = RESNETS + ("mobilenet_v3_large",)


def _pyramid(backbone: str, *, p6p7: bool, frozen_bn: bool, trainable_layers: Optional[int]) -> nn.Module:
    """An FPN backbone with five levels: P3-P7 (``p6p7``) or P2-P5 plus max-pooled P6; random weights."""
    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    extra = LastLevelP6P7(256, 256) if p6p7 else None
    if backbone in RESNETS:
        return resnet_fpn_backbone(backbone_name=backbone, weights=None, norm_layer=norm,
                                   trainable_layers=5 if trainable_layers is None else trainable_layers,
                                   returned_layers=[2, 3, 4] if p6p7 else [1, 2, 3, 4], extra_blocks=extra)
    # MobileNetV3's last three stages (+ P6/P7) or four stages (+ pool): also five levels
    return mobilenet_backbone(backbone_name=backbone, weights=None, fpn=True, norm_layer=norm,
                              trainable_layers=6 if trainable_layers is None else trainable_layers,
                              returned_layers=[3, 4, 5] if p6p7 else [2, 3, 4, 5], extra_blocks=extra)


def _anchor_sizes(image_size: int, base: int) -> list:
    # torchvision's sizes are for ~800 px images; small images get proportionally smaller anchors (>= 8 px)
    scale = min(1.0, image_size / 512)
    return [max(8, int(round(base * scale))) * 2**level for level in range(5)]


def _load_pretrained(model: nn.Module, path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights {path} do not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
        return
    except RuntimeError:
        pass
    try:
        model.backbone.body.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"pretrained weights {path} fit neither the detector nor its backbone body: "
                         f"{str(err).splitlines()[0]}") from None


def build_detector(arch: str, num_classes: int, *, loss: str = "standard", backbone: str = "resnet18",
                   image_size: int = 128, pretrained: Optional[str] = None,
                   trainable_backbone_layers: Optional[int] = None, **loss_options: Any) -> nn.Module:
    """A torchvision detector (``FasterRCNN``, ``MaskRCNN``, ``RetinaNet``, ``FCOS`` or ``SSD``) with the loss
    preset ``loss`` (see :mod:`harmonicdet.models.presets`).

    The model is the torchvision class with torchvision's ``forward``, inference and
    NMS; only its training loss differs. Weights are random (nothing is downloaded)
    unless ``pretrained`` names a local state dict of the detector or of its
    backbone body; batch norm is trainable from scratch and frozen with pretrained
    weights, as torchvision does.

    Args:
        arch: ``faster_rcnn`` | ``mask_rcnn`` | ``retinanet`` | ``fcos`` | ``ssd`` (SSDlite, MobileNetV3).
        num_classes: classes including background (torchvision's convention).
        loss: ``standard`` | ``harmonic`` | ``harmonic_iou`` | ``harmonicdet``.
        backbone: ``resnet18`` | ``resnet34`` | ``resnet50`` | ``mobilenet_v3_large`` (FPN; SSD: MobileNetV3 only).
        image_size: the size images are resized to (shorter and longer side), e.g. 128 for CPU training.
        pretrained: path to a local state dict.
        trainable_backbone_layers: as torchvision (default: all).
        **loss_options: ``alpha``, ``gamma``, ``tc_margin``, ``detach_factors``, ``beta_c_mode``.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    if arch == "ssd" and backbone != "mobilenet_v3_large":
        raise ValueError(f"arch 'ssd' is SSDlite with backbone 'mobilenet_v3_large', got {backbone!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    options = harmonic_options(loss, loss_options)
    size = dict(min_size=image_size, max_size=image_size)
    frozen_bn = pretrained is not None

    if arch == "ssd":
        reference = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes,
                                                  trainable_backbone_layers=trainable_backbone_layers)
        cls = SSD if options is None else partial(HarmonicSSD, options=options)
        model = cls(reference.backbone, reference.anchor_generator, (image_size, image_size), num_classes,
                    image_mean=reference.transform.image_mean, image_std=reference.transform.image_std,
                    head=reference.head, score_thresh=reference.score_thresh, nms_thresh=reference.nms_thresh,
                    detections_per_img=reference.detections_per_img, topk_candidates=reference.topk_candidates,
                    positive_fraction=1 / (1 + reference.neg_to_pos_ratio))
    elif arch == "fcos":
        body = _pyramid(backbone, p6p7=True, frozen_bn=frozen_bn, trainable_layers=trainable_backbone_layers)
        head = FCOSHead(body.out_channels, 1, num_classes) if options is None else \
            HarmonicFCOSHead(body.out_channels, 1, num_classes, options=options)
        anchors = AnchorGenerator(tuple((s,) for s in _anchor_sizes(image_size, 16)), ((1.0,),) * 5)
        model = FCOS(body, num_classes, anchor_generator=anchors, head=head, **size)
    elif arch == "retinanet":
        body = _pyramid(backbone, p6p7=True, frozen_bn=frozen_bn, trainable_layers=trainable_backbone_layers)
        sizes = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in _anchor_sizes(image_size, 32))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
        head = RetinaNetHead(body.out_channels, 9, num_classes) if options is None else \
            HarmonicRetinaNetHead(body.out_channels, 9, num_classes, options=options)
        model = RetinaNet(body, num_classes, anchor_generator=anchors, head=head, **size)
    else:
        body = _pyramid(backbone, p6p7=False, frozen_bn=frozen_bn, trainable_layers=trainable_backbone_layers)
        anchors = AnchorGenerator(tuple((s,) for s in _anchor_sizes(image_size, 32)), ((0.5, 1.0, 2.0),) * 5)
        cls = MaskRCNN if arch == "mask_rcnn" else FasterRCNN
        model = cls(body, num_classes, rpn_anchor_generator=anchors, **size)
        if options is not None:
            model.roi_heads = HarmonicRoIHeads.from_roi_heads(model.roi_heads, options)
    if pretrained is not None:
        _load_pretrained(model, pretrained)
    return model
