"""The options of the per-head objectives, validated once: one object from a config to the loss.

:class:`HarmonicOptions` (the harmonic presets and the ``standard_posweight`` control)
and :class:`QFLOptions` (the ``qfl`` baseline) are frozen dataclasses that check their
fields when they are made, so an instance is always valid: the detectors' heads keep
one and pass it to :func:`~harmonicdet.losses.harmonic_softmax_detection_loss` /
:func:`~harmonicdet.losses.harmonic_sigmoid_detection_loss` (``options=``) without
checking anything again. The presets' values are in :mod:`harmonicdet.models.presets`
(:func:`~harmonicdet.models.presets.harmonic_options`); the method and where each
default comes from: ``docs/method.md``.

The ``check_*`` functions are the single definition of each rule; the low-level
functions that take a raw value (``localization_loss``'s ``box_loss``,
``task_contrast_loss``'s ``margin``) use them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from harmonicdet.checks import check_finite_number

from .harmonic_iou_loss import check_hiou_gamma
from .harmonic_loss import DetachFactors, detach_flags
from .quality_focal_loss import check_qfl_beta

__all__ = [
    "BETA_C_MODES",
    "BOX_LOSSES",
    "HarmonicOptions",
    "QFLOptions",
    "check_beta_c_mode",
    "check_box_loss",
    "check_margin",
    "check_positive_weight",
]

BOX_LOSSES = ("smooth_l1", "l1", "giou", "none")
BETA_C_MODES = ("loss", "prob")


def check_box_loss(box_loss: str) -> str:
    """``box_loss`` if it is one of :data:`BOX_LOSSES`; ``ValueError`` otherwise."""
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
    return box_loss


def check_beta_c_mode(beta_c_mode: str) -> str:
    """``beta_c_mode`` if it is one of :data:`BETA_C_MODES`; ``ValueError`` otherwise."""
    if beta_c_mode not in BETA_C_MODES:
        raise ValueError(f"beta_c_mode must be one of {BETA_C_MODES}, got {beta_c_mode!r}")
    return beta_c_mode


def check_margin(margin: float, name: str = "margin") -> float:
    """The task-contrasting margin as a float; ``ValueError`` (naming ``name``) unless it is a finite number >= 0."""
    return check_finite_number(margin, name, at_least=0)


def check_positive_weight(positive_weight: Optional[float]) -> Optional[float]:
    """``positive_weight`` as a float (``None`` passes); ``ValueError`` unless it is a finite number > 0."""
    if positive_weight is None:
        return None
    return check_finite_number(positive_weight, "positive_weight", above=0, note=" or None")


@dataclass(frozen=True)
class HarmonicOptions:
    """Options of a harmonic objective (Eq. S-1), validated when the instance is made.

    Attributes:
        alpha: weight of the Harmonic IoU loss in ``L_loc`` (0: none); finite, ``>= 0``.
        gamma: HIoU focusing parameter (Eq. S-11, ``<= 1`` by S-13; 0: plain IoU loss).
        tc_margin: task-contrasting margin (finite, ``>= 0``); ``None`` leaves the TC loss out.
        detach_factors: ``False`` (S-5/S-10), ``True`` (both factors constants), ``"beta_r"`` or
            ``"beta_c"`` (that factor alone a constant); see :func:`harmonicdet.losses.harmonic_loss`.
        beta_c_mode: sigmoid heads: ``"loss"`` (``exp(-focal)``) or ``"prob"`` (ground-truth probability);
            softmax heads have ``exp(-CE) = p`` either way (Eq. S-4) and ignore it.
        box_loss: the box term of ``L_loc``: one of :data:`BOX_LOSSES` (``"none"``: HIoU only, needs
            ``alpha > 0``); ``None`` keeps the detector's own (R-CNN, SSD: SmoothL1; RetinaNet: its
            head's ``bbox_reg_loss_type``, L1 by default; FCOS: GIoU without HIoU, none with it).
        positive_weight: ``standard_posweight`` only: the constant ``c > 0`` that replaces
            ``1 + beta_c`` and ``1 + beta_r``; ``None`` (the harmonic presets): the harmonic factors.

    Raises:
        ValueError: a field out of range, naming it.
    """

    alpha: float = 0.0
    gamma: float = 0.8
    tc_margin: Optional[float] = None
    detach_factors: DetachFactors = False
    beta_c_mode: str = "loss"
    box_loss: Optional[str] = None
    positive_weight: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_finite_number(self.alpha, "alpha", at_least=0))
        object.__setattr__(self, "gamma", check_hiou_gamma(self.gamma))
        if self.tc_margin is not None:
            object.__setattr__(self, "tc_margin", check_margin(self.tc_margin, "tc_margin"))
        detach_flags(self.detach_factors)
        check_beta_c_mode(self.beta_c_mode)
        if self.box_loss is not None:
            check_box_loss(self.box_loss)
            if self.box_loss == "none" and self.alpha == 0:
                raise ValueError("box_loss='none' needs alpha > 0: L_loc would be empty")
        object.__setattr__(self, "positive_weight", check_positive_weight(self.positive_weight))


@dataclass(frozen=True)
class QFLOptions:
    """Options of the ``qfl`` baseline, validated when the instance is made.

    Attributes:
        qfl_beta: focusing exponent ``beta`` of the Quality Focal Loss (GFL: 2), finite and ``>= 0``.
    """

    qfl_beta: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "qfl_beta", check_qfl_beta(self.qfl_beta))
