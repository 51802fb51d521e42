"""The task-contrasting (TC) loss: a hinge on the gap between score and IoU of each positive."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .options import check_margin
from .reduction import check_float_tensor, weight_reduce_loss


def _check_ranges(class_probs: Tensor, gt_prob: Tensor, iou: Tensor) -> None:
    """Probabilities in [0, 1] (class_probs only >= 0: rows are renormalised) and IoUs in [0, 1]; NaN passes."""
    flags = torch.stack([(class_probs < 0).any(), ((gt_prob < 0) | (gt_prob > 1)).any(),
                         ((iou < 0) | (iou > 1)).any()]).tolist()
    for bad, name, expected in zip(flags, ("class_probs", "gt_prob", "iou"),
                                   ("non-negative probabilities (not logits)", "probabilities in [0, 1]",
                                    "IoUs in [0, 1]")):
        if bad:
            raise ValueError(f"{name} must hold {expected}")


def task_contrast_loss(
    class_probs: Tensor,
    gt_prob: Tensor,
    iou: Tensor,
    margin: float = 0.2,
    *,
    detach_entropy: bool = True,
    reduction: str = "none",
    weight: Optional[Tensor] = None,
    avg_factor: Optional[Union[float, Tensor]] = None,
) -> Tensor:
    """Task-contrasting loss of positive samples (main paper, arXiv 2108.10809, via secondary sources: docs/method.md).

    ``L_TC = max(0, |p - IoU| - m) / (1 + beta_e)`` with
    ``beta_e = exp(H)``, ``H = -sum_k q_k log q_k`` the entropy of the predicted
    class distribution ``q``. A confident prediction (low entropy) is pushed harder
    to make its score ``p`` agree with its IoU.

    Args:
        class_probs: Tensor[N, K], predicted class distribution of each positive
            (softmax over the C+1 classes for softmax heads; for sigmoid heads pass
            the class probabilities normalised to sum to 1). Rows are renormalised.
        gt_prob: Tensor[N], probability ``p`` of the ground-truth class.
        iou: Tensor[N], IoU of the decoded box with its ground truth; gradients flow
            into it, so the box branch is pulled towards the score as well.
        margin: ``m``, gaps up to it are not penalised (paper: 0.2).
        detach_entropy: treat ``beta_e`` as a constant (default); otherwise the
            loss can also be lowered by making the classifier less certain.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        weight: Tensor[N] multiplying the per-sample losses.
        avg_factor: divisor for ``"mean"`` instead of N (mmdetection convention).

    Returns:
        Tensor[N] for ``"none"``, else a scalar.
    """
    margin = check_margin(margin)
    check_float_tensor(class_probs, "class_probs", "(N, K) of probabilities")
    check_float_tensor(gt_prob, "gt_prob", "(N,) of probabilities")
    check_float_tensor(iou, "iou", "(N,) in [0, 1]")
    if class_probs.dim() != 2 or class_probs.shape[0] != gt_prob.shape[0] or gt_prob.shape != iou.shape:
        raise ValueError(
            "expected class_probs (N, K), gt_prob (N,) and iou (N,), got "
            f"{tuple(class_probs.shape)}, {tuple(gt_prob.shape)} and {tuple(iou.shape)}"
        )
    _check_ranges(class_probs, gt_prob, iou)
    q = class_probs / class_probs.sum(dim=1, keepdim=True).clamp(min=torch.finfo(class_probs.dtype).tiny)
    # xlogy gives 0 * log 0 = 0 for classes with zero probability; its second argument is 1 there, so the
    # gradient stays finite (xlogy's d/dy = x / y would be 0 / 0)
    entropy = -torch.special.xlogy(q, torch.where(q > 0, q, torch.ones_like(q))).sum(dim=1)
    if detach_entropy:
        entropy = entropy.detach()
    gap = (gt_prob - iou.to(gt_prob.dtype)).abs()
    loss = (gap - margin).clamp(min=0) / (1 + torch.exp(entropy))
    return weight_reduce_loss(loss, weight, reduction, avg_factor)
