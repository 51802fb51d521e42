"""Prediction consistency of any detector: do its classification scores agree with its localisation?

The paper's complaint about standard training is *inconsistent* predictions: a
high classification score on a poorly localised box, or the reverse; NMS ranks
by score, so it then keeps the wrong box. This module measures that for any
detector's output.

Matching
--------
Every detection gets a pair ``(s, u)``: its score ``s`` and ``u``, the IoU with the
best-matching ground truth of the **same class in the same image** (``0`` when there
is none). It is a per-detection localisation quality, not COCO's one-to-one TP/FP
assignment: several detections may share an object, and every detection is used
(no ``maxDets`` cap, no area ranges).

Crowd ground truth is handled as COCO does (``pycocotools.mask.iou`` with
``iscrowd``): the IoU with a crowd region is ``|det ∩ crowd| / |det|``. ``u`` is the
best IoU over **non-crowd** objects only; a detection with ``u < 0.5`` whose crowd
IoU is ``>= 0.5`` is **ignored** -- COCOeval neither rewards nor penalises it -- and
is left out of every metric (counted in ``num_ignored``). Crowd regions are never
"objects" of the NMS ranking.

Metrics (over the ``n`` non-ignored detections)
-----------------------------------------------
* ``overall`` / ``per_class[name]``: ``num_detections`` (non-ignored detections),
  ``count`` (those with ``u > iou_floor``, default 0.1: detections that overlap an
  object), and over those ``count`` pairs Pearson
  ``r = sum (s - s̄)(u - ū) / sqrt(sum (s - s̄)^2 sum (u - ū)^2)`` and Spearman
  ``rho = r(rank(s), rank(u))`` with ties given their average rank (as
  ``scipy.stats.spearmanr``). ``null`` when ``count < 2`` or either variable is
  constant. ``per_class`` lists the classes with at least one detection, keyed by
  category name (by ``"name (id)"`` when names repeat), each with its ``category_id``.
* ``inconsistency`` (thresholds ``score_hi=0.5``, ``score_lo=0.2``, ``iou_low=0.5``,
  ``iou_high=0.75``):

  - ``high_score_low_iou = #(s >= score_hi and u < iou_low) / #(s >= score_hi)``:
    of the confident detections, the fraction that are badly localised;
  - ``low_score_high_iou = #(s < score_lo and u >= iou_high) / #(u >= iou_high)``:
    of the well-localised detections, the fraction scored low (NMS would drop them);
  - ``*_of_all``: the same numerators over all ``n`` detections; ``num_*``: the counts.
    Rates are ``null`` where their denominator is 0.
* ``calibration``: ``num_bins`` equal-width score bins over ``[0, 1]`` (bin ``b`` holds
  ``lo <= s < hi``; the last bin includes 1; scores outside ``[0, 1]``, possible only from
  tensors (COCO results must hold probabilities), fall in the end bins). Per bin ``count``, ``mean_score``, ``mean_iou`` (``null`` when empty), and
  the expected calibration gap ``sum_b n_b / n * |mean_iou_b - mean_score_b|``
  (``null`` when ``n = 0``). A detector whose scores predict its IoU has gap 0.
* ``histogram``: counts on a 20 x 20 score x IoU grid (``counts[i][j]``: score bin
  ``i``, IoU bin ``j``), what the plots draw.
* ``nms_ranking`` (only with pre-NMS ``candidates``, same format as the results): a
  candidate belongs to the non-crowd object of its class and image that it overlaps
  most, when that IoU is ``>= 0.5``; otherwise to no object. For each object with at
  least one candidate, ``gap = max IoU of its candidates - IoU of its top-scored
  candidate`` (ties in score: the better-localised one counts as top).
  ``ranking_loss`` is the mean gap over those objects, and ``fraction_misranked`` the
  fraction with ``gap > 0.05``: the box NMS keeps is not within 0.05 IoU of the best
  box available. Both ``null`` when no object has a candidate.

Entry points
------------
* :func:`consistency_report` -- COCO ground truth (path, dict or ``pycocotools.coco.COCO``)
  and COCO results (path or list of ``{image_id, category_id, bbox [x, y, w, h], score}``).
* :func:`consistency_report_from_tensors` -- the same report from flat tensors/arrays
  (boxes ``xyxy``), for use inside a training loop.
* :func:`score_iou_pairs` -- the per-detection ``(score, IoU)`` pairs of COCO results.
* :func:`match_detections` -- just the vectorised matching: IoU, matched object, ignored.
* :func:`correlations`, :func:`inconsistency`, :func:`calibration`, :func:`nms_ranking` --
  the metrics on plain arrays; :func:`inconsistent_detections` -- which detections
  :func:`inconsistency` counts (``harmonicdet draw`` marks them).

Malformed input raises ``ValueError`` naming the entry and the field, e.g.
``results[12]: image_id 99 is not in the ground truth``: unknown image or category
ids, missing fields, non-numeric or non-integer values, non-finite numbers,
negative box sizes. Empty results give a report with zero counts and ``null``
statistics. Every report is plain JSON (floats, ints, ``None``; never NaN).

Speed: the matching sorts ground truth by ``(image, category)`` once and compares
every detection with its padded group in large numpy blocks; 500k detections over
5k images take about 1 s on 2 CPU cores (``benchmarks/bench_consistency.py``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

JsonLike = Union[str, os.PathLike, Mapping[str, Any], Sequence[Mapping[str, Any]]]
ArrayLike = Any  # numpy array, torch tensor or nested sequence

_CHUNK = 2_000_000  # detection x ground-truth pairs per IoU block
_FIELDS = ("image_id", "category_id", "bbox", "score")
HISTOGRAM_BINS = 20
# default thresholds of the inconsistency rates (``report["inconsistency"]``); also the bands drawn by
# ``harmonicdet draw``: IoU < IOU_LOW badly localised, IoU >= IOU_HIGH well localised
SCORE_HI, SCORE_LO, IOU_LOW, IOU_HIGH = 0.5, 0.2, 0.5, 0.75


# --------------------------------------------------------------------------- input


def _as_numpy(x: ArrayLike, dtype=None) -> np.ndarray:
    """A numpy array of a tensor (any device, with or without grad), array or sequence."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _load_json(source: Any, what: str) -> Any:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} file {path} does not exist") from None
        try:
            return json.loads(text)
        except ValueError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    if hasattr(source, "dataset") and isinstance(getattr(source, "dataset"), Mapping):
        return source.dataset  # a pycocotools / faster-coco-eval COCO object
    return source


