"""The field's metrics in the consistency report: LaECE, D-ECE (equal to netcal's), TIDE's error breakdown (equal
to tidecv's), COCO's one-to-one assignment (equal to COCOeval's) and the post-hoc calibration baseline."""

import contextlib
import io
import json

import numpy as np
import pytest
from netcal.metrics import ECE
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from pycocotools import mask as mask_utils
from tidecv import TIDE, Data

from harmonicdet.analysis.consistency import (assign_one_to_one, class_average_precision, consistency_report,
                                              consistency_report_from_tensors, dece, laece, match_detections,
                                              match_pairs, posthoc_calibration)
from harmonicdet.analysis.consistency import matching as consistency_matching
from harmonicdet.analysis.consistency.posthoc import apply_platt, fit_isotonic, apply_isotonic, fit_platt

# Three images, classes a and b. The detections, by decreasing score, and what they are at IoU 0.5:
#   0.95 a, image 3: no object of class a there; IoU 1/3 with b's B2       -> TIDE "both"
#   0.90 a on A1, shifted by 1 of 10: IoU 9/11                             -> true positive
#   0.85 a exactly on A1, which the 0.90 took                               -> TIDE "dupe"
#   0.62 b on B1, shifted by 2 of 20: IoU 9/11                              -> true positive
#   0.50 b exactly on A1 (class a), B1 taken                                -> TIDE "cls" (on a taken object)
#   0.41 b on B2, shifted by 12 of 30: IoU 18/42 = 3/7                      -> TIDE "loc" (B2 not taken)
#   0.30 a on A2, shifted by 8 of 40: IoU 32/48 = 2/3                       -> true positive
#   0.29 a in image 2, touching nothing                                    -> TIDE "bkg"
GT = {
    "images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3)],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [20, 20, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 4, "image_id": 3, "category_id": 2, "bbox": [0, 0, 30, 30], "area": 900, "iscrowd": 0},
    ],
}


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


DETS = [det(3, 1, [15, 0, 30, 30], 0.95), det(1, 1, [1, 0, 10, 10], 0.9), det(1, 1, [0, 0, 10, 10], 0.85),
        det(1, 2, [52, 50, 20, 20], 0.62), det(1, 2, [0, 0, 10, 10], 0.5), det(3, 2, [12, 0, 30, 30], 0.41),
        det(2, 1, [28, 20, 40, 40], 0.3), det(2, 1, [80, 80, 5, 5], 0.29)]
TRUE_POSITIVE_AT_HALF = np.array([0, 1, 0, 1, 0, 0, 1, 0])
# CalibrationCOCO(gt, gt, "bbox", 25, 0.0, False, False, 100) of fiveai/detection_calibration on GT, DETS
# (prepare_input, compute_single_errors, accumulate_errors), run once outside the test suite
FIVEAI_LAECE_0 = 0.3153073593073593


def test_laece_of_a_crafted_input_by_hand_and_as_fiveai_computes_it():
    report = consistency_report(GT, DETS)
    # LaECE_0: at tau = 0 the 0.41 box takes B2 (any overlap) with IoU 3/7; 25 bins of width 0.04, (lo, hi]:
    # class a: 0.95 (target 0), 0.90 (9/11), 0.85 (0) alone in their bins, 0.30 and 0.29 share (0.28, 0.32]
    class_a = (0.95 + (0.9 - 9 / 11) + 0.85 + abs(0.3 + 0.29 - 2 / 3)) / 5
    class_b = (abs(0.62 - 9 / 11) + 0.5 + abs(0.41 - 3 / 7)) / 3  # 0.62 on B1; 0.5 finds B1 taken
    assert report["per_class"]["a"]["laece"] == pytest.approx(class_a, abs=1e-12)
    assert report["per_class"]["b"]["laece"] == pytest.approx(class_b, abs=1e-12)
    assert report["laece"]["value"] == pytest.approx((class_a + class_b) / 2, abs=1e-12)
    assert report["laece"]["value"] == pytest.approx(FIVEAI_LAECE_0, abs=1e-15)
    assert report["laece"]["num_classes"] == 2 and report["laece"]["iou_threshold"] == 0.0
    shared = report["laece"]["bins"][7]  # (0.28, 0.32]
    assert shared["lo"] == pytest.approx(0.28) and shared["count"] == 2
    assert shared["mean_target"] == pytest.approx(1 / 3) and shared["mean_score"] == pytest.approx(0.295)
    assert sum(b["count"] for b in report["laece"]["bins"]) == 8


