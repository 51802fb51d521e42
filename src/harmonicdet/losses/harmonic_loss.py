"""The Harmonic loss: classification and localisation losses that weight each other (Eq. S-1)."""

from __future__ import annotations

from typing import Optional, Tuple, Union

DetachFactors = Union[bool, str]
DETACH_MODES: Tuple[DetachFactors, ...] = (False, True, "beta_c", "beta_r")

import torch
from torch import Tensor
from torch.autograd.function import Function, FunctionCtx, once_differentiable

from .reduction import check_float_tensor, on_host, weight_reduce_loss


def _check_pair(cls_loss: Tensor, loc_loss: Tensor) -> None:
    check_float_tensor(cls_loss, "cls_loss", "(N,)")
    check_float_tensor(loc_loss, "loc_loss", "(N,)")
    if cls_loss.shape != loc_loss.shape:
        raise ValueError(
            f"cls_loss and loc_loss must have the same shape (one value per positive), "
            f"got {tuple(cls_loss.shape)} and {tuple(loc_loss.shape)}"
        )
    if not (cls_loss.is_floating_point() and loc_loss.is_floating_point()):
        raise ValueError(f"losses must be floating point, got {cls_loss.dtype} and {loc_loss.dtype}")


def detach_flags(detach_factors: DetachFactors) -> Tuple[bool, bool]:
    """``(detach_beta_c, detach_beta_r)`` of a ``detach_factors`` mode; ``ValueError`` for any other value.

    ``False``: both factors carry gradient (the supplement's S-5/S-10); ``True``: both are
    constants; ``"beta_c"`` / ``"beta_r"``: only that factor is a constant.
    """
    if detach_factors is True or detach_factors is False:
        return detach_factors, detach_factors
    if detach_factors in ("beta_c", "beta_r"):
        return detach_factors == "beta_c", detach_factors == "beta_r"
    raise ValueError(f"detach_factors must be one of {DETACH_MODES}, got {detach_factors!r}")


def harmonic_factors(cls_loss: Tensor, loc_loss: Tensor) -> Tuple[Tensor, Tensor]:
    """The harmonic factors ``(beta_c, beta_r)`` of each positive sample (Eq. S-4).

    ``beta_c = exp(-cls_loss)`` is the classification confidence (equal to the
    ground-truth class probability ``p`` when ``cls_loss`` is cross-entropy) and
    weights the localisation loss; ``beta_r = exp(-loc_loss)`` is the localisation
    quality and weights the classification loss.

    Args:
        cls_loss: Tensor[N], per-positive classification loss.
        loc_loss: Tensor[N], per-positive localisation loss.

    Returns:
        ``(beta_c, beta_r)``, each Tensor[N] in (0, 1] for non-negative losses.
    """
    _check_pair(cls_loss, loc_loss)
    return torch.exp(-cls_loss), torch.exp(-loc_loss)


def reversed_fraction(beta_c: Tensor, beta_r: Tensor, detach_factors: DetachFactors = False) -> Tensor:
    """Fraction of positives whose box-gradient factor of Eq. S-5 is negative (their box is pushed away).

    The factor is ``1 + p + exp(-L) log p`` with ``p = beta_c`` (for sigmoid heads
    ``beta_c`` stands in for ``p``) and ``exp(-L) = beta_r``; it is ``1 + beta_c > 0``
    when ``beta_r`` is detached (``detach_factors`` ``True`` or ``"beta_r"``).

    Args:
        beta_c, beta_r: Tensor[N], the factors of Eq. S-4.
        detach_factors: the mode of :func:`harmonic_terms`.

    Returns:
        A scalar tensor in [0, 1]; 0 for N = 0.
    """
    _check_pair(beta_c, beta_r)
    if detach_flags(detach_factors)[1] or beta_c.numel() == 0:
        return beta_c.new_zeros(())
    factor = 1 + beta_c + beta_r * torch.log(beta_c)
    return (factor < 0).to(beta_c.dtype).mean()