def _first_bad(records: Sequence[Any], test) -> int:
    for i, r in enumerate(records):
        if not test(r):
            return i
    return -1


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _is_integer(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    return isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer()


def _numeric_column(values: List[Any], where: str, field: str, integer: bool = False) -> np.ndarray:
    """``values`` as a numpy array (float64, or int64 with ``integer``), naming the first bad entry."""
    arr = np.asarray(values) if values else np.zeros((0,))
    if arr.dtype.kind not in "iuf" or arr.ndim != 1:  # strings, None, bools, nested junk
        i = max(_first_bad(values, _is_integer if integer else _is_number), 0)
        raise ValueError(f"{where}[{i}]: {field} must be {'an integer' if integer else 'a number'}, "
                         f"got {values[i]!r}")
    if not integer:
        return arr.astype(np.float64)
    if arr.dtype.kind == "f":
        bad = np.nonzero(~np.isfinite(arr) | (arr != np.round(arr)))[0]
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"{where}[{i}]: {field} must be an integer, got {values[i]!r}")
    return arr.astype(np.int64)


def _bbox_column(values: List[Any], where: str) -> np.ndarray:
    """COCO ``[x, y, w, h]`` boxes as a float64 [N, 4] array, naming the first bad entry."""
    try:
        arr = np.asarray(values) if values else np.zeros((0, 4))
    except ValueError:  # ragged
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] != 4 or arr.dtype.kind not in "iuf":
        for i, v in enumerate(values):
            if not isinstance(v, (list, tuple, np.ndarray)) or len(v) != 4:
                raise ValueError(f"{where}[{i}]: bbox must be [x, y, w, h], got {v!r}")
            if not all(_is_number(x) for x in v):
                raise ValueError(f"{where}[{i}]: bbox must be four numbers, got {v!r}")
        raise ValueError(f"{where}: every bbox must be [x, y, w, h] numbers")
    return arr.astype(np.float64)


def _columns(records: Any, where: str, fields: Sequence[str]) -> Dict[str, List[Any]]:
    """``{field: [record[field], ...]}``, or a ValueError naming the first bad record."""
    if not isinstance(records, list):
        raise ValueError(f"{where}: expected a list, got {type(records).__name__}")
    try:  # fast path: one list comprehension per field
        if all(isinstance(r, dict) for r in records):
            return {f: [r[f] for r in records] for f in fields}
    except KeyError:
        pass
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise ValueError(f"{where}[{i}]: expected an object, got {type(r).__name__}")
        missing = [k for k in fields if k not in r]
        if missing:
            raise ValueError(f"{where}[{i}]: missing field(s) {', '.join(missing)}")
    return {f: [r[f] for r in records] for f in fields}


