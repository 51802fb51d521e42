"""``harmonicdet yolo-study``: YOLO from random init on the Fashion-MNIST scenes, Ultralytics' loss against the
Harmonic loss, recorded and reported like ``harmonicdet study``.

For each (variant, seed) it trains ``--model`` (default ``yolov8n.yaml``) with
``HarmonicDetectionTrainer.with_options(preset, **options)`` of :func:`variant_loss` (``standard`` is Ultralytics' own loss;
``harmonic_beta_r`` is ``harmonic`` with ``detach_factors="beta_r"``),
lets Ultralytics validate every ``--eval-every`` epochs and at the end, and scores the final
``val(save_json=True, conf=0.001)`` ``predictions.json`` of ``last.pt`` with the package's COCO
evaluator (faster-coco-eval) and consistency analysis against the converter's ``val.json``.
A finished run is recorded in ``OUT/runs/<model stem>-<variant>-s<seed>/``, the layout of
:mod:`harmonicdet.apps.study`:

* ``config.yaml``: the run's settings (:class:`YoloRunSettings`; other settings are refused);
* ``metrics.jsonl.gz``: one record per batch (``iteration`` counts batches; Ultralytics steps the
  optimiser every ``nbs / batch`` of them): ``loss`` (the sum of Ultralytics' loss items, also
  logged under their own names: ``box_loss`` with HIoU, ``cls_loss`` with the task-contrasting term,
  ``dfl_loss``, except in runs begun with ``hiou_loss``/``tc_loss`` items of their own, which keep
  them; the run folder's ``harmonicdet_loss.csv`` has each term and Ultralytics' own per epoch),
  ``step_time`` and, for harmonic variants, the criterion's
  statistics (``beta_c``, ``beta_r``, ``reversed_frac`` and the alternatives of ``factors.json``);
* ``eval_history.jsonl``: Ultralytics' validation of the EMA weights at the iteration ending each
  evaluated epoch (``AP`` = its mAP50-95, ``AP50``, ``AP75``: its evaluator, not COCO's; no Spearman);
* ``results.json.gz`` and ``eval.json``: the final predictions, their COCO AP and consistency report;
* ``epochs.jsonl``: each epoch's training seconds (validation excluded) and mean criterion statistics;
* ``provenance.json`` (every sitting's version and commit), ``study_timing.json`` (the sum of the
  epochs' training seconds, over every sitting);
* ``factors.json``: per-epoch means of the criterion's statistics and the last epoch's
  :func:`harmonicdet.integrations.ultralytics.measurement.factor_measurement`.

``OUT/summary.json``, ``summary.md`` and ``plots/`` are
:func:`harmonicdet.analysis.study_report.write_report`'s (mean ± std over seeds, deltas paired by
seed, the paired bootstrap over images, convergence, iterations-to-target); ``OUT/factors.md``
tabulates ``factors.json`` and the optional step benchmark (``--bench-reps``).

Resuming: a run with a record is skipped; one whose Ultralytics ``last.pt`` still holds its
optimizer resumes with ``trainer=HarmonicDetectionTrainer`` (the checkpoint's loss), its logs cut
back to the checkpoint's epoch; one whose ``last.pt`` is final is only evaluated. The records
are all a later sitting needs (keep ``OUT`` in git); the run folders (``--runs``) hold weights.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from harmonicdet.analysis.consistency import consistency_report
from harmonicdet.analysis.study_report import write_report
from harmonicdet.tables import markdown_grid
from harmonicdet.data import CocoDetectionDataset, make_scenes
from harmonicdet.data.yolo import write_yolo_dataset, yolo_output_folder
from harmonicdet.engine.coco_evaluation import coco_metrics
from harmonicdet.apps.yolo_run_logger import RunLogger
from harmonicdet.apps.study import (STATE_ACTIONS, RunProgress, record_run, refuse_other_settings,
                                    write_train_seconds)
from harmonicdet.io import read_jsonl, write_json_atomic, write_text_atomic
from harmonicdet.output_folder import OutputFolder
from harmonicdet.losses import HarmonicOptions

_FACTOR_KEYS = ("beta_c", "beta_c_bce", "beta_c_ceiling", "beta_c_gains_inside", "beta_r", "beta_r_std",
                "beta_r_gains_inside", "beta_r_gains_inside_std", "reversed_frac", "target_score")
# a variant is PRESET or PRESET + one of these suffixes (the longer of two that both match wins: listed first)
_VARIANT_SUFFIXES = (
    ("_hiou_only_a1", {"box_loss": "none", "alpha": 1.0}),
    ("_hiou_only", {"box_loss": "none"}),
    ("_prob", {"beta_c_mode": "prob"}),
    ("_beta_r", {"detach_factors": "beta_r"}),
    ("_beta_c", {"detach_factors": "beta_c"}),
)


def variant_loss(variant: str) -> Tuple[str, Dict[str, Any]]:
    """A variant's loss preset and options: ``PRESET``, ``PRESET_beta_r`` / ``PRESET_beta_c`` for that preset
    with the factor detached (``detach_factors``), as the torchvision studies name ``harmonicdet_beta_r``,
    ``PRESET_prob`` with ``beta_c_mode="prob"``, ``PRESET_hiou_only`` with ``box_loss="none"`` (HIoU in
    CIoU's place; ``harmonic_iou`` and ``harmonicdet`` only, which have HIoU), or ``PRESET_hiou_only_a1``, the
    same with ``alpha=1`` (HIoU with CIoU's own gain, so the localisation gains are Ultralytics'). One suffix
    per variant: they do not combine. :func:`variant_options` validates them."""
    for suffix, options in _VARIANT_SUFFIXES:
        preset = variant[: -len(suffix)]
        if variant.endswith(suffix) and preset != "standard":
            return preset, dict(options)
    return variant, {}


def variant_options(variant: str) -> Optional[HarmonicOptions]:
    """The validated options of a variant (``None`` for ``standard``, Ultralytics' own loss)."""
    from harmonicdet.integrations.ultralytics import loss_options

    preset, options = variant_loss(variant)
    return loss_options(preset, **options)


@dataclass(frozen=True)
class YoloRunSettings:
    """What one run of a YOLO study is trained and evaluated with (its record's ``config.yaml``)."""

    model: str
    variant: str
    seed: int
    epochs: int
    eval_every: int
    imgsz: int
    batch: int
    train_images: int
    val_images: int
    device: str

    @property
    def arch(self) -> str:
        return Path(self.model).stem

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.variant}-s{self.seed}"

    def dump(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=True)


COMMAND = "harmonicdet yolo-study"  # what the folders' marker (harmonicdet.output_folder.MARKER) names as their maker
# what the study writes in --out (records and report)
REPORT_ENTRIES = ("runs", "summary.json", "summary.md", "plots", "factors.md")
_RUN_FOLDER = re.compile(r".+-s[0-9]+(-val)?")  # <model stem>-<variant>-s<seed>, and its final validation


def _report_before_markers(folder: Path) -> Optional[List[str]]:
    """The entries of an ``--out`` written before markers existed: run records under ``runs/`` (folders named
    ``<model stem>-<variant>-s<seed>``), or a report; ``None`` for any other folder."""
    entries = {p.name for p in folder.iterdir()}
    records = folder / "runs"
    if records.is_dir() and all(r.is_dir() and _RUN_FOLDER.fullmatch(r.name) for r in records.iterdir()) \
            or "summary.json" in entries:
        return sorted(entries & set(REPORT_ENTRIES))
    return None


def _runs_before_markers(folder: Path) -> Optional[List[str]]:
    """The entries of a ``--runs`` written before markers existed: nothing but Ultralytics run folders named
    ``<model stem>-<variant>-s<seed>`` (and ``...-val``); ``None`` for any other folder."""
    entries = sorted(folder.iterdir())
    if all(p.is_dir() and _RUN_FOLDER.fullmatch(p.name) for p in entries):
        return [p.name for p in entries]
    return None


def study_folders(out: Path, runs: Path) -> List[OutputFolder]:
    """``--out`` and ``--runs`` under the folder rule of :mod:`harmonicdet.output_folder`, checked now; folders a
    study made before markers existed are recognised by their layout. Each run's settings are its
    ``config.yaml``."""
    return [OutputFolder(out, COMMAND, name="--out", recognise=_report_before_markers),
            OutputFolder(runs, COMMAND, name="--runs", recognise=_runs_before_markers)]


def yolo_run_progress(settings: YoloRunSettings, directory: Path, record: Path) -> Tuple[str, int]:
    """The run's state, ``done`` (recorded), ``trained`` (final ``last.pt``), ``interrupted`` (resumable
    ``last.pt``) or ``new``, and its epochs trained: a resumable ``last.pt``'s, ``settings.epochs`` once final."""
    import torch

    refuse_other_settings(settings.name, settings.dump(), (record, directory))
    if (record / "eval.json").is_file():
        return "done", settings.epochs
    last = directory / "weights" / "last.pt"
    if not last.is_file():
        return "new", 0
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    if checkpoint.get("optimizer") is not None and checkpoint.get("epoch", -1) >= 0:
        return "interrupted", int(checkpoint["epoch"]) + 1  # Ultralytics stores the last finished epoch's index
    return "trained", settings.epochs


def yolo_run_state(settings: YoloRunSettings, directory: Path, record: Path) -> str:
    """The state of :func:`yolo_run_progress`."""
    return yolo_run_progress(settings, directory, record)[0]


def study_runs(out: Path, planned: List[YoloRunSettings]) -> List[YoloRunSettings]:
    """The runs the report covers: ``planned`` and every other run recorded under ``out/runs`` (``standard``
    first, then by variant and seed), so that a call training some variants (one lane of
    ``scripts/yolo_study_lanes.sh``) reports the whole study with its baseline. A record made with other settings
    than ``planned`` (model, epochs, data...) is a ``ValueError`` naming it: one report never mixes settings."""
    runs = {settings.name: settings for settings in planned}
    for saved in sorted((out / "runs").glob("*/config.yaml")):
        try:
            fields = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            fields = None
        fields = fields if isinstance(fields, dict) else {}  # not a run's settings: refused just below
        settings = replace(planned[0], variant=str(fields.get("variant")), seed=fields.get("seed"))
        if saved.read_text(encoding="utf-8") != settings.dump():
            raise ValueError(f"{saved}: recorded with other settings than {planned[0].name}'s; a study's --out "
                             f"holds one setting: report it from its own --out")
        runs.setdefault(settings.name, settings)
    return sorted(runs.values(), key=lambda s: (s.variant != "standard", s.variant, s.seed))


def prepare_data(folder: Path, num_train: int, num_val: int) -> Path:
    """The scenes (seed 0) under ``folder/scenes`` and their YOLO layout under ``folder/yolo``; its ``data.yaml``.
    Each follows its command's folder rule (:mod:`harmonicdet.output_folder`), both checked before either is
    written."""
    yaml_path = folder / "yolo" / "data.yaml"
    if not yaml_path.is_file():
        yolo_output_folder(folder / "yolo")
    scenes = make_scenes(folder / "scenes", num_train=num_train, num_val=num_val, seed=0)
    if not yaml_path.is_file():
        splits = {s: CocoDetectionDataset(scenes[f"{s}_images"], scenes[f"{s}_annotations"]) for s in ("train", "val")}
        write_yolo_dataset(folder / "yolo", splits)
    return yaml_path


def execute_yolo_run(settings: YoloRunSettings, data_yaml: Path, runs: Path, record: Path, *, threads: int,
                say=print) -> None:
    """Bring one run to ``done``: train (or resume) it with ``threads`` torch threads, evaluate ``last.pt`` and
    write its record."""
    import torch

    from harmonicdet.integrations.ultralytics import HarmonicDetectionTrainer, ensure_fonts
    from harmonicdet.integrations.ultralytics.measurement import factor_measurement

    from ultralytics import YOLO

    directory = runs / settings.name
    state = yolo_run_state(settings, directory, record)
    say(f"[yolo-study] {settings.name}: {STATE_ACTIONS[state]}")
    if state == "done":
        return
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings.dump(), directory / "config.yaml")
    last = directory / "weights" / "last.pt"
    logger = RunLogger(directory, settings.eval_every, threads)
    common = dict(imgsz=settings.imgsz, batch=settings.batch, workers=0, device=settings.device, plots=False,
                  verbose=False)
    if state in ("new", "interrupted"):
        if state == "interrupted":  # with the loss stored in the checkpoint
            model = YOLO(str(last))
            logger.attach(model)
            model.train(resume=True, trainer=HarmonicDetectionTrainer)
        else:
            preset, options = variant_loss(settings.variant)
            model = YOLO(settings.model)
            logger.attach(model)
            model.train(data=str(data_yaml), trainer=HarmonicDetectionTrainer.with_options(preset, **options),
                        epochs=settings.epochs, seed=settings.seed, deterministic=True, project=str(runs.resolve()),
                        name=settings.name, exist_ok=True, val=False, pretrained=False, **common)
        # from the epochs' log, which a resume cuts back to its checkpoint: a stopped sitting's epochs count
        write_train_seconds(directory, sum(r["train_seconds"] for r in read_jsonl(directory / "epochs.jsonl")))
        if logger.anchors:
            torch.save({k: torch.cat([a[k] for a in logger.anchors]).half() for k in logger.anchors[0]},
                       directory / "last_epoch_anchors.pt")
    ensure_fonts()  # the stock validator's dataset check would download them
    evaluated = YOLO(str(last))
    evaluated.add_callback("on_val_start", logger.set_threads)  # after the validator selected the device
    metrics = evaluated.val(data=str(data_yaml), save_json=True, conf=0.001, project=str(runs.resolve()),
                            name=f"{settings.name}-val", exist_ok=True, **common)
    predictions = json.loads((Path(metrics.save_dir) / "predictions.json").read_text(encoding="utf-8"))
    ground_truth = json.loads((data_yaml.parent / "val.json").read_text(encoding="utf-8"))
    write_json_atomic(predictions, directory / "results.json")
    write_json_atomic({"checkpoint": str(last), "metrics": coco_metrics(ground_truth, predictions),
                       "consistency": consistency_report(ground_truth, predictions)}, directory / "eval.json")
    anchors_path = directory / "last_epoch_anchors.pt"
    measurement = None
    if anchors_path.is_file():
        anchors = {k: v.float() for k, v in torch.load(anchors_path, map_location="cpu").items()}
        measurement = factor_measurement(anchors)
    write_json_atomic({"epochs": read_jsonl(directory / "epochs.jsonl"), "measurement": measurement},
                      record / "factors.json")
    record_run(directory, record)


