"""Full per-head objectives: the Harmonic loss applied to a detector's own per-sample losses.

Two heads are covered, by how they classify:

* softmax heads (Fast/Faster/Mask R-CNN box head, SSD): cross-entropy over the
  C+1 classes; ``beta_c = exp(-CE) = p`` (Eq. S-4).
* sigmoid heads (RetinaNet, FCOS): per-sample focal loss summed over the classes;
  ``beta_c = exp(-focal)`` by default (the supplement's general definition, Eq. S-4:
  ``beta_c = exp(-L_cls)``) or the ground-truth class probability ``p``
  (``beta_c_mode="prob"``).

Negatives keep their plain classification loss. Positives are harmonised with the
localisation loss ``L_loc = box_loss + alpha * L_HIoU`` (main paper; secondary:
``alpha = 1.5``, ``gamma = 0.8``), and the task-contrasting loss is added when
``tc_margin`` is given. Every term is summed and divided by ``avg_factor``, so the
normalisation of the detector being replaced carries over. ``positive_weight=c``
swaps the harmonic factors for constants (``beta_c = beta_r = c - 1``): the plain
loss with every positive's terms times ``c``, a control for the factors' mean size.

The options (``alpha``, ``gamma``, ``tc_margin``, ``detach_factors``, ``beta_c_mode``,
``box_loss``, ``positive_weight``) arrive as one validated
:class:`~harmonicdet.losses.options.HarmonicOptions` (``options=``, what the detectors'
heads pass), or as keywords of the same names (the low-level form, with the
objectives' defaults ``alpha = 1.5``, ``gamma = 0.8``), which build that object; they
are checked there and nowhere else. See ``docs/method.md`` for the equations.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from .box_iou import aligned_box_iou
from .harmonic_iou_loss import harmonic_iou_from_iou
from .harmonic_loss import harmonic_terms, reversed_fraction
from .options import BETA_C_MODES, BOX_LOSSES, HarmonicOptions, check_box_loss, check_positive_weight
from .reduction import check_avg_factor
from .task_contrast_loss import task_contrast_loss

__all__ = [  # BOX_LOSSES, BETA_C_MODES and check_positive_weight live in .options (imported here as before)
    "BETA_C_MODES", "BOX_LOSSES", "check_positive_weight", "harmonic_sigmoid_detection_loss",
    "harmonic_softmax_detection_loss", "localization_loss",
]

LossDict = Dict[str, Tensor]
# the objectives' defaults when the options come as keywords: the paper's L_loc (main paper, secondary sources)
OBJECTIVE_DEFAULTS: Dict[str, Any] = {"alpha": 1.5, "gamma": 0.8}


def _options(options: Optional[HarmonicOptions], box_loss: str, keywords: Mapping[str, Any]) -> HarmonicOptions:
    """The objective's validated options: ``options`` itself, or one made from the keywords (and ``box_loss``)."""
    if options is None:
        return HarmonicOptions(**{**OBJECTIVE_DEFAULTS, "box_loss": box_loss, **keywords})
    if keywords:
        raise TypeError(f"give the loss options either as options= or as keywords, not both: {sorted(keywords)}")
    if not isinstance(options, HarmonicOptions):
        raise TypeError(f"options must be a HarmonicOptions, got {type(options).__name__}")
    return options