def _boxes_from_xywh(bbox: np.ndarray, where: str) -> np.ndarray:
    bad = np.nonzero(~np.isfinite(bbox).all(axis=1))[0]
    if len(bad):
        raise ValueError(f"{where}[{bad[0]}]: bbox {bbox[bad[0]].tolist()} is not finite")
    bad = np.nonzero((bbox[:, 2] < 0) | (bbox[:, 3] < 0))[0]
    if len(bad):
        raise ValueError(f"{where}[{bad[0]}]: bbox {bbox[bad[0]].tolist()} has a negative width or height")
    return np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1)


class GroundTruth:
    """COCO ground truth as arrays.

    Attributes:
        image_ids, category_ids: sorted known ids (int64).
        category_names: names aligned with ``category_ids``.
        images: ``{image id: the COCO image entry}`` (``file_name``, ``width``, ``height`` when given).
        boxes: [G, 4] xyxy; image, category: [G] indices into ``image_ids`` / ``category_ids``;
        crowd: [G] bool.
    """

    def __init__(self, gt: Any) -> None:
        data = _load_json(gt, "ground-truth")
        source = f"{gt}: " if isinstance(gt, (str, os.PathLike)) else ""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}ground truth: expected a COCO dict with images, annotations, categories")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"{source}ground truth: missing the list {key!r}")
        for key in ("images", "categories"):
            for i, entry in enumerate(data[key]):
                if not isinstance(entry, Mapping) or not _is_integer(entry.get("id")):
                    raise ValueError(f"{source}ground truth {key}[{i}]: needs an integer id")
        self.image_ids = np.unique(np.array([int(im["id"]) for im in data["images"]], dtype=np.int64))
        self.images: Dict[int, Mapping[str, Any]] = {int(im["id"]): im for im in data["images"]}
        categories = sorted({int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}.items())
        self.category_ids = np.array([c for c, _ in categories], dtype=np.int64)
        self.category_names = [n for _, n in categories]
        anns = data["annotations"]
        where = f"{source}ground truth annotations"
        cols = _columns(anns, where, ("image_id", "category_id", "bbox"))
        self.boxes = _boxes_from_xywh(_bbox_column(cols["bbox"], where), where)
        self.image = self.image_index(_numeric_column(cols["image_id"], where, "image_id", True), where)
        self.category = self.category_index(_numeric_column(cols["category_id"], where, "category_id", True), where)
        self.crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        self.annotation_ids = _numeric_column([a.get("id", i) for i, a in enumerate(anns)], where, "id", True)

    @staticmethod
    def _index(values: np.ndarray, known: np.ndarray, field: str, where: str) -> np.ndarray:
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        position = np.clip(np.searchsorted(known, values), 0, max(len(known) - 1, 0))
        bad = np.nonzero((known[position] != values) if len(known) else np.ones(len(values), bool))[0]
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"{where}[{i}]: {field} {int(values[i])} is not in the ground truth")
        return position.astype(np.int64)

    def image_index(self, image_ids: np.ndarray, where: str) -> np.ndarray:
        return self._index(np.asarray(image_ids, dtype=np.int64), self.image_ids, "image_id", where)

    def category_index(self, category_ids: np.ndarray, where: str) -> np.ndarray:
        return self._index(np.asarray(category_ids, dtype=np.int64), self.category_ids, "category_id", where)

    def class_keys(self) -> List[str]:
        """Keys of ``per_class``: the names, or ``"name (id)"`` where a name repeats."""
        seen: Dict[str, int] = {}
        for name in self.category_names:
            seen[name] = seen.get(name, 0) + 1
        return [n if seen[n] == 1 else f"{n} ({c})" for n, c in zip(self.category_names, self.category_ids)]


def _results_arrays(results: Any, gt: GroundTruth, what: str) -> Dict[str, np.ndarray]:
    """Validated arrays of a COCO results list: boxes (xyxy), scores, image and category indices."""
    data = _load_json(results, what)
    if isinstance(results, (str, os.PathLike)):
        what = f"{results}: {what}"  # with several --dt files, the error names the one at fault
    cols = _columns(data, what, _FIELDS)
    bbox = _bbox_column(cols["bbox"], what)
    scores = _numeric_column(cols["score"], what, "score")
    bad = np.nonzero(~np.isfinite(scores))[0]
    if len(bad):
        raise ValueError(f"{what}[{bad[0]}]: score {scores[bad[0]]} is not finite")
    bad = np.nonzero((scores < 0) | (scores > 1))[0]
    if len(bad):
        raise ValueError(f"{what}[{bad[0]}]: score {scores[bad[0]]} is outside [0, 1] (a probability is expected)")
    boxes = _boxes_from_xywh(bbox, what)
    image = gt.image_index(_numeric_column(cols["image_id"], what, "image_id", True), what)
    category = gt.category_index(_numeric_column(cols["category_id"], what, "category_id", True), what)
    return {"boxes": boxes, "scores": scores, "image": image, "category": category}


