"""Markdown tables of results: cells formatted one way everywhere (study reports, the demo, the YOLO study)."""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence


def format_value(mean: Optional[float], std: Optional[float] = None, signed: bool = False) -> str:
    """``0.123``, ``+0.012`` (``signed``) or ``0.123 ± 0.004`` (with ``std``); ``n/a`` for ``None``."""
    if mean is None:
        return "n/a"
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text + (f" ± {std:.3f}" if std is not None else "")


def markdown_grid(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: the ``header`` cells, then one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