def test_laece_needs_an_overlap_and_gives_each_object_once():
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}]}
    # a higher-scored box far away does not take the object from the one on it (COCOeval at tau = 0 lets it)
    far_first = [det(1, 1, [50, 50, 10, 10], 0.8), det(1, 1, [0, 0, 10, 10], 0.6)]
    assert consistency_report(gt, far_first)["laece"]["value"] == pytest.approx((0.8 + (1 - 0.6)) / 2)
    same_bin = [det(1, 1, [0, 0, 10, 10], 0.61), det(1, 1, [0, 0, 10, 10], 0.62)]  # one object, two boxes
    assert consistency_report(gt, same_bin)["laece"]["value"] == pytest.approx(abs(0.61 + 0.62 - 1) / 2)
    assert laece([0.0, 0.04, 0.05, 1.0], [0, 0, 0, 1], [0, 0, 0, 0], 1)["bins"][0]["count"] == 2  # [0, 0.04]
    # a box on two objects takes the one it overlaps most (9/11, not 7/13), leaving the other to the next box
    two = {**gt, "annotations": gt["annotations"] + [{"id": 2, "image_id": 1, "category_id": 1,
                                                      "bbox": [4, 0, 10, 10]}]}
    between = [det(1, 1, [3, 0, 10, 10], 0.9), det(1, 1, [0, 0, 10, 10], 0.5)]
    assert consistency_report(two, between)["laece"]["value"] == pytest.approx((0.9 - 9 / 11 + 1 - 0.5) / 2)


def test_dece_of_a_crafted_input_by_hand_and_equal_to_netcal():
    report = consistency_report(GT, DETS)
    scores = np.array([d["score"] for d in DETS])
    # 10 bins [lo, hi) at linspace(0, 1, 11): 0.3 falls below the edge 0.30000000000000004, with 0.29
    by_hand = (abs(1 - 0.95 - 0.9) + 0.85 + abs(1 - 0.62) + 0.5 + 0.41 + abs(1 - 0.3 - 0.29)) / 8
    assert report["dece"]["value"] == pytest.approx(by_hand, abs=1e-12)
    netcal = ECE(10, detection=True).measure(scores, TRUE_POSITIVE_AT_HALF)
    assert report["dece"]["value"] == pytest.approx(netcal, abs=1e-15)
    assert report["dece"]["num_true_positives"] == 3
    assert report["per_class"]["b"]["dece"] == pytest.approx(
        ECE(10, detection=True).measure(scores[3:6], TRUE_POSITIVE_AT_HALF[3:6]), abs=1e-15)


def test_dece_with_position_and_size_bins_equals_netcal():
    report = consistency_report(GT, DETS, dece_box_bins=3)
    boxes = np.array([d["bbox"] for d in DETS], dtype=float)
    features = np.c_[boxes[:, :2] + boxes[:, 2:] / 2, boxes[:, 2:]] / 100  # cx, cy, w, h over the image size
    x = np.c_[[d["score"] for d in DETS], features]
    assert report["dece"]["value"] == pytest.approx(
        ECE([10, 3, 3, 3, 3], detection=True).measure(x, TRUE_POSITIVE_AT_HALF), abs=1e-15)
    rng = np.random.default_rng(0)
    scores, matched = rng.random(3000).round(2), (rng.random(3000) < 0.4).astype(int)
    box = rng.random((3000, 4)) * 1.2 - 0.1  # outside [0, 1] too: netcal clips
    for bins in (10, [8, 2, 3, 4, 5]):
        assert dece(scores, matched, features=box, bins=bins)["value"] == pytest.approx(
            ECE(bins, detection=True).measure(np.c_[scores, box], matched), abs=1e-12)
    with pytest.raises(ValueError, match="dece_box_bins needs the image sizes"):
        consistency_report({**GT, "images": [{"id": i} for i in (1, 2, 3)]}, DETS, dece_box_bins=2)


