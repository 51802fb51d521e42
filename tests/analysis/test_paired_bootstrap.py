"""Paired bootstrap AP: weighted accumulation against pycocotools on the same and on repeated images."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from harmonicdet.analysis.paired_bootstrap import bootstrap_weights, match_per_image, paired_bootstrap, weighted_ap


def _dataset(seed: int, num_images: int = 30, num_categories: int = 3, noise: float = 6.0):
    """Random objects (some crowd) and noisy detections with distinct scores, plus false positives."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 200, "height": 200})
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(10, 50, 2)
            category = int(rng.integers(1, num_categories + 1))
            crowd = int(rng.uniform() < 0.1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd})
            for _ in range(rng.integers(0, 3)):  # detections of this object, some duplicates
                jitter = rng.normal(0, noise, 4)
                results.append({"image_id": image_id, "category_id": category,
                                "bbox": [x + jitter[0], y + jitter[1], max(2.0, w + jitter[2]), max(2.0, h + jitter[3])]})
        for _ in range(rng.integers(0, 3)):  # false positives
            results.append({"image_id": image_id, "category_id": int(rng.integers(1, num_categories + 1)),
                            "bbox": [*rng.uniform(0, 150, 2), *rng.uniform(10, 50, 2)]})
    for result, score in zip(results, rng.permutation(len(results))):
        result["score"] = float(score + 1) / (len(results) + 1)  # distinct: no ties
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": str(c)} for c in range(1, num_categories + 1)]}
    return gt, results


def _pycocotools_ap(gt, results):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[:3]


def _repeat_images(gt, results, counts):
    """The dataset with image i (in id order) present counts[i] times, under new ids."""
    images, annotations, repeated = [], [], []
    for image, count in zip(sorted(gt["images"], key=lambda im: im["id"]), counts):
        for _ in range(int(count)):
            new_id = len(images) + 1
            images.append(dict(image, id=new_id))
            annotations += [dict(a, id=len(annotations) + k + 1, image_id=new_id)
                            for k, a in enumerate(a for a in gt["annotations"] if a["image_id"] == image["id"])]
            repeated += [dict(r, image_id=new_id) for r in results if r["image_id"] == image["id"]]
    return dict(gt, images=images, annotations=annotations), repeated


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unit_weights_equal_pycocotools(seed):
    gt, results = _dataset(seed)
    matches = match_per_image(gt, results)
    ours = weighted_ap(matches, np.ones(len(gt["images"])))
    reference = _pycocotools_ap(gt, results)
    assert [ours["AP"], ours["AP50"], ours["AP75"]] == pytest.approx(reference, abs=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_integer_weights_equal_pycocotools_on_repeated_images(seed):
    gt, results = _dataset(seed)
    counts = bootstrap_weights(len(gt["images"]), 1, seed=seed)[0]
    assert counts.sum() == len(gt["images"]) and (counts == 0).any() and (counts > 1).any()
    ours = weighted_ap(match_per_image(gt, results), counts)
    reference = _pycocotools_ap(*_repeat_images(gt, results, counts))
    assert [ours["AP"], ours["AP50"], ours["AP75"]] == pytest.approx(reference, abs=1e-12)


def test_rows_of_weights_are_independent_resamples():
    gt, results = _dataset(5)
    matches = match_per_image(gt, results)
    rows = bootstrap_weights(len(gt["images"]), 4, seed=0)
    batched = weighted_ap(matches, rows)
    for i, row in enumerate(rows):
        single = weighted_ap(matches, row)
        assert batched["AP"][i] == pytest.approx(single["AP"], abs=1e-12)


def test_identical_detectors_have_a_zero_interval_and_a_worse_one_a_negative_one():
    gt, results = _dataset(6, num_images=60, noise=2.0)
    _, noisy = _dataset(6, num_images=60, noise=9.0)  # same objects and scores, worse boxes
    good, bad = match_per_image(gt, results), match_per_image(gt, noisy)
    same = paired_bootstrap([(good, good)], num_samples=50)
    assert all(v == {"delta": 0.0, "low": 0.0, "high": 0.0, "std": 0.0} for v in same.values())
    worse = paired_bootstrap([(bad, good), (bad, good)], num_samples=200, seed=1)
    full = weighted_ap(bad, np.ones(60))["AP"] - weighted_ap(good, np.ones(60))["AP"]
    assert worse["AP"]["delta"] == pytest.approx(full)
    assert worse["AP75"]["high"] < 0 and worse["AP"]["low"] <= worse["AP"]["delta"] <= worse["AP"]["high"]


def test_errors_name_the_problem():
    gt, results = _dataset(7)
    matches = match_per_image(gt, results)
    with pytest.raises(ValueError, match="weights: expected 30 images"):
        weighted_ap(matches, np.ones(29))
    other = match_per_image(dict(gt, images=gt["images"][:-1]), [r for r in results if r["image_id"] != 30])
    with pytest.raises(ValueError, match=r"pairs\[1\]: evaluated on other images"):
        paired_bootstrap([(matches, matches), (other, other)], num_samples=5)
    with pytest.raises(ValueError, match="pairs: need at least one"):
        paired_bootstrap([], num_samples=5)
    with pytest.raises(ValueError, match="no images"):
        match_per_image(dict(gt, images=[]), [])
