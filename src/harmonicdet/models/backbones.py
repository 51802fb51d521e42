"""FPN backbones of the detectors: ResNet-18/34/50 and MobileNetV3-Large, random weights, five pyramid levels.

The modules are torchvision's (``BackboneWithFPN`` over a torchvision ResNet or
MobileNetV3), so state dicts have torchvision's key layout (``body.*``, ``fpn.*``).
Nothing is downloaded: weights come from :func:`load_pretrained` if at all.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn
from torchvision.models import mobilenet, resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

RESNETS = ("resnet18", "resnet34", "resnet50")
MOBILENETS = ("mobilenet_v3_large",)
BACKBONES = RESNETS + MOBILENETS
LEVELS = ("p2p6", "p3p7")

# MobileNetV3-Large ``features`` indices of the last block at stride 4, 8, 16 and 32
_MOBILENET_STAGE_ENDS = {"mobilenet_v3_large": (3, 6, 12, 16)}
# blocks of ``features`` from which on a MobileNetV3-Large is trainable, by number of trainable stages (0-6)
_MOBILENET_STAGE_STARTS = {"mobilenet_v3_large": (0, 2, 4, 7, 13, 16)}


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
        name: ``resnet18`` | ``resnet34`` | ``resnet50`` | ``mobilenet_v3_large``.
        levels: ``"p3p7"`` (strides 8-128: C3-C5 plus P6/P7 computed from P5, as
            torchvision's RetinaNet and FCOS) or ``"p2p6"`` (strides 4-64: C2-C5 plus a
            max-pooled P6, as torchvision's Faster/Mask R-CNN; the feature maps are
            named ``"0"``-``"3"`` and ``"pool"``).
        fpn_channels: FPN output channels (torchvision: 256; fewer make CPU training cheaper).
        frozen_bn: ``FrozenBatchNorm2d`` instead of trainable ``BatchNorm2d`` (torchvision's
            choice for pretrained backbones).
        trainable_layers: as torchvision's ``trainable_backbone_layers`` (ResNet 0-5,
            MobileNetV3 0-6); ``None``: all.
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


def _strip_prefix(state: dict, prefix: str) -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_pretrained(model: nn.Module, path: str) -> None:
    """Load the local state dict at ``path`` into ``model`` or into its backbone.

    Accepted: a state dict of the whole detector (also inside a checkpoint's
    ``"model"`` entry, ``module.`` prefixes of DistributedDataParallel removed), or
    of the backbone body; an ImageNet classifier of the same architecture
    (torchvision layout) loads into the body with its classifier (``fc.*``,
    ``classifier.*``) dropped. Raises ``FileNotFoundError`` or ``ValueError``
    naming ``path`` when the file is missing or fits nothing.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights {path!r} do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported with its path
        raise ValueError(f"pretrained weights {path!r} could not be read: {err}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights {path!r} are not a state dict of tensors")
    state = _strip_prefix(state, "module.")
    errors = []
    try:
        model.load_state_dict(state)
        return
    except RuntimeError as err:
        errors.append(str(err).splitlines()[0])
    body = getattr(getattr(model, "backbone", None), "body", None)
    if body is not None:
        classifier = ("fc.", "classifier.")
        body_state = _strip_prefix({k: v for k, v in state.items() if not k.startswith(classifier)}, "features.")
        try:
            body.load_state_dict(body_state)
            return
        except RuntimeError as err:
            errors.append(str(err).splitlines()[0])
    raise ValueError(f"pretrained weights {path!r} fit neither the detector nor its backbone body: {errors[-1]}")