def test_tide_categories_and_daps_of_a_crafted_input_by_hand():
    tide = consistency_report(GT, DETS)["tide"]
    assert tide["counts"] == {"cls": 1, "loc": 1, "both": 1, "dupe": 1, "bkg": 1, "miss": 0}
    # 101-point AP. Class a (2 objects): FP .95, TP .90, FP .85, TP .30, FP .29 -> precision 0.5 at every recall;
    # class b (2 objects): TP .62, FP .50, FP .41 -> precision 1 up to recall 0.5, then nothing: 51/101
    ap_a, ap_b = 0.5, 51 / 101
    assert tide["ap"] == pytest.approx((ap_a + ap_b) / 2, abs=1e-12)
    fixed_a_both = (51 + 50 * 2 / 3) / 101  # without the .95 box: 1 up to recall 0.5, then 2/3
    fixed_b_loc = (51 + 50 * 2 / 3) / 101  # the .41 box on B2 becomes a true positive
    assert tide["dap"] == pytest.approx({"cls": 0.0, "loc": (fixed_b_loc - ap_b) / 2,
                                         "both": (fixed_a_both - ap_a) / 2, "dupe": (2 / 3 - ap_a) / 2,
                                         "bkg": 0.0, "miss": 0.0}, abs=1e-12)
    assert tide["dap_special"] == pytest.approx({"false_positive": (1 - ap_a) / 2,
                                                 "false_negative": (1 - ap_b) / 2}, abs=1e-12)


def tidecv_run(gt, results):
    truth, predictions = Data("gt"), Data("pr")
    for image in gt["images"]:
        truth.add_image(image["id"], str(image["id"]))
    for a in gt["annotations"]:
        truth.add_ground_truth(a["image_id"], a["category_id"], a["bbox"])
    for d in results:
        predictions.add_detection(d["image_id"], d["category_id"], d["score"], d["bbox"])
    tide = TIDE()
    run = tide.evaluate(truth, predictions, mode=TIDE.BOX)
    with contextlib.redirect_stdout(io.StringIO()):
        return run.ap / 100, tide.get_main_errors()["pr"], tide.get_special_errors()["pr"]


@pytest.mark.parametrize("seed", range(4))
def test_tide_equals_tidecv(seed, random_coco):
    gt, results = random_coco(seed)
    ap, main, special = tidecv_run(gt, results)
    ours = consistency_report(gt, results)["tide"]
    assert ours["ap"] == pytest.approx(ap, abs=1e-12)
    for name in ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"):
        assert ours["dap"][name.lower()] == pytest.approx(main[name] / 100, abs=1e-12), name
    assert ours["dap_special"]["false_positive"] == pytest.approx(special["FalsePos"] / 100, abs=1e-12)
    assert ours["dap_special"]["false_negative"] == pytest.approx(special["FalseNeg"] / 100, abs=1e-12)


def test_tide_fixes_a_miss_and_a_class_error_on_a_free_object():
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                          {"id": 2, "image_id": 1, "category_id": 2, "bbox": [40, 40, 10, 10]},
                          {"id": 3, "image_id": 1, "category_id": 2, "bbox": [70, 70, 10, 10]}]}
    results = [det(1, 1, [0, 0, 10, 10], 0.9), det(1, 1, [40, 40, 10, 10], 0.8)]  # TP; a on b's object: cls
    tide = consistency_report(gt, results)["tide"]
    assert tide["counts"] == {"cls": 1, "loc": 0, "both": 0, "dupe": 0, "bkg": 0, "miss": 1}
    # a: TP, FP -> 1; b: no detection, 2 objects -> 0. Fixing cls: a = 1, b gets the 0.8 box: 51/101
    assert tide["ap"] == pytest.approx(0.5)
    assert tide["dap"]["cls"] == pytest.approx((1 + 51 / 101) / 2 - 0.5)
    assert tide["dap"]["miss"] == pytest.approx(0.0)  # b has no detection: AP 0 with one object or two
    assert tidecv_run(gt, results)[1]["Cls"] / 100 == pytest.approx(tide["dap"]["cls"], abs=1e-12)


def test_class_average_precision_matches_cocoeval_ap50(random_coco):
    gt, results = random_coco(7, num_dt=80)
    report = consistency_report(gt, results)
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.params.maxDets = [1000, 1000, 1000]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert report["tide"]["ap"] == pytest.approx(evaluator.stats[1], abs=1e-12)  # AP50
    assert np.isnan(class_average_precision(np.zeros(0, int), np.zeros(0), np.zeros(0, bool), np.zeros(1)))[0]


