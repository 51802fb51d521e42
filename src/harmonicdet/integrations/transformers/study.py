"""A study of transformers' RT-DETR / D-FINE on the scenes: the stock loss against harmonic presets, reported as
``harmonicdet study`` reports (``summary.json``, ``summary.md``, plots).

    python -m harmonicdet.integrations.transformers.study --out studies/detr_scenes --runs runs/detr_scenes \\
        [--arch rt_detr] [--size small] [--variants standard harmonicdet] [--seeds 0 1 2] [--iterations 20000] \\
        [--detach-factors False [beta_c ...]] [--beta-c-mode loss] [--batch 16] [--lr 2e-4] [--eval-every 1000] \
        [--eval-images 300] [--threads 1] [--device cpu]

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
whole validation set. Run folder ``RUNS/<arch>_<size>-<variant>-s<seed>/``, the files
:func:`harmonicdet.analysis.study_report.write_report` reads:

* ``metrics.jsonl``: per iteration ``iteration``, ``step_time``, ``lr``, ``loss`` (the sum back-propagated),
  the final layer's ``loss_vfl``, ``loss_bbox``, ``loss_giou`` (``loss_hiou``, ``loss_tc``) after
  their weights, and for harmonic variants the loss function's ``last_stats`` (``beta_c``,
  ``beta_r``, ``reversed_frac``, ``reversed_frac_all``, ``beta_c_kl``, ``prob``, ``target``...);
* ``eval_history.jsonl``, ``results.json`` (COCO results of :func:`.evaluation.coco_results`),
  ``eval.json`` (``metrics`` and the consistency report), ``study_timing.json``, ``provenance.json``;
* ``model/``: ``save_pretrained``'s folder, which loads without harmonicdet.

A finished run (``eval.json``) is skipped; an interrupted one resumes from ``last.pt``. The
report goes to ``--out``. The scenes are ``harmonicdet data scenes``' (made in ``--data`` if absent).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from harmonicdet.analysis.consistency import consistency_report
from harmonicdet.analysis.study_report import write_report
from harmonicdet.data import CocoDetectionDataset, build_transforms, make_scenes
from harmonicdet.data.scenes import scenes_paths
from harmonicdet.engine.coco_evaluation import coco_metrics
from harmonicdet.engine.schedule import lr_factor
from harmonicdet.io import read_jsonl, write_json_atomic
from harmonicdet.losses.options import HarmonicOptions
from harmonicdet.provenance import record_sitting

from .evaluation import coco_results, detr_labels
from .loss_function import DETR_PRESETS, HarmonicLossFunction, loss_options
from .models import SIZES, build_detr

__all__ = ["evaluate", "main", "train_run"]

_WARMUP = 500
_LOGGED_LOSSES = ("loss_vfl", "loss_bbox", "loss_giou", "loss_hiou", "loss_tc")


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


def train_run(args: argparse.Namespace, options: Optional[HarmonicOptions], seed: int, train_set, val_set,
              directory: Path, say=print) -> None:
    """Train (or resume) one run with the loss ``options`` (``None``: the model's own) and write its folder."""
    directory.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    torch.manual_seed(seed)
    model = build_detr(args.arch, args.size, len(train_set.classes)).to(device).train()
    loss_function = HarmonicLossFunction(args.arch, options)
    model.loss_function = loss_function
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = {"max_iters": args.iterations, "warmup_iters": min(_WARMUP, args.iterations // 10), "schedule": "cosine",
                "warmup_factor": 0.001}
    checkpoint, start = directory / "last.pt", 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = state["iteration"]
    for name in ("metrics.jsonl", "eval_history.jsonl"):  # cut back to the checkpoint
        path = directory / name
        kept = [r for r in read_jsonl(path) if r["iteration"] <= start] if path.is_file() else []
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    record_sitting(directory, start)
    periodic = val_set.first(args.eval_images)
    periodic_truth = periodic.coco_ground_truth()
    say(f"[detr-study] {directory.name}: {'resumed at ' + str(start) if start else 'new'}")
    for iteration, items in _batches(train_set, args.batch, seed, start):
        if iteration >= args.iterations:
            break
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(iteration, schedule)
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
        if (iteration + 1) % args.eval_every == 0 or iteration + 1 == args.iterations:
            scores = _scores(periodic_truth, evaluate(model, periodic))
            entry = {"iteration": iteration + 1, **{k: scores["metrics"][k] for k in ("AP", "AP50", "AP75")},
                     "spearman": scores["consistency"]["overall"].get("spearman")}
            with (directory / "eval_history.jsonl").open("a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "rng": torch.get_rng_state(), "iteration": iteration + 1}, checkpoint)
            say(f"[detr-study] {directory.name}: iteration {iteration + 1}, AP {entry['AP']:.3f}")
    train_seconds = sum(r["step_time"] for r in read_jsonl(directory / "metrics.jsonl"))
    write_json_atomic({"train_s": train_seconds}, directory / "study_timing.json")
    results = evaluate(model, val_set)
    write_json_atomic(results, directory / "results.json")
    model.save_pretrained(directory / "model")  # the stock checkpoint (no loss function in it)
    write_json_atomic({"checkpoint": str(directory / "model"), **_scores(val_set.coco_ground_truth(), results)},
                      directory / "eval.json")


def _variant(preset: str, detach_factors: str, beta_c_mode: str) -> Tuple[str, Optional[HarmonicOptions]]:
    """``(variant name, validated options)`` of a preset with a ``--detach-factors`` mode and ``--beta-c-mode``."""
    if preset == "standard":
        return preset, loss_options(preset)
    detach = {"False": False, "True": True}.get(detach_factors, detach_factors)
    suffix = {False: "", True: "_detached"}.get(detach, f"_{detach}") + ("_prob" if beta_c_mode == "prob" else "")
    return preset + suffix, loss_options(preset, detach_factors=detach, beta_c_mode=beta_c_mode)


def main(argv: Optional[List[str]] = None, say=print) -> Dict[str, Any]:
    """Run the study of ``argv`` (module docstring) and write its report; returns ``summary.json``'s data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the report folder (summary.json, summary.md, plots/)")
    parser.add_argument("--runs", required=True, help="the run folders (weights, logs)")
    parser.add_argument("--data", default="data/scenes_study")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--arch", default="rt_detr", choices=("rt_detr", "rt_detr_v2", "d_fine"))
    parser.add_argument("--size", default="small", choices=tuple(SIZES))
    parser.add_argument("--variants", nargs="+", default=["standard", "harmonicdet"], choices=DETR_PRESETS)
    parser.add_argument("--detach-factors", nargs="+", default=["False"], choices=("False", "True", "beta_c", "beta_r"))
    parser.add_argument("--beta-c-mode", default="loss", choices=("loss", "prob"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-images", type=int, default=300)
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    for name in ("iterations", "batch", "eval_every", "eval_images", "train_images", "val_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    torch.set_num_threads(args.threads)
    make_scenes(args.data, num_train=args.train_images, num_val=args.val_images, seed=0)
    train_set = CocoDetectionDataset(**scenes_paths(args.data, "train"), transforms=build_transforms(True))
    val_set = CocoDetectionDataset(**scenes_paths(args.data, "val"), transforms=build_transforms(False))
    if len(train_set) < args.batch:
        parser.error(f"--batch {args.batch} is larger than the {len(train_set)} training scenes")
    options = dict(_variant(preset, mode, args.beta_c_mode) for preset in args.variants for mode in args.detach_factors)
    runs = [{"name": f"{args.arch}_{args.size}-{variant}-s{seed}", "arch": f"{args.arch}_{args.size}",
             "variant": variant, "seed": seed} for seed in args.seeds for variant in options]
    for run in runs:
        run["dir"] = str(Path(args.runs) / run["name"])
        if not (Path(run["dir"]) / "eval.json").is_file():
            train_run(args, options[run["variant"]], run["seed"], train_set, val_set, Path(run["dir"]), say)
    study = {"name": Path(args.out).name, "baseline": "standard", "bootstrap": {"samples": args.bootstrap, "seed": 0},
             "report_dir": args.out}
    return write_report(study, runs, val_set.coco_ground_truth())


if __name__ == "__main__":
    main()
