"""The study report's convergence measures on synthetic histories."""

import json

import pytest

from harmonicdet.analysis.study_report import (collect_run, convergence, convergence_table, iterations_to_target,
                                               summarise)


def _history(values, every=250):
    return [{"iteration": every * (i + 1), "AP": v} for i, v in enumerate(values)]


def test_convergence_measures_the_move_over_the_last_fifth_of_the_mean_curve():
    # 8 evaluations to 2000; 80% of 2000 is 1600, so the window starts at 1500 (the 6th evaluation)
    a = _history([0.10, 0.20, 0.30, 0.35, 0.38, 0.400, 0.402, 0.404])
    b = _history([0.12, 0.22, 0.32, 0.37, 0.40, 0.410, 0.412, 0.413])
    curve = convergence([a, b])
    assert curve["iterations"] == [250 * k for k in range(1, 9)]
    assert curve["AP_mean"][-1] == pytest.approx((0.404 + 0.413) / 2)
    assert curve["AP_std"][0] == pytest.approx(0.02 / 2 ** 0.5)
    assert curve["window_start"] == 1500
    assert curve["moved"] == pytest.approx((0.404 + 0.413) / 2 - 0.405)
    assert curve["converged"] is True
    still_rising = convergence([_history([0.1, 0.2, 0.3, 0.35, 0.38, 0.40, 0.42, 0.44])])
    assert still_rising["moved"] == pytest.approx(0.04) and still_rising["converged"] is False
    assert still_rising["AP_std"] == [None] * 8


def test_convergence_uses_the_iterations_every_seed_evaluated():
    short = _history([0.1, 0.2, 0.3])  # a seed still training
    curve = convergence([_history([0.1, 0.2, 0.3, 0.4]), short])
    assert curve["iterations"] == [250, 500, 750]
    assert convergence([short[:1], short]) is None and convergence([]) is None and convergence([[], short]) is None


def test_iterations_to_target_is_the_first_evaluation_reaching_it():
    assert iterations_to_target([250, 500, 750, 1000], [0.1, 0.3, 0.29, 0.5], 0.3) == 500
    assert iterations_to_target([250, 500], [0.1, 0.2], 0.3) is None


def test_summary_compares_iterations_to_the_baseline_final_ap(tmp_path):
    def record(variant, seed, values):
        return {"name": f"fcos-{variant}-s{seed}", "arch": "fcos", "variant": variant, "seed": seed,
                "dir": str(tmp_path), "metrics": {m: 0.3 for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
                "consistency": {"spearman": 0.5, "pearson": 0.5}, "late_stats": {"reversed_frac": 0.25},
                "run_stats": {"reversed_frac": 0.5, "reversed_frac_max": 0.75},
                "history": _history(values), "commits": [f"c{seed}"]}

    records = [record("standard", 0, [0.1, 0.2, 0.30, 0.31]), record("standard", 1, [0.1, 0.2, 0.30, 0.33]),
               record("faster", 0, [0.2, 0.33, 0.34, 0.35]), record("slower", 0, [0.1, 0.15, 0.2, 0.25])]
    summary = summarise({"name": "s", "baseline": "standard", "bootstrap": {"samples": 1, "seed": 0}},
                        records[:2], None)  # no bootstrap without a second variant
    assert summary["groups"][0]["convergence"]["iterations_to_target"] == 1000
    assert summary["commits"] == {"c0": ["fcos-standard-s0"], "c1": ["fcos-standard-s1"]}
    groups = {g["variant"]: g for g in summarise({"name": "s", "baseline": "none", "bootstrap": {}},
                                                  records, None)["groups"]}
    assert all(g["convergence"].get("iterations_to_target") is None for g in groups.values())
    summary["groups"] = [dict(summary["groups"][0])]
    for name, values in (("faster", records[2]), ("slower", records[3])):
        curve = convergence([values["history"]])
        curve["target"] = 0.32
        curve["iterations_to_target"] = iterations_to_target(curve["iterations"], curve["AP_mean"], 0.32)
        summary["groups"].append({"arch": "fcos", "variant": name, "seeds": [0], "convergence": curve})
    summary["runs"] = records
    table = convergence_table(summary)
    assert "| fcos | faster | 0.350 | +0.010 since 750 | no | 500 (of 1000) | 0.5, 0.75, 0.25 |" in table
    assert "| fcos | slower | 0.250 | +0.050 since 750 | no | not reached | 0.5, 0.75, 0.25 |" in table
    json.dumps(summary)  # the summary is JSON as it is


def test_groups_list_the_baseline_first_within_each_arch():
    # the variants' seed 1 has no baseline to pair with: no bootstrap, so no detections are needed
    records = [{"name": f"{a}-{v}", "arch": a, "variant": v, "seed": int(v != "standard"), "history": [],
                "metrics": {m: 0.3 for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
                "consistency": {"spearman": 0.5, "pearson": 0.5}, "commits": []}
               for a, v in (("fcos", "harmonicdet_beta_r"), ("fcos", "standard"), ("rcnn", "qfl"), ("rcnn", "standard"))]
    study = {"name": "s", "baseline": "standard", "bootstrap": {"samples": 2, "seed": 0}}
    order = [(g["arch"], g["variant"]) for g in summarise(study, records, None)["groups"]]
    assert order == [("fcos", "standard"), ("fcos", "harmonicdet_beta_r"), ("rcnn", "standard"), ("rcnn", "qfl")]


def test_run_record_gives_the_reversal_over_the_whole_run_and_late(tmp_path):
    # 20 iterations: the reversal early (iterations 1-4), none in the last 10% (iterations 19-20)
    fractions = [0.4, 0.2, 0.1, 0.1] + [0.0] * 16
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": i + 1, "step_time": 0.5 + i, "beta_c": 0.5, "reversed_frac": f}) + "\n"
        for i, f in enumerate(fractions)))
    (tmp_path / "eval.json").write_text(json.dumps({"metrics": {"AP": 0.3}, "consistency": {"overall": {}}}))
    record = collect_run({"name": "r", "arch": "fcos", "variant": "harmonicdet", "seed": 0, "dir": str(tmp_path)})
    assert record["iterations"] == 20 and record["step_s"] == pytest.approx(10.0)  # median of 0.5 .. 19.5
    assert record["run_stats"] == {"reversed_frac": pytest.approx(0.04), "reversed_frac_max": 0.4}
    assert record["late_stats"] == {"beta_c": 0.5, "reversed_frac": 0.0}
