"""The YOLO study's Ultralytics callbacks: a run's logs in the study's layout, validation every few epochs, the last
epoch's foreground anchors, and the study's torch thread count."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping

from harmonicdet.io import read_jsonl, write_text_atomic
from harmonicdet.provenance import record_sitting

__all__ = ["LOGS", "RunLogger"]

LOGS = ("metrics.jsonl", "eval_history.jsonl", "epochs.jsonl")


class RunLogger:
    """Ultralytics callbacks that write a run's ``metrics.jsonl``, ``eval_history.jsonl`` and ``epochs.jsonl``,
    validate every ``eval_every`` epochs, keep the last epoch's foreground anchors, and train with ``threads`` torch
    threads (Ultralytics' device selection sets its own count, the CPU count - 1)."""

    def __init__(self, directory: Path, eval_every: int, threads: int) -> None:
        self.directory, self.eval_every, self.threads = directory, eval_every, threads
        self.batches = self.iteration = 0
        self.tick = self.epoch_start = 0.0
        self.validating = False  # whether Ultralytics validates the epoch now ending
        self.stats: List[Dict[str, float]] = []
        self.anchors: List[Dict[str, Any]] = []

    def attach(self, model: Any) -> None:
        model.add_callback("on_pretrain_routine_start", self.set_threads)  # after the trainer selected the device
        for event in ("on_train_start", "on_train_epoch_start", "on_train_batch_end", "on_train_epoch_end",
                      "on_fit_epoch_end"):
            model.add_callback(event, getattr(self, event))

    def set_threads(self, _component: Any) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def _append(self, name: str, record: Mapping[str, Any]) -> None:
        with (self.directory / name).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer: Any) -> None:
        """Cut the logs back to the epoch training starts at (0, or a resumed checkpoint's) and record the sitting."""
        self.batches = len(trainer.train_loader)
        start = trainer.start_epoch * self.batches
        for name in LOGS:
            path = self.directory / name
            kept = [r for r in read_jsonl(path) if r["iteration"] <= start] if path.is_file() else []
            write_text_atomic("".join(json.dumps(r) + "\n" for r in kept), path)
        record_sitting(self.directory, start)

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.iteration = trainer.epoch * self.batches
        self.tick = self.epoch_start = time.perf_counter()
        self.stats = []

    def on_train_batch_end(self, trainer: Any) -> None:
        from harmonicdet.integrations.ultralytics import criterion_stats, last_anchors

        now = time.perf_counter()
        self.iteration += 1
        items = {name: float(value) for name, value in trainer.loss_items.items()}  # box_loss, cls_loss, ...
        stats = criterion_stats(trainer.model)
        self._append("metrics.jsonl", {"iteration": self.iteration, "epoch": trainer.epoch, "loss": sum(items.values()),
                                       **items, "step_time": now - self.tick, **stats})
        self.tick = now
        if stats:
            self.stats.append(stats)
        if trainer.epoch == trainer.epochs - 1:  # the last epoch's foreground anchors, for factor_measurement
            anchors = last_anchors(trainer.model)
            if anchors:
                self.anchors.append(anchors)

    def on_train_epoch_end(self, trainer: Any) -> None:
        """Log the epoch's training time and mean statistics; Ultralytics validates next, when ``args.val``."""
        epoch = trainer.epoch + 1
        entry: Dict[str, Any] = {"iteration": epoch * self.batches, "epoch": epoch,
                                 "train_seconds": time.perf_counter() - self.epoch_start}
        if self.stats:
            entry["stats"] = {k: statistics.fmean(s[k] for s in self.stats) for k in self.stats[0]}
        self._append("epochs.jsonl", entry)
        self.validating = epoch % self.eval_every == 0 or epoch == trainer.epochs  # Ultralytics validates the last
        trainer.args.val = self.validating

    def on_fit_epoch_end(self, trainer: Any) -> None:
        epoch = trainer.epoch + 1
        if epoch > trainer.epochs or not self.validating:
            return  # final_eval's validation of best.pt (epoch + 1), or an epoch without validation
        box = trainer.validator.metrics.box
        self._append("eval_history.jsonl", {"iteration": epoch * self.batches, "epoch": epoch, "AP": float(box.map),
                                            "AP50": float(box.map50), "AP75": float(box.map75), "spearman": None})
