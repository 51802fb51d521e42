"""torchvision detectors with the Harmonic losses in their heads (Faster/Mask R-CNN, RetinaNet, FCOS, SSDlite).

``build_detector(arch, num_classes, loss=...)`` returns the torchvision model class;
``loss_stats(model)`` gives the last training forward's mean ``beta_c``/``beta_r``;
``pre_nms_candidates(model)`` switches NMS off for the consistency analysis.
"""

from .backbones import BACKBONES, fpn_backbone, load_pretrained
from .candidates import pre_nms_candidates
from .factory import ARCHS, build_detector
from .fcos import HarmonicFCOSHead
from .presets import PRESETS, HarmonicOptions, harmonic_options, loss_stats
from .rcnn import HarmonicRoIHeads
from .retinanet import HarmonicRetinaNetHead
from .ssd import HarmonicSSD

__all__ = [
    "ARCHS",
    "BACKBONES",
    "PRESETS",
    "HarmonicFCOSHead",
    "HarmonicOptions",
    "HarmonicRetinaNetHead",
    "HarmonicRoIHeads",
    "HarmonicSSD",
    "build_detector",
    "fpn_backbone",
    "harmonic_options",
    "load_pretrained",
    "loss_stats",
    "pre_nms_candidates",
]
