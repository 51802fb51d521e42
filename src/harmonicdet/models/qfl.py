"""The ``qfl`` baseline: FCOS and RetinaNet trained with GFL's Quality Focal Loss (Li et al. 2020).

The classification target of a positive at its ground-truth class is the IoU of its
decoded box with that ground truth, detached (GFL's "joint representation" of class
and localisation quality); every other entry is 0. The box loss stays the
detector's own. Both heads record ``last_stats["iou_target"]``, the mean IoU target
of the batch's positives (0 without positives); the FCOS head also records the
per-level positive counts ``pos_p3`` .. ``pos_p7``.

FCOS drops its centerness branch, since the IoU-aware score replaces it (as in GFL):

* :class:`QFLFCOSHead` replaces the centerness convolution by a parameter-free
  module whose logits are ``+inf`` (``sigmoid = 1`` exactly) and computes no
  centerness loss. Removing the convolution, rather than leaving it untrained, keeps
  every parameter in the loss (``DistributedDataParallel`` without
  ``find_unused_parameters``) and keeps untrained weights out of the checkpoints.
* :class:`QFLFCOS` overrides ``postprocess_detections`` to score a location by
  ``sigmoid(cls)`` alone. torchvision's FCOS scores by ``sqrt(sigmoid(cls) *
  sigmoid(ctrness))``; with a unit centerness that is ``sqrt(sigmoid(cls))``, which
  ranks the same but reports the square root of the trained IoU estimate and applies
  ``score_thresh`` to it, distorting exactly what the consistency analysis compares
  with IoU. Everything else in the override is torchvision's code.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import boxes as box_ops
from torchvision.ops import generalized_box_iou_loss

from harmonicdet.losses import QFLOptions, aligned_box_iou, quality_focal_loss

from .fcos import FCOSLevelStatsMixin, matched_targets
from .stats import StatsMixin


class UnitCenterness(nn.Module):
    """Stands in for FCOS's centerness convolution: logits ``+inf`` (centerness 1), shape ``(N, 1, H, W)``.

    It has no parameters; loading a state dict that has a centerness convolution's
    ``weight``/``bias`` here (a standard FCOS checkpoint) drops them silently.
    """

    def forward(self, features: Tensor) -> Tensor:
        n, _, h, w = features.shape
        return features.new_full((n, 1, h, w), float("inf"))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("weight", "bias"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _iou_targets(pred_boxes: Tensor, gt_boxes: Tensor) -> Tensor:
    """Detached IoU of aligned boxes, clamped to [0, 1]: the positives' QFL targets."""
    with torch.no_grad():
        return aligned_box_iou(pred_boxes.detach(), gt_boxes).clamp(0, 1)


