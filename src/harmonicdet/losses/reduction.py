"""Reduction of per-sample losses with mmdetection's conventions.

``weight`` multiplies the per-sample losses; ``avg_factor`` replaces the element
count as the divisor of reduction ``"mean"`` (e.g. the number of positives); an
``avg_factor`` together with reduction ``"sum"`` is refused, as in mmdetection.

Arguments are checked where they enter (:func:`check_weight`, :func:`check_avg_factor`):
``weight`` must be a tensor (a Python list is refused by name), ``avg_factor`` a finite
number ``>= 0`` or a one-element tensor. Values are read where that is free -- Python
numbers and tensors on the CPU; a GPU tensor's shape and dtype are checked, not its value,
which would make every training step wait for the GPU.
An empty input reduces to a zero that is still connected to the graph, as
torchvision's box losses do, so ``backward()`` works on batches with no positives.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from harmonicdet.checks import is_finite_number

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is one of ``"none"``, ``"mean"``, ``"sum"``; raise ``ValueError`` otherwise."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_float_tensor(value: object, name: str, expected: str = "") -> Tensor:
    """``value`` if it is a floating-point ``torch.Tensor``; a ``ValueError`` saying what was expected otherwise."""
    shape = f" {expected}" if expected else ""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a floating point torch.Tensor{shape}, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating point torch.Tensor{shape}, got dtype {value.dtype}")
    return value


def on_host(value: Tensor) -> bool:
    """Whether reading ``value``'s elements is free (a CPU tensor), so a range check costs no device sync."""
    return value.device.type == "cpu"


def check_weight(weight: object, expected: str = "broadcastable to the loss") -> Optional[Tensor]:
    """``weight`` if it is ``None`` or a ``torch.Tensor``; a ``ValueError`` naming what was given otherwise."""
    if weight is not None and not isinstance(weight, Tensor):
        raise ValueError(f"weight must be a torch.Tensor {expected} (e.g. torch.tensor(values)), "
                         f"got {type(weight).__name__}")
    return weight


def check_avg_factor(avg_factor: object) -> None:
    """Refuse an ``avg_factor`` that is not ``None``, a finite number ``>= 0`` or a one-element tensor holding one
    (a GPU tensor's value is not read, see the module docstring)."""
    if avg_factor is None:
        return
    if isinstance(avg_factor, Tensor):
        if avg_factor.numel() != 1 or avg_factor.dtype == torch.bool:
            raise ValueError(f"avg_factor must be a number or a one-element numeric tensor, got a {avg_factor.dtype} "
                             f"tensor of shape {tuple(avg_factor.shape)}")
        value = float(avg_factor) if on_host(avg_factor) else 0.0
    elif is_finite_number(avg_factor):
        value = float(avg_factor)
    else:
        raise ValueError(f"avg_factor must be a finite number >= 0 or a one-element tensor, got {avg_factor!r}")
    if not is_finite_number(value) or value < 0:
        raise ValueError(f"avg_factor (the divisor of the summed loss) must be a finite number >= 0, got {value!r}")


def weight_reduce_loss(
    loss: Tensor,
    weight: Optional[Tensor] = None,
    reduction: str = "mean",
    avg_factor: Optional[Union[float, Tensor]] = None,
) -> Tensor:
    """Apply an element-wise ``weight`` to ``loss`` and reduce it.

    Args:
        loss: per-sample losses, any shape.
        weight: broadcastable to ``loss``; multiplies it before the reduction.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: divisor of the summed loss for ``"mean"`` (mmdetection's
            ``loss.sum() / (avg_factor + eps)``); must be ``None`` for ``"sum"``.

    Returns:
        ``loss`` (``"none"``) or a scalar tensor of the loss's dtype; half-precision losses
        are accumulated in float32 (a float16 sum overflows at 65504).
    """
    check_reduction(reduction)
    check_float_tensor(loss, "loss")
    check_avg_factor(avg_factor)
    if check_weight(weight) is not None:
        if weight.dim() > loss.dim() or any(
            w not in (1, n) for w, n in zip(weight.shape[::-1], loss.shape[::-1])
        ):
            raise ValueError(
                f"weight of shape {tuple(weight.shape)} does not broadcast to the loss of shape {tuple(loss.shape)}"
            )
        loss = loss * weight
    if reduction == "none":
        return loss
    dtype = loss.dtype
    if dtype in (torch.float16, torch.bfloat16):
        loss = loss.float()  # accumulate in float32: a float16 sum overflows at 65504
    if avg_factor is None:
        if reduction == "sum":
            return loss.sum().to(dtype)
        return (loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()).to(dtype)
    if reduction == "sum":
        raise ValueError('avg_factor can not be used with reduction="sum"')
    # eps as in mmdetection: avg_factor 0 (no positives) gives 0 instead of NaN
    eps = torch.finfo(torch.float32).eps
    return (loss.sum() / (avg_factor + eps)).to(dtype)
