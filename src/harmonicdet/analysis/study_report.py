"""The report of a study: ``summary.json``, a Markdown table and plots, from its finished runs.

The report receives plain data (the study's settings, each run's name, arch, variant,
seed and folder, and each arch's validation ground truth) and reads the files the training
and evaluation wrote into each run folder; it never imports the engine.

``summary.json`` schema::

    {"study": str, "baseline": str, "bootstrap": {"samples": int, "seed": int},
     "runs": [{"name", "arch", "variant", "seed", "dir",
               "metrics": {"AP", "AP50", "AP75", "APs", "APm", "APl"},
               "consistency": {"spearman", "pearson", "high_score_low_iou", "low_score_high_iou",
                               "calibration_gap"},                   # eval.json's consistency report
               "calibration": {"laece", "laece_isotonic", "dece", "dece_isotonic",  # with the ground truth
                               "tide_ap50", "dap_cls", "dap_loc", "dap_both", "dap_dupe", "dap_bkg", "dap_miss"},
               "train_s": float | null, "iterations": int, "step_s": float,
               "late_stats": {"beta_c", "beta_r", "reversed_frac", "pos_p3", ...},  # means, last 10%
               "run_stats": {"reversed_frac", "reversed_frac_max"},         # whole run; {} if not logged
               "history": [{"iteration", "AP", "AP50", "AP75", "spearman"}],   # eval_history.jsonl
               "commits": [str], "device_name": str | null}],                 # provenance.json
     "groups": [{"arch", "variant", "seeds": [int],
                 "mean": {metric: float}, "std": {metric: float | null},   # metrics, consistency, calibration
                 "delta": {metric: {"mean", "std", "seeds"}} | null,       # paired by seed, vs baseline
                 "bootstrap": {"AP" | "AP50" | "AP75": {"delta", "low", "high", "std"}} | null,
                 "convergence": {"iterations": [int], "AP_mean": [float], "AP_std": [float | null],
                                 "window_start": int, "moved": float, "converged": bool,
                                 "target": float, "iterations_to_target": int | null} | null}],
     "commits": {commit: [run name]}}

``convergence`` is computed on the mean over seeds of the periodic evaluation
(``eval.every``; the iterations every seed evaluated): ``moved`` is the mean AP at
the last evaluation minus that at ``window_start``, the last evaluation at or before
80% of the schedule, and ``converged`` is ``|moved| < 0.005``; ``target`` is the
baseline's final mean AP of the same arch and ``iterations_to_target`` the first
evaluated iteration at which the variant's mean AP reaches it (``null``: never).

``std`` is the sample standard deviation over seeds (``null`` for one seed); the
``delta`` of a variant pairs each of its seeds with the baseline run of the same
arch and seed (same initial weights and data order) and gives the mean and spread
of those differences; ``bootstrap`` is the paired bootstrap over validation images
of :mod:`harmonicdet.analysis.paired_bootstrap` over the same pairs.

``consistency`` is the overall score-IoU correlations, the two inconsistency rates and the
expected calibration gap of the consistency report in each run's ``eval.json`` (``null``
where the report has none).

``calibration`` is computed from each run's ``results.json`` and the ground truth by
:func:`harmonicdet.analysis.consistency.consistency_report` (whose docstring and
``docs/consistency.md`` define every metric): LaECE and D-ECE of all the run's
detections, the same on half the images after a per-class isotonic map fitted on the
other half (``*_isotonic``), TIDE's AP50 and the dAP50 of each error type. It is
``{}`` (``n/a`` in the tables) without the ground truth or the results.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from harmonicdet.analysis.consistency import GroundTruth, consistency_report
from harmonicdet.analysis.consistency_plots import plot_consistency_comparison
from harmonicdet.analysis.figures import plot_loss_curves
from harmonicdet.analysis.plotting import new_figure, save_figure
from harmonicdet.analysis.paired_bootstrap import match_per_image, paired_bootstrap
from harmonicdet.io import read_jsonl, read_text, write_json_atomic, write_text_atomic
from harmonicdet.tables import format_value, markdown_grid

CALIBRATION_METRICS = ("laece", "laece_isotonic", "dece", "dece_isotonic", "tide_ap50", "dap_cls", "dap_loc",
                       "dap_both", "dap_dupe", "dap_bkg", "dap_miss")
CONSISTENCY_METRICS = ("spearman", "pearson", "high_score_low_iou", "low_score_high_iou", "calibration_gap")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl") + CONSISTENCY_METRICS + CALIBRATION_METRICS
_TABLE_METRICS = ("AP", "AP50", "AP75", "spearman")
_LATE_FRACTION = 0.1
_LATE_KEYS = ("beta_c", "beta_r", "reversed_frac")
CONVERGENCE_WINDOW = 0.2  # the last 20% of the schedule
CONVERGENCE_TOLERANCE = 0.005  # half an AP point


def _training_stats(metrics_path: Path) -> Dict[str, Any]:
    """Iterations, median step time, the means of the logged factor/level statistics over the last 10%, and the
    mean and largest ``reversed_frac`` over the whole run (how often the reversal happens, not only at the end)."""
    records = read_jsonl(metrics_path)
    if not records:
        raise ValueError(f"{metrics_path}: no training records")
    late = records[-max(1, int(len(records) * _LATE_FRACTION)):]
    keys = sorted({k for r in late for k in r if k in _LATE_KEYS or k.startswith("pos_")})
    reversed_frac = [r["reversed_frac"] for r in records if "reversed_frac" in r]
    return {"iterations": int(records[-1]["iteration"]),
            "step_s": statistics.median(r["step_time"] for r in records),
            "late_stats": {k: statistics.fmean(r[k] for r in late if k in r) for k in keys},
            "run_stats": ({"reversed_frac": statistics.fmean(reversed_frac), "reversed_frac_max": max(reversed_frac)}
                          if reversed_frac else {})}


def run_consistency(directory: Path, truth: GroundTruth) -> Dict[str, Any]:
    """The consistency report, with the post-hoc baseline, of a run folder's ``results.json`` (or ``.gz``)."""
    return consistency_report(truth, json.loads(read_text(Path(directory) / "results.json")), posthoc=True)


