"""The consistency report: every field, and the entry points that build it.

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
* ``max_score``, ``max_iou``: the highest score and IoU of the ``n`` detections (``null`` when
  ``n = 0``): why a rate is ``null`` (no score reaches ``score_hi``, no IoU ``iou_high``).
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
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .inputs import ArrayLike, GroundTruth, JsonLike, _as_numpy, _tensor_inputs, results_arrays
from .matching import match_detections
from .statistics import IOU_HIGH, IOU_LOW, SCORE_HI, SCORE_LO, calibration, correlations, inconsistency, nms_ranking

HISTOGRAM_BINS = 20


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
        "max_score": float(s.max()) if len(s) else None,
        "max_iou": float(u.max()) if len(u) else None,
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
    det = results_arrays(results, truth, "results")
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
    det = results_arrays(results, truth, "results")
    iou, _, ignored = match_detections(det["boxes"], det["image"], det["category"], truth.boxes, truth.image,
                                       truth.category, truth.crowd)
    settings = {"score_hi": score_hi, "score_lo": score_lo, "iou_low": iou_low, "iou_high": iou_high,
                "iou_floor": iou_floor, "num_bins": int(num_bins)}
    report = _build_report(det["scores"], iou, ignored, det["category"], truth.class_keys(),
                           truth.category_ids.tolist(), settings)
    if candidates is not None:
        cand = results_arrays(candidates, truth, "candidates")
        cand_iou, cand_gt, _ = match_detections(cand["boxes"], cand["image"], cand["category"], truth.boxes,
                                                truth.image, truth.category, truth.crowd)
        report["nms_ranking"] = nms_ranking(cand["scores"], cand_iou, cand_gt)
    return report


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
