"""``harmonicdet detr-study``: transformers' RT-DETR / D-FINE from random init on the Fashion-MNIST scenes, the model's
own loss against harmonic presets, recorded and reported like ``harmonicdet study``.

Each (variant, seed) trains a random-init model of
:func:`~harmonicdet.integrations.transformers.models.build_detr` (the same initial weights and
batch order for every variant of a seed) with ``model.loss_function =``
:class:`~harmonicdet.integrations.transformers.HarmonicLossFunction` of the variant's preset
(``standard``: the model's own loss; each harmonic preset once per ``--detach-factors`` mode, with
``--beta-c-mode``, its variant name then ending in ``_beta_c``, ``_beta_r``, ``_detached`` or ``_prob``
as ``harmonicdet yolo-study`` names them), in a plain loop: AdamW (weight decay 1e-4), linear warm-up
then cosine (:func:`harmonicdet.engine.schedule.lr_factor`), gradient norm clipped at 0.1 as
RT-DETR trains, a random horizontal flip. Every ``--eval-every`` iterations it evaluates the
first ``--eval-images`` validation scenes (COCO AP, AP50, AP75 and the Spearman correlation of
score and IoU) and keeps ``last.pt`` (weights, optimiser, RNG) to resume from; at the end the
whole validation set. Run folder ``RUNS/<arch>_<size>-<variant>-s<seed>/``:

* ``config.yaml``: the run's settings (:class:`DetrRunSettings`; other settings are refused);
* ``metrics.jsonl``: per iteration ``iteration``, ``step_time``, ``lr``, ``loss`` (the sum back-propagated),
  the final layer's ``loss_vfl``, ``loss_bbox``, ``loss_giou`` (``loss_hiou``, ``loss_tc``) after
  their weights, and for harmonic variants the loss function's ``last_stats`` (``beta_c``,
  ``beta_r``, ``reversed_frac``, ``reversed_frac_all``, ``beta_c_kl``, ``prob``, ``target``...);
* ``eval_history.jsonl``, ``results.json`` (COCO results of
  :func:`~harmonicdet.integrations.transformers.evaluation.coco_results`), ``eval.json``
  (``metrics`` and the consistency report), ``study_timing.json``, ``provenance.json``;
* ``last.pt``, and ``model/``: ``save_pretrained``'s folder, which loads without harmonicdet.

A finished run is recorded in ``OUT/runs/<name>/`` (:func:`harmonicdet.apps.study.record_run`: the run
folder's evidence without weights, the large logs gzipped); ``OUT/summary.json``, ``summary.md``
and ``plots/`` are :func:`harmonicdet.analysis.study_report.write_report`'s of the records.

Resuming: a run with a record is skipped; one whose folder has ``eval.json`` is only recorded; one
with ``last.pt`` resumes from it, its logs cut back to the checkpoint. The records are all a
report needs (keep ``OUT`` in git); the run folders (``--runs``) hold the weights. ``--out``
and ``--runs`` follow the folder rule of :mod:`harmonicdet.output_folder`; the scenes are
``harmonicdet data scenes``' (made in ``--data`` if absent).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import yaml

from harmonicdet.analysis.consistency import consistency_report
from harmonicdet.analysis.study_report import write_report
from harmonicdet.apps.study import STATE_ACTIONS, record_run, refuse_other_settings, write_train_seconds
from harmonicdet.checks import check_finite_number
from harmonicdet.data import CocoDetectionDataset, build_transforms, make_scenes
from harmonicdet.data.scenes import scenes_paths
from harmonicdet.engine.coco_evaluation import coco_metrics
from harmonicdet.engine.schedule import lr_factor
from harmonicdet.integrations.transformers import HarmonicLossFunction, loss_options
from harmonicdet.integrations.transformers.evaluation import coco_results, detr_labels
from harmonicdet.integrations.transformers.models import build_detr
from harmonicdet.io import read_jsonl, write_json_atomic, write_text_atomic
from harmonicdet.losses.options import HarmonicOptions
from harmonicdet.output_folder import OutputFolder
from harmonicdet.provenance import record_sitting

__all__ = ["COMMAND", "DetrRunSettings", "detr_run_state", "evaluate", "run_detr_study", "study_folders", "variant"]

COMMAND = "harmonicdet detr-study"  # what the folders' marker (harmonicdet.output_folder.MARKER) names as their maker
_WARMUP = 500
_LOGGED_LOSSES = ("loss_vfl", "loss_bbox", "loss_giou", "loss_hiou", "loss_tc")


@dataclass(frozen=True)
class DetrRunSettings:
    """What one run of a DETR study is trained and evaluated with (its ``config.yaml``)."""

    arch: str
    size: str
    variant: str
    seed: int
    iterations: int
    batch: int
    lr: float
    eval_every: int
    eval_images: int
    train_images: int
    val_images: int
    device: str

    @property
    def model(self) -> str:
        """``<arch>_<size>``: the report's arch."""
        return f"{self.arch}_{self.size}"

    @property
    def name(self) -> str:
        return f"{self.model}-{self.variant}-s{self.seed}"

    def dump(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=True)