def localization_loss(
    box_deltas: Optional[Tensor] = None,
    box_targets: Optional[Tensor] = None,
    pred_boxes: Optional[Tensor] = None,
    target_boxes: Optional[Tensor] = None,
    *,
    box_loss: str = "smooth_l1",
    smooth_l1_beta: float = 1.0 / 9,
    alpha: float = 1.5,
    gamma: float = 0.8,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Per-positive localisation loss ``L_loc = box_loss + alpha * L_HIoU`` and the boxes' IoU.

    Args:
        box_deltas: Tensor[P, 4], predicted regression offsets (``"smooth_l1"``, ``"l1"``).
        box_targets: Tensor[P, 4], their targets.
        pred_boxes: Tensor[P, 4], decoded ``(x1, y1, x2, y2)`` predictions (``"giou"``,
            ``alpha > 0``, and the returned IoU).
        target_boxes: Tensor[P, 4], matched ground-truth boxes.
        box_loss: ``"smooth_l1"`` | ``"l1"`` (summed over the 4 offsets), ``"giou"``
            (torchvision's GIoU loss on the boxes) or ``"none"``.
        smooth_l1_beta: SmoothL1 transition point (torchvision R-CNN: 1/9, SSD: 1).
        alpha: weight of the Harmonic IoU loss (Eq. S-11); 0 disables it.
        gamma: HIoU focusing parameter, ``<= 1`` (Eq. S-13); 0 gives the plain IoU loss.

    Returns:
        ``(loc_loss, iou)``: Tensor[P], and Tensor[P] when boxes are given, else ``None``.
    """
    check_box_loss(box_loss)
    have_boxes = pred_boxes is not None and target_boxes is not None
    if (box_loss == "giou" or alpha > 0) and not have_boxes:
        raise ValueError(f"box_loss={box_loss!r} with alpha={alpha} needs pred_boxes and target_boxes")
    terms = []
    if box_loss in ("smooth_l1", "l1"):
        if box_deltas is None or box_targets is None:
            raise ValueError(f"box_loss={box_loss!r} needs box_deltas and box_targets")
        if box_loss == "smooth_l1":
            elementwise = F.smooth_l1_loss(box_deltas, box_targets, beta=smooth_l1_beta, reduction="none")
        else:
            elementwise = F.l1_loss(box_deltas, box_targets, reduction="none")
        terms.append(elementwise.sum(dim=-1))
    iou = aligned_box_iou(pred_boxes, target_boxes) if have_boxes else None
    if box_loss == "giou":
        terms.append(generalized_box_iou_loss(pred_boxes, target_boxes))
    if alpha > 0:
        terms.append(alpha * harmonic_iou_from_iou(iou, gamma))
    if not terms:
        raise ValueError("box_loss='none' with alpha=0 leaves no localisation loss")
    loc = terms[0]
    for term in terms[1:]:
        loc = loc + term.to(loc.dtype)
    return loc, iou


def _harmonise_positives(
    cls_loss: Tensor,
    positive: Tensor,
    loc_loss: Tensor,
    class_probs_pos: Tensor,
    gt_prob: Tensor,
    iou: Optional[Tensor],
    *,
    beta_c: Optional[Tensor],
    options: HarmonicOptions,
    avg_factor: Union[float, Tensor],
    return_stats: bool,
) -> Union[LossDict, Tuple[LossDict, LossDict]]:
    """Shared tail of both objectives: harmonise the positives, keep negatives plain, normalise.

    With ``positive_weight = c`` the factors are the constants ``beta_c = beta_r = c - 1``
    instead (the ``standard_posweight`` control); the stats still report the values
    ``exp(-cls)``/``exp(-L_loc)`` the harmonic factors would take, for comparison.
    """
    check_avg_factor(avg_factor)
    detach_factors, tc_margin, positive_weight = options.detach_factors, options.tc_margin, options.positive_weight
    if positive_weight is None:
        cls_pos, loc_term = harmonic_terms(
            cls_loss[positive], loc_loss.to(cls_loss.dtype), detach_factors=detach_factors, beta_c=beta_c
        )
    else:  # Eq. S-1 with constant factors beta_c = beta_r = c - 1: the positives' terms times c
        cls_pos, loc_term = positive_weight * cls_loss[positive], positive_weight * loc_loss.to(cls_loss.dtype)
    losses = {
        "loss_cls": (cls_loss[~positive].sum() + cls_pos.sum()) / avg_factor,
        "loss_loc": loc_term.sum() / avg_factor,
    }
    if tc_margin is not None:
        if iou is None:
            raise ValueError("the task-contrasting loss (tc_margin) needs pred_boxes and target_boxes")
        tc = task_contrast_loss(class_probs_pos, gt_prob, iou, margin=tc_margin)
        losses["loss_tc"] = tc.sum() / avg_factor
    if not return_stats:
        return losses
    with torch.no_grad():
        num_pos = max(int(loc_loss.numel()), 1)
        beta_c_pos = beta_c if beta_c is not None else torch.exp(-cls_loss[positive])
        beta_r_pos = torch.exp(-loc_loss.to(cls_loss.dtype))
        # means over positives; 0 when a batch has none; constant factors (the control) never reverse
        stats = {
            "beta_c": beta_c_pos.sum() / num_pos,
            "beta_r": beta_r_pos.sum() / num_pos,
            "reversed_frac": reversed_fraction(beta_c_pos, beta_r_pos, detach_factors)
            if positive_weight is None else beta_r_pos.new_zeros(()),
            "num_pos": torch.tensor(float(loc_loss.numel())),
        }
    return losses, stats


def harmonic_softmax_detection_loss(
    class_logits: Tensor,
    labels: Tensor,
    box_deltas: Optional[Tensor] = None,
    box_targets: Optional[Tensor] = None,
    pred_boxes: Optional[Tensor] = None,
    target_boxes: Optional[Tensor] = None,
    *,
    options: Optional[HarmonicOptions] = None,
    box_loss: str = "smooth_l1",
    smooth_l1_beta: float = 1.0 / 9,
    background_label: int = 0,
    avg_factor: Optional[Union[float, Tensor]] = None,
    return_stats: bool = False,
    **option_keywords: Any,
) -> Union[LossDict, Tuple[LossDict, LossDict]]:
    """Harmonic detection loss of a softmax head (Eq. S-1 with ``CE = -log p``).

    ``loss_cls = (sum_neg CE + sum_pos (1 + exp(-L_loc)) CE) / avg_factor``,
    ``loss_loc = sum_pos (1 + p) L_loc / avg_factor`` and, with ``tc_margin``,
    ``loss_tc = sum_pos L_TC / avg_factor``; ``L_loc`` as in :func:`localization_loss`.

    Args:
        class_logits: Tensor[N, C+1], logits of the sampled proposals/anchors.
        labels: Tensor[N] int64, class of each sample; ``background_label`` for negatives.
        box_deltas, box_targets, pred_boxes, target_boxes: Tensor[P, 4] for the P
            positives, in the order of ``labels != background_label``.
        options: the validated :class:`~harmonicdet.losses.options.HarmonicOptions`
            (``alpha``, ``gamma``, ``tc_margin``, ``detach_factors``, ``positive_weight``,
            ``box_loss``; ``beta_c_mode`` does not apply: ``exp(-CE) = p``). ``None``: made
            from ``option_keywords``.
        box_loss: the head's own box loss (:func:`localization_loss`), used unless
            ``options.box_loss`` is set.
        smooth_l1_beta: see :func:`localization_loss`.
        background_label: label of negatives (torchvision: 0, mmdetection: C).
        avg_factor: divisor of every summed term; default N, as torchvision's
            ``fastrcnn_loss`` (mean CE over sampled RoIs, box loss sum / N).
        return_stats: also return ``{"beta_c", "beta_r", "reversed_frac", "num_pos"}``
            (detached means over the positives; see :func:`reversed_fraction`) for logging.
        **option_keywords: without ``options``, the fields of ``HarmonicOptions`` as
            keywords (defaults ``alpha=1.5``, ``gamma=0.8``; ``tc_margin=None`` leaves the
            TC loss out; ``detach_factors`` ``True``/``False``/``"beta_c"``/``"beta_r"``;
            ``positive_weight=c`` replaces the harmonic factors by the constants
            ``beta_c = beta_r = c - 1``, so every positive's CE and ``L_loc`` are multiplied
            by ``c``, negatives unchanged: the ``standard_posweight`` control, ``c = 1`` the
            plain loss). Not together with ``options`` (``TypeError``).

    Returns:
        ``{"loss_cls", "loss_loc"[, "loss_tc"]}`` scalars, and the stats if asked.
    """
    options = _options(options, box_loss, option_keywords)
    if class_logits.dim() != 2 or labels.shape != class_logits.shape[:1]:
        raise ValueError(
            f"expected class_logits (N, C+1) and labels (N,), got {tuple(class_logits.shape)} and {tuple(labels.shape)}"
        )
    positive = labels != background_label
    cls_loss = F.cross_entropy(class_logits, labels, reduction="none")
    loc_loss, iou = localization_loss(
        box_deltas, box_targets, pred_boxes, target_boxes, box_loss=options.box_loss or box_loss,
        smooth_l1_beta=smooth_l1_beta, alpha=options.alpha, gamma=options.gamma,
    )
    class_probs_pos = gt_prob = None
    if options.tc_margin is not None:
        class_probs_pos = F.softmax(class_logits[positive], dim=1)
        gt_prob = class_probs_pos.gather(1, labels[positive, None]).squeeze(1)
    return _harmonise_positives(
        cls_loss, positive, loc_loss, class_probs_pos, gt_prob, iou, beta_c=None, options=options,
        avg_factor=labels.numel() if avg_factor is None else avg_factor, return_stats=return_stats,
    )


def harmonic_sigmoid_detection_loss(
    cls_logits: Tensor,
    cls_targets: Tensor,
    box_deltas: Optional[Tensor] = None,
    box_targets: Optional[Tensor] = None,
    pred_boxes: Optional[Tensor] = None,
    target_boxes: Optional[Tensor] = None,
    *,
    options: Optional[HarmonicOptions] = None,
    box_loss: str = "l1",
    smooth_l1_beta: float = 1.0 / 9,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    avg_factor: Optional[Union[float, Tensor]] = None,
    return_stats: bool = False,
    **option_keywords: Any,
) -> Union[LossDict, Tuple[LossDict, LossDict]]:
    """Harmonic detection loss of a sigmoid (focal-loss) head, e.g. RetinaNet or FCOS.

    ``cls_i = sum_k FL(logit_ik, target_ik)`` (torchvision's ``sigmoid_focal_loss``);
    ``loss_cls = (sum_neg cls + sum_pos (1 + exp(-L_loc)) cls) / avg_factor`` and
    ``loss_loc = sum_pos (1 + beta_c) L_loc / avg_factor`` with ``beta_c = exp(-cls)``
    (``beta_c_mode="loss"``, the general definition) or the sigmoid probability of
    the ground-truth class (``"prob"``). With ``tc_margin`` the class distribution of
    the TC loss is the sigmoid probabilities normalised to sum to 1. Rows that the
    detector ignores (e.g. RetinaNet's anchors between the IoU thresholds) must be
    removed beforehand.

    Args:
        cls_logits: Tensor[M, C], logits of the anchors/locations that count.
        cls_targets: Tensor[M, C], one-hot targets; all-zero rows are negatives.
        box_deltas, box_targets, pred_boxes, target_boxes: Tensor[P, 4] for the P
            positive rows, in order.
        options: the validated :class:`~harmonicdet.losses.options.HarmonicOptions`;
            ``None``: made from ``option_keywords``.
        box_loss: the head's own box loss (torchvision RetinaNet: ``"l1"``; FCOS:
            ``"giou"``), used unless ``options.box_loss`` is set.
        smooth_l1_beta: see :func:`localization_loss`.
        focal_alpha, focal_gamma: focal loss parameters.
        avg_factor: divisor of every summed term; default ``max(1, P)``, as
            torchvision's RetinaNet and FCOS.
        return_stats: also return ``{"beta_c", "beta_r", "reversed_frac", "num_pos"}`` for logging.
        **option_keywords: without ``options``, the fields of ``HarmonicOptions`` as
            keywords, as for :func:`harmonic_softmax_detection_loss` (defaults ``alpha=1.5``,
            ``gamma=0.8``), plus ``beta_c_mode`` (``"loss"`` | ``"prob"``).

    Returns:
        ``{"loss_cls", "loss_loc"[, "loss_tc"]}`` scalars, and the stats if asked.
    """
    options = _options(options, box_loss, option_keywords)
    if cls_logits.dim() != 2 or cls_targets.shape != cls_logits.shape:
        raise ValueError(
            f"expected cls_logits and cls_targets of the same shape (M, C), got "
            f"{tuple(cls_logits.shape)} and {tuple(cls_targets.shape)}"
        )
    positive = cls_targets.amax(dim=1) > 0
    cls_loss = sigmoid_focal_loss(
        cls_logits, cls_targets.to(cls_logits.dtype), alpha=focal_alpha, gamma=focal_gamma, reduction="none"
    ).sum(dim=1)
    loc_loss, iou = localization_loss(
        box_deltas, box_targets, pred_boxes, target_boxes, box_loss=options.box_loss or box_loss,
        smooth_l1_beta=smooth_l1_beta, alpha=options.alpha, gamma=options.gamma,
    )
    beta_c_from_prob = options.beta_c_mode == "prob"
    class_probs_pos = gt_prob = None
    if beta_c_from_prob or options.tc_margin is not None:
        class_probs_pos = torch.sigmoid(cls_logits[positive])
        gt_prob = class_probs_pos.gather(1, cls_targets[positive].argmax(dim=1, keepdim=True)).squeeze(1)
    return _harmonise_positives(
        cls_loss, positive, loc_loss, class_probs_pos, gt_prob, iou,
        beta_c=gt_prob if beta_c_from_prob else None, options=options,
        avg_factor=max(1, int(loc_loss.numel())) if avg_factor is None else avg_factor, return_stats=return_stats,
    )