class QFLFCOSHead(FCOSLevelStatsMixin, FCOSHead):
    """``FCOSHead`` trained with the Quality Focal Loss; no centerness branch.

    ``classification = sum_locations sum_classes QFL(cls, y) / max(1, P)`` with ``y``
    the detached IoU of the location's decoded box (the head's ``box_coder``) with its
    ground truth at the ground-truth class, 0 elsewhere, and ``P`` the number of
    foreground locations of the batch (torchvision's normaliser);
    ``bbox_regression`` is torchvision's GIoU loss over the foreground locations
    divided by ``max(1, P)`` (GFL's weighting of the box loss by the predicted score
    is not used). There is no ``bbox_ctrness`` loss: ``regression_head.bbox_ctrness``
    is a :class:`UnitCenterness`. ``last_stats``: ``iou_target`` and ``pos_p3`` .. ``pos_p7``.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4, *,
                 options: QFLOptions) -> None:
        super().__init__(in_channels, num_anchors, num_classes, num_convs)
        self.regression_head.bbox_ctrness = UnitCenterness()
        self.options = options

    def compute_loss(self, targets: List[Dict[str, Tensor]], head_outputs: Dict[str, Tensor],
                     anchors: List[Tensor], matched_idxs: List[Tensor]) -> Dict[str, Tensor]:
        cls_logits = head_outputs["cls_logits"]  # [N, HWA, C]
        bbox_regression = head_outputs["bbox_regression"]  # [N, HWA, 4]
        gt_boxes_t, gt_classes_t, anchors_t = matched_targets(targets, matched_idxs, anchors)
        foreground = gt_classes_t >= 0
        num_positives = int(foreground.sum())
        num_foreground = max(1, num_positives)

        pred_boxes = self.box_coder.decode(bbox_regression, anchors_t)
        iou = _iou_targets(pred_boxes[foreground], gt_boxes_t[foreground])
        quality = torch.zeros_like(cls_logits)
        quality[foreground, gt_classes_t[foreground]] = iou.to(quality.dtype)
        loss_cls = quality_focal_loss(cls_logits.flatten(0, 1), quality.flatten(0, 1),
                                      beta=self.options.qfl_beta, reduction="sum")
        loss_box = generalized_box_iou_loss(pred_boxes[foreground], gt_boxes_t[foreground], reduction="sum")
        self._record_stats({"iou_target": iou.sum() / max(1, num_positives), **self._level_stats(matched_idxs)})
        return {"classification": loss_cls / num_foreground, "bbox_regression": loss_box / num_foreground}


class QFLFCOS(FCOS):
    """``FCOS`` for :class:`QFLFCOSHead`: detections are scored by ``sigmoid(cls)`` (no centerness, no square root).

    Only ``postprocess_detections`` differs from torchvision's ``FCOS`` (training,
    matching, transforms and NMS are torchvision's); see the module docstring for why.
    """

    def postprocess_detections(self, head_outputs: Dict[str, List[Tensor]], anchors: List[List[Tensor]],
                               image_shapes: List[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        class_logits = head_outputs["cls_logits"]
        box_regression = head_outputs["bbox_regression"]
        detections: List[Dict[str, Tensor]] = []
        for index, image_shape in enumerate(image_shapes):
            image_boxes, image_scores, image_labels = [], [], []
            for regression_per_level, logits_per_level, anchors_per_level in zip(
                    [br[index] for br in box_regression], [cl[index] for cl in class_logits], anchors[index]):
                num_classes = logits_per_level.shape[-1]
                scores_per_level = torch.sigmoid(logits_per_level).flatten()  # torchvision: sqrt(cls * ctrness)
                keep_idxs = scores_per_level > self.score_thresh
                scores_per_level = scores_per_level[keep_idxs]
                topk_idxs = torch.where(keep_idxs)[0]
                num_topk = det_utils._topk_min(topk_idxs, self.topk_candidates, 0)
                scores_per_level, idxs = scores_per_level.topk(num_topk)
                topk_idxs = topk_idxs[idxs]
                anchor_idxs = torch.div(topk_idxs, num_classes, rounding_mode="floor")
                labels_per_level = topk_idxs % num_classes
                boxes_per_level = self.box_coder.decode(regression_per_level[anchor_idxs],
                                                        anchors_per_level[anchor_idxs])
                image_boxes.append(box_ops.clip_boxes_to_image(boxes_per_level, image_shape))
                image_scores.append(scores_per_level)
                image_labels.append(labels_per_level)
            boxes, scores, labels = torch.cat(image_boxes), torch.cat(image_scores), torch.cat(image_labels)
            keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return detections


class QFLRetinaNetHead(StatsMixin, RetinaNetHead):
    """``RetinaNetHead`` whose classification loss is the Quality Focal Loss with IoU targets.

    Per image, ``classification = sum_valid sum_classes QFL(cls, y) / max(1, P_img)``
    over the anchors torchvision counts (those between the IoU thresholds are
    ignored), ``y`` the detached IoU of a foreground anchor's decoded box (the
    regression head's box coder) with its matched ground truth at its class, 0
    elsewhere; the images are averaged, as torchvision. ``bbox_regression`` is the
    regression head's own loss (torchvision's ``compute_loss``, L1 by default).
    Inference is torchvision's (RetinaNet scores by ``sigmoid(cls)`` already).
    ``last_stats``: ``iou_target``, the mean over the batch's positives.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, norm_layer=None, *,
                 options: QFLOptions) -> None:
        super().__init__(in_channels, num_anchors, num_classes, norm_layer=norm_layer)
        self.options = options

    def compute_loss(self, targets: List[Dict[str, Tensor]], head_outputs: Dict[str, Tensor],
                     anchors: List[Tensor], matched_idxs: List[Tensor]) -> Dict[str, Tensor]:
        box_coder = self.regression_head.box_coder
        losses, ious = [], []
        for index, (targets_per_image, matched) in enumerate(zip(targets, matched_idxs)):
            cls_logits = head_outputs["cls_logits"][index]
            foreground = matched >= 0
            valid = matched != self.classification_head.BETWEEN_THRESHOLDS
            matched_boxes = targets_per_image["boxes"][matched[foreground]]
            pred_boxes = box_coder.decode_single(head_outputs["bbox_regression"][index][foreground].detach(),
                                                 anchors[index][foreground])
            iou = _iou_targets(pred_boxes, matched_boxes)
            quality = torch.zeros_like(cls_logits)
            quality[foreground, targets_per_image["labels"][matched[foreground]]] = iou.to(quality.dtype)
            loss = quality_focal_loss(cls_logits[valid], quality[valid], beta=self.options.qfl_beta, reduction="sum")
            losses.append(loss / foreground.sum().clamp(min=1))
            ious.append(iou)
        all_ious = torch.cat(ious)
        self._record_stats({"iou_target": all_ious.sum() / max(1, all_ious.numel())})
        return {
            "classification": torch.stack(losses).sum() / len(targets),
            "bbox_regression": self.regression_head.compute_loss(targets, head_outputs, anchors, matched_idxs),
        }
