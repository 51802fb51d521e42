"""Loss presets of the paper's ablation, and the side channel that exposes the harmonic factors for logging.

=============== ==================================================================
``standard``     torchvision's own loss and head classes, untouched
``harmonic``     Eq. S-1 on the head's own per-positive losses (``alpha = 0``, no HIoU)
``harmonic_iou`` as ``harmonic`` with ``L_loc = box loss + alpha * L_HIoU``
                 (``alpha = 1.5``, ``gamma = 0.8``; FCOS: ``alpha * L_HIoU`` replaces GIoU)
``harmonicdet``  as ``harmonic_iou`` plus the task-contrasting loss (margin 0.2)
=============== ==================================================================

``alpha = 1.5``, ``gamma = 0.8`` and the TC margin 0.2 are the main paper's values as
reported by secondary sources (see PAPER.md); ``gamma = 0`` gives the plain IoU-loss
ablation. The harmonic factors are differentiated through by default (the
supplement's S-5/S-10); ``detach_factors=True`` is the constant-factor variant.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from harmonicdet.losses import check_hiou_gamma
from harmonicdet.losses.detection_losses import BOX_LOSSES

PRESETS = ("standard", "harmonic", "harmonic_iou", "harmonicdet")


@dataclass(frozen=True)
class HarmonicOptions:
    """Options of a harmonic head; see :func:`harmonic_options` for the presets' values.

    Attributes:
        alpha: weight of the Harmonic IoU loss in ``L_loc`` (0: none).
        gamma: HIoU focusing parameter (Eq. S-11, ``<= 1`` by S-13; 0: plain IoU loss).
        tc_margin: task-contrasting margin; ``None`` leaves the TC loss out.
        detach_factors: treat ``beta_c``/``beta_r`` as constants.
        beta_c_mode: sigmoid heads: ``"loss"`` (``exp(-focal)``) or ``"prob"`` (ground-truth probability);
            softmax heads have ``exp(-CE) = p`` either way (Eq. S-4).
        box_loss: the box term of ``L_loc``: ``"smooth_l1"``, ``"l1"``, ``"giou"`` or ``"none"`` (HIoU
            only); ``None`` keeps the detector's own (R-CNN, SSD: SmoothL1; RetinaNet: its head's
            ``bbox_reg_loss_type``, L1 by default; FCOS: GIoU without HIoU, none with it).
    """

    alpha: float = 0.0
    gamma: float = 0.8
    tc_margin: Optional[float] = None
    detach_factors: bool = False
    beta_c_mode: str = "loss"
    box_loss: Optional[str] = None


_PRESET_VALUES: Dict[str, Dict[str, Any]] = {
    "harmonic": {},
    "harmonic_iou": {"alpha": 1.5, "gamma": 0.8},
    "harmonicdet": {"alpha": 1.5, "gamma": 0.8, "tc_margin": 0.2},
}


def harmonic_options(preset: str, overrides: Mapping[str, Any]) -> Optional[HarmonicOptions]:
    """The options of ``preset`` with ``overrides`` applied; ``None`` for ``"standard"``."""
    if preset not in PRESETS:
        raise ValueError(f"loss must be one of {PRESETS}, got {preset!r}")
    valid = {f.name for f in fields(HarmonicOptions)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown loss option(s) {unknown} (valid: {sorted(valid)})")
    if preset == "standard":
        if overrides:
            raise ValueError(f"loss='standard' takes no loss options, got {sorted(overrides)}")
        return None
    options = replace(HarmonicOptions(**_PRESET_VALUES[preset]), **dict(overrides))
    if options.alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {options.alpha}")
    check_hiou_gamma(options.gamma)
    if options.tc_margin is not None and options.tc_margin < 0:
        raise ValueError(f"tc_margin must be >= 0 or None, got {options.tc_margin}")
    if options.beta_c_mode not in ("loss", "prob"):
        raise ValueError(f"beta_c_mode must be 'loss' or 'prob', got {options.beta_c_mode!r}")
    if options.box_loss is not None and options.box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES} or None, got {options.box_loss!r}")
    if options.box_loss == "none" and options.alpha == 0:
        raise ValueError("box_loss='none' needs alpha > 0: L_loc would be empty")
    return options


class HarmonicStatsMixin:
    """Keeps the batch means of ``beta_c`` and ``beta_r`` of the last training forward (detached)."""

    last_stats: Dict[str, torch.Tensor]

    def _record_stats(self, stats: Mapping[str, torch.Tensor]) -> None:
        self.last_stats = {k: stats[k].detach() for k in ("beta_c", "beta_r")}


def loss_stats(model: nn.Module) -> Dict[str, float]:
    """``{"beta_c", "beta_r"}``: batch means over the positives of the model's last training forward.

    ``{}`` for a ``standard`` model or before the first training forward; a batch
    without positives gives 0. ``DistributedDataParallel`` (or any wrapper with a
    ``module`` attribute) is unwrapped.
    """
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    for module in model.modules():
        stats = getattr(module, "last_stats", None)
        if isinstance(module, HarmonicStatsMixin) and stats:
            return {k: float(v) for k, v in stats.items()}
    return {}