@pytest.mark.parametrize("scene", [dict(seed=3, num_dt=200), dict(seed=4, num_images=2, num_classes=1, num_gt=40)])
def test_one_to_one_assignment_equals_cocoeval_matches(scene, random_coco):
    gt, results = random_coco(**scene)  # the second: crowded, many boxes overlap several objects
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.params.iouThrs = np.array([0.1, 0.5, 0.75])
        evaluator.params.maxDets = [1000]
        evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0, 1e10]], ["all"]
        evaluator.evaluate()
    expected = np.full((3, len(results)), -1)  # the matched object's index (its id is 100 + index)
    for e in evaluator.evalImgs:
        if e is not None:
            for t in range(3):
                for d, g in zip(e["dtIds"], e["dtMatches"][t]):
                    expected[t, d - 1] = int(g) - 100 if g else -1  # loadRes numbers the results from 1
    boxes = np.array([r["bbox"] for r in results], float)
    boxes[:, 2:] += boxes[:, :2]
    gt_boxes = np.array([a["bbox"] for a in gt["annotations"]], float)
    gt_boxes[:, 2:] += gt_boxes[:, :2]
    image, category = (np.array([r[k] for r in results]) for k in ("image_id", "category_id"))
    gt_image, gt_category = (np.array([a[k] for a in gt["annotations"]]) for k in ("image_id", "category_id"))
    matches = match_pairs(boxes, image, category, gt_boxes, gt_image, gt_category)
    scores = np.array([r["score"] for r in results])
    assigned = assign_one_to_one(scores, image * 100 + category, matches, [0.1, 0.5, 0.75],
                                 np.ones(len(results), bool))
    for t in range(3):
        np.testing.assert_array_equal(assigned[t][0], expected[t])
    assert (assigned[0][0] >= 0).sum() > (assigned[1][0] >= 0).sum() > (assigned[2][0] >= 0).sum() > 0


def test_match_pairs_across_classes_and_in_small_chunks(monkeypatch, random_coco):
    gt, results = random_coco(5)
    boxes = np.array([r["bbox"] for r in results], float)
    gt_boxes = np.array([a["bbox"] for a in gt["annotations"]], float)
    image, category = (np.array([r[k] for r in results]) for k in ("image_id", "category_id"))
    gt_image, gt_category = (np.array([a[k] for a in gt["annotations"]]) for k in ("image_id", "category_id"))
    xyxy = lambda b: np.c_[b[:, :2], b[:, :2] + b[:, 2:]]  # noqa: E731
    iou = mask_utils.iou(boxes.tolist(), gt_boxes.tolist(), [0] * len(gt_boxes))
    same_image = image[:, None] == gt_image[None, :]
    same_class = same_image & (category[:, None] == gt_category[None, :])
    whole = match_pairs(xyxy(boxes), image, category, xyxy(gt_boxes), gt_image, gt_category, across_classes=True)
    monkeypatch.setattr(consistency_matching, "_CHUNK", 5)
    chunked = match_pairs(xyxy(boxes), image, category, xyxy(gt_boxes), gt_image, gt_category, across_classes=True)
    for m in (whole, chunked):
        np.testing.assert_allclose(m.iou, np.where(same_class, iou, 0).max(axis=1), atol=1e-12)
        np.testing.assert_allclose(m.other_iou, np.where(same_image & ~same_class, iou, 0).max(axis=1), atol=1e-12)
        assert set(zip(m.pair_det.tolist(), m.pair_gt.tolist())) == set(zip(*np.nonzero(same_class & (iou > 0))))
        np.testing.assert_allclose(m.pair_iou, iou[m.pair_det, m.pair_gt], atol=1e-12)
        # each detection's pairs together (the assignment relies on it)
        assert len(np.unique(m.pair_det)) == np.count_nonzero(np.r_[True, m.pair_det[1:] != m.pair_det[:-1]])
    plain = match_detections(xyxy(boxes), image, category, xyxy(gt_boxes), gt_image, gt_category)
    np.testing.assert_array_equal(plain[1], whole.gt_index)


