"""Loss presets of the paper's ablation and two baselines: their table and :func:`harmonic_options`.

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

``alpha = 1.5``, ``gamma = 0.8`` and the TC margin 0.2 are the main paper's values
(arXiv 2108.10809) as reported by secondary sources (see ``docs/method.md``);
``gamma = 0`` gives the plain IoU-loss ablation. The harmonic factors are
differentiated through by default (the supplement's S-5/S-10);
``detach_factors=True`` is the constant-factor variant, and ``"beta_r"``/``"beta_c"``
make one factor alone a constant.

The option classes are the losses' own, validated when made
(:class:`harmonicdet.losses.HarmonicOptions`, :class:`harmonicdet.losses.QFLOptions`).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Dict, Mapping, Union

from harmonicdet.losses.options import HarmonicOptions, QFLOptions


__all__ = ["PRESETS", "QFL_ARCHS", "LossOptions", "harmonic_options"]

# what a preset becomes: the options object the heads keep (None: the detector's own loss)
LossOptions = Union[None, HarmonicOptions, QFLOptions]

PRESETS = ("standard", "harmonic", "harmonic_iou", "harmonicdet", "standard_posweight", "qfl")
QFL_ARCHS = ("fcos", "retinanet")


_PRESET_VALUES: Dict[str, Dict[str, Any]] = {
    "harmonic": {},
    "harmonic_iou": {"alpha": 1.5, "gamma": 0.8},
    "harmonicdet": {"alpha": 1.5, "gamma": 0.8, "tc_margin": 0.2},
    "standard_posweight": {"positive_weight": 1.9},
}


def harmonic_options(preset: str, overrides: Mapping[str, Any]) -> LossOptions:
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
        return QFLOptions(**overrides)
    if preset == "standard_posweight":
        refused = sorted({"detach_factors", "beta_c_mode"} & set(overrides))
        if refused:
            raise ValueError(f"loss='standard_posweight' has constant factors and takes no {refused}")
    elif "positive_weight" in overrides:
        raise ValueError(f"positive_weight is an option of loss='standard_posweight', not of {preset!r}")
    return HarmonicOptions(**{**_PRESET_VALUES[preset], **overrides})  # validated there
