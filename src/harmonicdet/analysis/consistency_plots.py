"""Plots of consistency reports: the score x IoU histogram, the localisation-calibration curve and the reliability
diagrams of LaECE and D-ECE with the number of detections in every bin (a point may rest on a handful of boxes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Sequence

import numpy as np

from .plotting import new_figure, save_figure


def _histogram(ax, report: Mapping[str, Any], label: str) -> None:
    hist = report["histogram"]
    counts = np.asarray(hist["counts"], dtype=float).T  # rows: IoU
    image = ax.imshow(np.log1p(counts), origin="lower", aspect="auto", cmap="viridis",
              extent=[hist["score_edges"][0], hist["score_edges"][-1], hist["iou_edges"][0], hist["iou_edges"][-1]])
    ax.figure.colorbar(image, ax=ax, label="log(1 + detections)")
    overall = report["overall"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    ax.set_title(f"{label}: Spearman {fmt(overall['spearman'])}, Pearson {fmt(overall['pearson'])} "
                 f"(n={overall['count']})", fontsize=9)
    ax.set_xlabel("classification score")
    ax.set_ylabel("IoU with the best-matching object")


def _calibration(ax, reports: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> None:
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="score = IoU")
    for report, label in zip(reports, labels):
        bins = [b for b in report["calibration"]["bins"] if b["count"]]
        gap = report["calibration"]["expected_calibration_gap"]
        ax.plot([b["mean_score"] for b in bins], [b["mean_iou"] for b in bins], marker="o",
                label=f"{label} (gap {gap:.3f})" if gap is not None else label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean score in bin")
    ax.set_ylabel("mean IoU in bin")
    ax.set_title("localisation calibration", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _reliability(ax, report: Mapping[str, Any], label: str) -> None:
    """LaECE's (precision x IoU) and D-ECE's (precision) target per score bin against its mean score, the number of
    detections per bin as bars on a log axis and written above each point."""
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
    counts = ax.twinx()
    dece_name = f"D-ECE: precision @ IoU {report['dece']['iou_threshold']:g}"
    for key, target, name, color in (("laece", "mean_target", "LaECE: precision x IoU", "C0"),
                                     ("dece", "precision", dece_name, "C1")):
        bins = [b for b in report[key]["bins"] if b["count"]]
        value = report[key]["value"]
        ax.plot([b["mean_score"] for b in bins], [b[target] for b in bins], marker="o", markersize=3, color=color,
                label=f"{name} ({'n/a' if value is None else f'{value:.3f}'})")
        if key == "laece":  # LaECE's 25 bins are the finer: their counts
            counts.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["count"] for b in bins],
                       width=[b["hi"] - b["lo"] for b in bins], color="grey", alpha=0.25, zorder=0)
            for b in bins:
                ax.annotate(str(b["count"]), (b["mean_score"], b[target]), textcoords="offset points",
                            xytext=(0, 3), ha="center", va="bottom", rotation=90, fontsize=5, color=color)
    counts.set_yscale("log")
    counts.set_ylim(bottom=0.8)  # a bar of one detection still shows
    counts.set_ylabel("detections per bin (bars)", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean score in bin")
    ax.set_ylabel("target in bin")
    ax.set_title(f"{label}: reliability", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def _tide(ax, reports: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> None:
    """TIDE's dAP of each error type, one bar per report."""
    types = ("cls", "loc", "both", "dupe", "bkg", "miss")
    width = 0.8 / len(reports)
    for i, (report, label) in enumerate(zip(reports, labels)):
        dap = report["tide"]["dap"]
        ap = report["tide"]["ap"]
        ax.bar(np.arange(len(types)) + (i - (len(reports) - 1) / 2) * width, [dap[k] or 0.0 for k in types],
               width=width, label=f"{label} (AP50 {'n/a' if ap is None else f'{ap:.3f}'})")
    ax.set_xticks(np.arange(len(types)), types)
    ax.set_ylabel("dAP50 when the errors of a type are fixed")
    ax.set_title("TIDE error breakdown", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)


def _has_reliability(reports: Sequence[Mapping[str, Any]]) -> bool:
    return all("laece" in r and "tide" in r for r in reports)  # reports written before them lack these fields


def plot_consistency(report: Mapping[str, Any], out_path: Path, label: str = "detections") -> Path:
    """One report: score x IoU histogram (log counts) beside its calibration curve and its reliability diagram."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    panels = 3 if _has_reliability([report]) else 2
    fig = new_figure(5 * panels, 4.2)
    axes = fig.subplots(1, panels)
    _histogram(axes[0], report, label)
    _calibration(axes[1], [report], [label])
    if panels == 3:
        _reliability(axes[2], report, label)
    return save_figure(fig, out_path)


def plot_consistency_comparison(reports: Sequence[Mapping[str, Any]], labels: Sequence[str],
                                out_dir: Path) -> List[Path]:
    """Side by side: one histogram per report and their calibration curves overlaid, and below, one reliability
    diagram per report and their TIDE breakdowns (``consistency_comparison.png`` in ``out_dir``)."""
    if len(reports) != len(labels):
        raise ValueError(f"{len(reports)} reports but {len(labels)} labels")
    rows = 2 if _has_reliability(reports) else 1
    fig = new_figure(4.6 * (len(reports) + 1), 4.2 * rows)
    axes = np.atleast_2d(fig.subplots(rows, len(reports) + 1, squeeze=False))
    for ax, report, label in zip(axes[0], reports, labels):
        _histogram(ax, report, label)
    _calibration(axes[0, -1], reports, labels)
    if rows == 2:
        for ax, report, label in zip(axes[1], reports, labels):
            _reliability(ax, report, label)
        _tide(axes[1, -1], reports, labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [save_figure(fig, out_dir / "consistency_comparison.png")]
