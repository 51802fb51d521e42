"""Each detection's best same-class, same-image object: the pair ``(score, IoU)`` every metric uses.

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

Speed: the matching sorts ground truth by ``(image, category)`` once and compares
every detection with its padded group in large numpy blocks; 500k detections over
5k images take about 1 s on 2 CPU cores (``benchmarks/bench_consistency.py``).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .inputs import ArrayLike, _as_numpy

_CHUNK = 2_000_000  # detection x ground-truth pairs per IoU block


def match_detections(det_boxes: ArrayLike, det_image: ArrayLike, det_category: ArrayLike,
                     gt_boxes: ArrayLike, gt_image: ArrayLike, gt_category: ArrayLike,
                     gt_crowd: Optional[ArrayLike] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best same-class, same-image ground truth of every detection, vectorised.

    Detections and objects are grouped by ``(image, category)`` key with one sort;
    each detection is compared with the (padded) block of objects of its group, in
    chunks of at most ``2e6`` pairs -- no Python loop per detection or per image.
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
