"""What an Ultralytics run folder says about its loss, beside Ultralytics' ``results.csv``.

:class:`~harmonicdet.integrations.ultralytics.trainer.HarmonicDetectionTrainer` writes, in the
run folder (``save_dir``), without any user callback:

* ``harmonicdet_loss.yaml`` (:data:`LOSS_FILE`), when training starts: ``loss`` (the preset and
  options, as stored in the checkpoint), what ``results.csv``'s loss columns hold, and one entry
  per sitting (``start_epoch``, the harmonicdet version, and ``epochs_not_logged`` when
  ``results.csv`` has epochs up to the checkpoint with no row here).
* ``harmonicdet_loss.csv`` (:data:`EPOCH_FILE`), a row per epoch, written with ``results.csv``'s:
  means over the epoch's batches of the criterion's ``last_terms`` (the batch's loss per image,
  gains applied, as Ultralytics logs its items; YOLO26: the one-to-one branch, as
  ``results.csv``) and of its factor statistics. Columns, the same for every preset: ``epoch``,
  ``loss`` (the sum of the next five), ``box_loss``, ``cls_loss``, ``dfl_loss`` (YOLO26
  ``l1_loss``), ``hiou_loss``, ``tc_loss`` (the loss's own terms, 0 for a preset without the
  term), ``stock_box_loss``, ``stock_cls_loss``, ``stock_dfl_loss`` (Ultralytics' own loss on
  the same batches and assignment: the scale of a stock run's ``results.csv``), ``beta_c``,
  ``beta_r``, ``reversed_frac`` (batch means over foreground anchors; empty for ``standard``).

A resume without ``trainer=HarmonicDetectionTrainer`` (``YOLO("last.pt").train(resume=True)``)
trains with Ultralytics' stock loss and writes neither file: ``results.csv`` keeps its columns,
and its epochs past ``harmonicdet_loss.csv``'s last are the stock loss's
(:func:`epochs_without_harmonic_loss`). Its checkpoints no longer carry ``harmonicdet_loss``: a
later resume with the harmonic trainer takes the loss this yaml states, warns, and lists those
epochs in the yaml.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import yaml

from harmonicdet.io import read_text, write_text_atomic

from .criterion import EXTRA_TERMS

__all__ = ["EPOCH_FILE", "FACTOR_COLUMNS", "LOSS_FILE", "EpochLossLog", "csv_columns", "epochs_without_harmonic_loss",
           "read_csv_rows", "stated_loss", "write_loss_statement"]

LOSS_FILE = "harmonicdet_loss.yaml"
EPOCH_FILE = "harmonicdet_loss.csv"
FACTOR_COLUMNS = ("beta_c", "beta_r", "reversed_frac")


def read_csv_rows(path: Path) -> List[Dict[str, str]]:
    """The rows of a CSV file (keys and values stripped: older Ultralytics pads them); ``[]`` when it is absent."""
    if not path.is_file():
        return []
    return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in csv.DictReader(io.StringIO(read_text(path)))]


def csv_columns(path: Path) -> List[str]:
    """The header of a CSV file, stripped; ``[]`` when it is absent or empty."""
    if not path.is_file():
        return []
    return [c.strip() for c in next(csv.reader(io.StringIO(read_text(path))), [])]


def _epochs(rows: Sequence[Mapping[str, str]]) -> List[int]:
    return [int(float(r["epoch"])) for r in rows if r.get("epoch")]


def epochs_without_harmonic_loss(run_dir: Path, up_to: Optional[int] = None) -> List[int]:
    """Epochs of the run's ``results.csv`` (up to ``up_to``) with no row in its ``harmonicdet_loss.csv``: trained
    without the harmonic trainer (a stock resume), or before harmonicdet wrote the file."""
    logged = set(_epochs(read_csv_rows(run_dir / EPOCH_FILE)))
    return [e for e in _epochs(read_csv_rows(run_dir / "results.csv")) if e not in logged
            and (up_to is None or e <= up_to)]


def _results_csv_text(split_items: bool) -> str:
    own = ("hiou_loss and tc_loss in columns of their own (the run began with them)" if split_items else
           "hiou_loss added to box_loss and tc_loss to cls_loss, so the columns are those of every preset")
    return ("train/ and val/ box_loss, cls_loss, dfl_loss (YOLO26 l1_loss): this loss's terms as back-propagated "
            f"(per image, gains applied; Ultralytics' own only for loss 'standard'), {own}. harmonicdet_loss.csv: per "
            "epoch the terms one by one, Ultralytics' own terms on the same batches (stock_*), beta_c, beta_r, "
            "reversed_frac. Epochs of results.csv without a row there were not trained by HarmonicDetectionTrainer.")


def stated_loss(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The ``loss`` of the run's ``harmonicdet_loss.yaml``; ``None`` without the file."""
    path = run_dir / LOSS_FILE
    if not path.is_file():
        return None
    loss = (yaml.safe_load(read_text(path)) or {}).get("loss")
    return dict(loss) if loss else None


