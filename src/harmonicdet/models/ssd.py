"""SSD / SSDlite with the harmonic loss: an ``SSD`` subclass (SSD's loss lives on the model, not a head)."""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.ssd import SSD

from harmonicdet.losses import HarmonicOptions, harmonic_softmax_detection_loss

from .stats import HarmonicStatsMixin


class HarmonicSSD(HarmonicStatsMixin, SSD):
    """``SSD`` whose ``compute_loss`` harmonises the positives (Eq. S-1).

    SSD's loss is computed by the model (``SSD.compute_loss``), not by its head, so
    the model class is subclassed; it is still an ``SSD`` with torchvision's forward
    and inference. Hard negative mining is torchvision's (per image the
    ``neg_to_pos_ratio`` times as many negatives as positives, highest CE first); the
    mined negatives keep plain softmax CE, the positives' CE (``beta_c = p``) and
    ``L_loc`` (torchvision's SmoothL1, beta 1, summed over the 4 offsets, plus
    ``alpha * L_HIoU`` on the box decoded with the model's box coder; ``box_loss``
    overrides the SmoothL1 term) are harmonised. Everything is divided by the number
    of foreground anchors of the batch (at least 1), as torchvision. With a TC
    margin the dict gains ``"task_contrast"``.
    """

    def __init__(self, *args, options: HarmonicOptions, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.options = options

    def compute_loss(self, targets: List[Dict[str, Tensor]], head_outputs: Dict[str, Tensor],
                     anchors: List[Tensor], matched_idxs: List[Tensor]) -> Dict[str, Tensor]:
        cls_logits = head_outputs["cls_logits"]
        deltas, target_deltas, pred_boxes, target_boxes, cls_targets = [], [], [], [], []
        for t, regression, anchors_per_image, matched in zip(targets, head_outputs["bbox_regression"], anchors,
                                                             matched_idxs):
            foreground = torch.where(matched >= 0)[0]
            gt = t["boxes"][matched[foreground]]
            fg_anchors = anchors_per_image[foreground]
            deltas.append(regression[foreground])
            target_deltas.append(self.box_coder.encode_single(gt, fg_anchors))
            pred_boxes.append(self.box_coder.decode_single(regression[foreground], fg_anchors))
            target_boxes.append(gt)
            classes = torch.zeros(cls_logits.size(1), dtype=t["labels"].dtype, device=t["labels"].device)
            classes[foreground] = t["labels"][matched[foreground]]
            cls_targets.append(classes)
        cls_targets_t = torch.stack(cls_targets)
        num_classes = cls_logits.size(-1)
        foreground = cls_targets_t > 0
        with torch.no_grad():  # hard negative mining, as torchvision's SSD
            negative_loss = F.cross_entropy(cls_logits.reshape(-1, num_classes), cls_targets_t.reshape(-1),
                                            reduction="none").view(cls_targets_t.size())
            negative_loss[foreground] = -float("inf")
            _, order = negative_loss.sort(1, descending=True)
            mined = order.sort(1)[1] < self.neg_to_pos_ratio * foreground.sum(1, keepdim=True)
        selected = (foreground | mined).reshape(-1)
        losses, stats = harmonic_softmax_detection_loss(
            cls_logits.reshape(-1, num_classes)[selected], cls_targets_t.reshape(-1)[selected],
            torch.cat(deltas), torch.cat(target_deltas), torch.cat(pred_boxes), torch.cat(target_boxes),
            options=self.options, box_loss="smooth_l1", smooth_l1_beta=1.0,
            avg_factor=max(1, int(foreground.sum())), return_stats=True,
        )
        self._record_stats(stats)
        out = {"bbox_regression": losses["loss_loc"], "classification": losses["loss_cls"]}
        if "loss_tc" in losses:
            out["task_contrast"] = losses["loss_tc"]
        return out
