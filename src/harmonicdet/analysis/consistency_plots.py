"""Plots of consistency reports: the score x IoU histogram and the localisation-calibration curve."""

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


def plot_consistency(report: Mapping[str, Any], out_path: Path, label: str = "detections") -> Path:
    """One report: score x IoU histogram (log counts) beside its calibration curve."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig = new_figure(10, 4.2)
    left, right = fig.subplots(1, 2)
    _histogram(left, report, label)
    _calibration(right, [report], [label])
    return save_figure(fig, out_path)


def plot_consistency_comparison(reports: Sequence[Mapping[str, Any]], labels: Sequence[str],
                                out_dir: Path) -> List[Path]:
    """Side by side: one histogram per report and their calibration curves overlaid
    (``consistency_comparison.png`` in ``out_dir``)."""
    if len(reports) != len(labels):
        raise ValueError(f"{len(reports)} reports but {len(labels)} labels")
    fig = new_figure(4.6 * (len(reports) + 1), 4.2)
    axes = fig.subplots(1, len(reports) + 1)
    for ax, report, label in zip(axes, reports, labels):
        _histogram(ax, report, label)
    _calibration(axes[-1], reports, labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [save_figure(fig, out_dir / "consistency_comparison.png")]
