"""The study report's consistency and calibration numbers and tables: the inconsistency rates and calibration gap,
LaECE, D-ECE, the isotonic baseline and TIDE per variant."""

import json

import pytest

from harmonicdet.analysis.consistency import GroundTruth, consistency_report
from harmonicdet.analysis.study_report import CALIBRATION_METRICS, collect_run, write_report

GT = {
    "images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3, 4)],
    "categories": [{"id": 1, "name": "a"}],
    "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}
                    for i in (1, 2, 3, 4)],
}


def det(image_id, dx, score):
    return {"image_id": image_id, "category_id": 1, "bbox": [10 + dx, 10, 40, 40], "score": score}


def write_run(folder, results, gt=GT):
    folder.mkdir(parents=True)
    (folder / "eval.json").write_text(json.dumps({"metrics": {m: 0.5 for m in ("AP", "AP50", "AP75", "APs", "APm",
                                                                                "APl")},
                                                  "consistency": consistency_report(gt, results)}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "step_time": 0.1, "loss": 1.0}) + "\n"
                                                  for i in (10, 20)))
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_collect_run_computes_the_calibration_numbers(tmp_path):
    # one object per image; boxes shifted by 0 and 20 of 40 px: IoU 1 and 20/60 = 1/3
    results = [det(1, 0, 0.9), det(2, 20, 0.8), det(3, 0, 0.7), det(4, 20, 0.6)]
    run = {"name": "fcos-standard-s0", "arch": "fcos", "variant": "standard", "seed": 0,
           "dir": str(write_run(tmp_path / "r", results))}
    record = collect_run(run, GroundTruth(GT))
    expected = consistency_report(GT, results, posthoc=True)
    assert set(record["calibration"]) == set(CALIBRATION_METRICS)
    # every box takes its image's object at tau = 0: LaECE's targets 1, 1/3, 1, 1/3 in four bins
    assert record["calibration"]["laece"] == pytest.approx((0.1 + (0.8 - 1 / 3) + 0.3 + (0.6 - 1 / 3)) / 4)
    assert record["calibration"]["tide_ap50"] == expected["tide"]["ap"]
    assert record["calibration"]["dap_loc"] == pytest.approx(expected["tide"]["dap"]["loc"]) and \
        record["calibration"]["dap_loc"] > 0
    # fitted on images 1 and 3 (IoU 1 at 0.9 and 0.7), evaluated on 2 and 4: both mapped to 1, the target 1/3
    assert record["calibration"]["laece_isotonic"] == pytest.approx(1 - 1 / 3)
    assert collect_run(run)["calibration"] == {}


def test_report_has_a_calibration_table_per_variant(tmp_path):
    runs = []
    for variant, shifts in (("standard", (20, 0, 20, 0)), ("harmonicdet", (0, 20, 0, 20))):
        results = [det(i, dx, score) for i, dx, score in zip((1, 2, 3, 4), shifts, (0.9, 0.8, 0.7, 0.6))]
        folder = write_run(tmp_path / "runs" / f"fcos-{variant}-s0", results)
        runs.append({"name": f"fcos-{variant}-s0", "arch": "fcos", "variant": variant, "seed": 0, "dir": str(folder)})
    study = {"name": "s", "baseline": "standard", "bootstrap": {"samples": 5, "seed": 0},
             "report_dir": str(tmp_path / "report")}
    summary = write_report(study, runs, {"fcos": GT})
    groups = {g["variant"]: g for g in summary["groups"]}
    standard = consistency_report(GT, [det(1, 20, 0.9), det(2, 0, 0.8), det(3, 20, 0.7), det(4, 0, 0.6)])
    assert groups["standard"]["mean"]["laece"] == pytest.approx(standard["laece"]["value"])
    assert groups["harmonicdet"]["delta"]["laece"]["mean"] == pytest.approx(
        groups["harmonicdet"]["mean"]["laece"] - standard["laece"]["value"])
    table = (tmp_path / "report" / "summary.md").read_text()
    assert "| arch | variant | LaECE | LaECE isotonic | D-ECE |" in table
    assert f"| fcos | standard | {standard['laece']['value']:.3f} |" in table
    assert (tmp_path / "report" / "plots" / "fcos" / "consistency_comparison.png").is_file()
    # the consistency table by hand: standard's IoUs 1/3, 1, 1/3, 1 at scores 0.9, 0.8, 0.7, 0.6 (harmonicdet's
    # 1, 1/3, 1, 1/3): half the detections scored >= 0.5 have IoU < 0.5, none with IoU >= 0.75 is scored < 0.2;
    # the gap is the mean |IoU - score| (one detection a bin)
    gaps = {"standard": (0.9 - 1 / 3 + 0.2 + 0.7 - 1 / 3 + 0.4) / 4,
            "harmonicdet": (0.1 + 0.8 - 1 / 3 + 0.3 + 0.6 - 1 / 3) / 4}
    for variant, gap in gaps.items():
        mean = groups[variant]["mean"]
        assert (mean["high_score_low_iou"], mean["low_score_high_iou"]) == (0.5, 0.0)
        assert mean["calibration_gap"] == pytest.approx(gap)
        row = f"| fcos | {variant} | {mean['spearman']:.3f} | {mean['pearson']:.3f} | 0.500 | 0.000 | {gap:.3f} |"
        assert row in table
    assert groups["harmonicdet"]["delta"]["calibration_gap"]["mean"] == pytest.approx(
        gaps["harmonicdet"] - gaps["standard"])


def test_each_arch_is_reported_against_its_own_validation_set(tmp_path):
    """Two folds of one study validate on different images: fold b's are fold a's under other image ids, so
    every number of fold b equals fold a's."""
    offset = 10
    gt_b = {"images": [dict(image, id=image["id"] + offset) for image in GT["images"]],
            "categories": GT["categories"],
            "annotations": [dict(ann, image_id=ann["image_id"] + offset) for ann in GT["annotations"]]}
    runs = []
    for arch, shift_ids in (("fold_a", 0), ("fold_b", offset)):
        for variant, shifts in (("standard", (20, 0, 20, 0)), ("harmonicdet", (0, 20, 0, 20))):
            results = [det(i + shift_ids, dx, score)
                       for i, dx, score in zip((1, 2, 3, 4), shifts, (0.9, 0.8, 0.7, 0.6))]
            folder = write_run(tmp_path / "runs" / f"{arch}-{variant}-s0", results, gt_b if shift_ids else GT)
            runs.append({"name": f"{arch}-{variant}-s0", "arch": arch, "variant": variant, "seed": 0,
                         "dir": str(folder)})
    study = {"name": "s", "baseline": "standard", "bootstrap": {"samples": 5, "seed": 0},
             "report_dir": str(tmp_path / "report")}
    summary = write_report(study, runs, {"fold_a": GT, "fold_b": gt_b})
    groups = {(g["arch"], g["variant"]): g for g in summary["groups"]}
    for variant in ("standard", "harmonicdet"):
        a, b = groups[("fold_a", variant)], groups[("fold_b", variant)]
        assert a["mean"]["laece"] is not None and b["mean"] == a["mean"]
    assert groups[("fold_b", "harmonicdet")]["bootstrap"] == groups[("fold_a", "harmonicdet")]["bootstrap"]
