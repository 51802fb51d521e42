"""Losses of "Reconcile Prediction Consistency for Balanced Object Detection" (ICCV 2021).

Equation numbers (S-n) refer to the paper's supplementary material (arXiv 2108.10809);
``docs/method.md`` states the equations as implemented. The Quality Focal Loss of GFL
(Li et al. 2020) is included as a peer baseline. :class:`HarmonicOptions` and
:class:`QFLOptions` are the validated options that the per-head objectives take.
"""

from .box_iou import aligned_box_iou
from .detection_losses import harmonic_sigmoid_detection_loss, harmonic_softmax_detection_loss, localization_loss
from .harmonic_iou_loss import check_hiou_gamma, harmonic_iou_from_iou, harmonic_iou_loss
from .harmonic_loss import DETACH_MODES, detach_flags, harmonic_factors, harmonic_loss, harmonic_terms, reversed_fraction
from .modules import HarmonicIoULoss, HarmonicLoss, QualityFocalLoss, TaskContrastLoss
from .options import BETA_C_MODES, BOX_LOSSES, HarmonicOptions, QFLOptions
from .quality_focal_loss import check_qfl_beta, quality_focal_loss
from .reduction import weight_reduce_loss
from .task_contrast_loss import task_contrast_loss

__all__ = [
    "BETA_C_MODES",
    "BOX_LOSSES",
    "DETACH_MODES",
    "detach_flags",
    "reversed_fraction",
    "aligned_box_iou",
    "check_hiou_gamma",
    "check_qfl_beta",
    "harmonic_factors",
    "harmonic_iou_from_iou",
    "harmonic_iou_loss",
    "harmonic_loss",
    "harmonic_sigmoid_detection_loss",
    "harmonic_softmax_detection_loss",
    "harmonic_terms",
    "localization_loss",
    "quality_focal_loss",
    "task_contrast_loss",
    "weight_reduce_loss",
    "HarmonicIoULoss",
    "HarmonicLoss",
    "HarmonicOptions",
    "QFLOptions",
    "QualityFocalLoss",
    "TaskContrastLoss",
]
