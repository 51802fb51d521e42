"""The consistency metrics on plain arrays of scores and IoUs (definitions: :mod:`.report`)."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .inputs import ArrayLike, _as_numpy

# default thresholds of the inconsistency rates (``report["inconsistency"]``); also the bands drawn by
# ``harmonicdet draw``: IoU < IOU_LOW badly localised, IoU >= IOU_HIGH well localised
SCORE_HI, SCORE_LO, IOU_LOW, IOU_HIGH = 0.5, 0.2, 0.5, 0.75


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
