"""What every plot of HarmonicDet is drawn on and saved with: a pyplot-free figure, written atomically."""

from __future__ import annotations

from pathlib import Path

from harmonicdet.io import atomic_write


def new_figure(width: float, height: float):
    """A ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches at 110 dpi, constrained layout."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def save_figure(fig, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, written atomically (:func:`harmonicdet.io.atomic_write`)."""
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
    return path
