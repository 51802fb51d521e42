#!/usr/bin/env python
"""YOLOv8n (random init) on the Fashion-MNIST scenes at 128 px: Ultralytics' loss vs the Harmonic loss.

Each (variant, seed) trains ``yolov8n.yaml`` from scratch with
``HarmonicDetectionTrainer.with_options(variant)`` (``standard`` is Ultralytics' own loss),
then ``val(save_json=True)`` writes predictions.json, which is scored by the package's
evaluator (faster-coco-eval: AP, AP50, AP75) and consistency analysis (Spearman score-IoU)
against the converter's val.json. Per epoch it records the training time (without
validation) and, for harmonic variants, the batch means of the criterion's statistics
(``beta_c``, ``beta_r``, and the alternatives: raw-BCE ``beta_c``, its entropy ceiling,
gains inside the exponentials). Writes ``OUT/summary.json`` and ``OUT/summary.md``.

A rerun skips evaluated runs and resumes interrupted ones from their last.pt.

    nice -n 10 .venv/bin/python scripts/yolo_study.py --seeds 0 1 2 --epochs 100 --out docs/results/yolo
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

# before ultralytics: sets YOLO_OFFLINE / YOLO_AUTOINSTALL / YOLO_CONFIG_DIR (see the module)
from harmonicdet.integrations.ultralytics import HarmonicDetectionTrainer, criterion_stats

import torch  # noqa: E402
from ultralytics import YOLO  # noqa: E402

from harmonicdet.analysis.consistency import consistency_report  # noqa: E402
from harmonicdet.data import CocoDetectionDataset, make_scenes  # noqa: E402
from harmonicdet.data.yolo import write_yolo_dataset  # noqa: E402
from harmonicdet.engine.evaluate import coco_metrics  # noqa: E402
from harmonicdet.io import write_json_atomic  # noqa: E402


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/results/yolo", help="summary folder (default docs/results/yolo)")
    p.add_argument("--runs", default="runs/yolo_study", help="run folders (default runs/yolo_study)")
    p.add_argument("--data", default="data/yolo_scenes", help="scenes + YOLO layout folder (default data/yolo_scenes)")
    p.add_argument("--train", type=int, default=2000, help="training scenes (default 2000)")
    p.add_argument("--val", type=int, default=300, help="validation scenes (default 300)")
    p.add_argument("--variants", nargs="+", default=["standard", "harmonic"],
                   help="loss presets (default standard harmonic)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bench-reps", type=int, default=0,
                   help="also time training steps of each variant, interleaved in one process (default 0: no)")
    return p.parse_args(argv)


def bench_steps(variants, reps: int, imgsz: int, batch: int) -> dict:
    """Median time of a training step (forward, loss, backward) and of the loss alone, per variant.

    The variants alternate on the same model and batch (random images, 4 boxes each), so a
    shared machine's load affects them alike.
    """
    from ultralytics.cfg import get_cfg

    from harmonicdet.integrations.ultralytics import HarmonicDetectionModel, build_criterion, loss_options

    torch.manual_seed(0)
    model = HarmonicDetectionModel("yolov8n.yaml", nc=10, verbose=False)
    model.args = get_cfg()
    model.train()
    img = torch.rand(batch, 3, imgsz, imgsz)
    centres, sizes = 0.2 + 0.6 * torch.rand(batch * 4, 2), 0.12 + 0.32 * torch.rand(batch * 4, 2)
    data = {"img": img, "batch_idx": torch.arange(batch).repeat_interleave(4).float(),
            "cls": torch.randint(0, 10, (batch * 4, 1)).float(), "bboxes": torch.cat([centres, sizes], 1)}
    criteria = {v: build_criterion(model, loss_options(v)) for v in variants}
    step, loss_only = {v: [] for v in variants}, {v: [] for v in variants}
    for rep in range(reps + 2):
        for v in (variants if rep % 2 == 0 else list(reversed(variants))):
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            preds = model(img)
            middle = time.perf_counter()
            loss = criteria[v](preds, data)[0].sum()
            after_loss = time.perf_counter()
            loss.backward()
            if rep >= 2:  # two warm-up rounds
                step[v].append(time.perf_counter() - start)
                loss_only[v].append(after_loss - middle)
    return {v: {"step_ms": 1000 * statistics.median(step[v]), "loss_forward_ms": 1000 * statistics.median(loss_only[v]),
                "reps": reps} for v in variants}


def prepare_data(folder: Path, num_train: int, num_val: int) -> Path:
    scenes = make_scenes(folder / "scenes", num_train=num_train, num_val=num_val, seed=0)
    yaml_path = folder / "yolo" / "data.yaml"
    if not yaml_path.is_file():
        splits = {s: CocoDetectionDataset(scenes[f"{s}_images"], scenes[f"{s}_annotations"]) for s in ("train", "val")}
        write_yolo_dataset(folder / "yolo", splits)
    return yaml_path


def run_one(variant: str, seed: int, data_yaml: Path, runs: Path, args) -> dict:
    run_dir = runs / f"{variant}-s{seed}"
    result_file = run_dir / "study.json"
    anchor_file = run_dir / "last_epoch_anchors.pt"
    if result_file.is_file():  # evaluated: the measurement is recomputed from the stored anchors
        result = json.loads(result_file.read_text())
        if anchor_file.is_file():
            result["factor_measurement"] = factor_measurement(_load_anchors(anchor_file))
        return result
    epochs_log = []
    state = {"t0": 0.0, "stats": []}

    def epoch_start(trainer):
        state["t0"], state["stats"] = time.perf_counter(), []

    anchors = []

    def batch_end(trainer):
        stats = criterion_stats(trainer.model)
        if stats:
            state["stats"].append(stats)
        if trainer.epoch == trainer.epochs - 1:  # the last epoch's foreground anchors, for factor_measurement
            crit = getattr(trainer.model, "criterion", None)
            crit = getattr(crit, "one2many", crit)
            if getattr(crit, "last_anchors", None):
                anchors.append({k: v.cpu() for k, v in crit.last_anchors.items()})

    def epoch_end(trainer):  # on_train_epoch_end: before validation and saving
        entry = {"epoch": trainer.epoch + 1, "train_seconds": time.perf_counter() - state["t0"],
                 "loss": {k: float(v) for k, v in (trainer.tloss or {}).items()}}
        if state["stats"]:
            entry["stats"] = {k: statistics.fmean(s[k] for s in state["stats"]) for k in state["stats"][0]}
        epochs_log.append(entry)
        with (run_dir / "study_epochs.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\n")

    last = run_dir / "weights" / "last.pt"
    trainer = HarmonicDetectionTrainer.with_options(variant)
    common = dict(imgsz=args.imgsz, batch=args.batch, workers=0, device=args.device, plots=False, verbose=False)
    if _resumable(last):  # interrupted: continue it, with the loss stored in the checkpoint
        model = YOLO(str(last))
        _callbacks(model, epoch_start, batch_end, epoch_end)
        model.train(resume=True, trainer=HarmonicDetectionTrainer)
    elif not last.is_file():  # (a last.pt without optimizer state: trained, not yet evaluated)
        (run_dir / "study_epochs.jsonl").unlink(missing_ok=True)
        model = YOLO("yolov8n.yaml")
        _callbacks(model, epoch_start, batch_end, epoch_end)
        model.train(data=str(data_yaml), trainer=trainer, epochs=args.epochs, seed=seed, deterministic=True,
                    project=str(runs.resolve()), name=run_dir.name, exist_ok=True, val=False, pretrained=False,
                    **common)
    epochs_log = [json.loads(line) for line in (run_dir / "study_epochs.jsonl").read_text().splitlines()]
    metrics = YOLO(str(last)).val(data=str(data_yaml), save_json=True, conf=0.001, project=str(runs.resolve()),
                                  name=f"{run_dir.name}-val", exist_ok=True, **common)
    predictions = json.loads((Path(metrics.save_dir) / "predictions.json").read_text())
    gt = json.loads((data_yaml.parent / "val.json").read_text())
    ap = coco_metrics(gt, predictions)
    consistency = consistency_report(gt, predictions)
    result = {"variant": variant, "seed": seed, "epochs": len(epochs_log), **{k: ap[k] for k in ("AP", "AP50", "AP75")},
              "spearman": consistency["overall"]["spearman"], "pearson": consistency["overall"]["pearson"],
              "num_detections": len(predictions),
              "train_seconds": sum(e["train_seconds"] for e in epochs_log),
              "seconds_per_epoch": statistics.fmean(e["train_seconds"] for e in epochs_log),
              "epochs_log": epochs_log}
    if anchors:
        torch.save({k: torch.cat([a[k] for a in anchors]).half() for k in anchors[0]}, anchor_file)
    if anchor_file.is_file():
        result["factor_measurement"] = factor_measurement(_load_anchors(anchor_file))
    write_json_atomic(result, result_file)
    return result


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [torch.empty_like(x, dtype=torch.float64).scatter_(0, x.argsort(), torch.arange(len(x), dtype=torch.float64))
             for x in (a.double(), b.double())]
    ra, rb = (r - r.mean() for r in ranks)
    return float((ra * rb).sum() / ((ra.square().sum() * rb.square().sum()).sqrt() + 1e-300))


def factor_measurement(anchors) -> dict:
    """What the candidate factors can reach, over the last epoch's foreground anchors.

    ``beta_c``: BCE against a soft target ``t`` is at least the target's entropy ``H(t)``, so
    ``exp(-BCE) <= exp(-H(t))`` (the ceiling, ``exp(-BCE) / exp(-KL)``) even for a perfect
    prediction, while ``exp(-KL)`` reaches 1. Reported for the anchors with ``t >= 0.3`` and for
    those with ``t >= 0.1`` predicted within 0.05 of their target: medians of ``exp(-KL)`` (used),
    ``exp(-BCE)`` and the ceiling. ``beta_r`` with the gains outside vs inside the exponent:
    quantiles (a factor ``1 + beta`` that stays at 1 couples nothing).
    """
    t, p = anchors["target"], anchors["prob"]
    out = {"num_anchors": int(t.numel()), "target_quantiles": _quantiles(t)}
    for name, mask in (("target_ge_0.3", t >= 0.3), ("target_ge_0.1_predicted", (t >= 0.1) & ((p - t).abs() < 0.05))):
        entry = {"num_anchors": int(mask.sum())}
        if mask.any():
            ceiling = anchors["beta_c_bce"][mask] / anchors["beta_c"][mask].clamp(min=1e-12)
            entry.update({"beta_c_median": float(anchors["beta_c"][mask].median()),
                          "beta_c_bce_median": float(anchors["beta_c_bce"][mask].median()),
                          "ceiling_median": float(ceiling.median())})
        out[name] = entry
    for key in ("beta_r", "beta_r_gains_inside"):
        out[key] = {"quantiles": _quantiles(anchors[key])}
    return out


def _quantiles(x: torch.Tensor) -> dict:
    q = torch.quantile(x.double()[:1_000_000], torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2])}


def _load_anchors(path: Path) -> dict:
    return {k: v.float() for k, v in torch.load(path, map_location="cpu").items()}


def _resumable(last: Path) -> bool:
    if not last.is_file():
        return False
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    return ckpt.get("optimizer") is not None and ckpt.get("epoch", -1) >= 0


def _callbacks(model, epoch_start, batch_end, epoch_end):
    model.add_callback("on_train_epoch_start", epoch_start)
    model.add_callback("on_train_batch_end", batch_end)
    model.add_callback("on_train_epoch_end", epoch_end)


def _mean_std(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def write_summary(results, out: Path, args, bench=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    variants = {}
    for r in results:
        variants.setdefault(r["variant"], []).append(r)
    summary = {"setup": {"model": "yolov8n.yaml (random init)", "data": f"scenes {args.train}/{args.val}, seed 0",
                         "imgsz": args.imgsz, "batch": args.batch, "epochs": args.epochs, "seeds": args.seeds,
                         "device": args.device, "torch_threads": args.threads, "torch": torch.__version__},
               "variants": {}, "runs": results}
    lines = ["# YOLOv8n on the Fashion-MNIST scenes: Ultralytics' loss vs the Harmonic loss", "",
             f"yolov8n.yaml from random init, {args.imgsz} px, batch {args.batch}, {args.epochs} epochs, seeds "
             f"{args.seeds}, {args.train} train / {args.val} val scenes, device {args.device}, "
             f"{args.threads} torch thread(s). AP: faster-coco-eval on val.json; Spearman: score vs IoU "
             "(harmonicdet.analysis.consistency) of the predictions.json of `val(save_json=True, conf=0.001)`.", "",
             "| variant | runs | AP | AP50 | AP75 | Spearman | s / epoch |", "|---|---|---|---|---|---|---|"]
    for name, runs in variants.items():
        row = {}
        for key in ("AP", "AP50", "AP75", "spearman", "seconds_per_epoch"):
            row[key] = _mean_std([r[key] for r in runs])
        summary["variants"][name] = {k: {"mean": m, "std": s} for k, (m, s) in row.items()}
        fmt = lambda ms, d=3: "n/a" if ms[0] is None else f"{ms[0]:.{d}f} ± {ms[1]:.{d}f}"  # noqa: E731
        lines.append(f"| {name} | {len(runs)} | {fmt(row['AP'])} | {fmt(row['AP50'])} | {fmt(row['AP75'])} | "
                     f"{fmt(row['spearman'])} | {fmt(row['seconds_per_epoch'], 1)} |")
    lines += ["", "s / epoch: training wall time per epoch (no validation) on the machine as it was, shared or not; "
              "compare the variants' cost with the interleaved step benchmark below (`--bench-reps`)."]
    stats_rows = [(r["variant"], r["seed"], e) for r in results for e in r["epochs_log"] if "stats" in e]
    if stats_rows:
        keys = ("beta_c", "beta_c_bce", "beta_c_ceiling", "beta_c_gains_inside", "beta_r", "beta_r_std",
                "beta_r_gains_inside", "beta_r_gains_inside_std", "target_score")
        lines += ["", "Factors per epoch (batch means over foreground anchors): `beta_c` = exp(-KL) used, "
                  "`beta_c_bce` = exp(-BCE) without the entropy removed, `beta_c_ceiling` = exp(-H(t)) its maximum, "
                  "`*_gains_inside` with the gains in the exponent, `target_score` = TAL's target of the assigned "
                  "class.", "", "| variant | seed | epoch | " + " | ".join(keys) + " |",
                  "|---|---|---|" + "---|" * len(keys)]
        for variant, seed, e in stats_rows:
            lines.append(f"| {variant} | {seed} | {e['epoch']} | "
                         + " | ".join(f"{e['stats'][k]:.3g}" for k in keys) + " |")
    if bench:
        summary["step_benchmark"] = bench
        lines += ["", f"Training step (YOLOv8n, {args.imgsz} px, batch {args.batch}, forward + loss + backward; "
                  f"variants interleaved in one process, median of {next(iter(bench.values()))['reps']}):", "",
                  "| variant | step (ms) | loss forward (ms) |", "|---|---|---|"]
        lines += [f"| {v} | {b['step_ms']:.0f} | {b['loss_forward_ms']:.1f} |" for v, b in bench.items()]
    measured = [r for r in results if "factor_measurement" in r]
    if measured:
        lines += ["", "Factor measurement over the last epoch's foreground anchors: medians of exp(-KL) (the "
                  "beta_c used), exp(-BCE) and its ceiling exp(-H(t)) (the most exp(-BCE) can reach, even for a "
                  "perfect prediction); quantiles p10/p50/p90 of beta_r with the gains outside (used) and inside "
                  "the exponent.", "",
                  "| variant | seed | fg anchors | t p10/p50/p90 | t >= 0.3: anchors, exp(-KL) / exp(-BCE) / ceiling | "
                  "t >= 0.1, \\|p - t\\| < 0.05: anchors, exp(-KL) / exp(-BCE) / ceiling | beta_r (gains outside) | "
                  "beta_r (gains inside) |", "|---|---|---|---|---|---|---|---|"]
        q = lambda d: "/".join(f"{d[k]:.3g}" for k in ("p10", "p50", "p90"))  # noqa: E731

        def cell(e):
            return (f"{e['num_anchors']}: {e['beta_c_median']:.3f} / {e['beta_c_bce_median']:.3f} / "
                    f"{e['ceiling_median']:.3f}") if e["num_anchors"] else "0"

        for r in measured:
            m = r["factor_measurement"]
            lines.append(f"| {r['variant']} | {r['seed']} | {m['num_anchors']} | {q(m['target_quantiles'])} | "
                         f"{cell(m['target_ge_0.3'])} | {cell(m['target_ge_0.1_predicted'])} | "
                         f"{q(m['beta_r']['quantiles'])} | {q(m['beta_r_gains_inside']['quantiles'])} |")
    write_json_atomic(summary, out / "summary.json")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = _args(argv)
    torch.set_num_threads(args.threads)
    data_yaml = prepare_data(Path(args.data), args.train, args.val)
    results = [run_one(v, s, data_yaml, Path(args.runs), args) for s in args.seeds for v in args.variants]
    bench = bench_steps(args.variants, args.bench_reps, args.imgsz, args.batch) if args.bench_reps else None
    write_summary(results, Path(args.out), args, bench)
    print((Path(args.out) / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
