"""FCOS heads: per-level positive counts for every preset, and the harmonic head whose ``compute_loss`` harmonises.

Per-level counts are recorded by the head (not by an ``FCOS`` subclass): the head's
``forward`` sees the feature maps, so it knows the level sizes, and its
``compute_loss`` receives the matched ground-truth index of every location. The
``standard`` preset therefore uses :class:`StandardFCOSHead`, an ``FCOSHead`` whose
``forward`` and ``compute_loss`` call torchvision's and only read their inputs, so its
losses and outputs are torchvision's bit for bit.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.fcos import FCOSHead

from harmonicdet.losses import HarmonicOptions, harmonic_sigmoid_detection_loss

from .stats import HarmonicStatsMixin, StatsMixin

FIRST_LEVEL = 3  # build_detector's FCOS pyramid is P3-P7


class FCOSLevelStatsMixin(StatsMixin):
    """Mixin for ``FCOSHead`` subclasses: counts the foreground locations per pyramid level.

    :meth:`forward` notes the number of locations of each input feature map (FCOS
    has one anchor per location) and calls the head's forward; :meth:`_level_stats`
    splits the matched indices of a ``compute_loss`` call by level and returns
    ``{"pos_p3": ..., "pos_p7": ...}`` (Tensor scalars, float, summed over the batch;
    levels named from P3 on, as the P3-P7 pyramid of ``build_detector``). It returns
    ``{}`` when the level sizes are unknown or do not add up to the number of
    locations (``compute_loss`` called on anchors of its own, as in unit tests).
    """

    _level_sizes: Optional[List[int]] = None

    def forward(self, x: List[Tensor]) -> Dict[str, Tensor]:
        self._level_sizes = [int(f.shape[-2]) * int(f.shape[-1]) for f in x]
        return super().forward(x)

    def _level_stats(self, matched_idxs: List[Tensor]) -> Dict[str, Tensor]:
        sizes = self._level_sizes
        if not sizes or not matched_idxs or any(m.numel() != sum(sizes) for m in matched_idxs):
            return {}
        with torch.no_grad():
            foreground = (torch.stack(matched_idxs) >= 0).sum(dim=0)  # per location, over the batch
            counts = torch.stack([level.sum() for level in foreground.split(sizes)]).float()
        return {f"pos_p{FIRST_LEVEL + i}": c for i, c in enumerate(counts.unbind())}


class StandardFCOSHead(FCOSLevelStatsMixin, FCOSHead):
    """torchvision's ``FCOSHead`` (``standard`` preset) that also records the per-level positive counts.

    ``compute_loss`` returns torchvision's ``FCOSHead.compute_loss`` unchanged (same
    call, same tensors: bit-identical losses and gradients) and stores
    ``last_stats = {"pos_p3", ..., "pos_p7"}``; ``forward`` is torchvision's.
    """

    def compute_loss(self, targets: List[Dict[str, Tensor]], head_outputs: Dict[str, Tensor],
                     anchors: List[Tensor], matched_idxs: List[Tensor]) -> Dict[str, Tensor]:
        losses = super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        self._record_stats(self._level_stats(matched_idxs))
        return losses


def matched_targets(targets: List[Dict[str, Tensor]], matched_idxs: List[Tensor],
                    anchors: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """Per location, as torchvision's ``FCOSHead.compute_loss``: ``(gt_boxes [N, HWA, 4],
    gt_classes [N, HWA] (-1: background), anchors [N, HWA, 4])``."""
    gt_classes, gt_boxes = [], []
    for targets_per_image, matched in zip(targets, matched_idxs):
        if len(targets_per_image["labels"]) == 0:
            classes = targets_per_image["labels"].new_zeros((len(matched),))
            boxes = targets_per_image["boxes"].new_zeros((len(matched), 4))
        else:
            classes = targets_per_image["labels"][matched.clip(min=0)]
            boxes = targets_per_image["boxes"][matched.clip(min=0)]
        classes[matched < 0] = -1
        gt_classes.append(classes)
        gt_boxes.append(boxes)
    return torch.stack(gt_boxes), torch.stack(gt_classes), torch.stack(anchors)


class HarmonicFCOSHead(FCOSLevelStatsMixin, HarmonicStatsMixin, FCOSHead):
    """``FCOSHead`` with the Harmonic loss (Eq. S-1).

    Per location, ``cls`` is the focal loss summed over the classes (``beta_c =
    exp(-cls)``, or the ground-truth class probability with ``beta_c_mode="prob"``);
    negatives keep their plain focal loss. A foreground location's ``L_loc`` is
    torchvision's GIoU loss on the decoded box when ``alpha == 0`` (``harmonic``) and
    ``alpha * L_HIoU`` otherwise (``harmonic_iou``, ``harmonicdet``): FCOS's box loss
    is already IoU-based, so HIoU *replaces* GIoU instead of being added to it
    (``box_loss="giou"`` keeps both; ``"l1"``/``"smooth_l1"`` (beta 1) act on the
    encoded ltrb offsets). The boxes are decoded with the head's ``box_coder`` from the
    anchors. The centerness loss is torchvision's and is not harmonised. Every term is
    divided by the number of foreground locations of the batch (at least 1), as
    torchvision does. With a TC margin the dict gains ``"task_contrast"``. With
    ``options.positive_weight = c`` (``standard_posweight``) the factors are the
    constants ``c - 1``. ``last_stats``: ``beta_c``, ``beta_r`` and ``pos_p3`` .. ``pos_p7``.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4, *,
                 options: HarmonicOptions) -> None:
        super().__init__(in_channels, num_anchors, num_classes, num_convs)
        self.options = options

    def compute_loss(self, targets: List[Dict[str, Tensor]], head_outputs: Dict[str, Tensor],
                     anchors: List[Tensor], matched_idxs: List[Tensor]) -> Dict[str, Tensor]:
        cls_logits = head_outputs["cls_logits"]  # [N, HWA, C]
        bbox_regression = head_outputs["bbox_regression"]  # [N, HWA, 4]
        bbox_ctrness = head_outputs["bbox_ctrness"]  # [N, HWA, 1]
        gt_boxes_t, gt_classes_t, anchors_t = matched_targets(targets, matched_idxs, anchors)
        foreground = gt_classes_t >= 0
        num_foreground = max(1, int(foreground.sum()))

        one_hot = torch.zeros_like(cls_logits)
        one_hot[foreground, gt_classes_t[foreground]] = 1.0
        pred_boxes = self.box_coder.decode(bbox_regression, anchors_t)
        reg_targets = self.box_coder.encode(anchors_t, gt_boxes_t)
        own_box_loss = "giou" if self.options.alpha == 0 else "none"  # HIoU replaces FCOS's GIoU
        offsets = (self.options.box_loss or own_box_loss) in ("l1", "smooth_l1")
        losses, stats = harmonic_sigmoid_detection_loss(
            cls_logits.flatten(0, 1), one_hot.flatten(0, 1),
            box_deltas=bbox_regression[foreground] if offsets else None,
            box_targets=reg_targets[foreground] if offsets else None,
            pred_boxes=pred_boxes[foreground], target_boxes=gt_boxes_t[foreground],
            options=self.options, box_loss=own_box_loss, smooth_l1_beta=1.0,
            avg_factor=num_foreground, return_stats=True,
        )
        self._record_stats(stats)
        self.last_stats.update(self._level_stats(matched_idxs))

        if len(reg_targets) == 0:
            ctrness_targets = reg_targets.new_zeros(reg_targets.size()[:-1])
        else:
            left_right, top_bottom = reg_targets[:, :, [0, 2]], reg_targets[:, :, [1, 3]]
            ctrness_targets = torch.sqrt((left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0])
                                         * (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0]))
        loss_ctrness = F.binary_cross_entropy_with_logits(
            bbox_ctrness.squeeze(dim=2)[foreground], ctrness_targets[foreground], reduction="sum")
        out = {"classification": losses["loss_cls"], "bbox_regression": losses["loss_loc"],
               "bbox_ctrness": loss_ctrness / num_foreground}
        if "loss_tc" in losses:
            out["task_contrast"] = losses["loss_tc"]
        return out