def variant(preset: str, detach_factors: str, beta_c_mode: str) -> Tuple[str, Optional[HarmonicOptions]]:
    """``(variant name, validated options)`` of a preset with a ``--detach-factors`` mode and ``--beta-c-mode``."""
    if preset == "standard":
        return preset, loss_options(preset)
    detach = {"False": False, "True": True}.get(detach_factors, detach_factors)
    suffix = {False: "", True: "_detached"}.get(detach, f"_{detach}") + ("_prob" if beta_c_mode == "prob" else "")
    return preset + suffix, loss_options(preset, detach_factors=detach, beta_c_mode=beta_c_mode)


def study_folders(out: Path, runs: Path) -> List[OutputFolder]:
    """``--out`` and ``--runs`` under the folder rule of :mod:`harmonicdet.output_folder`, checked now. Each run's
    settings are its ``config.yaml``."""
    return [OutputFolder(out, COMMAND, name="--out"), OutputFolder(runs, COMMAND, name="--runs")]


def detr_run_state(settings: DetrRunSettings, directory: Path, record: Path) -> str:
    """``done`` (recorded), ``evaluated`` (needs recording), ``interrupted`` (``last.pt``) or ``new``."""
    refuse_other_settings(settings.name, settings.dump(), (record, directory))
    if (record / "eval.json").is_file():
        return "done"
    if (directory / "eval.json").is_file():
        return "evaluated"
    return "interrupted" if (directory / "last.pt").is_file() else "new"


