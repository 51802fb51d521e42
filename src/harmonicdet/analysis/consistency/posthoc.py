"""Post-hoc calibration baselines: how much of LaECE / D-ECE a free per-class remapping of the scores removes.

The baseline of Kuzucu, Oksuz et al. (ECCV 2024): per class, a monotone map ``f_c``
of the score is fitted to the **IoU-weighted correctness** ``t`` of each detection
(the IoU of a true positive of the one-to-one assignment at ``tau = 0``, 0 for a
false positive: LaECE's target) on one half of the validation images, and applied
to the other half, where LaECE and D-ECE are measured before and after. The split
is by image: the images at even positions of the sorted image ids fit, the odd
ones evaluate (deterministic, and the two halves differ by at most one image).

* ``isotonic``: the non-decreasing step function minimising ``sum (f(s) - t)^2``
  (pool-adjacent-violators, ``scipy.optimize.isotonic_regression``; detections with
  equal scores first averaged), applied by linear interpolation between its knots
  and clipped at the end knots -- ``sklearn.isotonic.IsotonicRegression(out_of_bounds="clip")``.
* ``platt``: ``f(s) = sigmoid(a * logit(s) + b)``, ``a >= 0``;
* ``temperature``: ``f(s) = sigmoid(logit(s) / T)``, i.e. Platt with ``b = 0``;

Platt and temperature minimise the mean binary cross-entropy with the soft target
``t`` (L-BFGS-B; ``s`` clipped to ``[eps, 1 - eps]`` first; ``a``, ``1/T`` in
``[0, 100]``, ``b`` in ``[-50, 50]``), as the paper's code does. A class without
detections in the fitting half keeps its scores.

What a monotone per-class map cannot change: the order of the detections within a
class, hence each class's AP and precision-recall curve and the Spearman
correlation within a class (a strictly increasing map -- Platt with ``a > 0``,
temperature -- changes none of them; isotonic regression is only non-decreasing
and may tie scores, which can move AP through the tie order). It can change
everything that compares scores with their targets or across classes: LaECE,
D-ECE, the pooled Spearman/Pearson, the inconsistency rates at fixed score
thresholds, and the ranking of one class's detections against another's. The
assignment (true positives, targets) is the one of the original scores.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from .detection_calibration import DECE_BINS, LAECE_BINS, dece, laece

METHODS = ("uncalibrated", "isotonic", "platt", "temperature")
_SLOPE_RANGE, _SHIFT_RANGE = (0.0, 100.0), (-50.0, 50.0)


def _logit(scores: np.ndarray) -> np.ndarray:
    eps = np.finfo(np.float64).eps
    s = np.clip(scores, eps, 1.0 - eps)
    return np.log(s) - np.log1p(-s)


def fit_isotonic(scores: np.ndarray, targets: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The knots ``(x, y)`` of the isotonic regression of ``targets`` on ``scores`` (see the module docstring)."""
    from scipy.optimize import isotonic_regression

    x, inverse, count = np.unique(scores, return_inverse=True, return_counts=True)
    mean = np.bincount(inverse.ravel(), targets, minlength=len(x)) / count
    return x, isotonic_regression(mean, weights=count).x


def apply_isotonic(knots: Tuple[np.ndarray, np.ndarray], scores: np.ndarray) -> np.ndarray:
    """The fitted map at ``scores``: linear between the knots, constant beyond them."""
    return np.interp(scores, *knots)


