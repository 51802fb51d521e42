"""Between the package's datasets and transformers' DETR models: labels in, COCO results out.

* :func:`detr_labels`: a dataset's targets (torchvision style: ``boxes`` xyxy in pixels, ``labels``
  1..K) as the ``labels`` a transformers detection model takes (``class_labels`` 0..K-1,
  ``boxes`` ``(cx, cy, w, h)`` normalised by the image size).
* :func:`coco_results`: the model's outputs post-processed by transformers' own
  ``RTDetrImageProcessor.post_process_object_detection`` (sigmoid scores, the top
  ``num_queries`` (query, class) pairs of each image, boxes scaled to pixels) and written as COCO
  result records by :func:`harmonicdet.engine.coco_evaluation.detections_to_coco`: the input
  of :func:`~harmonicdet.engine.coco_evaluation.coco_metrics` and of the consistency report
  (:func:`harmonicdet.analysis.consistency.consistency_report`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
from torch import Tensor

from harmonicdet.engine.coco_evaluation import detections_to_coco

__all__ = ["coco_results", "detr_labels"]


def detr_labels(targets: Sequence[Mapping[str, Any]],
                image_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
    """transformers' ``labels`` of ``targets`` (``boxes`` xyxy pixels, ``labels`` 1..K) on images of
    ``(height, width)``."""
    labels = []
    for target, (height, width) in zip(targets, image_sizes):
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        scale = boxes.new_tensor([width, height, width, height])
        xyxy = boxes / scale
        cxcywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], dim=1)
        labels.append({"class_labels": torch.as_tensor(target["labels"], dtype=torch.int64) - 1, "boxes": cxcywh})
    return labels


def coco_results(outputs: Any, image_ids: Sequence[int], image_sizes: Sequence[Tuple[int, int]],
                 label_to_category_id: Mapping[int, int], *, threshold: float = 0.001) -> List[Dict[str, Any]]:
    """COCO result records (``image_id``, ``category_id``, ``bbox`` xywh in pixels, ``score``) of a batch's outputs.

    Args:
        outputs: the model's output (``logits`` [B, Q, K], ``pred_boxes`` [B, Q, 4] normalised cxcywh).
        image_ids: the COCO id of each image of the batch.
        image_sizes: ``(height, width)`` of each image, in the ground truth's pixels.
        label_to_category_id: the dataset's contiguous label (1..K) -> category id; class ``k`` of the
            model is label ``k + 1``.
        threshold: scores at or below it are dropped (COCO evaluations keep every detection above ~0).
    """
    from transformers import RTDetrImageProcessor

    detections = RTDetrImageProcessor().post_process_object_detection(
        outputs, threshold=threshold, target_sizes=[tuple(size) for size in image_sizes], use_focal_loss=True)
    shifted = [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] + 1} for d in detections]
    return detections_to_coco(shifted, list(image_ids), label_to_category_id)
