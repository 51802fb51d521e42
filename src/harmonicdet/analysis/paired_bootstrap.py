"""Paired bootstrap over validation images for COCO AP differences between two detectors.

The per-image matching is pycocotools' own (``COCOeval.evaluate``: greedy by score,
crowd objects ignored, at most 100 detections per image, all areas). Resampling
images with replacement gives image ``i`` a multiplicity ``w_i``; AP of the
resampled set is COCO's accumulation (101-point interpolated precision, averaged
over the IoU thresholds 0.50:0.05:0.95 and the categories that have objects)
with every detection's true/false-positive count and every image's object count
multiplied by ``w_i``. That equals evaluating the set with the images repeated:
copies of a detection tie in score and sit next to each other in the ranking, and
the precision envelope (the maximum to the right) is the same whether the copies
are added one by one or at once (up to the order of exactly tied scores within one
image, a difference of ~1e-5 AP). With all ``w_i = 1`` the result is pycocotools'
``stats[0]`` (AP), ``stats[1]`` (AP50) and ``stats[2]`` (AP75).

Pairing: both detectors are scored on the same resampled images, so the spread
of their difference excludes the image-sampling noise they share.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETS = 100
_METRICS = {"AP": slice(None), "AP50": slice(0, 1), "AP75": slice(5, 6)}


@dataclass
class PerImageMatches:
    """pycocotools' per-image matching of one detector's results, ranked per category.

    ``categories[k]`` holds, for category ``k``'s detections over all images sorted
    by descending score (pycocotools' stable order): ``image`` [D] (index into
    ``image_ids``), ``tp`` and ``fp`` [T, D] bool (matched / unmatched and not
    ignored, per IoU threshold); ``objects`` [I] is the number of non-ignored
    objects of category ``k`` per image.
    """

    image_ids: np.ndarray
    categories: List[Dict[str, np.ndarray]]


def match_per_image(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> PerImageMatches:
    """Run pycocotools' per-image evaluation (bbox, all areas, 100 detections) and keep what AP needs.

    Args:
        gt: a COCO ground-truth dict (``images``, ``annotations``, ``categories``).
        results: COCO result records (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image_ids = np.array(sorted(image["id"] for image in gt["images"]), dtype=np.int64)
    if len(image_ids) == 0:
        raise ValueError("gt: no images to evaluate")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dict(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(list(results)) if results else COCO()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.imgIds = image_ids.tolist()
        evaluator.params.areaRng = [[0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.params.maxDets = [MAX_DETS]
        evaluator.evaluate()
    num_images = len(image_ids)
    categories = []
    for k in range(len(evaluator.params.catIds)):
        records = evaluator.evalImgs[k * num_images:(k + 1) * num_images]  # one area range: [K * I]
        objects = np.zeros(num_images, dtype=np.int64)
        scores, images, matched, ignored = [], [], [], []
        for i, record in enumerate(records):
            if record is None:
                continue
            objects[i] = int(np.count_nonzero(np.asarray(record["gtIgnore"]) == 0))
            count = len(record["dtScores"][:MAX_DETS])
            scores.append(np.asarray(record["dtScores"][:MAX_DETS], dtype=np.float64))
            images.append(np.full(count, i, dtype=np.int64))
            matched.append(np.asarray(record["dtMatches"])[:, :MAX_DETS].reshape(len(IOU_THRESHOLDS), count))
            ignored.append(np.asarray(record["dtIgnore"])[:, :MAX_DETS].reshape(len(IOU_THRESHOLDS), count))
        if scores:
            order = np.argsort(-np.concatenate(scores), kind="mergesort")  # pycocotools' order
            matched_all = np.concatenate(matched, axis=1)[:, order] != 0
            ignored_all = np.concatenate(ignored, axis=1)[:, order] != 0
            image = np.concatenate(images)[order]
        else:
            matched_all = ignored_all = np.zeros((len(IOU_THRESHOLDS), 0), dtype=bool)
            image = np.zeros(0, dtype=np.int64)
        categories.append({"image": image, "tp": matched_all & ~ignored_all, "fp": ~matched_all & ~ignored_all,
                           "objects": objects})
    return PerImageMatches(image_ids, categories)


def _precision_at_recall(tp_cum: np.ndarray, fp_cum: np.ndarray, num_objects: np.ndarray) -> np.ndarray:
    """COCO's interpolated precision [..., R] from cumulative counts [..., D] (``num_objects`` [...] > 0)."""
    shape = tp_cum.shape[:-1]
    if tp_cum.shape[-1] == 0:
        return np.zeros(shape + (len(RECALL_THRESHOLDS),))
    recall = tp_cum / num_objects[..., None]
    precision = tp_cum / (tp_cum + fp_cum + np.spacing(1))  # pycocotools' formula, for equal results
    envelope = np.flip(np.maximum.accumulate(np.flip(precision, -1), axis=-1), -1)
    rows = recall.reshape(-1, recall.shape[-1])
    env_rows = envelope.reshape(-1, recall.shape[-1])
    # one searchsorted for all rows: row j's recalls are offset by 2j (recall <= 1), as are its thresholds
    offsets = 2.0 * np.arange(len(rows))[:, None]
    positions = np.searchsorted((rows + offsets).ravel(), (RECALL_THRESHOLDS[None] + offsets).ravel(), side="left")
    positions = positions.reshape(len(rows), -1) - np.arange(len(rows))[:, None] * rows.shape[-1]
    valid = positions < rows.shape[-1]
    out = np.where(valid, np.take_along_axis(env_rows, np.minimum(positions, rows.shape[-1] - 1), axis=1), 0.0)
    return out.reshape(shape + (len(RECALL_THRESHOLDS),))


def weighted_ap(matches: PerImageMatches, weights: np.ndarray) -> Dict[str, np.ndarray]:
    """AP, AP50 and AP75 for each row of image multiplicities ``weights`` [B, I] (or [I]).

    Returns ``{"AP": [B], "AP50": [B], "AP75": [B]}`` (scalars for 1-D ``weights``);
    -1 where no category has objects, as pycocotools.
    """
    weights = np.asarray(weights, dtype=np.float64)
    single = weights.ndim == 1
    weights = np.atleast_2d(weights)
    if weights.shape[1] != len(matches.image_ids):
        raise ValueError(f"weights: expected {len(matches.image_ids)} images per row, got {weights.shape[1]}")
    num_rows, num_t = len(weights), len(IOU_THRESHOLDS)
    total = {name: np.zeros(num_rows) for name in _METRICS}
    count = {name: np.zeros(num_rows) for name in _METRICS}
    for category in matches.categories:
        num_objects = weights @ category["objects"]  # [B]
        present = num_objects > 0
        if not present.any():
            continue
        det_weight = weights[:, category["image"]]  # [B, D]
        tp_cum = np.cumsum(category["tp"][None] * det_weight[:, None], axis=-1)  # [B, T, D]
        fp_cum = np.cumsum(category["fp"][None] * det_weight[:, None], axis=-1)
        safe = np.where(present, num_objects, 1.0)
        precision = _precision_at_recall(tp_cum, fp_cum, np.repeat(safe[:, None], num_t, axis=1))  # [B, T, R]
        for name, thresholds in _METRICS.items():
            value = precision[:, thresholds].mean(axis=(1, 2))
            total[name] += np.where(present, value, 0.0)
            count[name] += present
    out = {name: np.where(count[name] > 0, total[name] / np.maximum(count[name], 1), -1.0) for name in _METRICS}
    return {name: (value[0] if single else value) for name, value in out.items()}


def bootstrap_weights(num_images: int, num_samples: int, seed: int = 0) -> np.ndarray:
    """Image multiplicities of ``num_samples`` resamples with replacement: [B, I] counts summing to ``I``."""
    if num_images < 1 or num_samples < 1:
        raise ValueError(f"need at least one image and one sample, got {num_images} and {num_samples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=num_samples).astype(np.float64)


def paired_bootstrap(pairs: Sequence[tuple], *, num_samples: int = 1000, seed: int = 0,
                     chunk: int = 50, confidence: float = 0.95) -> Dict[str, Dict[str, float]]:
    """Bootstrap interval of the mean AP difference ``mean_s (AP(a_s) - AP(b_s))`` over paired runs.

    Args:
        pairs: ``(matches_a, matches_b)`` per seed, each :class:`PerImageMatches` on the
            same images (e.g. a preset and ``standard`` trained with the same seed).
        num_samples: bootstrap resamples; every pair is scored on the same resamples.
        seed: of the resampling.
        chunk: resamples evaluated at once (bounds memory: ``chunk * 10 * detections`` floats).
        confidence: of the percentile interval.

    Returns:
        ``{"AP" | "AP50" | "AP75": {"delta", "low", "high", "std"}}``: ``delta`` is the
        difference on the full set (all ``w_i = 1``), ``low``/``high`` the percentile
        interval and ``std`` the bootstrap standard deviation of the difference.
    """
    if not pairs:
        raise ValueError("pairs: need at least one (a, b) pair")
    image_ids = pairs[0][0].image_ids
    for index, (a, b) in enumerate(pairs):
        if not (np.array_equal(a.image_ids, image_ids) and np.array_equal(b.image_ids, image_ids)):
            raise ValueError(f"pairs[{index}]: evaluated on other images than pairs[0]")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    weights = bootstrap_weights(len(image_ids), num_samples, seed)
    full = np.ones(len(image_ids))
    deltas = {name: np.zeros(num_samples) for name in _METRICS}
    observed = {name: 0.0 for name in _METRICS}
    for a, b in pairs:
        full_a, full_b = weighted_ap(a, full), weighted_ap(b, full)
        for start in range(0, num_samples, chunk):
            rows = weights[start:start + chunk]
            ap_a, ap_b = weighted_ap(a, rows), weighted_ap(b, rows)
            for name in _METRICS:
                deltas[name][start:start + chunk] += (ap_a[name] - ap_b[name]) / len(pairs)
        for name in _METRICS:
            observed[name] += float(full_a[name] - full_b[name]) / len(pairs)
    tail = (1 - confidence) / 2 * 100
    return {name: {"delta": observed[name], "low": float(np.percentile(deltas[name], tail)),
                   "high": float(np.percentile(deltas[name], 100 - tail)), "std": float(deltas[name].std(ddof=1))
                   if num_samples > 1 else 0.0}
            for name in _METRICS}

