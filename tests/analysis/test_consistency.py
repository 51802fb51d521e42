"""Consistency analysis: known answers, agreement with pycocotools' IoU, errors, the CLI."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import stats

from harmonicdet.analysis.consistency import matching as consistency_matching
from harmonicdet.analysis.consistency import (
    GroundTruth,
    calibration,
    consistency_report,
    consistency_report_from_tensors,
    correlations,
    inconsistency,
    match_detections,
    nms_ranking,
    score_iou_pairs,
)
from harmonicdet.cli import main

GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0, "area": 100},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20], "iscrowd": 0, "area": 400},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [20, 20, 40, 40], "iscrowd": 0, "area": 1600},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [70, 0, 30, 30], "iscrowd": 1, "area": 900},
    ],
}
PNG = b"\x89PNG\r\n\x1a\n"


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def shifted(bbox, dx):
    return [bbox[0] + dx, bbox[1], bbox[2], bbox[3]]


def iou_of_shift(w, dx):
    return (w - dx) / (w + dx)  # same-height boxes shifted horizontally


def xyxy(b):
    b = np.asarray(b, dtype=float)
    return np.c_[b[:, :2], b[:, :2] + b[:, 2:]]


# ----------------------------------------------------------------------------- correlations


def test_scores_equal_to_iou_give_spearman_one_and_reversed_minus_one():
    shifts = [0, 1, 2, 3, 4, 6]
    ious = [iou_of_shift(40, dx) for dx in shifts]
    same = [det(2, 1, shifted([20, 20, 40, 40], dx), s) for dx, s in zip(shifts, ious)]
    report = consistency_report(GT, same)
    assert report["overall"]["spearman"] == pytest.approx(1.0)
    assert report["overall"]["pearson"] == pytest.approx(1.0)
    assert report["overall"]["num_detections"] == 6 and report["overall"]["count"] == 6
    assert report["per_class"]["a"]["spearman"] == pytest.approx(1.0)
    assert report["per_class"]["a"]["category_id"] == 1 and "b" not in report["per_class"]
    reversed_ = [det(2, 1, shifted([20, 20, 40, 40], dx), s) for dx, s in zip(shifts, ious[::-1])]
    assert consistency_report(GT, reversed_)["overall"]["spearman"] == pytest.approx(-1.0)
    json.dumps(report, allow_nan=False)


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    s, u = rng.random(300).round(2), rng.random(300).round(1)
    got = correlations(s, u)
    assert got["count"] == 300
    assert got["spearman"] == pytest.approx(stats.spearmanr(s, u).statistic, abs=1e-12)
    assert got["pearson"] == pytest.approx(stats.pearsonr(s, u).statistic, abs=1e-12)
    s2 = rng.random(50)
    u2 = 0.3 * s2 + 0.2 * rng.random(50)
    assert correlations(s2, u2)["spearman"] == pytest.approx(stats.spearmanr(s2, u2).statistic, abs=1e-12)
    assert correlations(s2, u2)["pearson"] == pytest.approx(stats.pearsonr(s2, u2).statistic, abs=1e-12)


def test_correlations_undefined_are_null():
    assert correlations([], []) == {"count": 0, "pearson": None, "spearman": None}
    assert correlations([0.5], [0.5]) == {"count": 1, "pearson": None, "spearman": None}
    assert correlations([0.5, 0.5], [0.1, 0.9])["pearson"] is None  # constant score
    assert correlations([0.1, 0.1, 0.1], [0.2, 0.9, 0.4])["spearman"] is None
    assert correlations([0.1, 0.7], [0.3, 0.3])["spearman"] is None  # constant IoU


def test_iou_floor_excludes_non_overlapping_detections_from_correlations():
    results = [det(2, 1, shifted([20, 20, 40, 40], dx), s) for dx, s in [(0, 0.9), (4, 0.6), (8, 0.5)]]
    results += [det(1, 1, [80, 80, 5, 5], 0.99)]  # overlaps nothing: IoU 0, out of the correlation
    report = consistency_report(GT, results)
    assert report["overall"] == {"num_detections": 4, "count": 3, "pearson": pytest.approx(
        stats.pearsonr([0.9, 0.6, 0.5], [1, 36 / 44, 32 / 48]).statistic), "spearman": pytest.approx(1.0)}


# ----------------------------------------------------------------------------- IoU vs pycocotools


def test_match_detections_matches_pycocotools_iou_including_crowd():
    rng = np.random.default_rng(1)
    gt = np.c_[rng.uniform(0, 60, (8, 2)), rng.uniform(5, 40, (8, 2))]  # xywh
    crowd = np.array([0, 0, 1, 0, 0, 1, 0, 0], dtype=bool)
    dt = np.c_[rng.uniform(0, 60, (50, 2)), rng.uniform(5, 40, (50, 2))]
    reference = mask_utils.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist())  # [50, 8]
    iou, best, ignored = match_detections(xyxy(dt), np.zeros(50, int), np.zeros(50, int), xyxy(gt),
                                          np.zeros(8, int), np.zeros(8, int), crowd)
    plain = np.where(crowd[None, :], -1, reference)
    np.testing.assert_allclose(iou, np.maximum(plain.max(axis=1), 0), atol=1e-12)
    assert (best == np.where(plain.max(axis=1) > 0, plain.argmax(axis=1), -1)).all()
    crowd_iou = np.where(crowd[None, :], reference, 0).max(axis=1)
    assert (ignored == ((iou < 0.5) & (crowd_iou >= 0.5))).all()
    assert ignored.any() and (iou > 0.5).any()


def test_score_iou_pairs_match_cocoeval_compute_iou(random_coco):
    gt, results = random_coco(2, num_images=4, num_gt=30, num_dt=200, jitter=4.0, crowd_every=7)
    pairs = score_iou_pairs(gt, results)
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        coco_dt = coco.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco, coco_dt, "bbox")
        evaluator.params.maxDets = [1, 10, 1000]
        evaluator.evaluate()
    checked = ignored = 0
    for (image_id, category_id), ious in evaluator.ious.items():
        if len(ious) == 0:
            continue
        gts = evaluator._gts[image_id, category_id]
        dts = sorted(evaluator._dts[image_id, category_id], key=lambda d: -d["score"])  # computeIoU's order
        crowd = np.array([g["iscrowd"] for g in gts], dtype=bool)
        for row, d in zip(np.asarray(ious), dts):
            i = int(d["id"]) - 1  # loadRes numbers results from 1 in order
            plain = np.where(crowd, -1.0, row)
            want = max(plain.max(), 0.0)
            assert pairs["iou"][i] == pytest.approx(want, abs=1e-9)
            want_ignored = want < 0.5 and np.where(crowd, row, 0).max() >= 0.5
            assert pairs["ignored"][i] == want_ignored
            assert pairs["gt_id"][i] == (gts[int(plain.argmax())]["id"] if want > 0 else -1)
            checked += 1
            ignored += want_ignored
    assert checked > 100 and ignored >= 1
    # detections in an (image, class) without objects: IoU 0, no match
    matched_groups = {(g["image_id"], g["category_id"]) for g in gt["annotations"]}
    for i, r in enumerate(results):
        if (r["image_id"], r["category_id"]) not in matched_groups:
            assert pairs["iou"][i] == 0 and pairs["gt_id"][i] == -1


def test_chunked_matching_equals_one_block(monkeypatch, random_coco):
    gt, results = random_coco(3, num_images=2, num_classes=1, num_gt=40, num_dt=300, jitter=4.0, crowd_every=7)
    whole = score_iou_pairs(gt, results)
    monkeypatch.setattr(consistency_matching, "_CHUNK", 7)
    chunked = score_iou_pairs(gt, results)
    for key in ("iou", "ignored", "gt_id"):
        np.testing.assert_array_equal(whole[key], chunked[key])


def test_class_and_image_must_match_and_crowd_is_ignored():
    results = [det(1, 2, [0, 0, 10, 10], 0.9),  # right place, wrong class: IoU 0
               det(2, 1, [0, 0, 10, 10], 0.8),  # right class, other image's box: IoU 0
               det(2, 1, [72, 2, 20, 20], 0.7)]  # inside the crowd region: ignored
    report = consistency_report(GT, results)
    assert report["num_detections"] == 3 and report["num_ignored"] == 1
    assert report["overall"]["num_detections"] == 2
    assert report["inconsistency"]["high_score_low_iou"] == 1.0
    assert report["inconsistency"]["num_high_score"] == 2


# ----------------------------------------------------------------------------- rates and calibration


def test_inconsistency_rates_and_calibration_by_hand():
    results = [det(1, 1, [0, 0, 10, 10], 0.95),  # IoU 1
               det(1, 1, [0, 0, 10, 10], 0.10),  # IoU 1, low score
               det(1, 1, [5, 0, 10, 10], 0.90),  # IoU 1/3, high score
               det(1, 2, [50, 50, 20, 20], 0.55)]  # IoU 1
    report = consistency_report(GT, results, score_hi=0.5, score_lo=0.2, num_bins=2)
    inc = report["inconsistency"]
    assert inc["high_score_low_iou"] == pytest.approx(1 / 3)  # 1 of the 3 with score >= 0.5
    assert inc["low_score_high_iou"] == pytest.approx(1 / 3)  # 1 of the 3 with IoU >= 0.75
    assert inc["high_score_low_iou_of_all"] == pytest.approx(1 / 4)
    assert inc["low_score_high_iou_of_all"] == pytest.approx(1 / 4)
    assert (inc["num_high_score"], inc["num_high_iou"], inc["num_detections"]) == (3, 3, 4)
    low, high = report["calibration"]["bins"]
    assert (low["lo"], low["hi"], high["lo"], high["hi"]) == (0.0, 0.5, 0.5, 1.0)
    assert (low["count"], high["count"]) == (1, 3)
    assert (low["mean_score"], low["mean_iou"]) == (pytest.approx(0.10), pytest.approx(1.0))
    assert high["mean_iou"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert high["mean_score"] == pytest.approx((0.95 + 0.90 + 0.55) / 3)
    gap = (1 * abs(1 - 0.10) + 3 * abs((1 + 1 / 3 + 1) / 3 - (0.95 + 0.90 + 0.55) / 3)) / 4
    assert report["calibration"]["expected_calibration_gap"] == pytest.approx(gap)
    assert sum(map(sum, report["histogram"]["counts"])) == 4
    per_iou_bin = np.asarray(report["histogram"]["counts"]).sum(axis=0)
    assert (per_iou_bin[19], per_iou_bin[6]) == (3, 1)  # IoU 1 (last bin includes 1) and IoU 1/3


def test_calibration_bin_edges_and_empty_bins():
    cal = calibration([0.0, 0.1, 0.1999, 0.2, 1.0, 0.75], [0.2, 0.4, 0.6, 1.0, 1.0, 0.75], num_bins=5)
    assert [b["count"] for b in cal["bins"]] == [3, 1, 0, 1, 1]  # 0.2 opens bin 1; 1.0 closes the last
    assert cal["bins"][0]["mean_iou"] == pytest.approx(0.4)
    assert cal["bins"][2]["mean_iou"] is None and cal["bins"][2]["mean_score"] is None
    gap = (3 * abs(0.4 - (0.0 + 0.1 + 0.1999) / 3) + abs(1.0 - 0.2) + 0 + 0) / 6
    assert cal["expected_calibration_gap"] == pytest.approx(gap)
    perfect = calibration([0.05, 0.55, 0.95], [0.05, 0.55, 0.95])
    assert perfect["expected_calibration_gap"] == pytest.approx(0.0)


def test_inconsistency_thresholds_are_configurable():
    s, u = [0.9, 0.9, 0.3, 0.1], [0.6, 0.4, 0.9, 0.8]
    default = inconsistency(s, u)
    assert default["high_score_low_iou"] == pytest.approx(0.5)
    assert default["low_score_high_iou"] == pytest.approx(0.5)
    strict = inconsistency(s, u, score_hi=0.8, score_lo=0.35, iou_low=0.7, iou_high=0.85)
    assert strict["high_score_low_iou"] == 1.0
    assert strict["low_score_high_iou"] == 1.0 and strict["num_high_iou"] == 1
    assert inconsistency([0.1], [0.1])["high_score_low_iou"] is None


# ----------------------------------------------------------------------------- NMS ranking


def test_nms_ranking_loss_of_crafted_candidates():
    box = [20, 20, 40, 40]
    candidates = [det(2, 1, shifted(box, 8), 0.9),  # object 3: top score, IoU 32/48
                  det(2, 1, shifted(box, 0), 0.6),  # object 3: best localised, IoU 1
                  det(2, 1, shifted(box, 2), 0.5),  # object 3: IoU 38/42
                  det(2, 1, shifted(box, 30), 0.95),  # IoU 10/70 < 0.5: belongs to no object
                  det(2, 1, [72, 2, 20, 20], 0.99),  # in the crowd region: never an object
                  det(1, 1, [0, 0, 10, 10], 0.8),  # object 1: top score is the best box
                  det(1, 1, [1, 0, 10, 10], 0.3),
                  det(1, 1, [0.2, 0, 10, 10], 0.8),  # ties the top score with IoU 9.8/10.2: best IoU wins
                  det(1, 2, [0, 0, 5, 5], 0.99)]  # overlaps nothing of its class: no object
    report = consistency_report(GT, candidates[:1], candidates=candidates)
    nms = report["nms_ranking"]
    assert (nms["num_candidates"], nms["num_assigned"], nms["num_objects"]) == (9, 6, 2)
    assert nms["ranking_loss"] == pytest.approx(((1 - 32 / 48) + 0) / 2)
    assert nms["fraction_misranked"] == pytest.approx(0.5)
    assert (nms["min_iou"], nms["tolerance"]) == (0.5, 0.05)
    assert "nms_ranking" not in consistency_report(GT, candidates[:1])


def test_nms_ranking_tolerance_and_empty():
    # object 0: top-scored 0.04 below the best (within tolerance); object 1: 0.06 below
    got = nms_ranking([0.9, 0.5, 0.9, 0.2], [0.80, 0.84, 0.70, 0.76], [0, 0, 1, 1])
    assert got["ranking_loss"] == pytest.approx((0.04 + 0.06) / 2)
    assert got["fraction_misranked"] == pytest.approx(0.5)
    empty = nms_ranking([0.9], [0.3], [0])
    assert (empty["num_objects"], empty["ranking_loss"], empty["fraction_misranked"]) == (0, None, None)


# ----------------------------------------------------------------------------- tensors


def test_tensor_api_gives_the_json_report(random_coco):
    gt, results = random_coco(4, num_images=4, num_gt=30, num_dt=200, jitter=4.0, crowd_every=7)
    anns = gt["annotations"]
    candidates = results + [det(r["image_id"], r["category_id"], shifted(r["bbox"], 1.5), r["score"] * 0.9)
                            for r in results]
    from_json = consistency_report(gt, results, candidates=candidates)

    def tensors(records):
        return (torch.tensor(xyxy([r["bbox"] for r in records]), dtype=torch.float64),
                torch.tensor([r["score"] for r in records], dtype=torch.float64),
                torch.tensor([r["category_id"] for r in records]), torch.tensor([r["image_id"] for r in records]))

    names = {c["id"]: c["name"] for c in gt["categories"]}
    from_tensors = consistency_report_from_tensors(
        *tensors(results), torch.tensor(xyxy([a["bbox"] for a in anns])),
        torch.tensor([a["category_id"] for a in anns]), torch.tensor([a["image_id"] for a in anns]), torch.tensor([bool(a["iscrowd"]) for a in anns]),
        candidates=tensors(candidates), class_names=names)
    for key in ("num_detections", "num_ignored", "inconsistency", "nms_ranking", "histogram"):
        assert from_tensors[key] == from_json[key]
    assert from_tensors["overall"] == pytest.approx(from_json["overall"])
    assert from_tensors["per_class"].keys() == from_json["per_class"].keys()
    assert from_tensors["calibration"]["expected_calibration_gap"] == pytest.approx(
        from_json["calibration"]["expected_calibration_gap"])
    empty = consistency_report_from_tensors(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                                            torch.zeros(0, dtype=torch.long), torch.zeros(0, 4),
                                            torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert empty["overall"] == {"num_detections": 0, "count": 0, "pearson": None, "spearman": None}
    with pytest.raises(ValueError, match=r"det_boxes\[1\]: .* x2 < x1"):
        consistency_report_from_tensors(torch.tensor([[0, 0, 1, 1], [5, 0, 1, 1.0]]), torch.ones(2),
                                        torch.ones(2, dtype=torch.long), torch.ones(2, dtype=torch.long),
                                        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match=r"det_scores: 1 entries for 2 boxes"):
        consistency_report_from_tensors(torch.zeros(2, 4), torch.ones(1), torch.ones(2), torch.ones(2),
                                        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0))


# ----------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("entry,message", [
    ({"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}, r"results\[1\]: image_id 9 is not in"),
    ({"image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 1}, r"results\[1\]: category_id 5 is not"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 1}, r"results\[1\]: bbox .* negative width"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}, r"results\[1\]: missing field\(s\) score"),
    ({"image_id": 1, "category_id": 1, "score": 1}, r"results\[1\]: missing field\(s\) bbox"),
    ({"category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}, r"results\[1\]: missing field\(s\) image_id"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": float("nan")},
     r"results\[1\]: score nan is not finite"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, float("inf"), 1, 1], "score": 1},
     r"results\[1\]: bbox .* not finite"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}, r"results\[1\]: bbox must be \[x, y, w, h\]"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, None, 1, 1], "score": 1}, r"results\[1\]: bbox must be four"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}, r"results\[1\]: score must be a"),
    ({"image_id": 1.5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}, r"results\[1\]: image_id must be an int"),
    ({"image_id": "1", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}, r"results\[1\]: image_id must be an int"),
    ("not a detection", r"results\[1\]: expected an object"),
])
def test_malformed_results_name_the_entry(entry, message):
    good = det(1, 1, [0, 0, 10, 10], 0.5)
    with pytest.raises(ValueError, match=message):
        consistency_report(GT, [good, entry])


def test_malformed_candidates_and_containers():
    with pytest.raises(ValueError, match=r"candidates\[0\]: image_id 7 is not in the ground truth"):
        consistency_report(GT, [], candidates=[det(7, 1, [0, 0, 1, 1], 0.5)])
    with pytest.raises(ValueError, match=r"results: expected a list"):
        consistency_report(GT, {"image_id": 1})
    with pytest.raises(ValueError, match=r"score_lo <= score_hi"):
        consistency_report(GT, [], score_hi=0.1, score_lo=0.2)
    with pytest.raises(ValueError, match=r"num_bins"):
        consistency_report(GT, [], num_bins=0)


def test_empty_results_give_a_defined_empty_report():
    report = consistency_report(GT, [], candidates=[])
    assert report["num_detections"] == 0 and report["num_ignored"] == 0
    assert report["overall"] == {"num_detections": 0, "count": 0, "pearson": None, "spearman": None}
    assert report["per_class"] == {}
    assert report["inconsistency"]["high_score_low_iou"] is None
    assert report["inconsistency"]["low_score_high_iou"] is None
    assert report["calibration"]["expected_calibration_gap"] is None
    assert all(b["count"] == 0 for b in report["calibration"]["bins"])
    assert report["nms_ranking"]["ranking_loss"] is None
    json.dumps(report, allow_nan=False)


def test_ground_truth_errors():
    with pytest.raises(ValueError, match=r"ground truth annotations\[0\]: missing field\(s\) bbox"):
        GroundTruth({"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [{"image_id": 1,
                                                                                         "category_id": 1}]})
    with pytest.raises(ValueError, match=r"ground truth annotations\[0\]: bbox .* negative"):
        GroundTruth({"images": [{"id": 1}], "categories": [{"id": 1}],
                     "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, -2]}]})
    with pytest.raises(ValueError, match=r"ground truth annotations\[0\]: image_id 3 is not"):
        GroundTruth({"images": [{"id": 1}], "categories": [{"id": 1}],
                     "annotations": [{"image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 2]}]})
    with pytest.raises(ValueError, match="missing the list 'categories'"):
        GroundTruth({"images": [], "annotations": []})
    with pytest.raises(ValueError, match=r"ground truth images\[0\]: needs an integer id"):
        GroundTruth({"images": [{"file_name": "x.jpg"}], "annotations": [], "categories": []})


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_reports_and_plots(tmp_path, capsys):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    a = [det(2, 1, shifted([20, 20, 40, 40], dx), 1 - dx / 10) for dx in range(6)]
    b = [det(2, 1, shifted([20, 20, 40, 40], dx), dx / 10) for dx in range(6)]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    (tmp_path / "cand.json").write_text(json.dumps(a + b))
    out = tmp_path / "out"
    assert main(["consistency", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "a.json"),
                 "--dt", str(tmp_path / "b.json"), "--label", "base", "--label", "harmonic loss",
                 "--candidates", str(tmp_path / "cand.json"), "--candidates", str(tmp_path / "cand.json"),
                 "--out", str(out)]) == 0
    reports = json.loads((out / "consistency.json").read_text())
    assert list(reports) == ["base", "harmonic loss"]
    assert reports["base"]["overall"]["spearman"] == pytest.approx(1.0)
    assert reports["harmonic loss"]["overall"]["spearman"] == pytest.approx(-1.0)
    assert reports["base"]["nms_ranking"]["num_objects"] == 1
    for name in ("consistency_base.png", "consistency_harmonic_loss.png", "consistency_comparison.png"):
        assert (out / name).read_bytes()[:8] == PNG
    printed = capsys.readouterr().out
    assert "base" in printed and "harmonic loss" in printed and "Spearman" in printed


def test_cli_single_dt_and_errors(tmp_path, capsys):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "bad.json").write_text(json.dumps([det(99, 1, [0, 0, 1, 1], 0.5)]))
    out = tmp_path / "one"
    assert main(["consistency", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "empty.json"),
                 "--out", str(out)]) == 0
    assert json.loads((out / "consistency.json").read_text())["empty"]["num_detections"] == 0
    assert (out / "consistency_empty.png").read_bytes()[:8] == PNG
    assert not (out / "consistency_comparison.png").exists()
    capsys.readouterr()
    assert main(["consistency", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["consistency", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "bad.json"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "results[0]: image_id 99 is not in the ground truth" in capsys.readouterr().err
    assert main(["consistency", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "empty.json"),
                 "--label", "a", "--label", "b"]) == 2