def record_overlap(settings: YoloRunSettings, directory: Path, record: Path, data_yaml: Path, images: int) -> None:
    """``record/overlap.json``: ``tal_overlap`` of a recorded run's final weights over the first ``images`` training
    images, with its own loss options (``standard``: ``harmonicdet``'s); skipped without the weights (a record
    from another machine) or when already measured."""
    weights = directory / "weights" / "last.pt"
    if images == 0 or not (record / "eval.json").is_file() or not weights.is_file() or (record / "overlap.json").is_file():
        return
    from harmonicdet.integrations.ultralytics import loss_options
    from harmonicdet.integrations.ultralytics.measurement import measure_overlap, yolo_batches

    from ultralytics import YOLO
    from ultralytics.cfg import get_cfg

    options = variant_options(settings.variant) or loss_options("harmonicdet")
    model = YOLO(str(weights)).model
    model.args = get_cfg(overrides=model.args)  # the checkpoint keeps its training arguments as a dict: the gains
    batches = yolo_batches(data_yaml, "train", settings.batch, images)
    overlap = measure_overlap(model, batches, options)
    write_json_atomic({"weights": str(weights), "images": sum(len(b["img"]) for b in batches),
                       "options": asdict(options), **overlap},
                      record / "overlap.json")


def factors_markdown(records: Mapping[str, Mapping[str, Any]], bench: Optional[Mapping[str, Any]],
                     overlaps: Mapping[str, Mapping[str, Any]], anchors_per_batch: int) -> str:
    """``factors.md``: per-epoch factor means of the harmonic runs, the last epoch's measurement, the overlap of the
    Harmonic weights with TAL's target, the step times.

    Args:
        records: run name -> its ``factors.json``.
        bench: ``bench_steps``' result, or ``None``.
        overlaps: run name -> its ``overlap.json`` (``tal_overlap`` of its final weights).
        anchors_per_batch: anchors of a training batch, for the share of foreground anchors.
    """
    sections = ["# The Harmonic loss's factors in YOLO training",
                "Batch means over foreground anchors, per epoch: `beta_c` = exp(-KL) used, `beta_c_bce` = exp(-BCE) "
                "without the entropy removed, `beta_c_ceiling` = exp(-H(t)) its maximum, `*_gains_inside` with the "
                "gains in the exponent, `reversed_frac` the share of anchors whose S-5 box-gradient factor is "
                "negative, `target_score` TAL's target of the assigned class, `fg_share` the foreground anchors' "
                f"share of a batch's {anchors_per_batch} anchors."]
    rows = [[name, e["epoch"]] + [f"{e['stats'][k]:.3g}" if k in e["stats"] else "—" for k in _FACTOR_KEYS]
            + [f"{e['stats']['num_fg'] / anchors_per_batch:.3g}" if "num_fg" in e["stats"] else "—"]
            for name, f in records.items() for e in f["epochs"] if "stats" in e]
    if rows:
        sections.append(markdown_grid(("run", "epoch") + _FACTOR_KEYS + ("fg_share",), rows))
    measured = {name: f["measurement"] for name, f in records.items() if f.get("measurement")}
    if measured:
        def q(d):
            return "/".join(f"{d[k]:.3g}" for k in ("p10", "p50", "p90"))

        def cell(e):
            return (f"{e['num_anchors']}: {e['beta_c_median']:.3f} / {e['beta_c_bce_median']:.3f} / "
                    f"{e['ceiling_median']:.3f}") if e["num_anchors"] else "0"

        sections += ["The last epoch's foreground anchors: medians of exp(-KL) (the beta_c used), exp(-BCE) and its "
                     "ceiling exp(-H(t)) (the most exp(-BCE) can reach, even for a perfect prediction); quantiles "
                     "p10/p50/p90 of beta_r with the gains outside (used) and inside the exponent.",
                     markdown_grid(("run", "fg anchors", "t p10/p50/p90", "t >= 0.3: anchors, exp(-KL) / exp(-BCE) / "
                                    "ceiling", "t >= 0.1, \\|p - t\\| < 0.05: same", "beta_r (gains outside)",
                                    "beta_r (gains inside)"),
                                   [[name, m["num_anchors"], q(m["target_quantiles"]), cell(m["target_ge_0.3"]),
                                     cell(m["target_ge_0.1_predicted"]), q(m["beta_r"]["quantiles"]),
                                     q(m["beta_r_gains_inside"]["quantiles"])] for name, m in measured.items()])]
    if overlaps:
        def weight(o):
            return " / ".join("—" if o[k] is None else f"{o[k]:+.3f}" for k in ("spearman", "pearson", "eta2"))

        sections += ["How far the Harmonic weights are a function of TAL's target t, over the foreground anchors of "
                     "the final weights on training images (no augmentation): Spearman / Pearson / eta^2 (the share "
                     "of the weight's variance that any function of t explains, over 20 quantile bins of t). For "
                     "`standard`, the weights the `harmonicdet` loss would give.",
                     markdown_grid(("run", "fg anchors", "1 + beta_r (cls) vs t", "1 + beta_c (box) vs t"),
                                   [[name, o["num_anchors"], weight(o["cls_weight_1_plus_beta_r"]),
                                     weight(o["box_weight_1_plus_beta_c"])] for name, o in overlaps.items()])]
    if bench:
        sections += [f"Training step (forward + loss + backward; variants interleaved in one process, median of "
                     f"{next(iter(bench.values()))['reps']}):",
                     markdown_grid(("variant", "step (ms)", "loss forward (ms)"),
                                   [[v, f"{b['step_ms']:.0f}", f"{b['loss_forward_ms']:.1f}"] for v, b in bench.items()])]
    return "\n\n".join(sections) + "\n"


