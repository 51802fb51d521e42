"""The calibration errors of detectors in the field's terms: LaECE and D-ECE, on plain arrays.

LaECE -- localisation-aware ECE (Kuzucu, Oksuz et al., "On Calibration of Object
Detectors: Pitfalls, Evaluation and Baselines", ECCV 2024; code
``fiveai/detection_calibration``). The detections of class ``c`` (``N_c`` of them)
fall into ``B = 25`` equal-width score bins (bin 0 is ``[0, 1/B]``, bin ``b > 0`` is
``(b/B, (b+1)/B]``); the target of a bin is its precision times the mean IoU of its
true positives, i.e. ``sum of IoU over its true positives / n_b``::

    LaECE_c = sum_b n_b / N_c * | mean score_b - (sum_{TP in b} IoU) / n_b |
    LaECE   = mean of LaECE_c over the classes with at least one detection

The true positives and their IoUs come from COCO's one-to-one assignment
(:mod:`.assignment`) at ``tau = 0`` (LaECE_0, the paper's default: any overlap).
Where this differs from their code: (1) no ``maxDets`` cap; (2) at ``tau = 0`` their
COCOeval lets a detection take an object it does not overlap at all (IoU 0), which
can take it away from a lower-scored detection that does overlap it; here a
detection must overlap the object; (3) they skip a class without ground truth,
here its detections count (all false positives, target 0); (4) they drop a class
whose error is exactly 0 from the mean, here it counts.

D-ECE -- detection expected calibration error (Küppers et al., "Multivariate
Confidence Calibration for Object Detection", CVPR Workshops 2020), exactly as
``netcal==1.4.0`` computes it with ``ECE(bins, detection=True).measure(X, y)``: ``X``
is the score (and optionally box features in ``[0, 1]``), ``y`` is 1 for a true
positive at IoU ``>= 0.5`` (the one-to-one assignment) and 0 otherwise. Every
column of ``X`` is clipped to ``[eps, 1 - eps]`` (float64 ``eps``) and cut into
equal-width bins (``[lo, hi)``, the last closed) over ``[0, 1]``; over the cells
``k`` of that grid::

    D-ECE = sum_k n_k / N * | precision_k - mean score_k |

With box features (``cx / W, cy / H, w / W, h / H`` of the image size), the grid is
the product of the score bins and ``box_bins`` bins per feature: the position- and
size-dependent D-ECE of Küppers et al.

Both are ``None`` without detections. Units: fractions (their papers print
percent).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .inputs import ArrayLike, _as_numpy

LAECE_BINS, LAECE_IOU = 25, 0.0
DECE_BINS, DECE_IOU = 10, 0.5


def _sums(key: np.ndarray, size: int, *weights: np.ndarray) -> List[np.ndarray]:
    """``[count, sum of each weight]`` per key in ``0..size-1`` (sparse keys through ``np.unique``)."""
    if size <= 4 * len(key) + 4096:
        return [np.bincount(key, minlength=size)] + [np.bincount(key, w, minlength=size) for w in weights]
    present, inverse = np.unique(key, return_inverse=True)
    out = [np.zeros(size, np.int64)] + [np.zeros(size) for _ in weights]
    out[0][present] = np.bincount(inverse)
    for total, w in zip(out[1:], weights):
        total[present] = np.bincount(inverse, w)
    return out


def laece_bin(scores: np.ndarray, num_bins: int) -> np.ndarray:
    """LaECE's bin of each score: ``0`` for ``[0, 1/B]``, ``b`` for ``(b/B, (b+1)/B]`` (their right-closed bins)."""
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    return np.clip(np.searchsorted(edges, scores, side="left") - 1, 0, num_bins - 1)


def laece(scores: ArrayLike, targets: ArrayLike, category: ArrayLike, num_classes: int, *,
          num_bins: int = LAECE_BINS) -> Dict[str, Any]:
    """LaECE of detections (see the module docstring).

    Args:
        scores: [N] detection scores; targets: [N] the IoU of each true positive with its object, ``0`` for a
            false positive; category: [N] class index in ``0..num_classes-1``.
        num_bins: score bins (25 as in the paper).

    Returns:
        ``{"value": float | None, "per_class": [float | None] * num_classes, "num_classes": int (with
        detections), "bins": [{"lo", "hi", "count", "mean_score", "mean_target"}]}``; ``bins`` pools every
        class (what a reliability diagram draws; ``mean_*`` ``None`` where empty).
    """
    s, t = _as_numpy(scores, np.float64).ravel(), _as_numpy(targets, np.float64).ravel()
    c = _as_numpy(category, np.int64).ravel()
    which = laece_bin(s, num_bins)
    count, sum_s, sum_t = _sums(c * num_bins + which, num_classes * num_bins, s, t)
    count, sum_s, sum_t = (x.reshape(num_classes, num_bins) for x in (count, sum_s, sum_t))
    per_class_n = count.sum(axis=1)
    present = per_class_n > 0
    error = np.abs(sum_s - sum_t).sum(axis=1) / np.maximum(per_class_n, 1)
    pooled_n, pooled_s, pooled_t = count.sum(axis=0), sum_s.sum(axis=0), sum_t.sum(axis=0)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    return {"value": float(error[present].mean()) if present.any() else None,
            "per_class": [float(e) if p else None for e, p in zip(error, present)],
            "num_classes": int(present.sum()),
            "bins": [{"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(pooled_n[b]),
                      "mean_score": float(pooled_s[b] / pooled_n[b]) if pooled_n[b] else None,
                      "mean_target": float(pooled_t[b] / pooled_n[b]) if pooled_n[b] else None}
                     for b in range(num_bins)]}


