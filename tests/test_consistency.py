"""Consistency analysis: known answers, agreement with pycocotools' IoU, errors, the CLI."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import stats

from harmonicdet.analysis.consistency import (
    GroundTruth,
    consistency_report,
    correlations,
    match_detections,
)
from harmonicdet.cli import main

GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20], "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [20, 20, 40, 40], "iscrowd": 0},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [70, 0, 30, 30], "iscrowd": 1},
    ],
}


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def shifted(bbox, dx):
    return [bbox[0] + dx, bbox[1], bbox[2], bbox[3]]


def iou_of_shift(w, dx):
    return (w - dx) / (w + dx)  # same-height boxes shifted horizontally


def test_scores_equal_to_iou_give_spearman_one_and_reversed_minus_one():
    shifts = [0, 1, 2, 3, 4, 6]
    ious = [iou_of_shift(40, dx) for dx in shifts]
    same = [det(2, 1, shifted([20, 20, 40, 40], dx), s) for dx, s in zip(shifts, ious)]
    report = consistency_report(GT, same)
    assert report["overall"]["spearman"] == pytest.approx(1.0)
    assert report["overall"]["pearson"] == pytest.approx(1.0)
    reversed_ = [det(2, 1, shifted([20, 20, 40, 40], dx), s) for dx, s in zip(shifts, ious[::-1])]
    assert consistency_report(GT, reversed_)["overall"]["spearman"] == pytest.approx(-1.0)


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    s, u = rng.random(300).round(2), rng.random(300).round(1)
    got = correlations(s, u)
    assert got["spearman"] == pytest.approx(stats.spearmanr(s, u).statistic, abs=1e-12)
    assert got["pearson"] == pytest.approx(stats.pearsonr(s, u).statistic, abs=1e-12)
    assert correlations([0.5], [0.5])["spearman"] is None
    assert correlations([0.5, 0.5], [0.1, 0.9])["pearson"] is None


def test_ious_match_pycocotools_including_crowd():
    rng = np.random.default_rng(1)
    gt = np.c_[rng.uniform(0, 60, (8, 2)), rng.uniform(5, 40, (8, 2))]  # xywh
    crowd = np.array([0, 0, 1, 0, 0, 1, 0, 0], dtype=bool)
    dt = np.c_[rng.uniform(0, 60, (50, 2)), rng.uniform(5, 40, (50, 2))]
    reference = mask_utils.iou(dt.tolist(), gt.tolist(), crowd.astype(np.uint8).tolist())  # [50, 8]
    xyxy = lambda b: np.c_[b[:, :2], b[:, :2] + b[:, 2:]]  # noqa: E731
    iou, best, ignored = match_detections(xyxy(dt), np.zeros(50, int), np.zeros(50, int), xyxy(gt),
                                          np.zeros(8, int), np.zeros(8, int), crowd)
    plain = np.where(crowd[None, :], -1, reference)
    np.testing.assert_allclose(iou, np.maximum(plain.max(axis=1), 0), atol=1e-12)
    assert (best == plain.argmax(axis=1)).all()
    crowd_iou = np.where(crowd[None, :], reference, 0).max(axis=1)
    assert (ignored == ((iou < 0.5) & (crowd_iou >= 0.5))).all()


def test_class_and_image_must_match_and_crowd_is_ignored():
    results = [det(1, 2, [0, 0, 10, 10], 0.9),  # right place, wrong class: IoU 0
               det(2, 1, [0, 0, 10, 10], 0.8),  # right class, other image's box: IoU 0
               det(2, 1, [72, 2, 20, 20], 0.7)]  # inside the crowd region: ignored
    report = consistency_report(GT, results)
    assert report["num_detections"] == 3 and report["num_ignored"] == 1
    assert report["inconsistency"]["high_score_low_iou"] == 1.0
    assert report["inconsistency"]["num_high_score"] == 2


def test_inconsistency_rates_and_calibration_by_hand():
    results = [det(1, 1, [0, 0, 10, 10], 0.95),  # IoU 1
               det(1, 1, [0, 0, 10, 10], 0.10),  # IoU 1, low score
               det(1, 1, [5, 0, 10, 10], 0.90),  # IoU 1/3, high score
               det(1, 2, [50, 50, 20, 20], 0.55)]  # IoU 1
    report = consistency_report(GT, results, score_hi=0.5, score_lo=0.2, num_bins=2)
    inc = report["inconsistency"]
    assert inc["high_score_low_iou"] == pytest.approx(1 / 3)
    assert inc["low_score_high_iou"] == pytest.approx(1 / 3)
    low, high = report["calibration"]["bins"]
    assert (low["count"], high["count"]) == (1, 3)
    assert high["mean_iou"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    gap = (1 * abs(1 - 0.10) + 3 * abs(high["mean_iou"] - (0.95 + 0.90 + 0.55) / 3)) / 4
    assert report["calibration"]["expected_calibration_gap"] == pytest.approx(gap)
    assert sum(map(sum, report["histogram"]["counts"])) == 4


def test_nms_ranking_loss_of_crafted_candidates():
    box = [20, 20, 40, 40]
    candidates = [det(2, 1, shifted(box, 8), 0.9),  # top score, IoU 32/48
                  det(2, 1, shifted(box, 0), 0.6),  # best localised, IoU 1
                  det(1, 1, [0, 0, 10, 10], 0.8),  # object 1: top score is the best box
                  det(1, 1, [1, 0, 10, 10], 0.3),
                  det(1, 2, [0, 0, 5, 5], 0.99)]  # overlaps nothing of its class: no object
    report = consistency_report(GT, candidates[:1], candidates=candidates)
    nms = report["nms_ranking"]
    assert nms["num_objects"] == 2
    assert nms["ranking_loss"] == pytest.approx(((1 - 32 / 48) + 0) / 2)
    assert nms["fraction_misranked"] == pytest.approx(0.5)


@pytest.mark.parametrize("entry,message", [
    ({"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}, r"results\[1\]: image_id 9 is not"),
    ({"image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 1}, r"results\[1\]: category_id 5 is not"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 1}, r"results\[1\]: negative width"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}, r"results\[1\]: missing field\(s\) score"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": float("nan")}, r"results\[1\]: .*not finite"),
])
def test_malformed_results_name_the_entry(entry, message):
    good = det(1, 1, [0, 0, 10, 10], 0.5)
    with pytest.raises(ValueError, match=message):
        consistency_report(GT, [good, entry])


def test_empty_results_give_a_defined_empty_report():
    report = consistency_report(GT, [])
    assert report["num_detections"] == 0
    assert report["overall"] == {"count": 0, "pearson": None, "spearman": None}
    assert report["inconsistency"]["high_score_low_iou"] is None
    assert report["calibration"]["expected_calibration_gap"] is None
    json.dumps(report)


def test_cli_writes_reports_and_plots(tmp_path, capsys):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    a = [det(2, 1, shifted([20, 20, 40, 40], dx), 1 - dx / 10) for dx in range(6)]
    b = [det(2, 1, shifted([20, 20, 40, 40], dx), dx / 10) for dx in range(6)]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    out = tmp_path / "out"
    assert main(["consistency", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "a.json"),
                 "--dt", str(tmp_path / "b.json"), "--label", "base", "--label", "harmonic", "--out", str(out)]) == 0
    reports = json.loads((out / "consistency.json").read_text())
    assert reports["base"]["overall"]["spearman"] == pytest.approx(1.0)
    assert reports["harmonic"]["overall"]["spearman"] == pytest.approx(-1.0)
    for name in ("consistency_base.png", "consistency_harmonic.png", "consistency_comparison.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "base" in capsys.readouterr().out
    assert main(["consistency", "--gt", str(tmp_path / "gt.json"), "--dt", str(tmp_path / "missing.json")]) == 2


def test_ground_truth_errors():
    with pytest.raises(ValueError, match=r"ground truth annotations\[0\]: needs bbox"):
        GroundTruth({"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [{"image_id": 1}]})
    with pytest.raises(ValueError, match="missing the list 'categories'"):
        GroundTruth({"images": [], "annotations": []})