def fit_platt(scores: np.ndarray, targets: np.ndarray, category: np.ndarray, num_classes: int, *,
              shift: bool = True) -> np.ndarray:
    """Per class ``(a, b)`` ([C, 2]) of ``sigmoid(a * logit(s) + b)`` minimising each class's mean binary
    cross-entropy with ``targets`` (one L-BFGS-B over all classes: the loss is a sum of per-class terms);
    ``shift=False`` fixes ``b = 0`` (temperature scaling, ``a = 1 / T``). Classes without detections get ``(1, 0)``."""
    from scipy.optimize import minimize
    from scipy.special import expit

    z = _logit(scores)
    weight = 1.0 / np.maximum(np.bincount(category, minlength=num_classes), 1)[category]

    def loss(params: np.ndarray):
        a, b = params[:num_classes], (params[num_classes:] if shift else np.zeros(num_classes))
        x = a[category] * z + b[category]
        residual = weight * (expit(x) - targets)  # expit: no overflow at large -x
        value = float((weight * (np.logaddexp(0.0, x) - targets * x)).sum())
        grad = [np.bincount(category, residual * z, minlength=num_classes)]
        if shift:
            grad.append(np.bincount(category, residual, minlength=num_classes))
        return value, np.concatenate(grad)

    start = np.r_[np.ones(num_classes), np.zeros(num_classes if shift else 0)]
    bounds = [_SLOPE_RANGE] * num_classes + ([_SHIFT_RANGE] * num_classes if shift else [])
    found = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x
    return np.stack([found[:num_classes], found[num_classes:] if shift else np.zeros(num_classes)], axis=1)


def apply_platt(params: np.ndarray, scores: np.ndarray, category: np.ndarray) -> np.ndarray:
    """``sigmoid(a_c * logit(s) + b_c)`` of each detection's class ``c``."""
    from scipy.special import expit

    return expit(params[category, 0] * _logit(scores) + params[category, 1])


def fitting_half(image_rank: np.ndarray) -> np.ndarray:
    """``True`` for the detections of the images that fit (even position among the sorted image ids)."""
    return np.asarray(image_rank) % 2 == 0


def posthoc_calibration(scores: np.ndarray, targets: np.ndarray, matched: np.ndarray, category: np.ndarray,
                        image_rank: np.ndarray, num_classes: int, *, laece_bins: int = LAECE_BINS,
                        dece_bins: int = DECE_BINS) -> Dict[str, Any]:
    """LaECE and D-ECE of the evaluation half before and after each post-hoc map (see the module docstring).

    Args:
        scores, targets, matched, category: [N] of the detections that count: score, LaECE target, D-ECE
            true positive, class index.
        image_rank: [N] the position of each detection's image among the sorted image ids.

    Returns:
        ``{"target", "fit_images", "eval_images", "fit_detections", "eval_detections", "laece": {method: v},
        "dece": {method: v}}`` for the methods of :data:`METHODS`; ``None`` values when a half has no detection.
    """
    fit = fitting_half(image_rank)
    held = ~fit
    result: Dict[str, Any] = {
        "target": "IoU of the true positive at tau = 0, 0 for a false positive",
        "fit_images": int(len(np.unique(image_rank[fit]))), "eval_images": int(len(np.unique(image_rank[held]))),
        "fit_detections": int(fit.sum()), "eval_detections": int(held.sum()),
        "laece": dict.fromkeys(METHODS), "dece": dict.fromkeys(METHODS)}
    if not fit.any() or not held.any():
        return result
    s_fit, t_fit, c_fit = scores[fit], targets[fit], category[fit]
    s_eval, c_eval = scores[held], category[held]
    calibrated = {"uncalibrated": s_eval}
    isotonic = s_eval.copy()
    for c in np.unique(c_eval):
        mine = c_fit == c
        if mine.any():
            isotonic[c_eval == c] = apply_isotonic(fit_isotonic(s_fit[mine], t_fit[mine]), s_eval[c_eval == c])
    calibrated["isotonic"] = isotonic
    calibrated["platt"] = apply_platt(fit_platt(s_fit, t_fit, c_fit, num_classes), s_eval, c_eval)
    calibrated["temperature"] = apply_platt(fit_platt(s_fit, t_fit, c_fit, num_classes, shift=False), s_eval,
                                            c_eval)
    for method, s in calibrated.items():
        result["laece"][method] = laece(s, targets[held], c_eval, num_classes, num_bins=laece_bins)["value"]
        result["dece"][method] = dece(s, matched[held], bins=dece_bins)["value"]
    return result