def test_isotonic_baseline_by_hand():
    # pool-adjacent-violators: 0.6 then 0.2 violate the order and pool to 0.4
    knots = fit_isotonic(np.array([0.1, 0.2, 0.3, 0.4, 0.4]), np.array([0.0, 0.6, 0.2, 0.7, 0.9]))
    np.testing.assert_allclose(knots[0], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(knots[1], [0.0, 0.4, 0.4, 0.8])  # the equal scores first averaged: 0.8
    np.testing.assert_allclose(apply_isotonic(knots, np.array([0.05, 0.15, 0.25, 0.35, 0.9])),
                               [0.0, 0.2, 0.4, 0.6, 0.8])
    # one class; images at even positions fit, odd ones evaluate
    scores = np.array([0.2, 0.4, 0.8, 0.3, 0.9, 0.85])
    targets = np.array([0.0, 0.5, 0.9, 0.1, 0.6, 0.0])
    image_rank = np.array([0, 2, 2, 1, 1, 3])
    matched = np.array([0, 1, 1, 0, 1, 0])
    result = posthoc_calibration(scores, targets, matched, np.zeros(6, int), image_rank, 1)
    assert (result["fit_images"], result["eval_images"], result["fit_detections"], result["eval_detections"]) == \
        (2, 2, 3, 3)
    # evaluated: 0.3 -> 0.25 (between the knots 0.2 -> 0 and 0.4 -> 0.5), 0.9 and 0.85 -> 0.9 (past the last knot)
    assert result["laece"]["uncalibrated"] == pytest.approx((0.2 + abs(0.9 - 0.6) + 0.85) / 3)
    assert result["laece"]["isotonic"] == pytest.approx((0.15 + abs(0.9 - 0.6) + 0.9) / 3)
    assert result["dece"]["isotonic"] == pytest.approx((0.25 + abs(1.8 - 1)) / 3)  # 0.9 twice: bin [0.9, 1]
    json.dumps(result, allow_nan=False)


def test_platt_and_temperature_recover_the_map_that_made_the_targets():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.02, 0.98, 4000)
    category = rng.integers(0, 2, 4000)
    logit = np.log(scores / (1 - scores))
    truth = np.array([[2.0, -1.0], [0.5, 0.3]])
    targets = 1 / (1 + np.exp(-(truth[category, 0] * logit + truth[category, 1])))
    np.testing.assert_allclose(fit_platt(scores, targets, category, 2), truth, atol=1e-4)
    tempered = 1 / (1 + np.exp(-logit / 2.5))
    np.testing.assert_allclose(fit_platt(scores, tempered, category, 3, shift=False),
                               [[0.4, 0.0], [0.4, 0.0], [1.0, 0.0]], atol=1e-4)  # 1 / T; class 2: no data


def test_a_monotone_map_keeps_each_class_ap_and_spearman(random_coco):
    gt, results = random_coco(11)
    report = consistency_report(gt, results)
    categories = np.array([r["category_id"] for r in results])
    scores = np.array([r["score"] for r in results])
    index = np.searchsorted([5, 7, 9], categories)
    mapped = apply_platt(np.array([[0.3, 1.0], [2.5, -2.0], [1.0, 0.5]]), scores, index)
    recalibrated = consistency_report(gt, [dict(r, score=float(s)) for r, s in zip(results, mapped)])
    for name in report["per_class"]:
        assert recalibrated["per_class"][name]["tide"]["ap"] == pytest.approx(report["per_class"][name]["tide"]["ap"])
        assert recalibrated["per_class"][name]["spearman"] == pytest.approx(report["per_class"][name]["spearman"])
    assert recalibrated["laece"]["value"] != pytest.approx(report["laece"]["value"])


