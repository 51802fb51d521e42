"""The report of a study: ``summary.json``, a Markdown table and plots, from its finished runs.

``summary.json`` schema::

    {"study": str, "baseline": str, "bootstrap": {"samples": int, "seed": int},
     "runs": [{"name", "arch", "variant", "seed", "dir",
               "metrics": {"AP", "AP50", "AP75", "APs", "APm", "APl"},
               "consistency": {"spearman", "pearson"},
               "train_s": float | null, "iterations": int, "step_s": float,
               "late_stats": {"beta_c", "beta_r", "pos_p3", ...}}],   # means over the last 10% of iterations
     "groups": [{"arch", "variant", "seeds": [int],
                 "mean": {metric: float}, "std": {metric: float | null},   # metrics + "spearman"
                 "delta": {metric: {"mean", "std", "seeds"}} | null,       # paired by seed, vs baseline
                 "bootstrap": {"AP" | "AP50" | "AP75": {"delta", "low", "high", "std"}} | null}]}

``std`` is the sample standard deviation over seeds (``null`` for one seed); the
``delta`` of a variant pairs each of its seeds with the baseline run of the same
arch and seed (same initial weights and data order) and gives the mean and spread
of those differences; ``bootstrap`` is the paired bootstrap over validation images
of :mod:`harmonicdet.analysis.paired_bootstrap` over the same pairs.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from harmonicdet.analysis.consistency_plots import plot_consistency_comparison
from harmonicdet.analysis.figures import new_figure, plot_loss_curves, save_figure
from harmonicdet.analysis.paired_bootstrap import match_per_image, paired_bootstrap
from harmonicdet.io import write_json_atomic, write_text_atomic

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "spearman")
_TABLE_METRICS = ("AP", "AP50", "AP75", "spearman")
_LATE_FRACTION = 0.1


def _late_means(metrics_path: Path) -> Dict[str, Any]:
    """Iterations, median step time and the means of the logged factor/level statistics over the last 10%."""
    records = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        raise ValueError(f"{metrics_path}: no training records")
    late = records[-max(1, int(len(records) * _LATE_FRACTION)):]
    keys = sorted({k for r in late for k in r if k in ("beta_c", "beta_r") or k.startswith("pos_")})
    return {"iterations": int(records[-1]["iteration"]),
            "step_s": statistics.median(r["step_time"] for r in records),
            "late_stats": {k: statistics.fmean(r[k] for r in late if k in r) for k in keys}}


def collect_run(run) -> Optional[Dict[str, Any]]:
    """The summary record of a finished study run, or ``None`` when it has no ``eval.json`` yet."""
    eval_path = run.directory / "eval.json"
    if not eval_path.is_file():
        return None
    report = json.loads(eval_path.read_text(encoding="utf-8"))
    timing = run.directory / "study_timing.json"
    overall = report["consistency"].get("overall", {})
    return {"name": run.name, "arch": run.arch, "variant": run.variant, "seed": run.seed, "dir": str(run.directory),
            "metrics": report["metrics"],
            "consistency": {k: overall.get(k) for k in ("spearman", "pearson")},
            "train_s": json.loads(timing.read_text())["train_s"] if timing.is_file() else None,
            **_late_means(run.directory / "metrics.jsonl")}


def _value(record: Mapping[str, Any], metric: str) -> Optional[float]:
    value = record["consistency"][metric] if metric in ("spearman", "pearson") else record["metrics"][metric]
    return None if value is None else float(value)


def _mean_std(values: Sequence[Optional[float]]) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(study, records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Group finished runs by (arch, variant): mean ± std over seeds, paired deltas and bootstrap vs the baseline."""
    by_key: Dict[tuple, Dict[int, Dict[str, Any]]] = {}
    for record in records:
        by_key.setdefault((record["arch"], record["variant"]), {})[record["seed"]] = record
    runs_by_name = {run.name: run for run in study.runs}
    matches_cache: Dict[str, Any] = {}

    def matches(record):
        if record["name"] not in matches_cache:
            from harmonicdet.engine.builders import build_datasets

            run = runs_by_name[record["name"]]
            _, val_set = build_datasets(run.config, need_val=True)
            results = json.loads((run.directory / "results.json").read_text(encoding="utf-8"))
            matches_cache[record["name"]] = match_per_image(val_set.coco_ground_truth(), results)
        return matches_cache[record["name"]]

    groups = []
    for (arch, variant), seeds in sorted(by_key.items(), key=lambda item: item[0][0]):  # by arch, study order within
        group: Dict[str, Any] = {"arch": arch, "variant": variant, "seeds": sorted(seeds), "mean": {}, "std": {},
                                 "delta": None, "bootstrap": None}
        for metric in METRICS:
            group["mean"][metric], group["std"][metric] = _mean_std([_value(r, metric) for r in seeds.values()])
        baseline = by_key.get((arch, study.baseline), {})
        paired = sorted(set(seeds) & set(baseline))
        if variant != study.baseline and paired:
            group["delta"] = {}
            for metric in METRICS:
                diffs = [_value(seeds[s], metric) - _value(baseline[s], metric) for s in paired
                         if _value(seeds[s], metric) is not None and _value(baseline[s], metric) is not None]
                mean, std = _mean_std(diffs)
                group["delta"][metric] = {"mean": mean, "std": std, "seeds": paired}
            group["bootstrap"] = paired_bootstrap([(matches(seeds[s]), matches(baseline[s])) for s in paired],
                                                  num_samples=int(study.bootstrap["samples"]),
                                                  seed=int(study.bootstrap["seed"]))
        groups.append(group)
    return {"study": study.name, "baseline": study.baseline, "bootstrap": dict(study.bootstrap),
            "runs": records, "groups": groups}


