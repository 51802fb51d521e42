"""IoU of aligned box pairs, differentiable with respect to both sets."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .reduction import check_float_tensor


def _in_safe_range(boxes1: Tensor, boxes2: Tensor):
    """The pairs with coordinates so large that areas would overflow, scaled down (IoU is scale-invariant).

    Infinite coordinates are first clamped to a finite bound (their gradient is then 0, the
    others' stays finite). Pairs within range are divided by exactly 1 and clamped by a no-op,
    so their values and gradients are bit-identical to the plain computation.
    """
    finfo = torch.finfo(boxes1.dtype)
    bound = finfo.max / 8
    safe = math.sqrt(finfo.max) / 4  # areas up to (2 safe)^2 and their sums stay finite
    boxes1, boxes2 = boxes1.clamp(-bound, bound), boxes2.clamp(-bound, bound)
    with torch.no_grad():
        extent = torch.maximum(boxes1.abs().amax(dim=-1, keepdim=True), boxes2.abs().amax(dim=-1, keepdim=True))
        scale = torch.where(extent > safe, extent / safe, torch.ones_like(extent))
    return boxes1 / scale, boxes2 / scale


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU of the i-th box of ``boxes1`` with the i-th box of ``boxes2``.

    ``IoU = |A ∩ B| / (|A ∪ B| + eps)`` with boxes in ``(x1, y1, x2, y2)``.
    Widths and heights are clamped at zero, so a zero-area or inverted box has
    area 0 and IoU 0 with everything (finite value and gradient, never NaN).
    Half-precision inputs are computed in float32 to avoid overflow of areas.

    Args:
        boxes1: Tensor[..., 4].
        boxes2: Tensor[..., 4], same shape as ``boxes1``.
        eps: added to the union to keep the ratio finite for empty unions.

    Returns:
        Tensor[...] of IoUs in [0, 1], dtype float32 for half inputs, else the input dtype.
    """
    check_float_tensor(boxes1, "boxes1", "(..., 4)")
    check_float_tensor(boxes2, "boxes2", "(..., 4)")
    if boxes1.shape != boxes2.shape or boxes1.shape[-1:] != (4,):
        raise ValueError(
            f"expected two box tensors of the same shape (..., 4), got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    if not boxes1.is_floating_point():
        raise ValueError(f"boxes must be floating point, got {boxes1.dtype}")
    if boxes1.dtype in (torch.float16, torch.bfloat16):
        boxes1 = boxes1.float()
    boxes2 = boxes2.to(boxes1.dtype)
    boxes1, boxes2 = _in_safe_range(boxes1, boxes2)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    inter_w = (torch.minimum(x2, x2g) - torch.maximum(x1, x1g)).clamp(min=0)
    inter_h = (torch.minimum(y2, y2g) - torch.maximum(y1, y1g)).clamp(min=0)
    inter = inter_w * inter_h
    area1 = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area2 = (x2g - x1g).clamp(min=0) * (y2g - y1g).clamp(min=0)
    return inter / (area1 + area2 - inter + eps)
