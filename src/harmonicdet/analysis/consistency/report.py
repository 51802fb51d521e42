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

The field's metrics (each defined with its formula and source in its module)
-------------------------------------------------------------------------------
These use COCO's one-to-one assignment (:mod:`.assignment`): true positives at an IoU
threshold, each object taken by at most one detection.

* ``laece`` (:mod:`.detection_calibration`; Kuzucu, Oksuz et al., ECCV 2024):
  ``{"value", "iou_threshold" (0: LaECE_0), "num_bins" (25), "num_classes", "bins"}``;
  ``bins`` pool every class: ``count``, ``mean_score``, ``mean_target`` (precision x
  mean IoU of the bin's true positives). ``per_class[name]["laece"]`` per class.
* ``dece`` (:mod:`.detection_calibration`; Küppers et al., CVPRW 2020, as ``netcal``):
  ``{"value", "iou_threshold" (0.5), "num_bins" (10), "box_bins" (``null``, or bins per
  box feature), "num_true_positives", "bins"}`` with ``count``, ``mean_score``,
  ``precision`` per score bin; ``per_class[name]["dece"]``.
* ``tide`` (:mod:`.tide`; Bolya et al., ECCV 2020): ``{"pos_threshold", "background_threshold",
  "ap", "dap": {"cls", "loc", "both", "dupe", "bkg", "miss"}, "dap_special":
  {"false_positive", "false_negative"}, "counts"}`` (AP units, fractions);
  ``per_class[name]["tide"] = {"ap", "dap"}``.
* ``posthoc`` (:mod:`.posthoc`, unless ``posthoc=False``): LaECE and D-ECE of half the
  images before and after per-class isotonic, Platt and temperature maps fitted on
  the other half.

Without detections ``laece``/``dece`` values are ``null``; ``tide`` values are
``null`` only when there is neither an object nor a detection (no objects: AP 0;
all detections wrong: AP 0 and each error's dAP). No field is ever NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .assignment import assign_one_to_one, score_order
from .detection_calibration import DECE_BINS, DECE_IOU, LAECE_BINS, LAECE_IOU, box_features, dece, laece
from .inputs import ArrayLike, GroundTruth, JsonLike, _as_numpy, _tensor_inputs, results_arrays
from .matching import Matches, match_detections, match_pairs
from .posthoc import posthoc_calibration
from .statistics import IOU_HIGH, IOU_LOW, SCORE_HI, SCORE_LO, calibration, correlations, inconsistency, nms_ranking
from .tide import TIDE_POS, tide_breakdown

HISTOGRAM_BINS = 20


@dataclass
class _Inputs:
    """Detections and ground truth as arrays, images and classes as indices (``0..num_images-1``, in the order
    of the sorted image ids; ``0..num_classes-1``)."""

    boxes: np.ndarray
    scores: np.ndarray
    image: np.ndarray
    category: np.ndarray
    gt_boxes: np.ndarray
    gt_image: np.ndarray
    gt_category: np.ndarray
    gt_crowd: np.ndarray
    num_classes: int
    image_sizes: Optional[np.ndarray] = None  # [num_images, 2] (width, height), for D-ECE's box bins


def _check_settings(score_hi: float, score_lo: float, iou_floor: float, num_bins: int,
                    iou_low: float, iou_high: float, laece_bins: int = LAECE_BINS, dece_bins: int = DECE_BINS,
                    dece_iou: float = DECE_IOU, dece_box_bins: Optional[int] = None) -> None:
    if not (0 <= score_lo <= score_hi <= 1):
        raise ValueError(f"need 0 <= score_lo <= score_hi <= 1, got score_lo={score_lo} score_hi={score_hi}")
    if not (0 <= iou_low <= iou_high <= 1):
        raise ValueError(f"need 0 <= iou_low <= iou_high <= 1, got iou_low={iou_low} iou_high={iou_high}")
    if not (0 <= iou_floor < 1):
        raise ValueError(f"need 0 <= iou_floor < 1, got {iou_floor}")
    for name, value in (("num_bins", num_bins), ("laece_bins", laece_bins), ("dece_bins", dece_bins)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if dece_box_bins is not None and (int(dece_box_bins) != dece_box_bins or dece_box_bins < 1):
        raise ValueError(f"dece_box_bins must be a positive integer or None, got {dece_box_bins}")
    if not (0 < dece_iou <= 1):
        raise ValueError(f"need 0 < dece_iou <= 1, got {dece_iou}")


def _field_metrics(x: _Inputs, eligible: np.ndarray, matches: Matches, settings: Dict[str, Any]) -> Dict[str, Any]:
    """``laece``, ``dece``, ``tide`` and ``posthoc`` of the report (see the module docstring), and per class
    ``{"laece", "dece", "tide"}`` lists aligned with the class indices."""
    by_score = score_order(x.scores)
    thresholds = sorted({LAECE_IOU, settings["dece_iou"], TIDE_POS})
    assigned = dict(zip(thresholds, assign_one_to_one(x.scores, x.image * x.num_classes + x.category, matches,
                                                      thresholds, eligible, by_score)))
    keep = np.flatnonzero(eligible)
    s, c = x.scores[keep], x.category[keep]
    target = assigned[LAECE_IOU][1][keep]
    matched = (assigned[settings["dece_iou"]][0][keep] >= 0).astype(np.float64)
    la = laece(s, target, c, x.num_classes, num_bins=settings["laece_bins"])
    features, bins = None, settings["dece_bins"]
    if settings["dece_box_bins"] is not None:
        features = box_features(x.boxes[keep], x.image_sizes[x.image[keep]])
        bins = [settings["dece_bins"]] + [settings["dece_box_bins"]] * 4
    de = dece(s, matched, features=features, bins=bins, category=c, num_classes=x.num_classes)
    tide = tide_breakdown(x.scores, x.category, x.image, eligible, matches, assigned[TIDE_POS][0], x.gt_category,
                          x.gt_image, x.gt_crowd, x.num_classes, by_score=by_score)
    metrics = {
        "laece": {"value": la["value"], "iou_threshold": LAECE_IOU, "num_bins": settings["laece_bins"],
                  "num_classes": la["num_classes"], "bins": la["bins"]},
        "dece": {"value": de["value"], "iou_threshold": settings["dece_iou"], "num_bins": settings["dece_bins"],
                 "box_bins": settings["dece_box_bins"], "num_true_positives": int(matched.sum()),
                 "bins": de["bins"]},
        "tide": {k: v for k, v in tide.items() if k != "per_class"},
        "per_class": {"laece": la["per_class"], "dece": de["per_class"], "tide": tide["per_class"]},
    }
    if settings["posthoc"]:
        metrics["posthoc"] = posthoc_calibration(s, target, matched, c, x.image[keep], x.num_classes,
                                                 laece_bins=settings["laece_bins"], dece_bins=settings["dece_bins"])
    return metrics


def _build_report(x: _Inputs, class_keys: Sequence[str], class_ids: Sequence[int],
                  settings: Dict[str, Any]) -> Dict[str, Any]:
    matches = match_pairs(x.boxes, x.image, x.category, x.gt_boxes, x.gt_image, x.gt_category, x.gt_crowd,
                          across_classes=True)
    iou, ignored = matches.iou, matches.ignored
    keep = ~ignored
    s, u, c = x.scores[keep], iou[keep], x.category[keep]
    overlap = u > settings["iou_floor"]
    field = _field_metrics(x, keep, matches, settings)
    per_class: Dict[str, Any] = {}
    present = np.bincount(c, minlength=len(class_keys)) if len(c) else np.zeros(len(class_keys), int)
    for index in np.nonzero(present)[0]:
        mask = c == index
        per_class[class_keys[index]] = {"category_id": int(class_ids[index]), "num_detections": int(present[index]),
                                        **correlations(s[mask & overlap], u[mask & overlap]),
                                        **{k: v[index] for k, v in field["per_class"].items()}}
    counts, _, _ = np.histogram2d(np.clip(s, 0, 1), np.clip(u, 0, 1), bins=[HISTOGRAM_BINS, HISTOGRAM_BINS],
                                  range=[[0, 1], [0, 1]])
    edges = np.linspace(0, 1, HISTOGRAM_BINS + 1).tolist()
    report = {
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
    report.update({k: v for k, v in field.items() if k != "per_class"})
    return report


def _settings(score_hi, score_lo, iou_low, iou_high, iou_floor, num_bins, laece_bins, dece_bins, dece_iou,
              dece_box_bins, posthoc) -> Dict[str, Any]:
    return {"score_hi": score_hi, "score_lo": score_lo, "iou_low": iou_low, "iou_high": iou_high,
            "iou_floor": iou_floor, "num_bins": int(num_bins), "laece_bins": int(laece_bins),
            "dece_bins": int(dece_bins), "dece_iou": dece_iou,
            "dece_box_bins": None if dece_box_bins is None else int(dece_box_bins), "posthoc": bool(posthoc)}


def _image_sizes(truth: GroundTruth) -> Optional[np.ndarray]:
    """``[num_images, 2]`` (width, height) of the ground truth's images; ``None`` unless every image has both."""
    sizes = [(truth.images[int(i)].get("width"), truth.images[int(i)].get("height")) for i in truth.image_ids]
    if not sizes or any(not (isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0)
                        for w, h in sizes):
        return None
    return np.asarray(sizes, dtype=np.float64)


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
                       num_bins: int = 10, iou_low: float = IOU_LOW, iou_high: float = IOU_HIGH,
                       laece_bins: int = LAECE_BINS, dece_bins: int = DECE_BINS, dece_iou: float = DECE_IOU,
                       dece_box_bins: Optional[int] = None, posthoc: bool = False) -> Dict[str, Any]:
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
        laece_bins: score bins of LaECE (25); dece_bins, dece_iou: score bins and true-positive IoU of D-ECE.
        dece_box_bins: also bin D-ECE over ``cx, cy, w, h`` relative to the image size, this many bins
            each (needs every image's ``width`` and ``height``).
        posthoc: add ``report["posthoc"]``, the post-hoc calibration baseline.

    Returns:
        A JSON-serialisable dict; see the module docstring for every field.

    Raises:
        ValueError: malformed input, naming the entry and field; FileNotFoundError: a missing file.
    """
    _check_settings(score_hi, score_lo, iou_floor, num_bins, iou_low, iou_high, laece_bins, dece_bins, dece_iou,
                    dece_box_bins)
    truth = gt if isinstance(gt, GroundTruth) else GroundTruth(gt)
    sizes = _image_sizes(truth) if dece_box_bins is not None else None
    if dece_box_bins is not None and sizes is None:
        raise ValueError("dece_box_bins needs the image sizes: a width and a height > 0 for every ground-truth image")
    det = results_arrays(results, truth, "results")
    inputs = _Inputs(det["boxes"], det["scores"], det["image"], det["category"], truth.boxes, truth.image,
                     truth.category, truth.crowd, len(truth.category_ids), sizes)
    settings = _settings(score_hi, score_lo, iou_low, iou_high, iou_floor, num_bins, laece_bins, dece_bins, dece_iou,
                         dece_box_bins, posthoc)
    report = _build_report(inputs, truth.class_keys(), truth.category_ids.tolist(), settings)
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
    laece_bins: int = LAECE_BINS, dece_bins: int = DECE_BINS, dece_iou: float = DECE_IOU, posthoc: bool = False,
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
        The same JSON-serialisable report as :func:`consistency_report` (no D-ECE box bins: the
        image sizes are unknown; images are those with a detection or an object).
    """
    _check_settings(score_hi, score_lo, iou_floor, num_bins, iou_low, iou_high, laece_bins, dece_bins, dece_iou)
    boxes, scores, labels, images = _tensor_inputs(det_boxes, det_scores, det_labels, det_image_ids, "det")
    g_boxes, _, g_labels, g_images = _tensor_inputs(gt_boxes, None, gt_labels, gt_image_ids, "gt")
    crowd = np.zeros(len(g_boxes), bool) if gt_iscrowd is None else _as_numpy(gt_iscrowd).astype(bool).ravel()
    if len(crowd) != len(g_boxes):
        raise ValueError(f"gt_iscrowd: {len(crowd)} entries for {len(g_boxes)} boxes")
    known, category = np.unique(np.concatenate([labels, g_labels]), return_inverse=True)
    _, image = np.unique(np.concatenate([images, g_images]), return_inverse=True)
    category, image = category.ravel().astype(np.int64), image.ravel().astype(np.int64)
    names = dict(class_names or {})
    keys = [str(names.get(int(k), int(k))) for k in known]
    if len(set(keys)) != len(keys):
        keys = [f"{k} ({int(c)})" for k, c in zip(keys, known)]
    num = len(boxes)
    inputs = _Inputs(boxes, scores, image[:num], category[:num], g_boxes, image[num:], category[num:], crowd,
                     len(known))
    settings = _settings(score_hi, score_lo, iou_low, iou_high, iou_floor, num_bins, laece_bins, dece_bins, dece_iou,
                         None, posthoc)
    report = _build_report(inputs, keys, known.tolist(), settings)
    if candidates is not None:
        if len(candidates) != 4:
            raise ValueError("candidates: expected (boxes, scores, labels, image_ids)")
        c_boxes, c_scores, c_labels, c_images = _tensor_inputs(*candidates, "candidates")
        c_iou, c_gt, _ = match_detections(c_boxes, c_images, c_labels, g_boxes, g_images, g_labels, crowd)
        report["nms_ranking"] = nms_ranking(c_scores, c_iou, c_gt)
    return report
