"""A TIDE-style breakdown of detection errors: the AP each kind of error costs.

TIDE (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors",
ECCV 2020; ``tidecv`` on PyPI), on the project's matching. AP is TIDE's (and COCO's)
101-point interpolated AP at IoU ``pos = 0.5``, averaged over the classes with a
ground-truth object or a detection (a class without objects has AP 0). True
positives are the one-to-one assignment at ``pos`` (:mod:`.assignment`). Every
other (false-positive) detection gets the first error that applies, with ``u_s``
its best IoU with an object of its class, ``u_o`` with an object of another class
(``bg = 0.1``):

1. ``bkg``: its image has no object at all;
2. ``loc``: ``bg <= u_s <= pos`` -- right class, poorly localised;
3. ``cls``: ``u_o >= pos`` -- well localised on an object of another class;
4. ``dupe``: ``u_s >= pos`` with an object already taken by a higher-scored detection;
5. ``bkg``: ``max(u_s, u_o) <= bg`` -- on background;
6. ``both``: anything else (wrong class and poorly localised).

An object no true positive took is ``miss`` unless a ``cls`` or ``loc`` error targets
it (its best-IoU object, of the other class or its own). ``dAP`` of an error type is
the mAP after fixing every error of that type alone, minus the mAP, clipped at 0
as TIDE does: a ``cls`` / ``loc`` error becomes a true positive (of the object's
class / its own) when it is the highest-scored such error on a not-taken object,
and is removed otherwise; ``both``, ``dupe``, ``bkg`` errors are removed; a ``miss``
removes its object from the count. The two special errors: ``false_positive``
(every false positive scored 0, every true positive 1) and ``false_negative``
(every missed object removed from the count), not clipped.

Where this differs from ``tidecv``: no ``maxDets`` cap (tidecv keeps 100 per image);
detections the report ignores (on crowd regions) are left out rather than kept as
errors; dAPs are fractions (tidecv prints them times 100). Ties in score are ordered
by detection index.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from .assignment import score_order, stable_order
from .matching import Matches

TIDE_POS, TIDE_BG = 0.5, 0.1
ERROR_TYPES = ("cls", "loc", "both", "dupe", "bkg", "miss")
_RECALL_THRESHOLDS = np.arange(101) / 100  # tidecv's x / 100, COCO's 101 recall points


def class_average_precision(category: np.ndarray, scores: np.ndarray, true_positive: np.ndarray,
                            num_gt: np.ndarray) -> np.ndarray:
    """101-point interpolated AP per class (``[C]``, ``nan`` for a class with neither objects nor detections);
    score ties are visited by index.

    Args:
        category, scores, true_positive: [N] of each detection; num_gt: [C] objects per class.
    """
    by_score = score_order(scores)
    order = by_score[stable_order(category[by_score])]
    return _sorted_average_precision(category[order], true_positive[order], num_gt)


def _sorted_average_precision(category: np.ndarray, true_positive: np.ndarray, num_gt: np.ndarray) -> np.ndarray:
    """:func:`class_average_precision` of detections already sorted by (class, decreasing score)."""
    num_classes = len(num_gt)
    bounds = np.searchsorted(category, np.arange(num_classes + 1))
    ap = np.full(num_classes, np.nan)
    for c in range(num_classes):
        lo, hi = bounds[c], bounds[c + 1]
        if num_gt[c] == 0:
            ap[c] = 0.0 if hi > lo else np.nan
            continue
        if hi == lo:
            ap[c] = 0.0
            continue
        hits = np.cumsum(true_positive[lo:hi])
        precision = hits / np.arange(1, hi - lo + 1)
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(hits / num_gt[c], _RECALL_THRESHOLDS, side="left")
        ap[c] = np.where(at < hi - lo, envelope[np.minimum(at, hi - lo - 1)], 0.0).mean()
    return ap


def tide_breakdown(scores: np.ndarray, category: np.ndarray, image: np.ndarray, eligible: np.ndarray,
                   matches: Matches, true_positive_gt: np.ndarray, gt_category: np.ndarray, gt_image: np.ndarray,
                   gt_crowd: np.ndarray, num_classes: int, *, pos: float = TIDE_POS, bg: float = TIDE_BG,
                   by_score: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """The TIDE breakdown (see the module docstring).

    Args:
        scores, category, image: [D] detections (class and image indices).
        eligible: [D] the detections that count (not ignored).
        matches: :func:`.matching.match_pairs` of the detections ``across_classes``.
        true_positive_gt: [D] the object each detection took at IoU ``pos`` (``-1``: none).
        gt_category, gt_image, gt_crowd: [G] the ground truth.
        by_score: :func:`.assignment.score_order` of ``scores`` when the caller has it.

    Returns:
        ``{"pos_threshold", "background_threshold", "ap", "dap": {type: float}, "dap_special":
        {"false_positive", "false_negative"}, "counts": {type: int}, "per_class": [{"ap", "dap"} | None]}``;
        the values are ``None`` where no class has an object or a detection.
    """
    num = len(scores)
    by_score = score_order(scores) if by_score is None else by_score
    regular = ~gt_crowd
    num_gt = np.bincount(gt_category[regular], minlength=num_classes)
    tp = eligible & (true_positive_gt >= 0)
    fp = eligible & ~tp
    used = np.zeros(len(gt_category), bool)
    used[true_positive_gt[tp]] = True
    image_has_gt = np.zeros(int(max(image.max(initial=-1), gt_image.max(initial=-1))) + 1, bool)
    image_has_gt[gt_image[regular]] = True
    kind = np.full(num, -1)  # index into ERROR_TYPES for false positives
    target = np.full(num, -1, np.int64)
    u_s = matches.iou
    no_gt = fp & ~image_has_gt[image]
    kind[no_gt] = ERROR_TYPES.index("bkg")
    loc = fp & ~no_gt & (u_s >= bg) & (u_s <= pos)
    kind[loc], target[loc] = ERROR_TYPES.index("loc"), matches.gt_index[loc]
    rest = np.flatnonzero(fp & ~no_gt & ~loc)
    u_o, other_gt = matches.other_iou[rest], matches.other_gt[rest]
    on_taken = used[matches.pair_gt]
    u_taken = np.zeros(num)  # best IoU with an object of its class that a true positive took
    np.maximum.at(u_taken, matches.pair_det[on_taken], matches.pair_iou[on_taken])
    u_taken = u_taken[rest]
    cls = u_o >= pos
    dupe = ~cls & (u_taken >= pos)
    background = ~cls & ~dupe & (np.maximum(u_s[rest], u_o) <= bg)
    kind[rest] = np.select([cls, dupe, background], [ERROR_TYPES.index(k) for k in ("cls", "dupe", "bkg")],
                           ERROR_TYPES.index("both"))
    target[rest[cls]] = other_gt[cls]
    # a cls / loc error on a not-taken object: the highest-scored one per object is the one a fix turns into a TP
    fixable = ((kind == ERROR_TYPES.index("cls")) | (kind == ERROR_TYPES.index("loc"))) & (target >= 0)
    fixable[fixable] = ~used[target[fixable]]
    usable = np.zeros(len(gt_category), bool)
    usable[target[fixable]] = True
    by_object = by_score[fixable[by_score]]
    by_object = by_object[stable_order(target[by_object])]  # per object, by decreasing score
    winner = np.zeros(num, bool)
    winner[by_object[np.r_[True, target[by_object][1:] != target[by_object][:-1]]] if len(by_object) else []] = True
    missed = regular & ~used & ~usable

    # every scenario is a change of the (class, score, TP) points or of the object counts
    points = by_score[eligible[by_score]]
    order = points[stable_order(category[points])]  # by class, then by decreasing score
    base_category, base_tp, base_kind = category[order], tp[order], kind[order]

    def ap_of(keep=None, flip=None, counts=num_gt):
        c, t = base_category, base_tp
        if flip is not None:
            t = t | flip
        if keep is not None:
            c, t = c[keep], t[keep]
        return _sorted_average_precision(c, t, counts)

    aps: Dict[str, np.ndarray] = {"base": ap_of()}
    for name in ("both", "dupe", "bkg"):
        aps[name] = ap_of(keep=base_kind != ERROR_TYPES.index(name))
    is_loc = base_kind == ERROR_TYPES.index("loc")
    aps["loc"] = ap_of(keep=~is_loc | winner[order], flip=is_loc & winner[order])
    aps["miss"] = ap_of(counts=num_gt - np.bincount(gt_category[missed], minlength=num_classes))
    is_cls = kind == ERROR_TYPES.index("cls")
    moved_category = category.copy()
    moved_category[is_cls & winner] = gt_category[target[is_cls & winner]]
    kept = points[~is_cls[points] | winner[points]]
    kept = kept[stable_order(moved_category[kept])]
    aps["cls"] = _sorted_average_precision(moved_category[kept], (tp | (is_cls & winner))[kept], num_gt)
    perfect = order[stable_order(2 * base_category + ~base_tp)]  # every true positive first, scored 1
    special = {"false_positive": _sorted_average_precision(category[perfect], tp[perfect], num_gt),
               "false_negative": ap_of(counts=np.bincount(gt_category[true_positive_gt[tp]],
                                                          minlength=num_classes))}

    def mean_ap(ap: np.ndarray):
        present = ~np.isnan(ap)
        return float(ap[present].mean()) if present.any() else 0.0

    defined = not np.isnan(aps["base"]).all()
    base = mean_ap(aps["base"])
    per_class: List[Any] = []
    for c in range(num_classes):
        if np.isnan(aps["base"][c]):
            per_class.append(None)
            continue
        per_class.append({"ap": float(aps["base"][c]),
                          "dap": {k: max(float(np.nan_to_num(aps[k][c]) - aps["base"][c]), 0.0) for k in ERROR_TYPES}})
    counts = {k: int((kind == i).sum()) for i, k in enumerate(ERROR_TYPES)}
    counts["miss"] = int(missed.sum())
    return {"pos_threshold": pos, "background_threshold": bg,
            "ap": base if defined else None,
            "dap": {k: max(mean_ap(aps[k]) - base, 0.0) if defined else None for k in ERROR_TYPES},
            "dap_special": {k: mean_ap(v) - base if defined else None for k, v in special.items()},
            "counts": counts, "per_class": per_class}
