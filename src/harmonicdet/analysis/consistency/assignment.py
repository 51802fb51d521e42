"""COCO's one-to-one assignment of detections to objects: which detections are true positives at an IoU threshold.

Within each ``(image, category)`` group, detections are visited by decreasing score
(ties: the earlier detection first) and each takes the **not yet taken** non-crowd
object of its group with which it has the highest IoU, provided that IoU is
``>= threshold`` and ``> 0`` (a box that does not overlap an object never takes it,
even at ``threshold = 0``); a detection that takes an object is a true positive
and its IoU is that object's. This is COCOeval's ``evaluateImg`` rule (and TIDE's)
without the ``maxDets`` cap and the area ranges; detections the report ignores
(on crowd regions, see :mod:`.matching`) take no object.

It is built on the overlapping pairs that :func:`.matching.match_pairs` finds, so no
IoU is computed twice. The greedy visit is sequential only within a group: round
``r`` visits the ``r``-th detection of every group at once, so the loop runs once per
rank (at most the largest number of detections of one image and class), not once
per detection.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .matching import Matches


def stable_order(keys: np.ndarray) -> np.ndarray:
    """The stable argsort of non-negative integer ``keys``, by 16-bit digits from the lowest (numpy radix-sorts
    16-bit integers in linear time, where a 64-bit sort would take ``n log n``)."""
    keys = np.asarray(keys, np.int64)
    order = np.arange(len(keys))
    shift = 0
    while True:
        digit = ((keys[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
        if len(keys) == 0 or int(keys.max()) >> shift == 0:
            return order


def score_order(scores: np.ndarray) -> np.ndarray:
    """The detections by decreasing score, ties by index (the order COCOeval and TIDE visit them in)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def assign_one_to_one(scores: np.ndarray, group: np.ndarray, matches: Matches, thresholds: Sequence[float],
                      eligible: np.ndarray,
                      by_score: Optional[np.ndarray] = None) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The greedy one-to-one assignment at each of ``thresholds`` (see the module docstring).

    Args:
        scores: [D] detection scores; group: [D] the non-negative ``(image, category)`` key of each detection.
        matches: :func:`.matching.match_pairs` of the same detections (its pairs).
        thresholds: IoU thresholds; ``0`` means "any overlap".
        eligible: [D] bool, the detections that take part (the report's non-ignored ones).
        by_score: :func:`score_order` of ``scores`` when the caller has it.

    Returns:
        One ``(gt_index [D] int64, iou [D] float64)`` per threshold: the object each detection took
        (``-1``: none, a false positive) and the IoU with it (``0`` when none).
    """
    num = len(scores)
    by_score = score_order(scores) if by_score is None else by_score
    take = eligible[matches.pair_det]
    pair_det, pair_gt, pair_iou = matches.pair_det[take], matches.pair_gt[take], matches.pair_iou[take]
    # rank of each detection that has a pair within its group: by score, then (stable) by group
    has_pair = np.zeros(num, bool)
    has_pair[pair_det] = True
    candidates = by_score[has_pair[by_score]]
    by_group = candidates[stable_order(group[candidates])]
    new_group = np.r_[True, group[by_group][1:] != group[by_group][:-1]] if len(by_group) else np.zeros(0, bool)
    position = np.arange(len(by_group))
    rank = np.zeros(num, np.int64)
    rank[by_group] = position - np.maximum.accumulate(np.where(new_group, position, 0))
    # match_pairs gives each detection's pairs together; a stable sort by rank keeps them so: a round is a slice
    order = stable_order(rank[pair_det])
    pair_det, pair_gt, pair_iou = pair_det[order], pair_gt[order], pair_iou[order]
    pair_rank = rank[pair_det]
    num_gt = int(pair_gt.max(initial=-1)) + 1
    results = []
    for threshold in thresholds:
        keep = pair_iou >= threshold
        d, g, u, r = pair_det[keep], pair_gt[keep], pair_iou[keep], pair_rank[keep]
        taken = np.zeros(num_gt, bool)
        gt_index, iou = np.full(num, -1, np.int64), np.zeros(num)
        bounds = np.r_[np.flatnonzero(np.r_[True, r[1:] != r[:-1]]), len(r)] if len(r) else np.zeros(1, np.int64)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            free = ~taken[g[lo:hi]]
            rd, rg, ru = d[lo:hi][free], g[lo:hi][free], u[lo:hi][free]
            if len(rd) == 0:
                continue
            new_det = np.r_[True, rd[1:] != rd[:-1]]
            segment = np.cumsum(new_det) - 1
            at_best = np.flatnonzero(ru == np.maximum.reduceat(ru, np.flatnonzero(new_det))[segment])
            best = at_best[np.r_[True, segment[at_best][1:] != segment[at_best][:-1]]]  # first best pair per detection
            taken[rg[best]] = True
            gt_index[rd[best]], iou[rd[best]] = rg[best], ru[best]
        results.append((gt_index, iou))
    return results
