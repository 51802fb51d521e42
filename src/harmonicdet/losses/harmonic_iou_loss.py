"""The Harmonic IoU loss (Eq. S-11): an IoU loss that up-weights well-localised boxes."""

from __future__ import annotations

from typing import Optional, Union

from torch import Tensor

from harmonicdet.checks import is_finite_number

from .box_iou import aligned_box_iou
from .reduction import check_weight, weight_reduce_loss


def check_hiou_gamma(gamma: float) -> float:
    """Return ``gamma`` if the HIoU loss is monotonically non-increasing in IoU on [0, 1] (Eq. S-13)."""
    if not is_finite_number(gamma):
        raise ValueError(f"gamma must be a finite number <= 1, got {gamma!r}")
    if gamma > 1:
        raise ValueError(
            f"gamma={gamma} makes the Harmonic IoU loss increase with IoU for IoU < (gamma-1)/(gamma+1); "
            "Eq. S-13 of the supplement requires gamma <= 1"
        )
    return float(gamma)


def harmonic_iou_from_iou(iou: Tensor, gamma: float = 0.8) -> Tensor:
    """``(1 + IoU)^gamma * (1 - IoU)`` for IoU values (Eq. S-11).

    Its derivative is ``(1 + IoU)^(gamma-1) * ((gamma - 1) - (gamma + 1) IoU)``
    (Eq. S-12), non-positive on [0, 1] for ``gamma <= 1`` (Eq. S-13).
    """
    gamma = check_hiou_gamma(gamma)
    if gamma == 0:
        return 1 - iou
    return (1 + iou).pow(gamma) * (1 - iou)


def harmonic_iou_loss(
    pred_boxes: Tensor,
    target_boxes: Tensor,
    gamma: float = 0.8,
    *,
    reduction: str = "none",
    weight: Optional[Tensor] = None,
    avg_factor: Optional[Union[float, Tensor]] = None,
    eps: float = 1e-7,
) -> Tensor:
    """Harmonic IoU loss of aligned box pairs (Eq. S-11).

    ``L_HIoU = (1 + IoU)^gamma * (1 - IoU)``, with ``IoU`` of ``pred_boxes[i]``
    and ``target_boxes[i]`` differentiable with respect to both. The loss is an
    upward-convex function of IoU, so examples with a high IoU weigh more than in
    the plain IoU loss; ``gamma = 0`` is the plain IoU loss ``1 - IoU``.
    ``gamma > 1`` is refused: the loss would not decrease with IoU (Eq. S-13).
    Reference values for ``gamma = 0.8``: IoU 0 -> 1, 0.25 -> 0.896580,
    0.5 -> 0.691581, 1 -> 0.

    Args:
        pred_boxes: Tensor[N, 4], predicted ``(x1, y1, x2, y2)`` boxes.
        target_boxes: Tensor[N, 4], target boxes in the same format.
        gamma: focusing parameter, ``gamma <= 1``; the paper uses 0.8.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        weight: Tensor[N] (or Tensor[N, 4], averaged over the coordinates as in
            mmdetection's IoU losses) multiplying the per-box losses.
        avg_factor: divisor for ``"mean"`` instead of N (mmdetection convention).
        eps: added to the union; zero-area or inverted boxes have IoU 0 and loss 1.

    Returns:
        Tensor[N] for ``"none"``, else a scalar; float32 for half-precision inputs.
    """
    gamma = check_hiou_gamma(gamma)
    iou = aligned_box_iou(pred_boxes, target_boxes, eps=eps)
    if check_weight(weight, "of shape (N,) or (N, 4)") is not None and weight.dim() == 2 and weight.shape[-1] == 4:
        weight = weight.mean(dim=-1)
    return weight_reduce_loss(harmonic_iou_from_iou(iou, gamma), weight, reduction, avg_factor)