def box_features(boxes: np.ndarray, image_size: np.ndarray) -> np.ndarray:
    """``[N, 4]`` ``(cx / W, cy / H, w / W, h / H)`` of ``xyxy`` boxes and their images' ``[N, 2]`` ``(W, H)``."""
    size = np.tile(np.asarray(image_size, np.float64), 2)
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1) / size


def dece_cells(scores: np.ndarray, features: Optional[np.ndarray],
               bins: Union[int, Sequence[int]]) -> tuple:
    """netcal's binning: ``(cell [N], number of cells, clipped scores [N])``; every column clipped to
    ``[eps, 1 - eps]`` and cut at ``linspace(0, 1, b + 1)`` (``[lo, hi)``)."""
    columns = np.asarray(scores, np.float64).reshape(-1, 1)
    if features is not None:
        columns = np.concatenate([columns, np.asarray(features, np.float64).reshape(len(columns), -1)], axis=1)
    sizes = [int(bins)] * columns.shape[1] if np.ndim(bins) == 0 else [int(b) for b in bins]
    if len(sizes) != columns.shape[1]:
        raise ValueError(f"bins: {len(sizes)} bin counts for {columns.shape[1]} columns (score + features)")
    eps = np.finfo(np.float64).eps
    columns = np.clip(columns, eps, 1.0 - eps)
    index = [np.clip(np.searchsorted(np.linspace(0.0, 1.0, b + 1), columns[:, k], side="right") - 1, 0, b - 1)
             for k, b in enumerate(sizes)]
    cell = np.ravel_multi_index(index, sizes) if len(columns) else np.zeros(0, np.int64)
    return cell.astype(np.int64), int(np.prod(sizes)), columns[:, 0]


def dece(scores: ArrayLike, matched: ArrayLike, *, features: Optional[ArrayLike] = None,
         bins: Union[int, Sequence[int]] = DECE_BINS, category: Optional[ArrayLike] = None,
         num_classes: int = 0) -> Dict[str, Any]:
    """D-ECE as ``netcal.metrics.ECE(bins, detection=True).measure(X, matched)`` (see the module docstring).

    Args:
        scores: [N]; matched: [N] 1 for a true positive, 0 otherwise.
        features: optional [N, F] box features in ``[0, 1]`` (e.g. :func:`box_features`).
        bins: bins of every column, or one count per column (score first).
        category, num_classes: also give the D-ECE of each class's detections.

    Returns:
        ``{"value": float | None, "per_class": [float | None] (with ``category``), "bins": [{"lo", "hi", "count",
        "mean_score", "precision"}]}``; ``bins`` are the score bins, pooled over the box-feature cells.
    """
    s = _as_numpy(scores, np.float64).ravel()
    y = _as_numpy(matched, np.float64).ravel()
    cell, num_cells, clipped = dece_cells(s, None if features is None else _as_numpy(features, np.float64), bins)
    count, sum_s, sum_y = _sums(cell, num_cells, clipped, y)
    result: Dict[str, Any] = {"value": float(np.abs(sum_s - sum_y).sum() / len(s)) if len(s) else None}
    if category is not None:
        c = _as_numpy(category, np.int64).ravel()
        n_c, s_c, y_c = _sums(c * num_cells + cell, num_classes * num_cells, clipped, y)
        per_n = n_c.reshape(num_classes, num_cells).sum(axis=1)
        error = np.abs(s_c - y_c).reshape(num_classes, num_cells).sum(axis=1) / np.maximum(per_n, 1)
        result["per_class"] = [float(e) if n else None for e, n in zip(error, per_n)]
    score_bins = int(bins) if np.ndim(bins) == 0 else int(bins[0])
    per_score = num_cells // score_bins  # the score is the slowest-varying index of the grid
    n_b, s_b, y_b = (x.reshape(score_bins, per_score).sum(axis=1) for x in (count, sum_s, sum_y))
    edges = np.linspace(0.0, 1.0, score_bins + 1)
    result["bins"] = [{"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(n_b[b]),
                       "mean_score": float(s_b[b] / n_b[b]) if n_b[b] else None,
                       "precision": float(y_b[b] / n_b[b]) if n_b[b] else None} for b in range(score_bins)]
    return result
