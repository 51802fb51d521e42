"""The side channel for training statistics: heads keep their last training forward's, :func:`loss_stats` reads them.

Statistics (floats of the last training forward): harmonic presets and
``standard_posweight`` give ``beta_c``/``beta_r`` (for the control, the values the
harmonic factors would take) and ``reversed_frac``; ``qfl`` gives ``iou_target`` (mean
IoU target of the positives); every FCOS head, ``standard`` included, adds ``pos_p3``
.. ``pos_p7`` (foreground locations per pyramid level, summed over the batch).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Dict, Mapping, Optional, Sequence

import torch
from torch import nn

__all__ = ["HarmonicStatsMixin", "StatsMixin", "loss_stats"]


class StatsMixin:
    """Keeps scalar statistics of the last training forward (detached tensors) in ``last_stats``."""

    # none before the first training forward; each forward binds a new dict, so the shared default is never changed
    last_stats: Mapping[str, torch.Tensor] = MappingProxyType({})

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
