"""IoU of aligned box pairs, differentiable with respect to both sets."""

from __future__ import annotations

import torch
from torch import Tensor


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
    if boxes1.shape != boxes2.shape or boxes1.shape[-1:] != (4,):
        raise ValueError(
            f"expected two box tensors of the same shape (..., 4), got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    if not boxes1.is_floating_point():
        raise ValueError(f"boxes must be floating point, got {boxes1.dtype}")
    if boxes1.dtype in (torch.float16, torch.bfloat16):
        boxes1 = boxes1.float()
    boxes2 = boxes2.to(boxes1.dtype)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    inter_w = (torch.minimum(x2, x2g) - torch.maximum(x1, x1g)).clamp(min=0)
    inter_h = (torch.minimum(y2, y2g) - torch.maximum(y1, y1g)).clamp(min=0)
    inter = inter_w * inter_h
    area1 = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area2 = (x2g - x1g).clamp(min=0) * (y2g - y1g).clamp(min=0)
    return inter / (area1 + area2 - inter + eps)
