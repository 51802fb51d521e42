"""Each detection's best same-class, same-image object: the pair ``(score, IoU)`` every metric uses.

Every detection gets a pair ``(s, u)``: its score ``s`` and ``u``, the IoU with the
best-matching ground truth of the **same class in the same image** (``0`` when there
is none). It is a per-detection localisation quality, not COCO's one-to-one TP/FP
assignment (that is :mod:`.assignment`, built on the overlapping pairs found here):
several detections may share an object, and every detection is used (no ``maxDets``
cap, no area ranges).

Crowd ground truth is handled as COCO does (``pycocotools.mask.iou`` with
``iscrowd``): the IoU with a crowd region is ``|det ∩ crowd| / |det|``. ``u`` is the
best IoU over **non-crowd** objects only; a detection with ``u < 0.5`` whose crowd
IoU is ``>= 0.5`` is **ignored** -- COCOeval neither rewards nor penalises it -- and
is left out of every metric (counted in ``num_ignored``). Crowd regions are never
"objects" of the NMS ranking.

Speed: the matching sorts ground truth by ``(image, category)`` once and compares
every detection with its padded group in large numpy blocks; 500k detections over
5k images take about 1 s on 2 CPU cores (``benchmarks/bench_consistency.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np

from .inputs import ArrayLike, _as_numpy

_CHUNK = 200_000  # detection x ground-truth pairs per IoU block: small enough to stay in the cache


@dataclass
class Matches:
    """The matching of :func:`match_pairs`: per detection ``iou``, ``gt_index``, ``ignored`` [D] (as
    :func:`match_detections` returns them); every overlapping non-crowd pair of a detection and an object of
    its class in its image: ``pair_det``, ``pair_gt`` (indices) and ``pair_iou`` (``> 0``), [P] each, grouped
    by detection; and with ``across_classes``, ``other_iou``, ``other_gt`` [D]: the best IoU with a non-crowd
    object of another class in the image and that object (``0``, ``-1``: none)."""

    iou: np.ndarray
    gt_index: np.ndarray
    ignored: np.ndarray
    pair_det: np.ndarray
    pair_gt: np.ndarray
    pair_iou: np.ndarray
    other_iou: Optional[np.ndarray] = None
    other_gt: Optional[np.ndarray] = None


def _blocks(det_boxes: np.ndarray, det_key: np.ndarray, gt_boxes: np.ndarray, gt_key: np.ndarray,
            gt_crowd: np.ndarray) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Every detection against the objects with its key, in padded blocks of at most ``_CHUNK`` pairs.

    Yields:
        ``(rows [R], gt [R, W], valid [R, W], pair [R, W], crowd [R, W])``: detection indices, the
        object index of each slot, which slots are real, the IoU of each slot (intersection over the
        detection's area for crowd objects) and which slots are crowd objects.
    """
    order = np.argsort(gt_key, kind="stable")
    num_keys = int(max(gt_key.max(initial=-1), det_key.max(initial=-1))) + 1
    if num_keys <= 4 * (len(det_key) + len(gt_key)):  # dense keys (group_keys makes them so): a table per key
        per_key = np.bincount(gt_key, minlength=num_keys)
        start, count = (np.cumsum(per_key) - per_key)[det_key], per_key[det_key]
    else:
        sorted_key = gt_key[order]
        start = np.searchsorted(sorted_key, det_key, side="left")
        count = np.searchsorted(sorted_key, det_key, side="right") - start
    if int(count.max(initial=0)) == 0:
        return
    # one contiguous column per coordinate, objects in key order: the gathers below stay cache-local
    gx1, gy1, gx2, gy2 = (np.ascontiguousarray(gt_boxes[order, k]) for k in range(4))
    gt_area = np.clip(gx2 - gx1, 0, None) * np.clip(gy2 - gy1, 0, None)
    sorted_crowd = gt_crowd[order]
    any_crowd = bool(sorted_crowd.any())
    dx1, dy1, dx2, dy2 = (det_boxes[:, k] for k in range(4))
    det_area = np.clip(dx2 - dx1, 0, None) * np.clip(dy2 - dy1, 0, None)
    # detections sorted by group size, so each chunk pads only to its own widest group
    by_width = np.argsort(count, kind="stable")
    by_width = by_width[count[by_width] > 0]
    lo = 0
    while lo < len(by_width):
        hi = min(len(by_width), lo + max(1, _CHUNK // int(count[by_width[lo]])))
        hi = min(hi, lo + max(1, _CHUNK // int(count[by_width[hi - 1]])))  # rows * widest <= _CHUNK
        rows = by_width[lo:hi]
        slot = np.arange(int(count[rows[-1]]))
        valid = slot[None, :] < count[rows, None]
        at = np.minimum(start[rows, None] + slot[None, :], len(order) - 1)  # [R, W] positions in key order
        pair = np.minimum(dx2[rows, None], gx2[at])
        pair -= np.maximum(dx1[rows, None], gx1[at])
        np.maximum(pair, 0, out=pair)
        height = np.minimum(dy2[rows, None], gy2[at])
        height -= np.maximum(dy1[rows, None], gy1[at])
        np.maximum(height, 0, out=height)
        pair *= height  # the intersection, divided in place below
        area = det_area[rows, None]
        crowd = sorted_crowd[at] if any_crowd else np.zeros(at.shape, bool)
        denom = np.where(crowd, area, area + gt_area[at] - pair) if any_crowd else area + gt_area[at] - pair
        np.divide(pair, denom, out=pair, where=denom > 0)  # denom 0: both boxes empty, the intersection is 0
        yield rows, order[at], valid, pair, crowd
        lo = hi


def _checked(det_boxes, det_image, det_category, gt_boxes, gt_image, gt_category, gt_crowd):
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
    return det_boxes, det_image, det_category, gt_boxes, gt_image, gt_category, gt_crowd


def group_keys(det_image: np.ndarray, det_category: np.ndarray, gt_image: np.ndarray,
               gt_category: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Compact ``(image, category)`` keys ``(det_key [D], gt_key [G])`` of any integer ids, without overflow."""
    _, image_code = np.unique(np.concatenate([gt_image, det_image]), return_inverse=True)
    categories, category_code = np.unique(np.concatenate([gt_category, det_category]), return_inverse=True)
    key = image_code.ravel().astype(np.int64) * len(categories) + category_code.ravel()
    return key[len(gt_image):], key[: len(gt_image)]


def match_pairs(det_boxes: ArrayLike, det_image: ArrayLike, det_category: ArrayLike,
                gt_boxes: ArrayLike, gt_image: ArrayLike, gt_category: ArrayLike,
                gt_crowd: Optional[ArrayLike] = None, *, pairs: bool = True, across_classes: bool = False) -> Matches:
    """:func:`match_detections`, and (with ``pairs``) every overlapping non-crowd pair of a detection and an
    object of its class in its image, which the one-to-one assignment of :mod:`.assignment` needs. With
    ``across_classes`` the detections are compared with every object of their image (wider blocks), which also
    gives each detection's best object of another class (what TIDE's error types need)."""
    det_boxes, det_image, det_category, gt_boxes, gt_image, gt_category, gt_crowd = _checked(
        det_boxes, det_image, det_category, gt_boxes, gt_image, gt_category, gt_crowd)
    num = len(det_boxes)
    iou, crowd_iou = np.zeros(num), np.zeros(num)
    best = np.full(num, -1, dtype=np.int64)
    other_iou, other_gt = (np.zeros(num), np.full(num, -1, dtype=np.int64)) if across_classes else (None, None)
    found = []
    if num and len(gt_boxes):
        det_key, gt_key = group_keys(det_image, np.zeros(num, np.int64) if across_classes else det_category,
                                     gt_image, np.zeros(len(gt_image), np.int64) if across_classes else gt_category)
        for rows, gt, valid, pair, crowd in _blocks(det_boxes, det_key, gt_boxes, gt_key, gt_crowd):
            if across_classes:
                same = gt_category[gt] == det_category[rows, None]
                valid, foreign = valid & same, valid & ~same & ~crowd
                other = np.where(foreign, pair, -1.0)
                pick = other.argmax(axis=1)
                top = other[np.arange(len(rows)), pick]
                other_iou[rows] = np.maximum(top, 0.0)
                other_gt[rows] = np.where(top > 0, gt[np.arange(len(rows)), pick], -1)
            plain = np.where(valid & ~crowd, pair, -1.0)
            pick = plain.argmax(axis=1)
            top = plain[np.arange(len(rows)), pick]
            iou[rows] = np.maximum(top, 0.0)
            best[rows] = np.where(top > 0, gt[np.arange(len(rows)), pick], -1)
            crowd_iou[rows] = np.where(valid & crowd, pair, 0.0).max(axis=1)
            if pairs:
                r, c = np.nonzero(plain > 0)
                found.append((rows[r], gt[r, c], plain[r, c]))
    pair_det, pair_gt, pair_iou = (np.concatenate(x) for x in zip(*found)) if found else (
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    return Matches(iou, best, (iou < 0.5) & (crowd_iou >= 0.5), pair_det, pair_gt, pair_iou, other_iou, other_gt)


def match_detections(det_boxes: ArrayLike, det_image: ArrayLike, det_category: ArrayLike,
                     gt_boxes: ArrayLike, gt_image: ArrayLike, gt_category: ArrayLike,
                     gt_crowd: Optional[ArrayLike] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best same-class, same-image ground truth of every detection, vectorised.

    Detections and objects are grouped by ``(image, category)`` key with one sort;
    each detection is compared with the (padded) block of objects of its group, in
    chunks of at most ``2e5`` pairs -- no Python loop per detection or per image.
    Inputs are numpy arrays, torch tensors (any device) or sequences.

    Args:
        det_boxes: [D, 4] ``xyxy``; det_image, det_category: [D] integer keys (any ints).
        gt_boxes: [G, 4] ``xyxy``; gt_image, gt_category: [G] keys in the same spaces;
        gt_crowd: [G] bool (COCO ``iscrowd``; default all False).

    Returns:
        ``(iou [D] float64, gt_index [D] int64, ignored [D] bool)``: ``iou`` is the best
        IoU over the non-crowd objects of the detection's group (0 when none),
        ``gt_index`` the index into the ground truth of that object (-1: no non-crowd
        object in the group, or no overlap), ``ignored`` marks detections with
        ``iou < 0.5`` whose crowd IoU (intersection over the detection's area) is ``>= 0.5``.
    """
    matches = match_pairs(det_boxes, det_image, det_category, gt_boxes, gt_image, gt_category, gt_crowd,
                          pairs=False)
    return matches.iou, matches.gt_index, matches.ignored
