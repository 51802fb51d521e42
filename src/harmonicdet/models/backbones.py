"""FPN backbones of the detectors: ResNet-18/34/50, MobileNetV2 and MobileNetV3-Large, five pyramid levels.

The modules are torchvision's (``BackboneWithFPN`` over a torchvision ResNet's layers or a
MobileNet's ``features``), so state dicts have torchvision's key layout (``body.*``,
``fpn.*``), and an ImageNet classifier's state dict, classifier dropped, fits the body.
Weights are random: they come from :func:`harmonicdet.models.pretrained.load_pretrained` if at all.

A MobileNet's pyramid stages end at the last block of each stride (4, 8, 16, 32); the
stride-32 stage ends at the last block of ``features`` (MobileNetV2: the 1x1 convolution to
1280 channels, MobileNetV3-Large: to 960), as torchvision's ``mobilenet_backbone`` does, so
every ``features`` weight of the ImageNet file has a place. Trainable layers follow
torchvision's ``_mobilenet_extractor``: the ``features`` are cut at the first block, every
stride-2 block and the last block, and ``trainable_layers = k`` trains from the k-th cut
from the end (0: none).
"""

from __future__ import annotations

from typing import Optional

from torch import nn
from torchvision.models import mobilenet, resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

RESNETS = ("resnet18", "resnet34", "resnet50")
MOBILENETS = ("mobilenet_v2", "mobilenet_v3_large")
BACKBONES = RESNETS + MOBILENETS
LEVELS = ("p2p6", "p3p7")

# ``features`` indices of the last block at stride 4, 8, 16 and 32
_MOBILENET_STAGE_ENDS = {"mobilenet_v2": (3, 6, 13, 18), "mobilenet_v3_large": (3, 6, 12, 16)}
# ``features`` cuts of torchvision's trainable-layers convention: the first block, each stride-2 block, the last
_MOBILENET_STAGE_STARTS = {"mobilenet_v2": (0, 2, 4, 7, 14, 18), "mobilenet_v3_large": (0, 2, 4, 7, 13, 16)}


def fpn_backbone(
    name: str,
    *,
    levels: str = "p3p7",
    fpn_channels: int = 256,
    frozen_bn: bool = False,
    trainable_layers: Optional[int] = None,
) -> BackboneWithFPN:
    """A randomly initialised backbone with a five-level FPN of ``fpn_channels`` channels.

    Args:
        name: ``resnet18`` | ``resnet34`` | ``resnet50`` | ``mobilenet_v2`` | ``mobilenet_v3_large``.
        levels: ``"p3p7"`` (strides 8-128: C3-C5 plus P6/P7 computed from P5, as
            torchvision's RetinaNet and FCOS) or ``"p2p6"`` (strides 4-64: C2-C5 plus a
            max-pooled P6, as torchvision's Faster/Mask R-CNN; the feature maps are
            named ``"0"``-``"3"`` and ``"pool"``).
        fpn_channels: FPN output channels (torchvision: 256; fewer make CPU training cheaper).
        frozen_bn: ``FrozenBatchNorm2d`` instead of trainable ``BatchNorm2d`` (torchvision's
            choice for pretrained backbones).
        trainable_layers: as torchvision's ``trainable_backbone_layers`` (ResNet 0-5,
            MobileNets 0-6); ``None``: all.
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {name!r}")
    if levels not in LEVELS:
        raise ValueError(f"levels must be one of {LEVELS}, got {levels!r}")
    if fpn_channels < 1:
        raise ValueError(f"fpn_channels must be >= 1, got {fpn_channels}")
    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    extra = LastLevelP6P7(fpn_channels, fpn_channels) if levels == "p3p7" else LastLevelMaxPool()
    first = 1 if levels == "p2p6" else 2  # index of the first returned stage among strides 4, 8, 16, 32
    if name in RESNETS:
        body = getattr(resnet, name)(weights=None, norm_layer=norm)
        trainable = 5 if trainable_layers is None else trainable_layers
        if not 0 <= trainable <= 5:
            raise ValueError(f"trainable_backbone_layers of {name} must be in [0, 5], got {trainable}")
        train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable] + (["bn1"] if trainable == 5 else [])
        for param_name, param in body.named_parameters():
            if not any(param_name.startswith(layer) for layer in train):
                param.requires_grad_(False)
        stages = range(first, 5)
        return_layers = {f"layer{k}": str(i) for i, k in enumerate(stages)}
        in_channels = [body.inplanes // 8 * 2 ** (k - 1) for k in stages]
    else:
        body = getattr(mobilenet, name)(weights=None, norm_layer=norm).features
        starts = _MOBILENET_STAGE_STARTS[name]
        trainable = len(starts) if trainable_layers is None else trainable_layers
        if not 0 <= trainable <= len(starts):
            raise ValueError(f"trainable_backbone_layers of {name} must be in [0, {len(starts)}], got {trainable}")
        freeze_before = len(body) if trainable == 0 else starts[len(starts) - trainable]
        for block in body[:freeze_before]:
            block.requires_grad_(False)
        ends = _MOBILENET_STAGE_ENDS[name][first - 1:]
        return_layers = {str(k): str(i) for i, k in enumerate(ends)}
        in_channels = [body[k].out_channels for k in ends]
    return BackboneWithFPN(body, return_layers, in_channels, fpn_channels, extra_blocks=extra)

