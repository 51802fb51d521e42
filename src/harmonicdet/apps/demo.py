"""``harmonicdet demo``: standard vs Harmonic training of one small detector, on the CPU, in minutes.

Steps: make the Fashion-MNIST scenes; time a few training steps to turn the
wall-clock budget into an iteration count; train the same FCOS ResNet18-FPN twice
(``standard`` and ``harmonicdet`` presets, same seed, data order and iterations);
evaluate both (COCO AP and prediction consistency); print one table and write
``summary.json``, ``summary.md``, the loss curves, the consistency plots and ``panel.png``
(the first validation scenes with both runs' detections side by side, ``harmonicdet draw``).
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from harmonicdet.analysis.consistency_plots import plot_consistency_comparison
from harmonicdet.analysis.figures import plot_loss_curves
from harmonicdet.checks import is_finite_number
from harmonicdet.data import collate, make_scenes
from harmonicdet.data import scenes_paths
from harmonicdet.engine.from_config import build_datasets, build_model
from harmonicdet.engine.checkpoint import FINAL
from harmonicdet.engine.config import Config, load_config, shipped_config
from harmonicdet.engine.trained_run import evaluate_run
from harmonicdet.engine.train import train
from harmonicdet.io import say, write_json_atomic, write_text_atomic
from harmonicdet.output_folder import OutputFolder
from harmonicdet.tables import format_value, markdown_grid
from harmonicdet.visualization.coco import comparison_panel

DEMO_CONFIG = "scenes_fcos_r18.yaml"
DEMO_PRESETS = ("standard", "harmonicdet")
_PROBE_ITERS = 6
_RESERVE_S = 20.0  # plots, model building, evaluation start-up
MIN_BUDGET_S = 60.0  # below this no budget can fit scenes, the timing probe and two evaluations


COMMAND = "harmonicdet demo"  # what --out's marker (harmonicdet.output_folder.MARKER) names as its maker


def _written_before_markers(out: Path) -> Optional[List[str]]:
    """What an earlier demo listed in its own marker, ``.harmonicdet-demo.json`` (that file included), or ``None``."""
    old = out / ".harmonicdet-demo.json"
    try:
        return [*json.loads(old.read_text(encoding="utf-8"))["created"], old.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_demo_arguments(budget_minutes: float, num_train: int, num_val: int, seed: int = 0) -> None:
    """The demo's own arguments, checked before anything is written."""
    if not is_finite_number(budget_minutes) or budget_minutes <= 0:
        raise ValueError(f"--budget-minutes must be a finite number of minutes > 0, got {budget_minutes!r}")
    if budget_minutes * 60 < MIN_BUDGET_S:
        raise ValueError(f"--budget-minutes {budget_minutes} is less than the {MIN_BUDGET_S / 60:g} minutes the demo "
                         "needs for data, timing and evaluation alone; give it more time")
    for flag, value in (("--train-images", num_train), ("--val-images", num_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{flag} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"--seed must be an integer in [0, 2**32), got {seed!r}")


def demo_config(out: Path, *, seed: int = 0, num_train: int = 2000, num_val: int = 300,
                fashion_mnist: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """The shipped demo config with the demo's settings applied after it: seed, scenes under ``out``."""
    scenes = {"out": str(Path(out) / "scenes"), "train": num_train, "val": num_val, "seed": seed,
              "fashion_mnist": None if fashion_mnist is None else str(fashion_mnist)}
    config = load_config(shipped_config(DEMO_CONFIG), [*overrides, f"seed={seed}",
                                                       f"data.scenes={json.dumps(scenes)}",
                                                       f"output_dir={json.dumps(str(Path(out) / 'run'))}"])
    batch = config["train"]["batch_size"]
    if num_train < batch:
        raise ValueError(f"--train-images {num_train} is fewer than one training batch (train.batch_size={batch})")
    return config


def _time_steps(config: Config, folder: OutputFolder) -> Dict[str, float]:
    """Seconds per training step and per evaluated image, from a short probe run."""
    out = folder.claim("_probe")
    probe = load_config(base=config, overrides=[f"output_dir={json.dumps(str(out))}",
                                                f"train.max_iters={_PROBE_ITERS}", "train.warmup_iters=0"])
    train(probe, show_progress=False)
    steps = [json.loads(line)["step_time"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    step_s = statistics.median(steps[1:])  # the first step pays for allocator warm-up
    _, val_set = build_datasets(probe, need_val=True)
    model = build_model(probe).eval()
    images, _ = collate([val_set[i] for i in range(min(len(val_set), probe["eval"]["batch_size"]))])
    with torch.no_grad():
        model(images)
        start = time.perf_counter()
        model(images)
    image_s = (time.perf_counter() - start) / len(images)
    shutil.rmtree(out)
    return {"step_s": step_s, "image_s": image_s}


def _table(rows: List[Dict[str, Any]]) -> str:
    """The demo's table: one line per preset (the study report's cell format and Markdown)."""
    return markdown_grid(("preset", "AP", "AP50", "AP75", "Spearman(score, IoU)", "train time (s)", "iterations"),
                         [(r["preset"], *(format_value(r[k]) for k in ("AP", "AP50", "AP75", "spearman")),
                           f"{r['train_s']:.0f}", r["iterations"]) for r in rows])


def run_demo(out: Path, *, budget_minutes: float = 9.0, fashion_mnist: Optional[str] = None, seed: int = 0,
             num_train: int = 2000, num_val: int = 300, presets: Sequence[str] = DEMO_PRESETS,
             overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Run the demo into ``out``; returns the summary also written to ``out/summary.json``.

    ``budget_minutes`` bounds the whole run: the iteration count is what fits after
    timing a few steps. ``overrides`` are ``key=value`` config overrides applied to
    every run (e.g. ``train.batch_size=8``).
    """
    started = time.perf_counter()
    out = Path(out)
    check_demo_arguments(budget_minutes, num_train, num_val, seed)
    base = demo_config(out, seed=seed, num_train=num_train, num_val=num_val, fashion_mnist=fashion_mnist,
                       overrides=overrides)
    # the entries the demo makes are recorded in the marker: it only ever removes those
    folder = OutputFolder(out, COMMAND, {"seed": seed, "train_images": num_train, "val_images": num_val,
                                         "presets": list(presets), "overrides": list(overrides)},
                          name="--out", recognise=_written_before_markers)
    results = ("loss_curves.png", "consistency_comparison.png", "panel.png", "summary.json", "summary.md")
    folder.check("scenes", "_probe", *presets, *results)
    say(f"[demo] 1/4 Fashion-MNIST scenes: {num_train} train + {num_val} val -> {out / 'scenes'}")
    folder.keep("scenes")
    make_scenes(out / "scenes", num_train=num_train, num_val=num_val, seed=seed, fashion_mnist=fashion_mnist)

    say("[demo] 2/4 timing a few training steps to fit the budget")
    timing = _time_steps(base, folder)
    eval_s = timing["image_s"] * num_val
    left = budget_minutes * 60 - (time.perf_counter() - started) - len(presets) * eval_s - _RESERVE_S
    iterations = math.floor(left / (len(presets) * timing["step_s"] * 1.05))
    if iterations < 20:
        raise ValueError(f"--budget-minutes {budget_minutes} leaves {iterations} training iterations "
                         f"({timing['step_s']:.2f} s/step here); give the demo more time")
    say(f"[demo] {timing['step_s']:.2f} s/step -> {iterations} iterations per preset")

    rows, runs = [], []
    for index, preset in enumerate(presets):
        run_dir = folder.claim(preset)
        config = load_config(base=base, overrides=[
            f"output_dir={json.dumps(str(run_dir))}", f"model.loss={preset}", f"train.max_iters={iterations}",
            f"train.warmup_iters={min(base['train']['warmup_iters'], iterations // 10)}"])
        say(f"[demo] 3/4 training {preset} ({index + 1}/{len(presets)})")
        t0 = time.perf_counter()
        train(config)
        train_s = time.perf_counter() - t0
        say(f"[demo] 4/4 evaluating {preset}")
        report = evaluate_run(config, checkpoint=run_dir / FINAL)
        rows.append({"preset": preset, **{k: report["metrics"][k] for k in ("AP", "AP50", "AP75")},
                     "spearman": report["consistency"]["overall"].get("spearman"),
                     "train_s": train_s, "iterations": iterations})
        runs.append((preset, run_dir))

    table = _table(rows)
    for name in results:
        folder.claim(name)
    plots = [plot_loss_curves([(p, d / "metrics.jsonl") for p, d in runs], out / "loss_curves.png")]
    plots += plot_consistency_comparison(
        [json.loads((d / "eval.json").read_text())["consistency"] for _, d in runs],
        [p for p, _ in runs], out)
    val = config["data"]["val"] or scenes_paths(Path(config["data"]["scenes"]["out"]), "val")  # evaluated on
    if all((d / "results.json").is_file() for _, d in runs):  # (a faked evaluation writes none)
        plots.append(comparison_panel(val["ann_file"], [d / "results.json" for _, d in runs], [p for p, _ in runs],
                                      val["img_dir"], out / "panel.png"))
    summary = {"rows": rows, "table": table, "timing": timing, "budget_minutes": budget_minutes,
               "total_s": time.perf_counter() - started, "plots": [str(p) for p in plots],
               "results": {p: str(d / "results.json") for p, d in runs}}
    write_json_atomic(summary, out / "summary.json")
    write_text_atomic(table + "\n", out / "summary.md")
    print(table)
    say(f"[demo] done in {summary['total_s'] / 60:.1f} min; results in {out}")
    return summary
