"""torchvision detectors with the Harmonic losses in their heads (Faster/Mask R-CNN, RetinaNet, FCOS, SSDlite)."""

from .candidates import pre_nms_candidates
from .factory import ARCHS, BACKBONES, build_detector
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
    "harmonic_options",
    "loss_stats",
    "pre_nms_candidates",
]
