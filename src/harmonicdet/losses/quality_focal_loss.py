"""Quality Focal Loss (QFL) of Generalized Focal Loss (Li et al., NeurIPS 2020): a peer baseline.

QFL trains the classification score to *be* the localisation quality: the target of
a positive at its ground-truth class is the IoU of its decoded box with the ground
truth (a soft label in [0, 1]), every other entry is 0. It is the best-known
alternative to the Harmonic loss for making scores and IoUs consistent, hence its use
here as a comparison preset (``loss="qfl"``).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from harmonicdet.checks import check_finite_number

from .reduction import check_weight, weight_reduce_loss


def check_qfl_beta(beta: float) -> float:
    """Return ``beta`` as a float if it is a finite number ``>= 0``; raise ``ValueError`` otherwise."""
    return check_finite_number(beta, "beta", at_least=0)


def quality_focal_loss(
    pred_logits: Tensor,
    targets_score: Tensor,
    weight: Optional[Tensor] = None,
    beta: float = 2.0,
    reduction: str = "mean",
    avg_factor: Optional[Union[float, Tensor]] = None,
) -> Tensor:
    """Quality Focal Loss of sigmoid class logits against soft quality targets (GFL, Eq. 5).

    With ``sigma = sigmoid(x)`` and a target ``y`` in [0, 1], element-wise::

        QFL(x, y) = -|y - sigma|^beta * ((1 - y) log(1 - sigma) + y log(sigma))
                  = |y - sigma|^beta * BCE(x, y)

    with ``BCE`` computed stably by ``binary_cross_entropy_with_logits``. For a
    negative entry (``y = 0``) it is ``sigma^beta * softplus(x)`` (the focal loss
    without alpha), for ``y = 1`` ``(1 - sigma)^beta * softplus(-x)``. Its derivative
    with respect to the logit, gradients flowing through the modulating factor as in
    GFL's implementation, is::

        dQFL/dx = sign(sigma - y) |sigma - y|^(beta-1) * (beta sigma (1 - sigma) BCE + |sigma - y|^2)

    (the second summand alone, ``|sigma - y|^beta (sigma - y)``, is the gradient with
    the factor held constant). The element losses are summed over the C classes
    (one value per sample, as mmdetection's ``quality_focal_loss``), then weighted
    and reduced. ``targets_score`` is used as given (not detached here): callers that
    build it from predicted boxes should detach it, as GFL does.

    Args:
        pred_logits: Tensor[N, C], sigmoid logits.
        targets_score: Tensor[N, C], soft targets in [0, 1]: at a positive's
            ground-truth class column the IoU of its decoded box with its ground
            truth, 0 elsewhere (all-zero rows are negatives).
        weight: Tensor[N] multiplying the per-sample losses, or Tensor[N, C]
            multiplying the element losses before the sum over classes.
        beta: focusing exponent, finite and ``>= 0`` (GFL: 2; 0 is BCE with soft
            targets). For ``0 < beta < 1`` the factor's derivative is unbounded at
            ``sigma = y``; there ``|y - sigma|`` is clamped at the smallest normal
            number so the gradient stays finite.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        avg_factor: divisor for ``"mean"`` instead of N, e.g. the number of positives
            (mmdetection convention; GFL normalises by it).

    Returns:
        Tensor[N] for ``"none"``, else a scalar.

    Raises:
        ValueError: shapes other than two equal (N, C), non-floating inputs, targets
            outside [0, 1] (or NaN), a bad ``weight`` shape, ``beta`` or ``reduction``.
    """
    beta = check_qfl_beta(beta)
    if pred_logits.dim() != 2 or targets_score.shape != pred_logits.shape:
        raise ValueError(
            f"pred_logits and targets_score must have the same shape (N, C), got "
            f"{tuple(pred_logits.shape)} and {tuple(targets_score.shape)}"
        )
    if not (pred_logits.is_floating_point() and targets_score.is_floating_point()):
        raise ValueError(
            f"pred_logits and targets_score must be floating point, got {pred_logits.dtype} and {targets_score.dtype}"
        )
    if targets_score.numel() and not bool(((targets_score >= 0) & (targets_score <= 1)).all()):
        raise ValueError("targets_score must lie in [0, 1] (soft quality targets, e.g. IoUs)")
    if check_weight(weight, "of shape (N,) or (N, C)") is not None \
            and weight.shape not in (pred_logits.shape[:1], pred_logits.shape):
        raise ValueError(
            f"weight must have shape {tuple(pred_logits.shape[:1])} or {tuple(pred_logits.shape)}, "
            f"got {tuple(weight.shape)}"
        )
    targets_score = targets_score.to(pred_logits.dtype)
    bce = F.binary_cross_entropy_with_logits(pred_logits, targets_score, reduction="none")
    if beta == 0:
        loss = bce
    else:
        gap = (targets_score - torch.sigmoid(pred_logits)).abs()
        if beta < 1:
            gap = gap.clamp(min=torch.finfo(gap.dtype).tiny)
        loss = gap.pow(beta) * bce
    if weight is not None and weight.dim() == 2:
        loss = loss * weight
        weight = None
    return weight_reduce_loss(loss.sum(dim=1), weight, reduction, avg_factor)