# --------------------------------------------------------------------------- matching


def match_detections(det_boxes: ArrayLike, det_image: ArrayLike, det_category: ArrayLike,
                     gt_boxes: ArrayLike, gt_image: ArrayLike, gt_category: ArrayLike,
                     gt_crowd: Optional[ArrayLike] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best same-class, same-image ground truth of every detection, vectorised.

    Detections and objects are grouped by ``(image, category)`` key with one sort;
    each detection is compared with the (padded) block of objects of its group, in
    chunks of at most ``2e6`` pairs -- no Python loop per detection or per image.

    Args:
        det_boxes: [D, 4] ``xyxy``; det_image, det_category: [D] integer keys (any ints).
        gt_boxes: [G, 4] ``xyxy``; gt_image, gt_category: [G] keys in the same spaces;
        gt_crowd: [G] bool (COCO ``iscrowd``; default all False).
        Numpy arrays, torch tensors (any device) or sequences.

    Returns:
        ``(iou [D] float64, gt_index [D] int64, ignored [D] bool)``: ``iou`` is the best
        IoU over the non-crowd objects of the detection's group (0 when none),
        ``gt_index`` the index into the ground truth of that object (-1: no non-crowd
        object in the group, or no overlap), ``ignored`` marks detections with
        ``iou < 0.5`` whose crowd IoU (intersection over the detection's area) is ``>= 0.5``.
    """
    det_boxes = _as_numpy(det_boxes, np.float64).reshape(-1, 4)
    gt_boxes = _as_numpy(gt_boxes, np.float64).reshape(-1, 4)
    det_image, det_category = _as_numpy(det_image, np.int64).ravel(), _as_numpy(det_category, np.int64).ravel()
    gt_image, gt_category = _as_numpy(gt_image, np.int64).ravel(), _as_numpy(gt_category, np.int64).ravel()
    gt_crowd = np.zeros(len(gt_boxes), bool) if gt_crowd is None else _as_numpy(gt_crowd).astype(bool).ravel()
    num = len(det_boxes)
    if not (len(det_image) == len(det_category) == num):
        raise ValueError(f"det_boxes, det_image, det_category: lengths {num}, {len(det_image)}, {len(det_category)}")
    if not (len(gt_image) == len(gt_category) == len(gt_crowd) == len(gt_boxes)):
        raise ValueError(f"gt_boxes, gt_image, gt_category, gt_crowd: lengths {len(gt_boxes)}, {len(gt_image)}, "
                         f"{len(gt_category)}, {len(gt_crowd)}")
    iou = np.zeros(num)
    best = np.full(num, -1, dtype=np.int64)
    crowd_iou = np.zeros(num)
    if num == 0 or len(gt_boxes) == 0:
        return iou, best, np.zeros(num, bool)
    # compact (image, category) keys: any integer ids, no overflow
    _, image_code = np.unique(np.concatenate([gt_image, det_image]), return_inverse=True)
    categories, category_code = np.unique(np.concatenate([gt_category, det_category]), return_inverse=True)
    key = image_code.ravel().astype(np.int64) * len(categories) + category_code.ravel()
    gt_key, det_key = key[: len(gt_boxes)], key[len(gt_boxes):]
    order = np.argsort(gt_key, kind="stable")
    sorted_key = gt_key[order]
    start = np.searchsorted(sorted_key, det_key, side="left")
    count = np.searchsorted(sorted_key, det_key, side="right") - start
    width = int(count.max(initial=0))
    if width == 0:
        return iou, best, np.zeros(num, bool)
    det_area = np.prod(np.clip(det_boxes[:, 2:] - det_boxes[:, :2], 0, None), axis=1)
    gt_area = np.prod(np.clip(gt_boxes[:, 2:] - gt_boxes[:, :2], 0, None), axis=1)
    # detections sorted by group size, so each chunk pads only to its own widest group
    by_width = np.argsort(count, kind="stable")
    by_width = by_width[count[by_width] > 0]
    lo = 0
    while lo < len(by_width):
        hi = min(len(by_width), lo + max(1, _CHUNK // int(count[by_width[lo]])))
        hi = min(hi, lo + max(1, _CHUNK // int(count[by_width[hi - 1]])))  # rows * widest <= _CHUNK
        rows = by_width[lo:hi]
        w = int(count[rows[-1]])
        slot = np.arange(w)
        valid = slot[None, :] < count[rows, None]
        gt = order[np.minimum(start[rows, None] + slot[None, :], len(order) - 1)]  # [R, W]
        d, g = det_boxes[rows, None, :], gt_boxes[gt]
        wh = np.clip(np.minimum(d[..., 2:], g[..., 2:]) - np.maximum(d[..., :2], g[..., :2]), 0, None)
        inter = wh[..., 0] * wh[..., 1]
        crowd = gt_crowd[gt]
        denom = np.where(crowd, det_area[rows, None], det_area[rows, None] + gt_area[gt] - inter)
        with np.errstate(divide="ignore", invalid="ignore"):
            pair = np.where(denom > 0, inter / denom, 0.0)
        plain = np.where(valid & ~crowd, pair, -1.0)
        pick = plain.argmax(axis=1)
        top = plain[np.arange(len(rows)), pick]
        iou[rows] = np.maximum(top, 0.0)
        best[rows] = np.where(top > 0, gt[np.arange(len(rows)), pick], -1)
        crowd_iou[rows] = np.where(valid & crowd, pair, 0.0).max(axis=1)
        lo = hi
    return iou, best, (iou < 0.5) & (crowd_iou >= 0.5)


# --------------------------------------------------------------------------- statistics


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(average, counts)
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    r = float((x * y).sum()) / denom if denom > 0 else float("nan")
    return min(1.0, max(-1.0, r)) if math.isfinite(r) else None


def correlations(scores: ArrayLike, ious: ArrayLike) -> Dict[str, Any]:
    """``{"count", "pearson", "spearman"}`` of paired samples (``None`` where undefined:
    fewer than two pairs or a constant variable). Spearman averages tied ranks."""
    scores, ious = _as_numpy(scores, np.float64).ravel(), _as_numpy(ious, np.float64).ravel()
    if len(scores) != len(ious):
        raise ValueError(f"scores and ious differ in length: {len(scores)} vs {len(ious)}")
    spearman = _pearson(_ranks(scores), _ranks(ious)) if len(scores) >= 2 else None
    return {"count": int(len(scores)), "pearson": _pearson(scores, ious), "spearman": spearman}


def _ratio(numerator: int, denominator: int) -> Optional[float]:
    return None if denominator == 0 else numerator / denominator


def inconsistent_detections(scores: ArrayLike, ious: ArrayLike, *, score_hi: float = SCORE_HI,
                            score_lo: float = SCORE_LO, iou_low: float = IOU_LOW,
                            iou_high: float = IOU_HIGH) -> Tuple[np.ndarray, np.ndarray]:
    """Per detection, the two kinds of inconsistency that :func:`inconsistency` counts.

    Returns:
        ``(high_score_low_iou, low_score_high_iou)``, bool arrays: ``s >= score_hi and u < iou_low``
        (a confident, badly localised box) and ``s < score_lo and u >= iou_high`` (a well-localised
        box scored low).
    """
    s, u = _as_numpy(scores, np.float64).ravel(), _as_numpy(ious, np.float64).ravel()
    return (s >= score_hi) & (u < iou_low), (s < score_lo) & (u >= iou_high)


def inconsistency(scores: ArrayLike, ious: ArrayLike, *, score_hi: float = SCORE_HI, score_lo: float = SCORE_LO,
                  iou_low: float = IOU_LOW, iou_high: float = IOU_HIGH) -> Dict[str, Any]:
    """Rates of high-score/low-IoU and low-score/high-IoU detections (see the module docstring)."""
    s, u = _as_numpy(scores, np.float64).ravel(), _as_numpy(ious, np.float64).ravel()
    confident, localised = s >= score_hi, u >= iou_high
    hs_li, ls_hi = inconsistent_detections(s, u, score_hi=score_hi, score_lo=score_lo, iou_low=iou_low,
                                           iou_high=iou_high)
    n_hs_li, n_ls_hi = int(hs_li.sum()), int(ls_hi.sum())
    return {
        "high_score_low_iou": _ratio(n_hs_li, int(confident.sum())),
        "high_score_low_iou_of_all": _ratio(n_hs_li, len(s)),
        "num_high_score_low_iou": n_hs_li,
        "num_high_score": int(confident.sum()),
        "low_score_high_iou": _ratio(n_ls_hi, int(localised.sum())),
        "low_score_high_iou_of_all": _ratio(n_ls_hi, len(s)),
        "num_low_score_high_iou": n_ls_hi,
        "num_high_iou": int(localised.sum()),
        "num_detections": int(len(s)),
    }


def calibration(scores: ArrayLike, ious: ArrayLike, num_bins: int = 10) -> Dict[str, Any]:
    """Mean IoU per equal-width score bin and the expected calibration gap (see the module docstring)."""
    s, u = _as_numpy(scores, np.float64).ravel(), _as_numpy(ious, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1]), 0, num_bins - 1)
    count = np.bincount(which, minlength=num_bins)
    sum_s = np.bincount(which, weights=s, minlength=num_bins)
    sum_u = np.bincount(which, weights=u, minlength=num_bins)
    bins, gap = [], 0.0
    for b in range(num_bins):
        n = int(count[b])
        mean_s = float(sum_s[b] / n) if n else None
        mean_u = float(sum_u[b] / n) if n else None
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
                     "mean_score": mean_s, "mean_iou": mean_u})
        if n:
            gap += n * abs(mean_u - mean_s)
    return {"bins": bins, "expected_calibration_gap": gap / len(s) if len(s) else None}


def nms_ranking(scores: ArrayLike, ious: ArrayLike, gt_index: ArrayLike, *, min_iou: float = 0.5,
                tolerance: float = 0.05) -> Dict[str, Any]:
    """NMS ranking loss of pre-NMS candidates.

    Args:
        scores, ious, gt_index: [C] per candidate: score, IoU with its best-matching
            object and that object's index (``-1``: none), as :func:`match_detections` gives.
        min_iou: a candidate belongs to its object only when ``iou >= min_iou``.
        tolerance: an object is misranked when ``best IoU - top-scored IoU > tolerance``.
    """
    s, u = _as_numpy(scores, np.float64).ravel(), _as_numpy(ious, np.float64).ravel()
    g = _as_numpy(gt_index, np.int64).ravel()
    keep = (g >= 0) & (u >= min_iou)
    result: Dict[str, Any] = {"num_candidates": int(len(s)), "num_assigned": int(keep.sum()), "num_objects": 0,
                              "ranking_loss": None, "fraction_misranked": None,
                              "min_iou": min_iou, "tolerance": tolerance}
    s, u, g = s[keep], u[keep], g[keep]
    if len(g) == 0:
        return result
    order = np.lexsort((-u, -s, g))  # by object, highest score first (ties: best IoU first)
    s, u, g = s[order], u[order], g[order]
    first = np.r_[0, np.nonzero(np.diff(g))[0] + 1]
    gap = np.maximum.reduceat(u, first) - u[first]
    result.update(num_objects=int(len(first)), ranking_loss=float(gap.mean()),
                  fraction_misranked=float((gap > tolerance).mean()))
    return result


# --------------------------------------------------------------------------- reports


def _check_settings(score_hi: float, score_lo: float, iou_floor: float, num_bins: int,
                    iou_low: float, iou_high: float) -> None:
    if not (0 <= score_lo <= score_hi <= 1):
        raise ValueError(f"need 0 <= score_lo <= score_hi <= 1, got score_lo={score_lo} score_hi={score_hi}")
    if not (0 <= iou_low <= iou_high <= 1):
        raise ValueError(f"need 0 <= iou_low <= iou_high <= 1, got iou_low={iou_low} iou_high={iou_high}")
    if not (0 <= iou_floor < 1):
        raise ValueError(f"need 0 <= iou_floor < 1, got {iou_floor}")
    if int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins}")


def _build_report(scores: np.ndarray, iou: np.ndarray, ignored: np.ndarray, category: np.ndarray,
                  class_keys: Sequence[str], class_ids: Sequence[int], settings: Dict[str, Any]) -> Dict[str, Any]:
    keep = ~ignored
    s, u, c = scores[keep], iou[keep], category[keep]
    overlap = u > settings["iou_floor"]
    per_class: Dict[str, Any] = {}
    present = np.bincount(c, minlength=len(class_keys)) if len(c) else np.zeros(len(class_keys), int)
    for index in np.nonzero(present)[0]:
        mask = c == index
        per_class[class_keys[index]] = {"category_id": int(class_ids[index]), "num_detections": int(present[index]),
                                        **correlations(s[mask & overlap], u[mask & overlap])}
    counts, _, _ = np.histogram2d(np.clip(s, 0, 1), np.clip(u, 0, 1), bins=[HISTOGRAM_BINS, HISTOGRAM_BINS],
                                  range=[[0, 1], [0, 1]])
    edges = np.linspace(0, 1, HISTOGRAM_BINS + 1).tolist()
    return {
        "num_detections": int(len(iou)),
        "num_ignored": int(ignored.sum()),
        "settings": dict(settings),
        "overall": {"num_detections": int(len(s)), **correlations(s[overlap], u[overlap])},
        "per_class": per_class,
        "inconsistency": inconsistency(s, u, score_hi=settings["score_hi"], score_lo=settings["score_lo"],
                                       iou_low=settings["iou_low"], iou_high=settings["iou_high"]),
        "calibration": calibration(s, u, settings["num_bins"]),
        "histogram": {"score_edges": edges, "iou_edges": edges, "counts": counts.astype(int).tolist()},
    }


def score_iou_pairs(gt: Any, results: JsonLike) -> Dict[str, np.ndarray]:
    """The ``(score, IoU)`` pair of every detection of COCO ``results`` (see the module docstring).

    Returns:
        Arrays aligned with ``results``: ``score``, ``iou`` (best non-crowd IoU, 0 when none),
        ``ignored`` (matched a crowd region instead), ``gt_id`` (annotation id of the matched
        object, -1 when none), ``gt_index`` (its position in ``GroundTruth.boxes``, -1 when none),
        ``image_id``, ``category_id``, ``box`` ([D, 4] ``xyxy``).
    """
    truth = gt if isinstance(gt, GroundTruth) else GroundTruth(gt)
    det = _results_arrays(results, truth, "results")
    iou, best, ignored = match_detections(det["boxes"], det["image"], det["category"], truth.boxes, truth.image,
                                          truth.category, truth.crowd)
    gt_id = np.where(best >= 0, truth.annotation_ids[np.maximum(best, 0)] if len(best) and len(truth.boxes)
                     else -1, -1)
    return {"score": det["scores"], "iou": iou, "ignored": ignored, "gt_id": np.asarray(gt_id, dtype=np.int64),
            "gt_index": best, "image_id": truth.image_ids[det["image"]],
            "category_id": truth.category_ids[det["category"]], "box": det["boxes"]}


def consistency_report(gt: Any, results: JsonLike, *, candidates: Optional[JsonLike] = None,
                       score_hi: float = SCORE_HI, score_lo: float = SCORE_LO, iou_floor: float = 0.1,
                       num_bins: int = 10, iou_low: float = IOU_LOW, iou_high: float = IOU_HIGH) -> Dict[str, Any]:
    """The consistency report of COCO ``results`` against the COCO ground truth ``gt``.

    Args:
        gt: COCO instances JSON: a path, the loaded dict, a ``pycocotools`` ``COCO`` object
            or a :class:`GroundTruth` (to reuse one across several reports).
        results: COCO detection results: a path or the list of
            ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
        candidates: pre-NMS candidates in the same format; adds ``report["nms_ranking"]``.
        score_hi, score_lo, iou_low, iou_high: thresholds of ``report["inconsistency"]``.
        iou_floor: correlations use detections with ``IoU > iou_floor``.
        num_bins: score bins of ``report["calibration"]``.

    Returns:
        A JSON-serialisable dict; see the module docstring for every field.

    Raises:
        ValueError: malformed input, naming the entry and field; FileNotFoundError: a missing file.
    """
    _check_settings(score_hi, score_lo, iou_floor, num_bins, iou_low, iou_high)
    truth = gt if isinstance(gt, GroundTruth) else GroundTruth(gt)
    det = _results_arrays(results, truth, "results")
    iou, _, ignored = match_detections(det["boxes"], det["image"], det["category"], truth.boxes, truth.image,
                                       truth.category, truth.crowd)
    settings = {"score_hi": score_hi, "score_lo": score_lo, "iou_low": iou_low, "iou_high": iou_high,
                "iou_floor": iou_floor, "num_bins": int(num_bins)}
    report = _build_report(det["scores"], iou, ignored, det["category"], truth.class_keys(),
                           truth.category_ids.tolist(), settings)
    if candidates is not None:
        cand = _results_arrays(candidates, truth, "candidates")
        cand_iou, cand_gt, _ = match_detections(cand["boxes"], cand["image"], cand["category"], truth.boxes,
                                                truth.image, truth.category, truth.crowd)
        report["nms_ranking"] = nms_ranking(cand["scores"], cand_iou, cand_gt)
    return report


def _tensor_inputs(boxes: ArrayLike, scores: Optional[ArrayLike], labels: ArrayLike, image_ids: ArrayLike,
                   prefix: str) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]:
    b = _as_numpy(boxes, np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{prefix}_boxes: expected shape [N, 4], got {list(b.shape)}")
    arrays = {"labels": _as_numpy(labels).ravel(), "image_ids": _as_numpy(image_ids).ravel()}
    if scores is not None:
        arrays["scores"] = _as_numpy(scores, np.float64).ravel()
    for name, a in arrays.items():
        if len(a) != len(b):
            raise ValueError(f"{prefix}_{name}: {len(a)} entries for {len(b)} boxes")
    for name in ("labels", "image_ids"):
        a = arrays[name]
        if a.dtype.kind not in "iu":
            if a.dtype.kind == "f" and len(a):
                bad = np.nonzero(~np.isfinite(a) | (a != np.round(a)))[0]
                if len(bad):
                    raise ValueError(f"{prefix}_{name}[{bad[0]}]: must be an integer, got {a[bad[0]]}")
            elif len(a):
                raise ValueError(f"{prefix}_{name}: must be integers, got dtype {a.dtype}")
        arrays[name] = a.astype(np.int64)
    bad = np.nonzero(~np.isfinite(b).all(axis=1))[0]
    if len(bad):
        raise ValueError(f"{prefix}_boxes[{bad[0]}]: {b[bad[0]].tolist()} is not finite")
    bad = np.nonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))[0]
    if len(bad):
        raise ValueError(f"{prefix}_boxes[{bad[0]}]: {b[bad[0]].tolist()} has x2 < x1 or y2 < y1")
    s = arrays.get("scores")
    if s is not None:
        bad = np.nonzero(~np.isfinite(s))[0]
        if len(bad):
            raise ValueError(f"{prefix}_scores[{bad[0]}]: {s[bad[0]]} is not finite")
    return b, s, arrays["labels"], arrays["image_ids"]


def consistency_report_from_tensors(
    det_boxes: ArrayLike, det_scores: ArrayLike, det_labels: ArrayLike, det_image_ids: ArrayLike,
    gt_boxes: ArrayLike, gt_labels: ArrayLike, gt_image_ids: ArrayLike, gt_iscrowd: Optional[ArrayLike] = None,
    *, candidates: Optional[Tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]] = None,
    class_names: Optional[Mapping[int, str]] = None, score_hi: float = SCORE_HI, score_lo: float = SCORE_LO,
    iou_floor: float = 0.1, num_bins: int = 10, iou_low: float = IOU_LOW, iou_high: float = IOU_HIGH,
) -> Dict[str, Any]:
    """:func:`consistency_report` of flat tensors (torch, any device, or numpy), boxes ``xyxy``.

    Args:
        det_boxes [D, 4], det_scores [D], det_labels [D], det_image_ids [D]: the detections.
        gt_boxes [G, 4], gt_labels [G], gt_image_ids [G], gt_iscrowd [G] (default all False):
            the ground truth. Labels and image ids are any integers; a detection whose
            (image, label) has no object simply gets IoU 0.
        candidates: ``(boxes, scores, labels, image_ids)`` of pre-NMS candidates.
        class_names: ``label -> name`` for the ``per_class`` keys (default ``str(label)``).

    Returns:
        The same JSON-serialisable report as :func:`consistency_report`.
    """
    _check_settings(score_hi, score_lo, iou_floor, num_bins, iou_low, iou_high)
    boxes, scores, labels, images = _tensor_inputs(det_boxes, det_scores, det_labels, det_image_ids, "det")
    g_boxes, _, g_labels, g_images = _tensor_inputs(gt_boxes, None, gt_labels, gt_image_ids, "gt")
    crowd = np.zeros(len(g_boxes), bool) if gt_iscrowd is None else _as_numpy(gt_iscrowd).astype(bool).ravel()
    if len(crowd) != len(g_boxes):
        raise ValueError(f"gt_iscrowd: {len(crowd)} entries for {len(g_boxes)} boxes")
    iou, _, ignored = match_detections(boxes, images, labels, g_boxes, g_images, g_labels, crowd)
    known, category = np.unique(labels, return_inverse=True)
    names = dict(class_names or {})
    keys = [str(names.get(int(k), int(k))) for k in known]
    if len(set(keys)) != len(keys):
        keys = [f"{k} ({int(c)})" for k, c in zip(keys, known)]
    settings = {"score_hi": score_hi, "score_lo": score_lo, "iou_low": iou_low, "iou_high": iou_high,
                "iou_floor": iou_floor, "num_bins": int(num_bins)}
    report = _build_report(scores, iou, ignored, category.ravel().astype(np.int64), keys, known.tolist(), settings)
    if candidates is not None:
        if len(candidates) != 4:
            raise ValueError("candidates: expected (boxes, scores, labels, image_ids)")
        c_boxes, c_scores, c_labels, c_images = _tensor_inputs(*candidates, "candidates")
        c_iou, c_gt, _ = match_detections(c_boxes, c_images, c_labels, g_boxes, g_images, g_labels, crowd)
        report["nms_ranking"] = nms_ranking(c_scores, c_iou, c_gt)
    return report