def _fmt(mean: Optional[float], std: Optional[float] = None, signed: bool = False) -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text + (f" ± {std:.3f}" if std is not None else "")


def markdown_table(summary: Mapping[str, Any]) -> str:
    """Mean ± std over seeds, the paired difference to the baseline and its bootstrap 95% interval."""
    lines = ["| arch | variant | seeds | AP | AP50 | AP75 | Spearman | ΔAP (seeds) | ΔAP 95% CI (bootstrap) "
             "| ΔAP75 (seeds) | ΔSpearman (seeds) | 1+β_c, 1+β_r (late) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in summary["groups"]:
        delta, boot = g["delta"] or {}, g["bootstrap"] or {}
        late = [r["late_stats"] for r in summary["runs"] if r["arch"] == g["arch"] and r["variant"] == g["variant"]]
        factors = "—"
        if late and all("beta_c" in s for s in late):
            factors = (f"{1 + statistics.fmean(s['beta_c'] for s in late):.2f}, "
                       f"{1 + statistics.fmean(s['beta_r'] for s in late):.2f}")
        ci = f"[{boot['AP']['low']:+.3f}, {boot['AP']['high']:+.3f}]" if boot else "—"
        cells = [g["arch"], g["variant"], str(len(g["seeds"]))]
        cells += [_fmt(g["mean"][m], g["std"][m]) for m in _TABLE_METRICS]
        cells += [_fmt(delta["AP"]["mean"], delta["AP"]["std"], True) if delta else "—", ci]
        cells += [_fmt(delta[m]["mean"], delta[m]["std"], True) if delta else "—" for m in ("AP75", "spearman")]
        cells.append(factors)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def write_report(study) -> Dict[str, Any]:
    """Collect the finished runs of ``study`` and write ``summary.json``, ``summary.md`` and ``plots/``."""
    records = [r for r in (collect_run(run) for run in study.runs) if r is not None]
    summary = summarise(study, records)
    out = Path(study.report_dir)
    plots = out / "plots"
    summary["plots"] = []
    if records:
        summary["plots"].append(str(plot_metrics(summary, plots / "ap_spearman.png")))
        for arch in sorted({r["arch"] for r in records}):
            first = {}  # the lowest seed of each variant
            for r in sorted(records, key=lambda r: r["seed"]):
                if r["arch"] == arch:
                    first.setdefault(r["variant"], r)
            curves = [(f"{v} (seed {r['seed']})", Path(r["dir"]) / "metrics.jsonl") for v, r in first.items()]
            summary["plots"].append(str(plot_loss_curves(curves, plots / f"loss_curves_{arch}.png")))
            compared = [v for v in (study.baseline, "harmonicdet") if v in first]
            if len(compared) == 2:
                reports = [json.loads((Path(first[v]["dir"]) / "eval.json").read_text())["consistency"]
                           for v in compared]
                path = plot_consistency_comparison(reports, compared, plots / arch)[0]
                summary["plots"].append(str(path))
    write_json_atomic(summary, out / "summary.json")
    table = markdown_table(summary)
    write_text_atomic(f"# Study {summary['study']}\n\n{table}\n", out / "summary.md")
    return summary
