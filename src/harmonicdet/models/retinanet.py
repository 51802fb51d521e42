"""RetinaNet with a harmonic head: torchvision's ``RetinaNetHead`` whose ``compute_loss`` couples its two branches."""

from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor
from torchvision.models.detection.retinanet import RetinaNetHead

from harmonicdet.losses import BOX_LOSSES, HarmonicOptions, harmonic_sigmoid_detection_loss

from .stats import HarmonicStatsMixin


class HarmonicRetinaNetHead(HarmonicStatsMixin, RetinaNetHead):
    """``RetinaNetHead`` with the Harmonic loss (Eq. S-1).

    Per anchor, ``cls`` is the focal loss summed over the classes (anchors between
    the IoU thresholds are ignored, as in torchvision); ``beta_c = exp(-cls)`` or the
    ground-truth class probability (``beta_c_mode="prob"``). A positive's ``L_loc`` is
    the head's own box loss (``regression_head._loss_type``: torchvision's default L1
    on the encoded offsets, or SmoothL1 with beta 1, or GIoU; ``box_loss`` overrides
    it) plus ``alpha * L_HIoU`` on the box decoded with the head's box coder.
    Negatives keep their plain focal loss. As in torchvision, each image's terms are
    divided by its number of foreground anchors (at least 1) and the images are
    averaged. With a TC margin the dict gains ``"task_contrast"``.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, norm_layer=None, *,
                 options: HarmonicOptions) -> None:
        super().__init__(in_channels, num_anchors, num_classes, norm_layer=norm_layer)
        self.options = options

    def compute_loss(self, targets: List[Dict[str, Tensor]], head_outputs: Dict[str, Tensor],
                     anchors: List[Tensor], matched_idxs: List[Tensor]) -> Dict[str, Tensor]:
        box_coder = self.regression_head.box_coder
        own_box_loss = self.regression_head._loss_type  # torchvision's setting, not an option: checked here
        if self.options.box_loss is None and own_box_loss not in BOX_LOSSES:
            raise ValueError(f"harmonic RetinaNet supports box losses {BOX_LOSSES}, not the head's "
                             f"bbox_reg_loss_type {own_box_loss!r}; set the option box_loss")
        totals: Dict[str, List[Tensor]] = {}
        weighted = {"beta_c": [], "beta_r": [], "reversed_frac": []}
        counts = []
        for index, (targets_per_image, matched) in enumerate(zip(targets, matched_idxs)):
            cls_logits = head_outputs["cls_logits"][index]
            regression = head_outputs["bbox_regression"][index]
            foreground = matched >= 0
            valid = matched != self.classification_head.BETWEEN_THRESHOLDS
            one_hot = torch.zeros_like(cls_logits)
            one_hot[foreground, targets_per_image["labels"][matched[foreground]]] = 1.0
            matched_boxes = targets_per_image["boxes"][matched[foreground]]
            anchors_fg = anchors[index][foreground]
            deltas = regression[foreground]
            num_foreground = foreground.sum()
            losses, stats = harmonic_sigmoid_detection_loss(
                cls_logits[valid], one_hot[valid],
                box_deltas=deltas, box_targets=box_coder.encode_single(matched_boxes, anchors_fg),
                pred_boxes=box_coder.decode_single(deltas, anchors_fg), target_boxes=matched_boxes,
                options=self.options, box_loss=own_box_loss, smooth_l1_beta=1.0,
                avg_factor=num_foreground.clamp(min=1), return_stats=True,
            )
            for key, value in losses.items():
                totals.setdefault(key, []).append(value)
            for key in weighted:
                weighted[key].append(stats[key] * num_foreground)
            counts.append(num_foreground)
        num_pos = torch.stack(counts).sum().clamp(min=1)
        self._record_stats({k: torch.stack(v).sum() / num_pos for k, v in weighted.items()})
        names = {"loss_cls": "classification", "loss_loc": "bbox_regression", "loss_tc": "task_contrast"}
        return {names[k]: torch.stack(v).sum() / len(targets) for k, v in totals.items()}