def planned_runs(args: argparse.Namespace) -> List[YoloRunSettings]:
    """The (variant, seed) runs ``args`` names, seed by seed; a bad preset is a ``ValueError``."""
    for variant in args.variants:
        variant_options(variant)
    return [YoloRunSettings(model=args.model, variant=v, seed=s, epochs=args.epochs, eval_every=args.eval_every,
                            imgsz=args.imgsz, batch=args.batch, train_images=args.train_images,
                            val_images=args.val_images, device=args.device)
            for s in args.seeds for v in args.variants]


def yolo_study_progress(args: argparse.Namespace) -> List[RunProgress]:
    """The :class:`~harmonicdet.apps.study.RunProgress` of each run the report of ``args`` covers (those named and
    those recorded in ``--out``), counted in epochs: a resumable run's epochs are its ``last.pt``'s, a recorded
    run's seconds per epoch its ``study_timing.json``'s. Reads the records and checkpoints, writes nothing."""
    out, runs = Path(args.out), Path(args.runs)
    study_folders(out, runs)  # the folder rule, checked; nothing is marked
    progress = []
    for settings in study_runs(out, planned_runs(args)):
        record = out / "runs" / settings.name
        (state, epochs), seconds = yolo_run_progress(settings, runs / settings.name, record), None
        timing = record / "study_timing.json"
        if state == "done" and timing.is_file():
            seconds = json.loads(timing.read_text(encoding="utf-8"))["train_s"] / settings.epochs
        progress.append(RunProgress(settings.name, settings.arch, state, epochs, settings.epochs, seconds))
    return progress


