"""Eq. S-1 on the Hungarian-matched queries of transformers' RT-DETR and D-FINE losses: the criterion classes.

:class:`HarmonicMatchedLoss` is a mixin over transformers' ``RTDetrLoss`` (RT-DETR v1/v2) and
``DFineLoss`` (D-FINE): with options it replaces the stock ``"vfl"`` and ``"boxes"`` entries of
``losses`` by one ``"harmonic"`` entry whose :meth:`~HarmonicMatchedLoss.loss_harmonic` returns
``loss_vfl``, ``loss_bbox``, ``loss_giou`` (and ``loss_hiou``, ``loss_tc``). The stock ``forward``
does the rest unchanged: Hungarian matching, the final layer, every auxiliary decoder layer, the
encoder's top-k and the denoising groups, each multiplied by ``weight_dict`` and given its key
suffix (``_aux_i``, ``_dn_i``). D-FINE's ``"local"`` losses (FGL, DDF) stay the model's own.

Per matched query ``i`` (class ``c``, IoU ``t`` of its box with its ground truth, detached as
the stock loss takes it; ``N`` matched queries, ``num_boxes`` the stock normaliser):

* the varifocal loss (VFL) sums ``w BCE(x, y)`` over all queries and classes: ``y = t`` and
  ``w = t`` at ``(i, c)``, ``y = 0`` and ``w = alpha p^gamma`` elsewhere. Everything but the
  ``(i, c)`` entries is kept. There ``L_cls = BCE(x_ic, t) - H(t)`` = KL(t || sigmoid(x_ic)),
  ``H`` the binary entropy, the minimum of BCE against the soft target: ``beta_c = exp(-L_cls)``
  is 1 when the score equals the IoU, as ``exp(-CE) = p`` is for the paper's one-hot targets;
  ``beta_c_mode="prob"``: ``beta_c = sigmoid(x_ic)``. The entry becomes
  ``t [(1 + beta_r) L_cls + H(t)]``: VFL's weight ``t`` stays outside, the entropy is a constant.
* ``L_loc = (w_bbox L1 + w_giou (1 - GIoU) [+ alpha w_giou HIoU]) / G``, ``G`` the sum of those
  weights (``weight_loss_*`` of the config; ``L1`` summed over ``cx, cy, w, h``): the box loss as
  the model weighs it, on the scale of one unit-weight loss, so ``beta_r = exp(-L_loc)`` keeps
  a spread (the weights outside the exponential, as the Ultralytics integration's gains).
  ``G (1 + beta_c) L_loc`` is the box loss; it is logged split into ``loss_bbox``, ``loss_giou``
  and ``loss_hiou`` by each part's share (after ``weight_dict``, as the stock keys).
* ``loss_tc``: the task-contrasting loss of the matched queries (sigmoid scores renormalised),
  weight 1. Every sum is divided by ``num_boxes`` as the stock terms are.

With ``options=None`` the class is the stock criterion, untouched.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.image_transforms import center_to_corners_format
from transformers.loss.loss_d_fine import DFineLoss
from transformers.loss.loss_for_object_detection import box_iou, generalized_box_iou
from transformers.loss.loss_rt_detr import RTDetrLoss

from harmonicdet.losses.harmonic_iou_loss import harmonic_iou_from_iou
from harmonicdet.losses.harmonic_loss import harmonic_terms, reversed_fraction
from harmonicdet.losses.options import HarmonicOptions
from harmonicdet.losses.task_contrast_loss import task_contrast_loss

__all__ = ["BOX_KEYS", "QUERY_KEYS", "HarmonicDFineLoss", "HarmonicMatchedLoss", "HarmonicRTDetrLoss"]

BOX_KEYS = ("loss_bbox", "loss_giou", "loss_hiou")  # the parts of L_loc, in their order
QUERY_KEYS = ("beta_c", "beta_r", "beta_c_kl", "beta_c_bce", "beta_c_ceiling", "prob", "target", "loc")


class HarmonicMatchedLoss:
    """Mixin over a transformers DETR loss (``RTDetrLoss`` or a subclass): Eq. S-1 per matched query.

    Args:
        config: the model's config (matcher costs, ``weight_loss_*``, ``focal_loss_alpha``/``gamma``).
        options: validated :class:`~harmonicdet.losses.HarmonicOptions` (``box_loss`` and
            ``positive_weight`` unset); ``None``: the stock loss.

    Attributes:
        group_records: one dict per supervised group of the last ``forward``, in the order of the loss dict's
            key suffixes (the final layer, ``aux_0``...; ``dn_0``...): detached Tensor[N] of
            :data:`QUERY_KEYS` and ``reversed_frac`` (a scalar).
    """

    def __init__(self, config: Any, options: Optional[HarmonicOptions] = None) -> None:
        super().__init__(config)
        self.options = options
        self.group_records: List[Dict[str, Tensor]] = []
        if options is None:
            return
        weights = (self.weight_dict["loss_bbox"], self.weight_dict["loss_giou"])
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weight_loss_bbox and weight_loss_giou must be >= 0 with a positive sum for the "
                             f"harmonic loss, got {weights[0]} and {weights[1]}")
        self.losses = ["harmonic" if name == "vfl" else name for name in self.losses if name != "boxes"]
        if options.alpha > 0:
            self.weight_dict["loss_hiou"] = options.alpha * self.weight_dict["loss_giou"]
        if options.tc_margin is not None:
            self.weight_dict["loss_tc"] = 1.0

    def forward(self, outputs: Dict[str, Any], targets: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """The stock ``forward`` (every group), recording each group's statistics in ``group_records``."""
        self.group_records = []
        return super().forward(outputs, targets)

    def get_loss(self, loss: str, outputs: Dict[str, Any], targets, indices, num_boxes: float) -> Dict[str, Tensor]:
        """``"harmonic"``: :meth:`loss_harmonic`; any other name: the stock loss."""
        if loss == "harmonic":
            return self.loss_harmonic(outputs, targets, indices, num_boxes)
        return super().get_loss(loss, outputs, targets, indices, num_boxes)

    def loss_harmonic(self, outputs: Dict[str, Any], targets, indices, num_boxes: float) -> Dict[str, Tensor]:
        """The VFL and box terms of one group with Eq. S-1 on its matched queries (module docstring), before
        ``weight_dict``: ``loss_vfl``, ``loss_bbox``, ``loss_giou`` (, ``loss_hiou``, ``loss_tc``)."""
        opts = self.options
        idx = self._get_source_permutation_idx(indices)
        src_logits = outputs["logits"]
        dtype = src_logits.dtype
        src_boxes = outputs["pred_boxes"][idx]
        target_boxes = torch.cat([t["boxes"][i] for t, (_, i) in zip(targets, indices)], dim=0)
        matched_classes = torch.cat([t["class_labels"][i] for t, (_, i) in zip(targets, indices)])
        pred_xyxy, target_xyxy = center_to_corners_format(src_boxes), center_to_corners_format(target_boxes)
        iou = torch.diag(box_iou(pred_xyxy, target_xyxy)[0])

        # VFL's unmatched entries: target 0, weight alpha p^gamma (zero at the matched entries)
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=src_logits.device)
        target_classes[idx] = matched_classes
        one_hot = F.one_hot(target_classes, num_classes=self.num_classes + 1)[..., :-1]
        other_weight = (self.alpha * torch.sigmoid(src_logits.detach()).pow(self.gamma) * (1 - one_hot)).to(dtype)
        others = F.binary_cross_entropy_with_logits(src_logits, torch.zeros_like(src_logits), weight=other_weight,
                                                    reduction="sum")

        logit = src_logits[idx[0], idx[1], matched_classes]
        target = iou.detach().to(dtype)
        bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
        entropy = -(torch.special.xlogy(target, target) + torch.special.xlogy(1 - target, 1 - target))
        cls_loss = (bce - entropy).clamp(min=0)  # KL(t || p); rounding can leave it a hair below 0

        weights = [self.weight_dict["loss_bbox"], self.weight_dict["loss_giou"]]
        parts = [F.l1_loss(src_boxes, target_boxes, reduction="none").sum(-1),
                 1 - torch.diag(generalized_box_iou(pred_xyxy, target_xyxy))]
        if opts.alpha > 0:
            weights.append(self.weight_dict["loss_hiou"])
            parts.append(harmonic_iou_from_iou(iou, opts.gamma))
        total_weight = sum(weights)
        loc_loss = sum(w * part for w, part in zip(weights, parts)) / total_weight
        prob = torch.sigmoid(logit)
        beta_c = prob if opts.beta_c_mode == "prob" else None
        cls_term, loc_term = harmonic_terms(cls_loss, loc_loss.to(dtype), detach_factors=opts.detach_factors,
                                            beta_c=beta_c)

        losses = {"loss_vfl": (others + (target * (cls_term + entropy)).sum()) / num_boxes}
        with torch.no_grad():  # each part's share of L_loc, to log the box loss under the stock keys
            positive = loc_loss > 0
            shares = [torch.where(positive, w * part / loc_loss.clamp(min=torch.finfo(loc_loss.dtype).tiny),
                                  torch.full_like(part, w)) / total_weight for w, part in zip(weights, parts)]
        for key, w, share in zip(BOX_KEYS, weights, shares):
            scale = total_weight / w if w > 0 else 0.0  # weight_dict multiplies by w again
            losses[key] = (loc_term * share.to(dtype)).sum() * scale / num_boxes
        if opts.tc_margin is not None:
            probs = torch.sigmoid(src_logits[idx])
            losses["loss_tc"] = task_contrast_loss(probs, prob, iou.to(prob.dtype), margin=opts.tc_margin).sum() \
                / num_boxes
        self._record(cls_loss, loc_loss, bce, entropy, prob, target, beta_c)
        return losses

    @torch.no_grad()
    def _record(self, cls_loss, loc_loss, bce, entropy, prob, target, beta_c) -> None:
        beta_r = torch.exp(-loc_loss)
        beta_c_kl = torch.exp(-cls_loss)
        used = beta_c if beta_c is not None else beta_c_kl
        record = {"beta_c": used, "beta_r": beta_r, "beta_c_kl": beta_c_kl, "beta_c_bce": torch.exp(-bce),
                  "beta_c_ceiling": torch.exp(-entropy), "prob": prob, "target": target, "loc": loc_loss}
        record = {key: value.detach().float() for key, value in record.items()}
        record["reversed_frac"] = reversed_fraction(record["beta_c"], record["beta_r"], self.options.detach_factors)
        self.group_records.append(record)


class HarmonicRTDetrLoss(HarmonicMatchedLoss, RTDetrLoss):
    """transformers' ``RTDetrLoss`` (RT-DETR v1, v2) with Eq. S-1 on the matched queries (see the mixin)."""


class HarmonicDFineLoss(HarmonicMatchedLoss, DFineLoss):
    """transformers' ``DFineLoss`` (D-FINE) with Eq. S-1 on the matched queries; FGL and DDF are the model's own."""