def write_loss_statement(run_dir: Path, spec: Mapping[str, Any], start_epoch: int, *, resume: bool,
                         split_items: bool = False, epochs_not_logged: Sequence[int] = ()) -> Path:
    """Write (a new run) or extend with this sitting (a resume) the run's ``harmonicdet_loss.yaml``."""
    from harmonicdet import __version__

    path = run_dir / LOSS_FILE
    earlier = (yaml.safe_load(read_text(path)) or {}) if resume and path.is_file() else {}
    sitting: Dict[str, Any] = {"start_epoch": int(start_epoch), "harmonicdet": __version__}
    if epochs_not_logged:
        sitting["epochs_not_logged"] = [int(e) for e in epochs_not_logged]
    statement = {"loss": dict(spec), "trainer": "harmonicdet.integrations.ultralytics.HarmonicDetectionTrainer",
                 "results_csv": _results_csv_text(split_items), "epoch_log": EPOCH_FILE,
                 "sittings": [*earlier.get("sittings", []), sitting]}
    return write_text_atomic(yaml.safe_dump(statement, sort_keys=False, width=100, default_flow_style=None), path)


class EpochLossLog:
    """The rows of a run's ``harmonicdet_loss.csv``: batch terms and factors summed on their device (no host sync per
    batch), a row of means per epoch."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / EPOCH_FILE
        self.sums: Dict[str, torch.Tensor] = {}
        self.counts: Dict[str, int] = {}
        self.loss_names: tuple = ()

    def start(self, start_epoch: int, resume: bool) -> None:
        """A new run starts the file afresh (as Ultralytics does ``results.csv``); a resume keeps the rows up to
        ``start_epoch`` (the checkpoint's epochs)."""
        kept = [r for r in read_csv_rows(self.path) if r.get("epoch") and int(float(r["epoch"])) <= start_epoch]
        if not resume or not kept:
            self.path.unlink(missing_ok=True)
            return
        columns = list(kept[0])
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        write_text_atomic(text.getvalue(), self.path)

    def reset(self) -> None:
        """Forget the batches seen (an epoch starts, or restarts after an out-of-memory retry)."""
        self.sums, self.counts = {}, {}

    def add_batch(self, terms: Mapping[str, torch.Tensor], stats: Mapping[str, torch.Tensor]) -> None:
        """Add one batch's ``last_terms`` and the factor statistics among ``stats`` (``last_stats``)."""
        if not self.loss_names and terms:
            self.loss_names = tuple(k for k in terms if not k.startswith("stock_") and k not in EXTRA_TERMS)
        for key, value in (*terms.items(), *((k, stats[k]) for k in FACTOR_COLUMNS if k in stats)):
            value = value.detach().double()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def columns(self) -> tuple:
        return ("epoch", "loss", *self.loss_names, *EXTRA_TERMS, *(f"stock_{n}" for n in self.loss_names),
                *FACTOR_COLUMNS)

    def write(self, epoch: int) -> Optional[Dict[str, Any]]:
        """Append the epoch's row of means (the header first, in a new file); ``None`` before any batch."""
        if not self.loss_names:
            return None
        means = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        terms = (*self.loss_names, *EXTRA_TERMS)
        row: Dict[str, Any] = {"epoch": epoch, "loss": sum(means.get(k, 0.0) for k in terms)}
        row.update({k: means.get(k, 0.0) for k in terms})
        row.update({f"stock_{n}": means[f"stock_{n}"] for n in self.loss_names})
        row.update({k: means.get(k) for k in FACTOR_COLUMNS})
        new = not self.path.is_file()
        cells = ["" if row[c] is None else (str(row[c]) if c == "epoch" else f"{row[c]:.6g}") for c in self.columns()]
        with self.path.open("a", encoding="utf-8") as f:
            f.write((",".join(self.columns()) + "\n" if new else "") + ",".join(cells) + "\n")
        return row