def run_yolo_study(args: argparse.Namespace, say=print) -> Optional[Dict[str, Any]]:
    """Train or resume every (variant, seed) of ``args``, then write the report; returns ``summary.json``'s data
    (``None`` with ``args.no_report``: training and records only)."""
    import torch

    planned = planned_runs(args)  # a bad preset is refused before anything is written
    torch.set_num_threads(args.threads)
    out, runs = Path(args.out), Path(args.runs)
    folders = study_folders(out, runs)
    for settings in planned:  # every run's settings are checked before any trains
        yolo_run_state(settings, runs / settings.name, out / "runs" / settings.name)
    reported = study_runs(out, planned)
    if args.report_only:  # the records as they are: nothing trains, no run folder is touched
        data_yaml = Path(args.data) / "yolo" / "data.yaml"
        if not data_yaml.is_file():
            raise ValueError(f"--data {args.data}: no {data_yaml} (the study's data, written by its first run)")
        folders[0].mark()
    else:
        data_yaml = prepare_data(Path(args.data), args.train_images, args.val_images)
        for folder in folders:
            folder.mark()
        for settings in planned:
            execute_yolo_run(settings, data_yaml, runs, out / "runs" / settings.name, threads=args.threads, say=say)
        for settings in planned:
            record_overlap(settings, runs / settings.name, out / "runs" / settings.name, data_yaml,
                           args.overlap_images)
    if args.no_report:
        return None
    ground_truth = json.loads((data_yaml.parent / "val.json").read_text(encoding="utf-8"))
    spec = {"name": out.name, "baseline": "standard", "bootstrap": {"samples": args.bootstrap, "seed": 0},
            "report_dir": str(out)}
    summary = write_report(spec, [{"name": s.name, "arch": s.arch, "variant": s.variant, "seed": s.seed,
                                   "dir": str(out / "runs" / s.name)} for s in reported],
                           {s.arch: ground_truth for s in reported})
    if args.bench_reps:
        from harmonicdet.integrations.ultralytics.measurement import bench_steps
    bench = (bench_steps(args.model, {v: variant_options(v) for v in args.variants}, args.bench_reps, args.imgsz,
                         args.batch) if args.bench_reps else None)
    factors = {s.name: json.loads((out / "runs" / s.name / "factors.json").read_text()) for s in reported
               if (out / "runs" / s.name / "factors.json").is_file()}
    overlaps = {s.name: json.loads((out / "runs" / s.name / "overlap.json").read_text()) for s in reported
                if (out / "runs" / s.name / "overlap.json").is_file()}
    # YOLOv8/11/26 detect at strides 8, 16 and 32
    anchors_per_batch = args.batch * sum((args.imgsz // stride) ** 2 for stride in (8, 16, 32))
    write_text_atomic(factors_markdown(factors, bench, overlaps, anchors_per_batch), out / "factors.md")
    say(f"[yolo-study] {len(summary['runs'])}/{len(reported)} runs recorded; report in {out}")
    return summary
