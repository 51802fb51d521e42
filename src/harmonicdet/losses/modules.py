"""``nn.Module`` wrappers with mmdetection's loss interface.

Each module takes ``loss_weight`` and ``reduction`` at construction and is called
as ``loss(pred, target, weight=None, avg_factor=None, reduction_override=None)``,
so an mmdetection config can name it after registering it::

    from mmdet.registry import MODELS
    from harmonicdet.losses import HarmonicIoULoss
    MODELS.register_module(module=HarmonicIoULoss)
    # loss_bbox=dict(type="HarmonicIoULoss", gamma=0.8, loss_weight=1.5)

(:class:`QualityFocalLoss` takes the dense soft-target matrix, not mmdetection's
``(labels, scores)`` tuple.)
"""

from __future__ import annotations

from typing import Optional, Union

from torch import Tensor, nn

from harmonicdet.checks import check_finite_number

from .harmonic_iou_loss import check_hiou_gamma, harmonic_iou_loss
from .harmonic_loss import DetachFactors, detach_flags, harmonic_loss
from .options import check_margin
from .quality_focal_loss import check_qfl_beta, quality_focal_loss
from .reduction import check_reduction
from .task_contrast_loss import task_contrast_loss


class _MMDetLoss(nn.Module):
    """``loss_weight`` and ``reduction`` handling shared by the wrappers."""

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.loss_weight = check_finite_number(loss_weight, "loss_weight", at_least=0)

    def _reduction(self, reduction_override: Optional[str]) -> str:
        # an override is checked once, where the loss is reduced (weight_reduce_loss)
        return reduction_override if reduction_override is not None else self.reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, loss_weight={self.loss_weight}"


class HarmonicIoULoss(_MMDetLoss):
    """Harmonic IoU loss (Eq. S-11) as a module; see :func:`harmonic_iou_loss`.

    ``forward(pred, target)`` takes Tensor[N, 4] ``(x1, y1, x2, y2)`` boxes;
    ``weight`` is Tensor[N] or Tensor[N, 4] (averaged over coordinates).
    """

    def __init__(self, gamma: float = 0.8, eps: float = 1e-7, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight)
        self.gamma = check_hiou_gamma(gamma)
        self.eps = eps

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Optional[Tensor] = None,
        avg_factor: Optional[Union[float, Tensor]] = None,
        reduction_override: Optional[str] = None,
    ) -> Tensor:
        loss = harmonic_iou_loss(
            pred, target, self.gamma, reduction=self._reduction(reduction_override),
            weight=weight, avg_factor=avg_factor, eps=self.eps,
        )
        return self.loss_weight * loss


class HarmonicLoss(_MMDetLoss):
    """Harmonic combination (Eq. S-1) of per-positive losses; see :func:`harmonic_loss`.

    ``forward(cls_loss, loc_loss)`` takes Tensor[N] classification and
    localisation losses of the same positives (e.g. from mmdetection losses built
    with ``reduction="none"``).
    """

    def __init__(self, detach_factors: DetachFactors = False, reduction: str = "mean",
                 loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight)
        detach_flags(detach_factors)  # refuse an unknown mode at construction, not at the first forward
        self.detach_factors = detach_factors

    def forward(
        self,
        cls_loss: Tensor,
        loc_loss: Tensor,
        weight: Optional[Tensor] = None,
        avg_factor: Optional[Union[float, Tensor]] = None,
        reduction_override: Optional[str] = None,
    ) -> Tensor:
        loss = harmonic_loss(
            cls_loss, loc_loss, detach_factors=self.detach_factors,
            reduction=self._reduction(reduction_override), weight=weight, avg_factor=avg_factor,
        )
        return self.loss_weight * loss


class TaskContrastLoss(_MMDetLoss):
    """Task-contrasting loss as a module; see :func:`task_contrast_loss`.

    ``forward(class_probs, target)`` with ``target = (gt_prob, iou)``, each Tensor[N].
    """

    def __init__(self, margin: float = 0.2, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight)
        self.margin = check_margin(margin)

    def forward(
        self,
        class_probs: Tensor,
        target: "tuple[Tensor, Tensor]",
        weight: Optional[Tensor] = None,
        avg_factor: Optional[Union[float, Tensor]] = None,
        reduction_override: Optional[str] = None,
    ) -> Tensor:
        gt_prob, iou = target
        loss = task_contrast_loss(
            class_probs, gt_prob, iou, self.margin,
            reduction=self._reduction(reduction_override), weight=weight, avg_factor=avg_factor,
        )
        return self.loss_weight * loss


class QualityFocalLoss(_MMDetLoss):
    """Quality Focal Loss (GFL) as a module; see :func:`quality_focal_loss`.

    ``forward(pred, target)`` takes Tensor[N, C] sigmoid logits and Tensor[N, C]
    soft targets in [0, 1] (the IoU at a positive's class column, 0 elsewhere);
    ``weight`` is Tensor[N] or Tensor[N, C]. Unlike mmdetection's module, the target
    is this dense matrix, not a ``(labels, scores)`` tuple.
    """

    def __init__(self, beta: float = 2.0, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight)
        self.beta = check_qfl_beta(beta)

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        weight: Optional[Tensor] = None,
        avg_factor: Optional[Union[float, Tensor]] = None,
        reduction_override: Optional[str] = None,
    ) -> Tensor:
        loss = quality_focal_loss(
            pred, target, weight=weight, beta=self.beta,
            reduction=self._reduction(reduction_override), avg_factor=avg_factor,
        )
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f"beta={self.beta}, " + super().extra_repr()