def calibration_record(report: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    """The study's calibration numbers (:data:`CALIBRATION_METRICS`) of a consistency report with ``posthoc``."""
    return {"laece": report["laece"]["value"], "laece_isotonic": report["posthoc"]["laece"]["isotonic"],
            "dece": report["dece"]["value"], "dece_isotonic": report["posthoc"]["dece"]["isotonic"],
            "tide_ap50": report["tide"]["ap"], **{f"dap_{k}": v for k, v in report["tide"]["dap"].items()}}


def collect_run(run: Mapping[str, Any], truth: Optional[GroundTruth] = None) -> Optional[Dict[str, Any]]:
    """The summary record of a finished run (``{"name", "arch", "variant", "seed", "dir"}``); ``None`` before
    its ``eval.json`` exists. With the ground ``truth``, its ``calibration`` numbers too."""
    directory = Path(run["dir"])
    eval_path = directory / "eval.json"
    if not eval_path.is_file():
        return None
    has_results = (directory / "results.json").is_file() or (directory / "results.json.gz").is_file()
    calibration = calibration_record(run_consistency(directory, truth)) if truth is not None and has_results else {}
    report = json.loads(eval_path.read_text(encoding="utf-8"))
    timing = directory / "study_timing.json"
    provenance = directory / "provenance.json"
    sittings = json.loads(provenance.read_text(encoding="utf-8"))["sittings"] if provenance.is_file() else []
    consistency = report["consistency"]
    rates = consistency.get("inconsistency", {})
    history = [{k: r.get(k) for k in ("iteration", "AP", "AP50", "AP75", "spearman")}
               for r in (read_jsonl(directory / "eval_history.jsonl") if (directory / "eval_history.jsonl").is_file()
                         else [])]
    return {"name": run["name"], "arch": run["arch"], "variant": run["variant"], "seed": int(run["seed"]),
            "dir": str(directory), "metrics": report["metrics"],
            "consistency": {**{k: consistency.get("overall", {}).get(k) for k in ("spearman", "pearson")},
                            **{k: rates.get(k) for k in ("high_score_low_iou", "low_score_high_iou")},
                            "calibration_gap": consistency.get("calibration", {}).get("expected_calibration_gap")},
            "calibration": calibration,
            "train_s": json.loads(timing.read_text())["train_s"] if timing.is_file() else None,
            **_training_stats(directory / "metrics.jsonl"), "history": history,
            "commits": sorted({str(s["commit"]) for s in sittings}),
            "device_name": sittings[-1].get("device_name") if sittings else None}


def convergence(histories: Sequence[Sequence[Mapping[str, Any]]], *, window: float = CONVERGENCE_WINDOW,
                tolerance: float = CONVERGENCE_TOLERANCE) -> Optional[Dict[str, Any]]:
    """Mean ± std over seeds of the AP histories, and whether the mean moved less than ``tolerance`` at the end.

    Args:
        histories: one list of ``{"iteration", "AP"}`` records per seed.
        window: the fraction of the schedule at its end over which the move is measured.
        tolerance: the largest ``|moved|`` that counts as converged.

    Returns:
        ``{"iterations", "AP_mean", "AP_std", "window_start", "moved", "converged"}`` over the
        iterations every seed evaluated; ``None`` without at least two such iterations.
    """
    if not histories or any(not h for h in histories):
        return None
    per_seed = [{int(r["iteration"]): float(r["AP"]) for r in h} for h in histories]
    iterations = sorted(set.intersection(*(set(h) for h in per_seed)))
    if len(iterations) < 2:
        return None
    means = [statistics.fmean(h[i] for h in per_seed) for i in iterations]
    stds = [statistics.stdev(h[i] for h in per_seed) if len(per_seed) > 1 else None for i in iterations]
    last = iterations[-1]
    start = max((i for i in iterations if i <= (1 - window) * last), default=iterations[0])
    moved = means[-1] - means[iterations.index(start)]
    return {"iterations": iterations, "AP_mean": means, "AP_std": stds, "window_start": start,
            "moved": moved, "converged": abs(moved) < tolerance}


def iterations_to_target(iterations: Sequence[int], means: Sequence[float], target: float) -> Optional[int]:
    """The first of ``iterations`` whose mean AP is at least ``target``; ``None`` if none is."""
    return next((i for i, m in zip(iterations, means) if m >= target), None)


def _value(record: Mapping[str, Any], metric: str) -> Optional[float]:
    if metric in CALIBRATION_METRICS:
        value = record.get("calibration", {}).get(metric)
    else:
        value = record["consistency"].get(metric) if metric in CONSISTENCY_METRICS else record["metrics"][metric]
    return None if value is None else float(value)


def _mean_std(values: Sequence[Optional[float]]) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(study: Mapping[str, Any], records: List[Dict[str, Any]],
              ground_truths: Optional[Mapping[str, Mapping[str, Any]]]) -> Dict[str, Any]:
    """Group finished runs by (arch, variant): mean ± std over seeds, paired deltas and bootstrap vs the baseline,
    and the convergence of the periodic evaluation.

    Args:
        study: ``{"name", "baseline", "bootstrap": {"samples", "seed"}}``.
        records: :func:`collect_run` records.
        ground_truths: per arch, the COCO ground truth of the validation set its runs were evaluated on (the
            paired bootstrap needs it; ``None`` when no variant has a baseline to pair with).
    """
    by_key: Dict[tuple, Dict[int, Dict[str, Any]]] = {}
    for record in records:
        by_key.setdefault((record["arch"], record["variant"]), {})[record["seed"]] = record
    matches_cache: Dict[str, Any] = {}

    def matches(record):
        if record["name"] not in matches_cache:
            results = json.loads(read_text(Path(record["dir"]) / "results.json"))
            matches_cache[record["name"]] = match_per_image(ground_truths[record["arch"]], results)
        return matches_cache[record["name"]]

    groups = []
    # by arch, the baseline first, then the study's order
    for (arch, variant), seeds in sorted(by_key.items(), key=lambda item: (item[0][0], item[0][1] != study["baseline"])):
        group: Dict[str, Any] = {"arch": arch, "variant": variant, "seeds": sorted(seeds), "mean": {}, "std": {},
                                 "delta": None, "bootstrap": None, "convergence": None}
        for metric in METRICS:
            group["mean"][metric], group["std"][metric] = _mean_std([_value(r, metric) for r in seeds.values()])
        group["convergence"] = convergence([seeds[s]["history"] for s in sorted(seeds)])
        baseline = by_key.get((arch, study["baseline"]), {})
        paired = sorted(set(seeds) & set(baseline))
        if variant != study["baseline"] and paired:
            group["delta"] = {}
            for metric in METRICS:
                diffs = [_value(seeds[s], metric) - _value(baseline[s], metric) for s in paired
                         if _value(seeds[s], metric) is not None and _value(baseline[s], metric) is not None]
                mean, std = _mean_std(diffs)
                group["delta"][metric] = {"mean": mean, "std": std, "seeds": paired}
            group["bootstrap"] = paired_bootstrap([(matches(seeds[s]), matches(baseline[s])) for s in paired],
                                                  num_samples=int(study["bootstrap"]["samples"]),
                                                  seed=int(study["bootstrap"]["seed"]))
        groups.append(group)
    for group in groups:  # iterations-to-target against the baseline's final mean AP of the same arch
        base = next((g["convergence"] for g in groups
                     if g["arch"] == group["arch"] and g["variant"] == study["baseline"]), None)
        if group["convergence"] is not None and base is not None:
            curve = group["convergence"]
            curve["target"] = base["AP_mean"][-1]
            curve["iterations_to_target"] = iterations_to_target(curve["iterations"], curve["AP_mean"],
                                                                 curve["target"])
    commits: Dict[str, List[str]] = {}
    for record in records:
        for commit in record["commits"]:
            commits.setdefault(commit, []).append(record["name"])
    return {"study": study["name"], "baseline": study["baseline"], "bootstrap": dict(study["bootstrap"]),
            "runs": records, "groups": groups, "commits": commits}


def markdown_table(summary: Mapping[str, Any]) -> str:
    """Mean ± std over seeds, the paired difference to the baseline and its bootstrap 95% interval."""
    header = ("arch", "variant", "seeds", "AP", "AP50", "AP75", "Spearman", "ΔAP (seeds)", "ΔAP 95% CI (bootstrap)",
              "ΔAP75 (seeds)", "ΔSpearman (seeds)", "1+β_c, 1+β_r (late)")
    rows = []
    for g in summary["groups"]:
        delta, boot = g["delta"] or {}, g["bootstrap"] or {}
        late = [r["late_stats"] for r in summary["runs"] if r["arch"] == g["arch"] and r["variant"] == g["variant"]]
        factors = "—"
        if late and all("beta_c" in s for s in late):
            factors = (f"{1 + statistics.fmean(s['beta_c'] for s in late):.2f}, "
                       f"{1 + statistics.fmean(s['beta_r'] for s in late):.2f}")
        ci = f"[{boot['AP']['low']:+.3f}, {boot['AP']['high']:+.3f}]" if boot else "—"
        cells = [g["arch"], g["variant"], str(len(g["seeds"]))]
        cells += [format_value(g["mean"][m], g["std"][m]) for m in _TABLE_METRICS]
        cells += [format_value(delta["AP"]["mean"], delta["AP"]["std"], True) if delta else "—", ci]
        cells += [format_value(delta[m]["mean"], delta[m]["std"], True) if delta else "—" for m in ("AP75", "spearman")]
        cells.append(factors)
        rows.append(cells)
    return markdown_grid(header, rows)


def consistency_table(summary: Mapping[str, Any]) -> str:
    """Per (arch, variant), mean ± std over seeds of the consistency report's overall numbers: the score-IoU
    correlations, the two inconsistency rates and the expected calibration gap (``docs/consistency.md``)."""
    header = ("arch", "variant", "Spearman", "Pearson", "high score, low IoU", "low score, high IoU",
              "calibration gap")
    rows = [[g["arch"], g["variant"]] + [format_value(g["mean"][m], g["std"][m]) for m in CONSISTENCY_METRICS]
            for g in summary["groups"]]
    return markdown_grid(header, rows)


def calibration_table(summary: Mapping[str, Any]) -> str:
    """Per (arch, variant), mean ± std over seeds: LaECE and D-ECE, the same after the post-hoc isotonic map (on
    the held-out half of the images), TIDE's AP50 and the dAP50 each error type costs (``docs/consistency.md``)."""
    header = ("arch", "variant", "LaECE", "LaECE isotonic", "D-ECE", "D-ECE isotonic", "AP50 (TIDE)",
              "dAP cls", "dAP loc", "dAP both", "dAP dupe", "dAP bkg", "dAP miss")
    rows = [[g["arch"], g["variant"]] + [format_value(g["mean"][m], g["std"][m]) for m in CALIBRATION_METRICS]
            for g in summary["groups"]]
    return markdown_grid(header, rows)


def convergence_table(summary: Mapping[str, Any]) -> str:
    """Per (arch, variant): the periodic evaluation's final mean AP, its move over the last 20% of the schedule,
    whether that is under half a point, the iterations to the baseline's final AP, and the reversal fraction
    (mean over seeds of each run's whole-run mean, largest value, and late mean)."""
    header = ("arch", "variant", "final AP (eval subset)", "moved since", "converged",
              "iterations to baseline's final AP", "reversed_frac (run mean, max, late)")
    rows = []
    for g in summary["groups"]:
        curve = g["convergence"]
        runs = [r for r in summary["runs"] if r["arch"] == g["arch"] and r["variant"] == g["variant"]
                and "reversed_frac" in r.get("run_stats", {})]
        reversed_frac = "—"
        if runs:
            reversed_frac = ", ".join(f"{v:.2g}" for v in (
                statistics.fmean(r["run_stats"]["reversed_frac"] for r in runs),
                max(r["run_stats"]["reversed_frac_max"] for r in runs),
                statistics.fmean(r["late_stats"]["reversed_frac"] for r in runs)))
        if curve is None:
            rows.append((g["arch"], g["variant"], "—", "—", "—", "—", reversed_frac))
            continue
        reached = curve.get("iterations_to_target")
        target = f"{reached} (of {curve['iterations'][-1]})" if reached is not None else "not reached"
        rows.append((g["arch"], g["variant"], format_value(curve["AP_mean"][-1], curve["AP_std"][-1]),
                     f"{curve['moved']:+.3f} since {curve['window_start']}", "yes" if curve["converged"] else "no",
                     target if "target" in curve else "—", reversed_frac))
    return markdown_grid(header, rows)


def plot_ap_history(summary: Mapping[str, Any], out_dir: Path) -> List[Path]:
    """AP against iteration, one plot per arch, one line per variant: mean over seeds with a ± std band."""
    paths = []
    for arch in sorted({g["arch"] for g in summary["groups"]}):
        curves = [g for g in summary["groups"] if g["arch"] == arch and g["convergence"] is not None]
        if not curves:
            continue
        fig = new_figure(6.5, 4.2)
        ax = fig.subplots()
        for g in curves:
            c = g["convergence"]
            x, mean = np.array(c["iterations"]), np.array(c["AP_mean"])
            (line,) = ax.plot(x, mean, marker=".", label=f"{g['variant']} ({len(g['seeds'])} seeds)")
            if all(v is not None for v in c["AP_std"]):
                std = np.array(c["AP_std"])
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("iteration")
        ax.set_ylabel("AP (periodic evaluation)")
        ax.set_title(f"{arch}: AP during training (mean ± std over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(save_figure(fig, out_dir / f"ap_vs_iteration_{arch}.png"))
    return paths


def plot_metrics(summary: Mapping[str, Any], out_path: Path) -> Path:
    """AP and Spearman(score, IoU) per variant and arch: mean over seeds with ± std error bars and the seeds as dots."""
    archs = sorted({g["arch"] for g in summary["groups"]})
    fig = new_figure(6.0 * len(archs), 7.0)
    axes = np.atleast_2d(fig.subplots(2, len(archs), squeeze=False))
    for column, arch in enumerate(archs):
        groups = [g for g in summary["groups"] if g["arch"] == arch]
        for row, metric in enumerate(("AP", "spearman")):
            ax = axes[row, column]
            x = np.arange(len(groups))
            means = [g["mean"][metric] or 0.0 for g in groups]
            errors = [g["std"][metric] or 0.0 for g in groups]
            ax.bar(x, means, yerr=errors, capsize=3, color="#8fb3d9", edgecolor="#35608a")
            for i, g in enumerate(groups):
                values = [_value(r, metric) for r in summary["runs"]
                          if r["arch"] == arch and r["variant"] == g["variant"]]
                ax.plot([i] * len(values), values, "k.", markersize=4)
            ax.set_xticks(x, [g["variant"] for g in groups], rotation=35, ha="right", fontsize=8)
            ax.set_ylabel("COCO AP" if metric == "AP" else "Spearman(score, IoU)")
            ax.set_title(f"{arch}: {metric} (mean ± std over seeds)", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if means:
                low = min(means) - max(errors) - 0.02
                ax.set_ylim(max(0.0, low), max(means) + max(errors) + 0.02)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out_path)


def write_report(study: Mapping[str, Any], runs: Sequence[Mapping[str, Any]],
                 ground_truths: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Collect the finished runs and write ``summary.json``, ``summary.md`` and ``plots/`` to ``study["report_dir"]``.

    Args:
        study: ``{"name", "baseline", "bootstrap": {"samples", "seed"}, "report_dir"}``.
        runs: ``{"name", "arch", "variant", "seed", "dir"}`` of every run of the study, finished or not.
        ground_truths: per arch, the COCO ground-truth dict of the validation set its runs were evaluated on
            (folds of one study may validate on different images); every arch with a finished run needs one.
    """
    truths = {arch: GroundTruth(ground_truth) for arch, ground_truth in ground_truths.items()}
    records = [r for r in (collect_run(run, truths.get(run["arch"])) for run in runs) if r is not None]
    summary = summarise(study, records, ground_truths)
    out = Path(study["report_dir"])
    plots = out / "plots"
    summary["plots"] = []
    if records:
        summary["plots"].append(str(plot_metrics(summary, plots / "ap_spearman.png")))
        summary["plots"] += [str(p) for p in plot_ap_history(summary, plots)]
        for arch in sorted({r["arch"] for r in records}):
            first = {}  # the lowest seed of each variant
            for r in sorted(records, key=lambda r: r["seed"]):
                if r["arch"] == arch:
                    first.setdefault(r["variant"], r)
            curves = [(f"{v} (seed {r['seed']})", Path(r["dir"]) / "metrics.jsonl") for v, r in first.items()]
            summary["plots"].append(str(plot_loss_curves(curves, plots / f"loss_curves_{arch}.png")))
            # the baseline against harmonicdet, or else against the first other variant (e.g. YOLO's harmonic)
            others = sorted((v for v in first if v != study["baseline"]), key=lambda v: v != "harmonicdet")
            compared = [study["baseline"], others[0]] if study["baseline"] in first and others else []
            truth = truths.get(arch)
            if compared:
                reports = [run_consistency(Path(first[v]["dir"]), truth) if truth is not None else
                           json.loads((Path(first[v]["dir"]) / "eval.json").read_text())["consistency"]
                           for v in compared]
                path = plot_consistency_comparison(reports, compared, plots / arch)[0]
                summary["plots"].append(str(path))
    write_json_atomic(summary, out / "summary.json")
    sections = [f"# Study {summary['study']}", markdown_table(summary),
                "## Consistency (docs/consistency.md)",
                "Overall, all detections: high score, low IoU is the share of those scored >= 0.5 with IoU < 0.5; "
                "low score, high IoU the share of those with IoU >= 0.75 scored < 0.2.", consistency_table(summary),
                "## Calibration and detection errors (docs/consistency.md)", calibration_table(summary),
                "## Convergence", convergence_table(summary)]
    if len(summary["commits"]) > 1:
        sections += ["## Runs trained with different commits",
                     "\n".join(f"- `{c}`: {', '.join(names)}" for c, names in sorted(summary["commits"].items()))]
    write_text_atomic("\n\n".join(sections) + "\n", out / "summary.md")
    return summary
