"""Loss presets of the paper's ablation and two baselines, and the side channel that exposes training statistics.

====================== ===========================================================
``standard``            torchvision's own loss (FCOS: a head subclass that only
                        records per-level positive counts, losses bit-identical)
``harmonic``            Eq. S-1 on the head's own per-positive losses (``alpha = 0``, no HIoU)
``harmonic_iou``        as ``harmonic`` with ``L_loc = box loss + alpha * L_HIoU``
                        (``alpha = 1.5``, ``gamma = 0.8``; FCOS: ``alpha * L_HIoU`` replaces GIoU)
``harmonicdet``         as ``harmonic_iou`` plus the task-contrasting loss (margin 0.2)
``standard_posweight``  control: the standard loss with every positive's classification
                        and localisation terms times a constant ``positive_weight = c``
                        (default 1.9): Eq. S-1 with constant ``beta_c = beta_r = c - 1``,
                        no HIoU, no TC. Separates the harmonic factors' coupling from the
                        mere up-weighting of positives (``1 + beta`` lies in (1, 2]).
``qfl``                 peer baseline, FCOS and RetinaNet only: GFL's Quality Focal Loss
                        (``qfl_beta = 2``) with the detached IoU of the decoded box as the
                        classification target; box loss the detector's own; FCOS drops
                        its centerness branch (no loss, not used at inference)
====================== ===========================================================

``alpha = 1.5``, ``gamma = 0.8`` and the TC margin 0.2 are the main paper's values as
reported by secondary sources (see PAPER.md); ``gamma = 0`` gives the plain IoU-loss
ablation. The harmonic factors are differentiated through by default (the
supplement's S-5/S-10); ``detach_factors=True`` is the constant-factor variant, and
``"beta_r"``/``"beta_c"`` make one factor alone a constant.

Statistics (:func:`loss_stats`, floats of the last training forward): harmonic
presets and ``standard_posweight`` give ``beta_c``/``beta_r`` (for the control, the
values the harmonic factors would take) and ``reversed_frac``; ``qfl`` gives ``iou_target`` (mean IoU target
of the positives); every FCOS head, ``standard`` included, adds ``pos_p3`` ..
``pos_p7`` (foreground locations per pyramid level, summed over the batch).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from harmonicdet.losses import check_hiou_gamma, check_qfl_beta
from harmonicdet.losses.detection_losses import BOX_LOSSES, check_positive_weight
from harmonicdet.losses.harmonic_loss import DetachFactors, detach_flags

PRESETS = ("standard", "harmonic", "harmonic_iou", "harmonicdet", "standard_posweight", "qfl")
QFL_ARCHS = ("fcos", "retinanet")


@dataclass(frozen=True)
class HarmonicOptions:
    """Options of a harmonic head; see :func:`harmonic_options` for the presets' values.

    Attributes:
        alpha: weight of the Harmonic IoU loss in ``L_loc`` (0: none).
        gamma: HIoU focusing parameter (Eq. S-11, ``<= 1`` by S-13; 0: plain IoU loss).
        tc_margin: task-contrasting margin; ``None`` leaves the TC loss out.
        detach_factors: ``False`` (S-5/S-10), ``True`` (both factors constants), ``"beta_r"`` or
            ``"beta_c"`` (that factor alone a constant); see :func:`harmonicdet.losses.harmonic_loss`.
        beta_c_mode: sigmoid heads: ``"loss"`` (``exp(-focal)``) or ``"prob"`` (ground-truth probability);
            softmax heads have ``exp(-CE) = p`` either way (Eq. S-4).
        box_loss: the box term of ``L_loc``: ``"smooth_l1"``, ``"l1"``, ``"giou"`` or ``"none"`` (HIoU
            only); ``None`` keeps the detector's own (R-CNN, SSD: SmoothL1; RetinaNet: its head's
            ``bbox_reg_loss_type``, L1 by default; FCOS: GIoU without HIoU, none with it).
        positive_weight: ``standard_posweight`` only: the constant ``c > 0`` that replaces
            ``1 + beta_c`` and ``1 + beta_r``; ``None`` (the harmonic presets): the harmonic factors.
    """

    alpha: float = 0.0
    gamma: float = 0.8
    tc_margin: Optional[float] = None
    detach_factors: DetachFactors = False
    beta_c_mode: str = "loss"
    box_loss: Optional[str] = None
    positive_weight: Optional[float] = None


@dataclass(frozen=True)
class QFLOptions:
    """Options of the ``qfl`` preset.

    Attributes:
        qfl_beta: focusing exponent ``beta`` of the Quality Focal Loss (GFL: 2), finite and ``>= 0``.
    """

    qfl_beta: float = 2.0


_PRESET_VALUES: Dict[str, Dict[str, Any]] = {
    "harmonic": {},
    "harmonic_iou": {"alpha": 1.5, "gamma": 0.8},
    "harmonicdet": {"alpha": 1.5, "gamma": 0.8, "tc_margin": 0.2},
    "standard_posweight": {"positive_weight": 1.9},
}


def harmonic_options(preset: str, overrides: Mapping[str, Any]) -> Union[None, HarmonicOptions, QFLOptions]:
    """The options of ``preset`` with ``overrides`` applied; ``None`` for ``"standard"``.

    ``qfl`` returns :class:`QFLOptions` (option ``qfl_beta``), every other preset
    :class:`HarmonicOptions`. ``positive_weight`` belongs to ``standard_posweight``
    alone, which refuses ``detach_factors`` and ``beta_c_mode`` (it has no factors).
    """
    if preset not in PRESETS:
        raise ValueError(f"loss must be one of {PRESETS}, got {preset!r}")
    option_class = QFLOptions if preset == "qfl" else HarmonicOptions
    valid = {f.name for f in fields(option_class)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown loss option(s) {unknown} for loss={preset!r} (valid: {sorted(valid)})")
    if preset == "standard":
        if overrides:
            raise ValueError(f"loss='standard' takes no loss options, got {sorted(overrides)}")
        return None
    if preset == "qfl":
        options = replace(QFLOptions(), **dict(overrides))
        check_qfl_beta(options.qfl_beta)
        return options
    if preset == "standard_posweight":
        refused = sorted({"detach_factors", "beta_c_mode"} & set(overrides))
        if refused:
            raise ValueError(f"loss='standard_posweight' has constant factors and takes no {refused}")
    elif "positive_weight" in overrides:
        raise ValueError(f"positive_weight is an option of loss='standard_posweight', not of {preset!r}")
    options = replace(HarmonicOptions(**_PRESET_VALUES[preset]), **dict(overrides))
    if preset == "standard_posweight":
        check_positive_weight(options.positive_weight)
    if options.alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {options.alpha}")
    check_hiou_gamma(options.gamma)
    detach_flags(options.detach_factors)
    if options.tc_margin is not None and options.tc_margin < 0:
        raise ValueError(f"tc_margin must be >= 0 or None, got {options.tc_margin}")
    if options.beta_c_mode not in ("loss", "prob"):
        raise ValueError(f"beta_c_mode must be 'loss' or 'prob', got {options.beta_c_mode!r}")
    if options.box_loss is not None and options.box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES} or None, got {options.box_loss!r}")
    if options.box_loss == "none" and options.alpha == 0:
        raise ValueError("box_loss='none' needs alpha > 0: L_loc would be empty")
    return options


class StatsMixin:
    """Keeps scalar statistics of the last training forward (detached tensors) in ``last_stats``."""

    last_stats: Dict[str, torch.Tensor]

    def _record_stats(self, stats: Mapping[str, torch.Tensor], keys: Optional[Sequence[str]] = None) -> None:
        self.last_stats = {k: stats[k].detach() for k in (stats if keys is None else keys)}


class HarmonicStatsMixin(StatsMixin):
    """Keeps the batch means of ``beta_c``, ``beta_r`` and ``reversed_frac`` of the last training forward (detached)."""

    def _record_stats(self, stats: Mapping[str, torch.Tensor],
                      keys: Optional[Sequence[str]] = ("beta_c", "beta_r", "reversed_frac")) -> None:
        super()._record_stats(stats, keys)


def loss_stats(model: nn.Module) -> Dict[str, float]:
    """Training statistics of the model's last training forward, as floats.

    ============================== ==============================================
    harmonic presets,              ``beta_c``, ``beta_r``: means over the positives
    ``standard_posweight``         (for the control: the values the harmonic
                                   factors would take; 0 without positives);
                                   ``reversed_frac``: fraction of positives whose
                                   S-5 box-gradient factor is negative (0 for the
                                   control and with ``beta_r`` detached)
    ``qfl``                        ``iou_target``: mean IoU target of the positives
    FCOS, every preset             plus ``pos_p3`` .. ``pos_p7``: foreground
                                   locations per pyramid level, summed over the batch
    ``standard`` (not FCOS)        nothing
    ============================== ==============================================

    ``{}`` before the first training forward. ``DistributedDataParallel`` (or any
    wrapper with a ``module`` attribute) is unwrapped.
    """
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    for module in model.modules():
        stats = getattr(module, "last_stats", None)
        if isinstance(module, StatsMixin) and stats:
            return {k: float(v) for k, v in stats.items()}
    return {}