class _HarmonicTerms(Function):
    """Eq. S-1's two summands with the closed-form backward (S-5, S-10): half the kernels of autograd's graph.

    With ``beta_r = exp(-L_loc)`` and ``beta_c = exp(-L_cls)`` (or a given ``beta_c``),
    for output gradients ``g_c``, ``g_r`` of ``(1 + beta_r) L_cls`` and ``(1 + beta_c) L_loc``:
    ``dL/dL_cls = g_c (1 + beta_r) - g_r beta_c L_loc`` (the last term only when ``beta_c``
    is ``exp(-L_cls)``), ``dL/dL_loc = g_r (1 + beta_c) - g_c beta_r L_cls`` and
    ``dL/dbeta_c = g_r L_loc`` for a given ``beta_c``. A detached factor drops the terms
    its own gradient contributes: ``beta_r`` the ``- g_c beta_r L_cls`` term, ``beta_c``
    the ``- g_r beta_c L_loc`` term (or ``dL/dbeta_c``).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, cls_loss: Tensor, loc_loss: Tensor, beta_c: Optional[Tensor],
                detach_beta_c: bool, detach_beta_r: bool):
        own_beta_c = beta_c is None
        if own_beta_c:
            beta_c = torch.exp(-cls_loss)
        beta_r = torch.exp(-loc_loss)
        ctx.own_beta_c = own_beta_c
        ctx.detach_beta_c, ctx.detach_beta_r = detach_beta_c, detach_beta_r
        ctx.save_for_backward(cls_loss, loc_loss, beta_c, beta_r)
        return torch.addcmul(cls_loss, beta_r, cls_loss), torch.addcmul(loc_loss, beta_c, loc_loss)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_cls_term: Tensor, grad_loc_term: Tensor):
        cls_loss, loc_loss, beta_c, beta_r = ctx.saved_tensors
        grad_cls = grad_loc = grad_beta_c = None
        if ctx.needs_input_grad[0]:
            grad_cls = torch.addcmul(grad_cls_term, grad_cls_term, beta_r)
            if ctx.own_beta_c and not ctx.detach_beta_c:
                grad_cls.addcmul_(grad_loc_term * loc_loss, beta_c, value=-1)
        if ctx.needs_input_grad[1]:
            grad_loc = torch.addcmul(grad_loc_term, grad_loc_term, beta_c)
            if not ctx.detach_beta_r:
                grad_loc.addcmul_(grad_cls_term * cls_loss, beta_r, value=-1)
        if not ctx.own_beta_c and not ctx.detach_beta_c and ctx.needs_input_grad[2]:
            grad_beta_c = grad_loc_term * loc_loss
        return grad_cls, grad_loc, grad_beta_c, None, None


def harmonic_terms(
    cls_loss: Tensor,
    loc_loss: Tensor,
    *,
    detach_factors: DetachFactors = False,
    beta_c: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """The two summands of the Harmonic loss (Eq. S-1), ``((1 + beta_r) * cls_loss, (1 + beta_c) * loc_loss)``.

    Detectors log them as their classification and localisation terms; their sum
    is :func:`harmonic_loss`. Arguments as in :func:`harmonic_loss`. The gradient is
    the closed form of S-5/S-10 (a custom autograd ``Function``; first order only).
    """
    _check_pair(cls_loss, loc_loss)
    if beta_c is not None and check_float_tensor(beta_c, "beta_c", "(N,)").shape != cls_loss.shape:
        raise ValueError(f"beta_c must have shape {tuple(cls_loss.shape)}, got {tuple(beta_c.shape)}")
    if beta_c is not None and on_host(beta_c) and beta_c.numel() \
            and not bool(((beta_c >= 0) & (beta_c <= 1)).all()):
        raise ValueError("beta_c must lie in [0, 1] (a probability, e.g. the ground-truth class's), got values in "
                         f"[{float(beta_c.min()):g}, {float(beta_c.max()):g}]")
    detach_beta_c, detach_beta_r = detach_flags(detach_factors)
    return _HarmonicTerms.apply(cls_loss, loc_loss, beta_c, detach_beta_c, detach_beta_r)


def harmonic_loss(
    cls_loss: Tensor,
    loc_loss: Tensor,
    *,
    detach_factors: DetachFactors = False,
    beta_c: Optional[Tensor] = None,
    reduction: str = "none",
    weight: Optional[Tensor] = None,
    avg_factor: Optional[Union[float, Tensor]] = None,
) -> Tensor:
    """Harmonic loss of positive samples (Eq. S-1, S-6).

    ``L_Har = (1 + beta_r) * cls_loss + (1 + beta_c) * loc_loss`` with
    ``beta_r = exp(-loc_loss)`` and ``beta_c = exp(-cls_loss)``. The constant 1
    keeps the plain losses present at all times (supplement, section 2).

    By default gradients flow through the factors, which is what the supplement
    differentiates: with ``cls_loss = -log p`` and ``t = d - d_hat``,
    ``dL/dt = (1 + p + exp(-L(t)) log p) dL/dt`` (Eq. S-5) and
    ``dL/dp = L - (1 + exp(-L)) / p`` (Eq. S-10). Note that the factor of Eq. S-5
    is negative for small ``p`` and small ``L``: the regression gradient of a
    positive the classifier scores very low points the other way. That is the
    method as written and is kept.

    Args:
        cls_loss: Tensor[N], per-positive classification loss (e.g. cross-entropy).
        loc_loss: Tensor[N], per-positive localisation loss (e.g. SmoothL1 summed
            over the 4 coordinates).
        detach_factors: which factors are constants (not the supplement's derivation):
            ``True`` both (a variant some re-implementations use), ``"beta_r"`` only
            ``beta_r``, which removes the ``exp(-L) log p`` term of S-5 (the box gradient
            becomes ``(1 + p) dL/dt``, never reversed) and keeps S-10's ``+L``;
            ``"beta_c"`` only ``beta_c``, which removes S-10's ``+L`` and keeps S-5 whole.
        beta_c: Tensor[N] in [0, 1] to use instead of ``exp(-cls_loss)``, e.g. the ground-truth
            class probability for sigmoid/focal heads, where ``exp(-focal) != p`` (its range is
            checked on the CPU, see :mod:`harmonicdet.losses.reduction`).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        weight: Tensor[N] multiplying the per-sample losses.
        avg_factor: divisor for ``"mean"`` instead of N (mmdetection convention).

    Returns:
        Tensor[N] for ``"none"``, else a scalar.
    """
    cls_term, loc_term = harmonic_terms(cls_loss, loc_loss, detach_factors=detach_factors, beta_c=beta_c)
    return weight_reduce_loss(cls_term + loc_term, weight, reduction, avg_factor)
