"""torchvision detectors with the Harmonic losses in their heads (Faster/Mask R-CNN, RetinaNet, FCOS, SSDlite).

``build_detector(arch, num_classes, loss=...)`` returns the torchvision model class;
``loss_stats(model)`` gives the last training forward's statistics (mean ``beta_c``/``beta_r``,
``iou_target`` for ``qfl``, per-level positives ``pos_p3``..``pos_p7`` for FCOS);
``pre_nms_candidates(model)`` switches NMS off for the consistency analysis.
"""

from harmonicdet.losses.options import HarmonicOptions, QFLOptions

from .backbones import BACKBONES, fpn_backbone
from .candidates import pre_nms_candidates
from .factory import ARCHS, build_detector
from .fcos import HarmonicFCOSHead, StandardFCOSHead
from .presets import PRESETS, QFL_ARCHS, harmonic_options
from .pretrained import NAMED_WEIGHTS, load_pretrained, named_weights_path
from .qfl import QFLFCOS, QFLFCOSHead, QFLRetinaNetHead
from .rcnn import HarmonicRoIHeads
from .retinanet import HarmonicRetinaNetHead
from .ssd import HarmonicSSD
from .stats import loss_stats

__all__ = [
    "ARCHS",
    "BACKBONES",
    "PRESETS",
    "QFL_ARCHS",
    "QFLFCOS",
    "QFLFCOSHead",
    "QFLOptions",
    "QFLRetinaNetHead",
    "HarmonicFCOSHead",
    "HarmonicOptions",
    "HarmonicRetinaNetHead",
    "HarmonicRoIHeads",
    "HarmonicSSD",
    "NAMED_WEIGHTS",
    "StandardFCOSHead",
    "build_detector",
    "fpn_backbone",
    "harmonic_options",
    "load_pretrained",
    "loss_stats",
    "named_weights_path",
    "pre_nms_candidates",
]