def test_empty_one_class_and_all_wrong_give_finite_documented_values():
    empty = consistency_report(GT, [], posthoc=True)
    assert empty["laece"]["value"] is None and empty["dece"]["value"] is None
    assert empty["tide"]["ap"] == 0.0 and empty["tide"]["counts"]["miss"] == 4  # every object missed
    assert set(empty["tide"]["dap"].values()) == {0.0}  # fixing the misses leaves no class: a mean of 0
    assert set(empty["posthoc"]["laece"].values()) == {None}
    nothing = consistency_report({**GT, "annotations": []}, [])
    assert nothing["tide"]["ap"] is None and set(nothing["tide"]["dap"].values()) == {None}
    one_class = consistency_report(GT, [d for d in DETS if d["category_id"] == 1], posthoc=True)
    assert one_class["laece"]["value"] == pytest.approx((0.95 + (0.9 - 9 / 11) + 0.85 + abs(0.59 - 2 / 3)) / 5)
    assert one_class["tide"]["ap"] == pytest.approx(0.25)  # a: 0.5; b: objects, no detection: 0
    wrong = [dict(d, bbox=[90, 90, 5, 5]) for d in DETS]  # nothing overlaps anything
    all_wrong = consistency_report(GT, wrong, posthoc=True)
    mean_score = {c: np.mean([d["score"] for d in DETS if d["category_id"] == c]) for c in (1, 2)}
    assert all_wrong["laece"]["value"] == pytest.approx((mean_score[1] + mean_score[2]) / 2)  # target 0
    assert all_wrong["dece"]["value"] == pytest.approx(np.mean([d["score"] for d in DETS]))
    assert all_wrong["tide"]["ap"] == 0.0 and all_wrong["tide"]["counts"]["bkg"] == 8
    assert all_wrong["posthoc"]["laece"]["isotonic"] == pytest.approx(0.0)  # every target 0: maps to 0
    assert all(np.isfinite(v) for v in all_wrong["posthoc"]["laece"].values())
    for report in (empty, nothing, one_class, all_wrong):
        json.dumps(report, allow_nan=False)


def test_tensor_report_has_the_same_field_metrics():
    boxes = np.array([d["bbox"] for d in DETS], float)
    gt_boxes = np.array([a["bbox"] for a in GT["annotations"]], float)
    to_xyxy = lambda b: np.c_[b[:, :2], b[:, :2] + b[:, 2:]]  # noqa: E731
    from_tensors = consistency_report_from_tensors(
        to_xyxy(boxes), [d["score"] for d in DETS], [d["category_id"] for d in DETS], [d["image_id"] for d in DETS],
        to_xyxy(gt_boxes), [a["category_id"] for a in GT["annotations"]], [a["image_id"] for a in GT["annotations"]],
        class_names={1: "a", 2: "b"}, posthoc=True)
    from_json = consistency_report(GT, DETS, posthoc=True)
    for key in ("laece", "dece", "tide", "posthoc"):
        assert from_tensors[key] == from_json[key], key
    assert from_tensors["per_class"]["a"]["tide"] == from_json["per_class"]["a"]["tide"]


def test_cli_writes_and_prints_the_field_metrics(tmp_path, capsys):
    from harmonicdet.cli import main

    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "dt.json").write_text(json.dumps(DETS))
    out = tmp_path / "out"
    assert main(["consistency", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"), "--out",
                 str(out), "--per-class", "--dece-box-bins", "3"]) == 0
    report = json.loads((out / "consistency.json").read_text())["dt"]
    assert report["laece"]["value"] == pytest.approx(FIVEAI_LAECE_0)
    assert report["dece"]["box_bins"] == 3 and report["settings"]["posthoc"] is True
    assert set(report["posthoc"]["laece"]) == {"uncalibrated", "isotonic", "platt", "temperature"}
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "LaECE" in line)
    assert header.split()[:4] == ["label", "class", "LaECE", "D-ECE"]
    rows = {line.split()[1]: line.split() for line in lines if line.startswith("dt ")}
    assert rows["all"][2] == f"{FIVEAI_LAECE_0:.3f}" and rows["a"][2] == f"{report['per_class']['a']['laece']:.3f}"
    assert main(["consistency", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "dt.json"), "--out",
                 str(out), "--no-posthoc"]) == 0
    assert "posthoc" not in json.loads((out / "consistency.json").read_text())["dt"]


def test_cli_defaults_are_the_library_constants():
    """The defaults written out in cli/consistency.py (so that --help imports no numpy) are the library's."""
    from harmonicdet.analysis.consistency.detection_calibration import DECE_BINS, DECE_IOU, LAECE_BINS
    from harmonicdet.cli import build_parser

    defaults = vars(build_parser().parse_args(["consistency", "--gt", "g", "--dt", "d"]))
    assert (defaults["laece_bins"], defaults["dece_bins"], defaults["dece_iou"]) == (LAECE_BINS, DECE_BINS, DECE_IOU)
    assert defaults["dece_box_bins"] is None and defaults["no_posthoc"] is False
