"""Prediction consistency of any detector: do its classification scores agree with its localisation?

Every detection gets a pair ``(s, u)``: its score and ``u``, the IoU with the
best-matching ground truth of the same class in the same image. Crowd ground
truth is handled as COCO does: the IoU with a crowd region is
``|det ∩ crowd| / |det|``; ``u`` is the best IoU over non-crowd objects, and a
detection with ``u < 0.5`` whose crowd IoU is ``>= 0.5`` is *ignored* (COCO neither
rewards nor penalises it) and left out of every metric.

Metrics (over non-ignored detections):

* ``overall`` / ``per_class``: Pearson ``r = cov(s, u) / (sd(s) sd(u))`` and Spearman
  (Pearson of the ranks, ties averaged) over detections with ``u > iou_floor``
  (0.1: detections that overlap an object). ``null`` with fewer than two such
  detections or a constant variable.
* ``inconsistency``: ``high_score_low_iou = #(s >= s_hi, u < 0.5) / #(s >= s_hi)`` and
  ``low_score_high_iou = #(s < s_lo, u >= 0.75) / #(u >= 0.75)``.
* ``calibration``: mean ``u`` and mean ``s`` per equal-width score bin, and the expected
  calibration gap ``sum_b n_b / n * |mean_u_b - mean_s_b|``.
* ``histogram``: counts on a score x IoU grid (what the plots draw).
* ``nms_ranking`` (with pre-NMS candidates): a candidate belongs to the object it
  overlaps most when that IoU is ``>= 0.5``. Per object with candidates,
  ``best IoU - IoU of the top-scored candidate``; the report gives its mean
  (the NMS ranking loss) and the fraction of objects where the difference exceeds
  ``0.05`` (NMS keeps a box clearly worse than the best one available).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

JsonLike = Union[str, os.PathLike, Mapping[str, Any], Sequence[Mapping[str, Any]]]
_CHUNK = 2_000_000  # detection x ground-truth pairs per IoU block


def _load_json(source: JsonLike, what: str) -> Any:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} file {path} does not exist") from None
        except ValueError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    return source


class GroundTruth:
    """COCO ground truth as arrays: boxes (xyxy), category index, image index, crowd flag."""

    def __init__(self, gt: JsonLike) -> None:
        data = _load_json(gt, "ground-truth")
        if not isinstance(data, Mapping):
            raise ValueError("ground truth: expected a COCO dict with images, annotations, categories")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"ground truth: missing the list {key!r}")
        try:
            self.image_ids = np.array(sorted(int(im["id"]) for im in data["images"]), dtype=np.int64)
            categories = sorted((int(c["id"]), str(c.get("name", c["id"]))) for c in data["categories"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"ground truth: images and categories need an id ({err})") from None
        self.category_ids = np.array([c for c, _ in categories], dtype=np.int64)
        self.category_names = [n for _, n in categories]
        anns = data["annotations"]
        boxes = np.zeros((len(anns), 4))
        for i, a in enumerate(anns):
            try:
                x, y, w, h = (float(v) for v in a["bbox"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"ground truth annotations[{i}]: needs bbox [x, y, w, h]") from None
            boxes[i] = (x, y, x + w, y + h)
        image_index = self.image_index(np.array([a.get("image_id", -1) for a in anns]), "ground truth annotations")
        category_index = self.category_index(np.array([a.get("category_id", -1) for a in anns]),
                                             "ground truth annotations")
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        self.boxes, self.image, self.category, self.crowd = boxes, image_index, category_index, crowd

    @staticmethod
    def _index(values: np.ndarray, known: np.ndarray, field: str, where: str) -> np.ndarray:
        try:
            values = values.astype(np.int64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {field} must be integers") from None
        position = np.clip(np.searchsorted(known, values), 0, max(len(known) - 1, 0))
        bad = np.nonzero((known[position] != values) if len(known) else np.ones(len(values), bool))[0]
        if len(bad):
            i = int(bad[0])
            entry = where if len(values) == 1 else f"{where}[{i}]"
            raise ValueError(f"{entry}: {field} {int(values[i])} is not in the ground truth")
        return position

    def image_index(self, image_ids: np.ndarray, where: str) -> np.ndarray:
        return self._index(image_ids, self.image_ids, "image_id", where)

    def category_index(self, category_ids: np.ndarray, where: str) -> np.ndarray:
        return self._index(category_ids, self.category_ids, "category_id", where)


def _results_arrays(results: JsonLike, gt: GroundTruth, what: str) -> Dict[str, np.ndarray]:
    """Validated arrays of a COCO results list: boxes (xyxy), scores, image and category indices."""
    records = _load_json(results, what)
    if not isinstance(records, list):
        raise ValueError(f"{what}: expected a list of detections")
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ValueError(f"{what}[{i}]: expected an object, got {type(r).__name__}")
        missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in r]
        if missing:
            raise ValueError(f"{what}[{i}]: missing field(s) {', '.join(missing)}")
        if not isinstance(r["bbox"], (list, tuple)) or len(r["bbox"]) != 4:
            raise ValueError(f"{what}[{i}]: bbox must be [x, y, w, h], got {r['bbox']!r}")
    try:
        bbox = np.array([r["bbox"] for r in records], dtype=np.float64).reshape(-1, 4)
        scores = np.array([r["score"] for r in records], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: bbox and score must be numbers ({err})") from None
    bad = np.nonzero(~np.isfinite(bbox).all(axis=1) | ~np.isfinite(scores))[0]
    if len(bad):
        raise ValueError(f"{what}[{bad[0]}]: bbox or score is not finite")
    bad = np.nonzero((bbox[:, 2] < 0) | (bbox[:, 3] < 0))[0]
    if len(bad):
        raise ValueError(f"{what}[{bad[0]}]: negative width or height in bbox {records[bad[0]]['bbox']}")
    image = gt.image_index(np.array([r["image_id"] for r in records]), what)
    category = gt.category_index(np.array([r["category_id"] for r in records]), what)
    boxes = np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1)
    return {"boxes": boxes, "scores": scores, "image": image, "category": category}


def match_detections(det_boxes: np.ndarray, det_image: np.ndarray, det_category: np.ndarray,
                     gt_boxes: np.ndarray, gt_image: np.ndarray, gt_category: np.ndarray,
                     gt_crowd: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best same-class, same-image ground truth of every detection, vectorised.

    Args:
        det_boxes: [D, 4] xyxy; det_image, det_category: [D] integer keys.
        gt_boxes: [G, 4] xyxy; gt_image, gt_category: [G]; gt_crowd: [G] bool (COCO ``iscrowd``).
        Tensors are accepted too (converted with ``numpy()``).

    Returns:
        ``(iou [D], gt_index [D] (-1: no non-crowd object), ignored [D] bool)``: ``iou`` is
        the best IoU over non-crowd objects; ``ignored`` marks ``iou < 0.5`` detections
        whose crowd IoU (intersection over the detection's area) is ``>= 0.5``.
    """
    arrays = [np.asarray(getattr(a, "numpy", lambda: a)()) for a in
              (det_boxes, det_image, det_category, gt_boxes, gt_image, gt_category)]
    det_boxes, det_image, det_category, gt_boxes, gt_image, gt_category = arrays
    gt_crowd = np.zeros(len(gt_boxes), bool) if gt_crowd is None else np.asarray(gt_crowd, dtype=bool)
    num = len(det_boxes)
    iou = np.zeros(num)
    best = np.full(num, -1, dtype=np.int64)
    crowd_iou = np.zeros(num)
    if num == 0 or len(gt_boxes) == 0:
        return iou, best, np.zeros(num, bool)
    span = int(max(det_category.max(initial=0), gt_category.max(initial=0))) + 1
    gt_key = gt_image.astype(np.int64) * span + gt_category
    order = np.argsort(gt_key, kind="stable")
    sorted_key = gt_key[order]
    det_key = det_image.astype(np.int64) * span + det_category
    start = np.searchsorted(sorted_key, det_key, side="left")
    count = np.searchsorted(sorted_key, det_key, side="right") - start
    width = int(count.max(initial=0))
    if width == 0:
        return iou, best, np.zeros(num, bool)
    det_area = np.prod(np.clip(det_boxes[:, 2:] - det_boxes[:, :2], 0, None), axis=1)
    gt_area = np.prod(np.clip(gt_boxes[:, 2:] - gt_boxes[:, :2], 0, None), axis=1)
    rows = max(1, _CHUNK // width)
    for lo in range(0, num, rows):
        hi = min(num, lo + rows)
        slot = np.arange(width)
        valid = slot[None, :] < count[lo:hi, None]
        gt = order[np.minimum(start[lo:hi, None] + slot[None, :], len(order) - 1)]  # [R, W]
        d, g = det_boxes[lo:hi, None, :], gt_boxes[gt]
        wh = np.clip(np.minimum(d[..., 2:], g[..., 2:]) - np.maximum(d[..., :2], g[..., :2]), 0, None)
        inter = wh[..., 0] * wh[..., 1]
        union = det_area[lo:hi, None] + gt_area[gt] - inter
        crowd = gt_crowd[gt]
        denom = np.where(crowd, det_area[lo:hi, None], union)
        with np.errstate(divide="ignore", invalid="ignore"):
            pair = np.where(denom > 0, inter / denom, 0.0)
        plain = np.where(valid & ~crowd, pair, -1.0)
        pick = plain.argmax(axis=1)
        top = plain[np.arange(hi - lo), pick]
        iou[lo:hi] = np.maximum(top, 0.0)
        best[lo:hi] = np.where(top >= 0, gt[np.arange(hi - lo), pick], -1)
        crowd_iou[lo:hi] = np.where(valid & crowd, pair, 0.0).max(axis=1)
    return iou, best, (iou < 0.5) & (crowd_iou >= 0.5)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(average, counts)
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    if len(x) < 2:
        return None
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return None if denom == 0 else float((x * y).sum() / denom)


def correlations(scores: np.ndarray, ious: np.ndarray) -> Dict[str, Any]:
    """``{"count", "pearson", "spearman"}`` of paired samples (``None`` where undefined)."""
    scores, ious = np.asarray(scores, dtype=np.float64), np.asarray(ious, dtype=np.float64)
    return {"count": int(len(scores)), "pearson": _pearson(scores, ious),
            "spearman": _pearson(_ranks(scores), _ranks(ious)) if len(scores) >= 2 else None}


def _ratio(numerator: int, denominator: int) -> Optional[float]:
    return None if denominator == 0 else numerator / denominator


def nms_ranking(scores: np.ndarray, ious: np.ndarray, gt_index: np.ndarray, *, min_iou: float = 0.5,
                tolerance: float = 0.05) -> Dict[str, Any]:
    """NMS ranking loss of pre-NMS candidates (see the module docstring)."""
    keep = (gt_index >= 0) & (ious >= min_iou)
    s, u, g = scores[keep], ious[keep], gt_index[keep]
    if len(g) == 0:
        return {"num_objects": 0, "ranking_loss": None, "fraction_misranked": None}
    order = np.lexsort((-s, g))  # by object, highest score first
    s, u, g = s[order], u[order], g[order]
    first = np.r_[0, np.nonzero(np.diff(g))[0] + 1]
    best = np.maximum.reduceat(u, first)
    gap = best - u[first]
    return {"num_objects": int(len(first)), "ranking_loss": float(gap.mean()),
            "fraction_misranked": float((gap > tolerance).mean()), "tolerance": tolerance, "min_iou": min_iou}


def consistency_report(gt: JsonLike, results: JsonLike, *, candidates: Optional[JsonLike] = None,
                       score_hi: float = 0.5, score_lo: float = 0.2, iou_floor: float = 0.1,
                       num_bins: int = 10) -> Dict[str, Any]:
    """The consistency report of COCO ``results`` against the COCO ground truth ``gt`` (paths or loaded JSON).

    ``candidates`` (pre-NMS detections, same format) adds the NMS ranking loss.
    The report is plain JSON; see the module docstring for every field.
    """
    if not (0 <= score_lo <= score_hi <= 1):
        raise ValueError(f"need 0 <= score_lo <= score_hi <= 1, got score_lo={score_lo} score_hi={score_hi}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    truth = gt if isinstance(gt, GroundTruth) else GroundTruth(gt)
    det = _results_arrays(results, truth, "results")
    iou, _, ignored = match_detections(det["boxes"], det["image"], det["category"], truth.boxes, truth.image,
                                       truth.category, truth.crowd)
    keep = ~ignored
    s, u, c = det["scores"][keep], iou[keep], det["category"][keep]
    overlap = u > iou_floor
    report: Dict[str, Any] = {
        "num_detections": int(len(iou)),
        "num_ignored": int(ignored.sum()),
        "settings": {"score_hi": score_hi, "score_lo": score_lo, "iou_floor": iou_floor, "num_bins": num_bins},
        "overall": correlations(s[overlap], u[overlap]),
        "per_class": {},
    }
    for index, name in enumerate(truth.category_names):
        mask = overlap & (c == index)
        if mask.any():
            report["per_class"][name] = correlations(s[mask], u[mask])
    high, low_iou_strong = s >= score_hi, u >= 0.75
    report["inconsistency"] = {
        "high_score_low_iou": _ratio(int((high & (u < 0.5)).sum()), int(high.sum())),
        "num_high_score": int(high.sum()),
        "low_score_high_iou": _ratio(int((low_iou_strong & (s < score_lo)).sum()), int(low_iou_strong.sum())),
        "num_high_iou": int(low_iou_strong.sum()),
    }
    edges = np.linspace(0, 1, num_bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1]), 0, num_bins - 1)
    bins, gap = [], 0.0
    for b in range(num_bins):
        mask = which == b
        n = int(mask.sum())
        mean_s = float(s[mask].mean()) if n else None
        mean_u = float(u[mask].mean()) if n else None
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n, "mean_score": mean_s,
                     "mean_iou": mean_u})
        if n:
            gap += n * abs(mean_u - mean_s)
    report["calibration"] = {"bins": bins, "expected_calibration_gap": gap / len(s) if len(s) else None}
    counts, _, _ = np.histogram2d(np.clip(s, 0, 1), u, bins=[20, 20], range=[[0, 1], [0, 1]])
    report["histogram"] = {"score_edges": np.linspace(0, 1, 21).tolist(), "iou_edges": np.linspace(0, 1, 21).tolist(),
                           "counts": counts.astype(int).tolist()}
    if candidates is not None:
        cand = _results_arrays(candidates, truth, "candidates")
        cand_iou, cand_gt, _ = match_detections(cand["boxes"], cand["image"], cand["category"], truth.boxes,
                                                truth.image, truth.category, truth.crowd)
        report["nms_ranking"] = nms_ranking(cand["scores"], cand_iou, cand_gt)
    return report
