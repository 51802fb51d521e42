"""COCO-style evaluation of a detector: detections to a COCO results file, AP with faster-coco-eval.

Under ``torchrun`` every rank runs inference on its share of the images; rank 0
gathers the detections, writes the results file and computes the metrics.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from harmonicdet.engine import distributed as dist_utils
from harmonicdet.data import collate
from harmonicdet.engine.from_config import coco_ground_truth
from harmonicdet.io import write_json_atomic
from harmonicdet.models import pre_nms_candidates

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def detections_to_coco(outputs: List[Dict[str, torch.Tensor]], image_ids: List[int],
                       label_to_category_id: Mapping[int, int]) -> List[Dict[str, Any]]:
    """torchvision detections (xyxy boxes, scores, contiguous labels) as COCO result records (xywh)."""
    results = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().cpu().double()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        for box, score, label in zip(xywh, output["scores"].tolist(), output["labels"].tolist()):
            if label == 0:  # sigmoid heads (FCOS, RetinaNet) also score the never-trained background class 0
                continue
            results.append({"image_id": int(image_id), "category_id": int(label_to_category_id[int(label)]),
                            "bbox": [round(v, 3) for v in box], "score": round(float(score), 5)})
    return results


def coco_metrics(gt: Mapping[str, Any], results: List[Dict[str, Any]]) -> Dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl of ``results`` against the COCO ground-truth dict ``gt``."""
    from faster_coco_eval import COCO, COCOeval_faster

    if not results:
        return {name: 0.0 for name in COCO_METRICS}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(dict(gt))
        coco_dt = coco_gt.loadRes(list(results))
        evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_METRICS, evaluator.stats[:6])}


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, *, device: torch.device, batch_size: int = 16,
             results_path: Optional[Path] = None, candidates: bool = False,
             show_progress: bool = True) -> Dict[str, Any]:
    """Run ``model`` on ``dataset`` and score it; returns ``{"metrics": {...}, "results": [...]}`` on rank 0.

    The dataset must expose its COCO ground truth (see :func:`coco_ground_truth`) and
    ``label_to_category_id``. With ``candidates``, the model runs a second time with
    NMS disabled and the pre-NMS candidates are returned too (``"candidates"``, and
    ``candidates.json`` beside ``results_path``). Other ranks return ``{}``.
    """
    model.eval()
    shard = Subset(dataset, range(dist_utils.rank(), len(dataset), dist_utils.world_size()))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, collate_fn=collate)
    progress = tqdm(total=len(shard), desc="eval", unit="img", file=sys.stderr, dynamic_ncols=True,
                    disable=not (show_progress and dist_utils.is_main_process()))
    results: List[Dict[str, Any]] = []
    pre_nms: List[Dict[str, Any]] = []
    for images, targets in loader:
        images = [img.to(device) for img in images]
        image_ids = [int(t["image_id"]) for t in targets]
        results += detections_to_coco(model(images), image_ids, dataset.label_to_category_id)
        if candidates:
            with pre_nms_candidates(model):
                pre_nms += detections_to_coco(model(images), image_ids, dataset.label_to_category_id)
        progress.update(len(images))
    progress.close()
    gathered = dist_utils.all_gather_objects((results, pre_nms))
    if not dist_utils.is_main_process():
        return {}
    results = [r for part, _ in gathered for r in part]
    pre_nms = [r for _, part in gathered for r in part]
    if results_path is not None:
        write_json_atomic(results, results_path)
        if candidates:
            write_json_atomic(pre_nms, Path(results_path).with_name("candidates.json"))
    evaluated = {"metrics": coco_metrics(coco_ground_truth(dataset), results), "results": results}
    if candidates:
        evaluated["candidates"] = pre_nms
    return evaluated