def _batches(dataset, batch: int, seed: int, start: int):
    """``(iteration, items)`` from ``start``: epochs of a permutation drawn from ``(seed, epoch)``, the last short batch
    dropped, so the order is a function of the iteration (the same for every variant, and after a resume)."""
    per_epoch = len(dataset) // batch
    iteration = start
    while True:
        epoch, offset = divmod(iteration, per_epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        for position in range(offset, per_epoch):
            yield iteration, [dataset[int(i)] for i in order[position * batch:(position + 1) * batch]]
            iteration += 1


@torch.no_grad()
def evaluate(model, dataset, batch: int = 50) -> List[Dict[str, Any]]:
    """COCO results of ``model`` on every image of ``dataset`` (a :class:`~harmonicdet.data.CocoDetectionDataset`)."""
    model.eval()
    results = []
    device = next(model.parameters()).device
    for first in range(0, len(dataset), batch):
        items = [dataset[i] for i in range(first, min(first + batch, len(dataset)))]
        images = torch.stack([image for image, _ in items]).to(device)
        outputs = model(pixel_values=images)
        outputs.logits, outputs.pred_boxes = outputs.logits.cpu(), outputs.pred_boxes.cpu()
        results += coco_results(outputs, [t["image_id"] for _, t in items],
                                [tuple(image.shape[-2:]) for image, _ in items], dataset.label_to_category_id)
    model.train()
    return results


def _scores(ground_truth: Dict[str, Any], results: List[Dict[str, Any]]) -> Dict[str, Any]:
    report = consistency_report(ground_truth, results)
    return {"metrics": coco_metrics(ground_truth, results), "consistency": report}


def _train_run(settings: DetrRunSettings, options: Optional[HarmonicOptions], train_set, val_set, directory: Path,
               say=print) -> None:
    """Train (or resume) one run with the loss ``options`` (``None``: the model's own) and write its folder."""
    device = torch.device(settings.device)
    torch.manual_seed(settings.seed)
    model = build_detr(settings.arch, settings.size, len(train_set.classes)).to(device).train()
    loss_function = HarmonicLossFunction(settings.arch, options)
    model.loss_function = loss_function
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    schedule = {"max_iters": settings.iterations, "warmup_iters": min(_WARMUP, settings.iterations // 10),
                "schedule": "cosine", "warmup_factor": 0.001}
    checkpoint, start = directory / "last.pt", 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = state["iteration"]
        say(f"[detr-study] {settings.name}: from iteration {start}")
    for name in ("metrics.jsonl", "eval_history.jsonl"):  # cut back to the checkpoint
        path = directory / name
        kept = [r for r in read_jsonl(path) if r["iteration"] <= start] if path.is_file() else []
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    record_sitting(directory, start)
    periodic = val_set.first(settings.eval_images)
    periodic_truth = periodic.coco_ground_truth()
    for iteration, items in _batches(train_set, settings.batch, settings.seed, start):
        if iteration >= settings.iterations:
            break
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * lr_factor(iteration, schedule)
        began = time.perf_counter()
        images = torch.stack([image for image, _ in items]).to(device)
        labels = [{k: v.to(device) for k, v in label.items()}
                  for label in detr_labels([t for _, t in items], [tuple(image.shape[-2:]) for image, _ in items])]
        out = model(pixel_values=images, labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        record = {"iteration": iteration + 1, "step_time": time.perf_counter() - began,
                  "lr": optimizer.param_groups[0]["lr"], "loss": float(out.loss.detach()),
                  **{k: float(out.loss_dict[k].detach()) for k in _LOGGED_LOSSES if k in out.loss_dict},
                  **loss_function.last_stats}
        with (directory / "metrics.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        if (iteration + 1) % settings.eval_every == 0 or iteration + 1 == settings.iterations:
            scores = _scores(periodic_truth, evaluate(model, periodic))
            entry = {"iteration": iteration + 1, **{k: scores["metrics"][k] for k in ("AP", "AP50", "AP75")},
                     "spearman": scores["consistency"]["overall"].get("spearman")}
            with (directory / "eval_history.jsonl").open("a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "rng": torch.get_rng_state(), "iteration": iteration + 1}, checkpoint)
            say(f"[detr-study] {settings.name}: iteration {iteration + 1}, AP {entry['AP']:.3f}")
    write_train_seconds(directory, sum(r["step_time"] for r in read_jsonl(directory / "metrics.jsonl")))
    results = evaluate(model, val_set)
    write_json_atomic(results, directory / "results.json")
    model.save_pretrained(directory / "model")  # the stock checkpoint (no loss function in it)
    write_json_atomic({"checkpoint": str(directory / "model"), **_scores(val_set.coco_ground_truth(), results)},
                      directory / "eval.json")


def _execute_run(settings: DetrRunSettings, options: Optional[HarmonicOptions], train_set, val_set, runs: Path,
                 record: Path, say=print) -> None:
    """Bring one run to ``done``: train (or resume) and evaluate it in ``runs/<name>``, then write its record."""
    directory = runs / settings.name
    state = detr_run_state(settings, directory, record)
    say(f"[detr-study] {settings.name}: {STATE_ACTIONS[state]}")
    if state in ("new", "interrupted"):
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(settings.dump(), directory / "config.yaml")
        _train_run(settings, options, train_set, val_set, directory, say)
    if state != "done":
        record_run(directory, record)


def run_detr_study(args: argparse.Namespace, say=print) -> Dict[str, Any]:
    """Train or resume every (variant, seed) of ``args`` (``harmonicdet detr-study``'s options), then write the
    report; returns ``summary.json``'s data."""
    if args.report_only:
        return _report_recorded(Path(args.out), args.data, args.bootstrap, say)
    check_finite_number(args.lr, "--lr", above=0)
    if args.batch > args.train_images:
        raise ValueError(f"--batch {args.batch} is larger than --train-images {args.train_images}")
    options = dict(variant(preset, mode, args.beta_c_mode) for preset in args.variants for mode in args.detach_factors)
    out, runs = Path(args.out), Path(args.runs)
    folders = study_folders(out, runs)
    planned = [DetrRunSettings(arch=args.arch, size=args.size, variant=name, seed=seed, iterations=args.iterations,
                               batch=args.batch, lr=args.lr, eval_every=args.eval_every, eval_images=args.eval_images,
                               train_images=args.train_images, val_images=args.val_images, device=args.device)
               for seed in args.seeds for name in options]
    for settings in planned:  # every run's settings are checked before any trains
        detr_run_state(settings, runs / settings.name, out / "runs" / settings.name)
    torch.set_num_threads(args.threads)
    make_scenes(args.data, num_train=args.train_images, num_val=args.val_images, seed=0)
    train_set = CocoDetectionDataset(**scenes_paths(args.data, "train"), transforms=build_transforms(True))
    val_set = CocoDetectionDataset(**scenes_paths(args.data, "val"), transforms=build_transforms(False))
    for folder in folders:
        folder.mark()
    for settings in planned:
        _execute_run(settings, options[settings.variant], train_set, val_set, runs, out / "runs" / settings.name, say)
    return _write_study_report(out, planned, val_set, args.bootstrap, say)


def _write_study_report(out: Path, planned: List[DetrRunSettings], val_set, bootstrap: int, say=print
                        ) -> Dict[str, Any]:
    """Write the report of the ``planned`` runs recorded under ``out/runs`` to ``out``; returns ``summary.json``'s
    data."""
    spec = {"name": out.name, "baseline": "standard", "bootstrap": {"samples": bootstrap, "seed": 0},
            "report_dir": str(out)}
    ground_truth = val_set.coco_ground_truth()
    summary = write_report(spec, [{"name": s.name, "arch": s.model, "variant": s.variant, "seed": s.seed,
                                   "dir": str(out / "runs" / s.name)} for s in planned],
                           {s.model: ground_truth for s in planned})
    say(f"[detr-study] {len(summary['runs'])}/{len(planned)} runs recorded; report in {out}")
    return summary


def _report_recorded(out: Path, data: str, bootstrap: int, say=print) -> Dict[str, Any]:
    """``--report-only``: the report of every run recorded under ``out/runs``, whatever command trained it."""
    folder = OutputFolder(out, COMMAND, name="--out")
    records = sorted(path.parent for path in (out / "runs").glob("*/eval.json"))
    if not records:
        raise ValueError(f"--out {out} holds no recorded run to report")
    recorded = [DetrRunSettings(**yaml.safe_load((record / "config.yaml").read_text())) for record in records]
    scenes = {(s.train_images, s.val_images) for s in recorded}
    if len(scenes) > 1:
        raise ValueError(f"--out {out}: its runs were validated on different scenes (train, val images: "
                         f"{sorted(scenes)}); report them from separate folders")
    (train_images, val_images), = scenes
    make_scenes(data, num_train=train_images, num_val=val_images, seed=0)
    val_set = CocoDetectionDataset(**scenes_paths(data, "val"), transforms=build_transforms(False))
    folder.mark()
    order = {"standard": 0}  # the baseline first, then the variants and seeds as named
    recorded.sort(key=lambda s: (s.model, order.get(s.variant, 1), s.variant, s.seed))
    return _write_study_report(out, recorded, val_set, bootstrap, say)
