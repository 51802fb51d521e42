"""``harmonicdet study STUDY.yaml``: a resumable grid of training runs, evaluated and summarised.

A study file names the architectures (each a run config plus overrides), the
overrides every run shares (data, iteration budget) and a list of run groups;
each group expands to one run per (arch, seed)::

    name: scenes
    output_dir: runs/study_scenes        # one folder per run, under runs/
    report_dir: studies/scenes      # summary.json, summary.md, plots/
    baseline: standard                   # the variant every other one is compared with
    bootstrap: {samples: 500, seed: 0}
    set: ["train.max_iters=600"]          # overrides of every run (``--set`` syntax)
    archs:
      fcos: {config: scenes_fcos_r18.yaml, set: ["model.options={fpn_channels: 64}"]}
    runs:
      - {variant: standard, arch: [fcos], seeds: [0, 1, 2]}
      - {variant: harmonic_iou_g0, loss: harmonic_iou, arch: [fcos], seeds: [0],
         set: ["model.loss_options={gamma: 0}"]}

``config`` is a path relative to the study file or the name of a shipped config;
``loss`` defaults to the variant's name. A run's folder is
``output_dir/runs/<arch>-<variant>-s<seed>`` and its seed is the config's ``seed``
(weights and data order); the data are the same for every run. Arch and variant names
become folder names (letters, digits, ``.``, ``_``, ``-``); every group needs at least one
seed, ``baseline`` must be one of the variants and ``bootstrap`` holds integers: a study
file is checked whole when it is loaded, before anything trains.

``output_dir`` and ``report_dir`` follow the folder rule of :mod:`harmonicdet.output_folder`
(new, empty, or a study's folder: its marker, or the layout of a study made before markers);
each run folder follows ``harmonicdet train``'s.

Run records: a finished run's evidence (no weights) is copied to
``report_dir/runs/<name>/``: ``config.yaml``, ``provenance.json``, ``study_timing.json`` (training
seconds, including periodic evaluation, up to the last checkpoint of each sitting),
``eval_history.jsonl``, ``eval.json`` and, gzipped, ``metrics.jsonl`` (its numbers to
:data:`LOG_SIGNIFICANT_FIGURES` significant figures) and ``results.json`` (about 0.5 MB a run).
The report reads only these records, so a study kept in git continues on another machine, or
in a later sitting, without the run folders.

Resuming: a run with a record is skipped; one whose folder has ``eval.json`` is only
recorded; one with ``model_final.pt`` is evaluated; one with ``last.pt`` continues from
it (``--resume``); the rest start from scratch. A run folder or record whose
``config.yaml`` differs from what the study now asks for is an error that names the
run, so results never mix settings.
"""

from __future__ import annotations

import gzip
import json
import operator
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import yaml

from harmonicdet.engine.from_config import build_datasets, coco_ground_truth
from harmonicdet.engine.checkpoint import FINAL, LAST, load_checkpoint, scene_paths_filled
from harmonicdet.engine.config import Config, dump_config, load_config, shipped_config
from harmonicdet.engine.trained_run import evaluate_run
from harmonicdet.engine.train import train
from harmonicdet.checks import is_int
from harmonicdet.io import check_path_part, read_jsonl, say, write_bytes_atomic, write_json_atomic
from harmonicdet.output_folder import OutputFolder

_STUDY_FIELDS = {"name", "output_dir", "report_dir", "baseline", "bootstrap", "set", "archs", "runs"}
_ARCH_FIELDS = {"config", "set"}
_RUN_FIELDS = {"variant", "loss", "arch", "seeds", "set"}
# eval.json last: a record is complete once it exists
RECORD_FILES = ("config.yaml", "provenance.json", "study_timing.json", "eval_history.jsonl", "epochs.jsonl",
                "metrics.jsonl", "results.json", "eval.json")
COMPRESSED_RECORD_FILES = ("metrics.jsonl", "results.json")
# a per-batch log's record keeps 5 figures: a 200-epoch YOLO run's 25 000 batch records stay under 2 MB gzipped
LOG_SIGNIFICANT_FIGURES = 5
COMMAND = "harmonicdet study"  # what the folders' marker (harmonicdet.output_folder.MARKER) names as their maker
# what a study writes in its output_dir and report_dir
STUDY_ENTRIES = ("runs", "lane_logs", "summary.json", "summary.md", "plots")
# what a (re)run does with a run in each state of run_state, as the progress lines say it
STATE_ACTIONS = {"done": "finished, skipped", "evaluated": "recording", "trained": "evaluating",
                 "interrupted": "resuming", "new": "training"}


@dataclass
class StudyRun:
    """One training run of a study: ``name`` is ``<arch>-<variant>-s<seed>``; ``directory`` holds its training
    (checkpoints included), ``record`` the evidence the report reads (see the module's docstring)."""

    arch: str
    variant: str
    seed: int
    config: Config
    directory: Path
    record: Path
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"{self.arch}-{self.variant}-s{self.seed}"


@dataclass
class Study:
    name: str
    path: Path
    output_dir: Path
    report_dir: Path
    baseline: str
    bootstrap: Dict[str, int]
    runs: List[StudyRun]


def _as_list(value: Any, where: str, kind: type) -> list:
    values = value if isinstance(value, list) else [value]
    for index, item in enumerate(values):
        if not isinstance(item, kind) or isinstance(item, bool):
            raise ValueError(f"{where}[{index}]: expected {kind.__name__}, got {item!r}")
    return values


def _check_fields(mapping: Any, allowed: set, where: str) -> Dict[str, Any]:
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    unknown = set(mapping) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)} (valid: {', '.join(sorted(allowed))})")
    return mapping


def _config_path(name: str, study_dir: Path) -> Path:
    local = study_dir / name
    return local if local.is_file() else shipped_config(name)


def load_study(path: str | Path) -> Study:
    """Parse and expand a study file; every run's config is resolved (and validated) here."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    spec = _check_fields(raw, _STUDY_FIELDS, str(path))
    for required in ("archs", "runs", "output_dir"):
        if required not in spec:
            raise ValueError(f"{path}: missing field {required!r}")
    output_dir = Path(spec["output_dir"])
    report_dir = Path(spec.get("report_dir", output_dir))
    common = _as_list(spec.get("set", []), f"{path}: set", str)
    archs = _check_fields(spec["archs"], set(spec["archs"]), f"{path}: archs")
    for arch in archs:
        check_path_part(arch, f"{path}: archs: the name {arch!r}")
    runs: List[StudyRun] = []
    for index, group in enumerate(_as_list(spec["runs"], f"{path}: runs", dict)):
        where = f"{path}: runs[{index}]"
        group = _check_fields(group, _RUN_FIELDS, where)
        if "variant" not in group or "arch" not in group:
            raise ValueError(f"{where}: needs 'variant' and 'arch'")
        variant = check_path_part(group["variant"], f"{where}.variant")
        seeds = _as_list(group.get("seeds", [0]), f"{where}.seeds", int)
        if not seeds:
            raise ValueError(f"{where}.seeds: give at least one seed")
        for arch in _as_list(group["arch"], f"{where}.arch", str):
            if arch not in archs:
                raise ValueError(f"{where}: arch {arch!r} is not among archs {sorted(archs)}")
            arch_spec = _check_fields(archs[arch], _ARCH_FIELDS, f"{path}: archs.{arch}")
            if "config" not in arch_spec:
                raise ValueError(f"{path}: archs.{arch}: missing field 'config'")
            for seed in seeds:
                directory = output_dir / "runs" / f"{arch}-{variant}-s{seed}"
                overrides = (common + _as_list(arch_spec.get("set", []), f"{path}: archs.{arch}.set", str)
                             + _as_list(group.get("set", []), f"{where}.set", str)
                             + [f"model.loss={group.get('loss', variant)}", f"seed={seed}",
                                f"output_dir={directory}"])
                try:
                    config = load_config(_config_path(arch_spec["config"], path.parent), overrides)
                except ValueError as err:
                    raise ValueError(f"{where} ({arch}, seed {seed}): {err}") from None
                runs.append(StudyRun(arch, variant, seed, config, directory,
                                     report_dir / "runs" / f"{arch}-{variant}-s{seed}"))
    names = [run.name for run in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: runs {duplicates} are listed more than once")
    bootstrap = {"samples": 500, "seed": 0, **_check_fields(spec.get("bootstrap", {}), {"samples", "seed"},
                                                              f"{path}: bootstrap")}
    for key, least in (("samples", 1), ("seed", 0)):
        if not is_int(bootstrap[key]) or bootstrap[key] < least:
            raise ValueError(f"{path}: bootstrap.{key} must be an integer >= {least}, got {bootstrap[key]!r}")
    baseline = spec.get("baseline", "standard")
    variants = sorted({run.variant for run in runs})
    if baseline not in variants:
        raise ValueError(f"{path}: baseline {baseline!r} is not one of the study's variants {variants}")
    return Study(name=str(spec.get("name", path.stem)), path=path, output_dir=output_dir,
                 report_dir=report_dir, baseline=baseline, bootstrap=bootstrap, runs=runs)


def _written_before_markers(folder: Path) -> Optional[List[str]]:
    """The entries of a study folder written before markers existed (it holds run folders or records, a report or
    lane logs); ``None`` for any other folder."""
    entries = {p.name for p in folder.iterdir()}
    if not entries & {"runs", "summary.json", "lane_logs"}:
        return None
    return sorted(entries & set(STUDY_ENTRIES))


def study_folders(study: Study, *, report_only: bool = False) -> List[OutputFolder]:
    """The study's ``output_dir`` and ``report_dir`` (one folder when they are the same; only ``report_dir`` with
    ``report_only``) under the folder rule of :mod:`harmonicdet.output_folder`, checked now, before any work.
    Each run's settings are its ``config.yaml`` (see :func:`refuse_other_settings`)."""
    named = {study.report_dir: "report_dir"} if report_only else {study.output_dir: "output_dir",
                                                                   study.report_dir: "report_dir"}
    return [OutputFolder(folder, COMMAND, name=name, recognise=_written_before_markers)
            for folder, name in named.items()]


def run_state(run: StudyRun) -> str:
    """``done`` (recorded), ``evaluated`` (needs recording), ``trained`` (needs evaluation), ``interrupted``
    (resumable) or ``new``."""
    refuse_other_settings(run.name, dump_config(run.config), (run.record, run.directory),
                          same=same_training_settings)
    if (run.record / "eval.json").is_file():
        return "done"
    if (run.directory / "eval.json").is_file():
        return "evaluated"
    if (run.directory / FINAL).is_file():
        return "trained"
    if (run.directory / LAST).is_file():
        return "interrupted"
    return "new"


def same_training_settings(saved: str, asked: str) -> bool:
    """Whether two training configs (YAML texts) agree once their empty data splits are resolved from
    ``data.scenes``: the trainer writes ``config.yaml`` resolved, the study asks with the splits empty."""
    return scene_paths_filled(yaml.safe_load(saved)) == scene_paths_filled(yaml.safe_load(asked))


def refuse_other_settings(name: str, settings: str, folders: Sequence[Path],
                          same: Callable[[str, str], bool] = operator.eq) -> None:
    """A ``ValueError`` naming run ``name`` if a ``config.yaml`` in one of ``folders`` is not ``settings`` (the text
    it would be written with; ``same(saved, settings)`` decides), so that results never mix settings."""
    for folder in folders:
        saved = folder / "config.yaml"
        if saved.is_file() and not same(saved.read_text(encoding="utf-8"), settings):
            raise ValueError(f"run {name}: {saved} was written with other settings than asked for now; "
                             f"remove {folder} to rerun it, or ask for the settings it was made with")


def round_figures(value: Any, figures: int) -> Any:
    """``value`` (a JSON value) with every float rounded to ``figures`` significant figures."""
    if isinstance(value, float):
        return float(f"{value:.{figures}g}")
    if isinstance(value, dict):
        return {key: round_figures(item, figures) for key, item in value.items()}
    if isinstance(value, list):
        return [round_figures(item, figures) for item in value]
    return value


def record_run(directory: Path, record: Path) -> None:
    """Copy an evaluated run's evidence (:data:`RECORD_FILES`) from its ``directory`` to its ``record`` folder,
    the large logs gzipped (``metrics.jsonl`` to :data:`LOG_SIGNIFICANT_FIGURES` significant figures; the run
    folder keeps it whole) and ``eval.json`` last, so that an interrupted copy is never taken for a record."""
    for name in RECORD_FILES:
        source = directory / name
        if not source.is_file():
            continue  # e.g. no eval_history.jsonl without eval.every, epochs.jsonl outside yolo-study
        if name == "metrics.jsonl":
            data = "".join(json.dumps(round_figures(entry, LOG_SIGNIFICANT_FIGURES)) + "\n"
                           for entry in read_jsonl(source)).encode("utf-8")
        else:
            data = source.read_bytes()
        if name in COMPRESSED_RECORD_FILES:  # mtime=0: the same run gives the same bytes
            write_bytes_atomic(gzip.compress(data, mtime=0), record / f"{name}.gz")
        else:
            write_bytes_atomic(data, record / name)


def write_train_seconds(directory: Path, seconds: float) -> None:
    """``directory/study_timing.json``: a run's training seconds, summed over the sittings that trained it."""
    write_json_atomic({"train_s": seconds}, directory / "study_timing.json")


def execute_run(run: StudyRun, state: str, *, show_progress: bool = True) -> None:
    """Bring one run from ``state`` (see :func:`run_state`) to ``done``."""
    if state in ("new", "interrupted"):
        train(run.config, resume=state == "interrupted", show_progress=show_progress)
        # kept in last.pt, so a sitting that was stopped counts up to its last checkpoint
        write_train_seconds(run.directory, load_checkpoint(run.directory / LAST)["train_seconds"])
    if state in ("new", "interrupted", "trained"):
        evaluate_run(run.config, checkpoint=run.directory / FINAL, show_progress=show_progress)
    if state != "done":
        record_run(run.directory, run.record)


def write_study_report(study: Study) -> Dict[str, Any]:
    """The report of the study's recorded runs (:func:`harmonicdet.analysis.study_report.write_report`); runs
    evaluated but not yet recorded (e.g. by another process) are recorded first."""
    from harmonicdet.analysis.study_report import write_report

    for run in study.runs:
        if run_state(run) == "evaluated":
            record_run(run.directory, run.record)
    finished = [run for run in study.runs if (run.record / "eval.json").is_file()]
    if not finished and (study.report_dir / "summary.json").is_file():  # e.g. a report kept without its records
        raise ValueError(f"no run of {study.path} has a record under {study.report_dir / 'runs'}: nothing to "
                         f"report, and {study.report_dir / 'summary.json'} is kept as it is")
    # the runs of one arch are evaluated on the same validation data; archs (e.g. two folds) may differ
    first_of_arch: Dict[str, StudyRun] = {}
    for run in finished:
        first_of_arch.setdefault(run.arch, run)
    ground_truths = {arch: coco_ground_truth(build_datasets(run.config)[1]) for arch, run in first_of_arch.items()}
    spec = {"name": study.name, "baseline": study.baseline, "bootstrap": study.bootstrap,
            "report_dir": str(study.report_dir)}
    runs = [{"name": r.name, "arch": r.arch, "variant": r.variant, "seed": r.seed, "dir": str(r.record)}
            for r in study.runs]
    return write_report(spec, runs, ground_truths)


def selected_runs(study: Study, only: Optional[Sequence[str]]) -> List[StudyRun]:
    """The runs of ``study`` named by ``only`` (names or name prefixes; ``None``: every run), in the study's order."""
    selected = [run for run in study.runs
                if not only or any(run.name == o or run.name.startswith(o) for o in only)]
    if only and not selected:
        raise ValueError(f"--only {list(only)} matches none of the runs: {[r.name for r in study.runs]}")
    return selected


def run_study(path: str | Path, *, only: Optional[Sequence[str]] = None, report_only: bool = False,
              report: bool = True, show_progress: bool = True) -> Optional[Dict[str, Any]]:
    """Run (or resume) every run of the study at ``path``, then write its report; returns the summary.

    Args:
        only: run names or name prefixes to run now (e.g. ``fcos-``); the report covers every
            finished run.
        report_only: train nothing; summarise the finished runs.
        report: ``False`` trains without writing the report (returns ``None``), e.g. for several
            processes sharing a GPU, each with its own ``only``.
    """
    study = load_study(path)
    selected = selected_runs(study, only)
    folders = study_folders(study, report_only=report_only)
    if not report_only:
        for run in selected:  # every run's settings are checked before any trains
            run_state(run)
        for folder in folders:
            folder.mark()
        for index, run in enumerate(selected, start=1):
            state = run_state(run)
            say(f"[study] {index}/{len(selected)} {run.name}: {STATE_ACTIONS[state]}")
            execute_run(run, state, show_progress=show_progress)
    if not report:
        return None
    folders[-1].mark()  # report_dir
    summary = write_study_report(study)
    say(f"[study] {len(summary['runs'])}/{len(study.runs)} runs finished; report in {study.report_dir}")
    return summary


@dataclass
class RunProgress:
    """Where one run of a study stands: its :func:`run_state`, the iterations trained (a resumable run's last
    checkpoint) of ``max_iters``, and, once recorded, its training seconds per iteration (periodic evaluation
    included)."""

    name: str
    arch: str
    state: str
    iteration: int
    max_iters: int
    seconds_per_iteration: Optional[float]

    @property
    def iterations_left(self) -> int:
        return self.max_iters - self.iteration


def study_progress(runs: Sequence[StudyRun]) -> List[RunProgress]:
    """The :class:`RunProgress` of each of ``runs``; reads the records and checkpoints, writes nothing."""
    progress = []
    for run in runs:
        state, max_iters, seconds = run_state(run), run.config["train"]["max_iters"], None
        if state == "interrupted":
            iteration = int(load_checkpoint(run.directory / LAST, map_location=torch.device("cpu"))["iteration"])
        else:
            iteration = 0 if state == "new" else max_iters
        timing = run.record / "study_timing.json"
        if state == "done" and timing.is_file():
            seconds = json.loads(timing.read_text(encoding="utf-8"))["train_s"] / max_iters
        progress.append(RunProgress(run.name, run.arch, state, iteration, max_iters, seconds))
    return progress


def seconds_left(progress: Sequence[RunProgress]) -> Dict[str, Optional[float]]:
    """Per arch, the training seconds its unfinished runs still need in one lane, at the mean seconds per iteration
    of its recorded runs (``None`` when none is recorded yet); evaluation after training is not counted."""
    left: Dict[str, Optional[float]] = {}
    for arch in dict.fromkeys(p.arch for p in progress):
        runs = [p for p in progress if p.arch == arch]
        rates = [p.seconds_per_iteration for p in runs if p.seconds_per_iteration is not None]
        iterations = sum(p.iterations_left for p in runs)
        left[arch] = iterations * sum(rates) / len(rates) if rates else (0.0 if iterations == 0 else None)
    return left


def run_lanes(path: str | Path, lanes: int, *, only: Optional[Sequence[str]] = None,
              limit_s: Optional[float] = None) -> Dict[str, str]:
    """Train the study's unfinished runs (those of ``only``, as :func:`run_study` takes it) in ``lanes`` side-by-side
    processes (``harmonicdet study --only ... --no-report``), each with its share of the CPU's torch threads
    (``OMP_NUM_THREADS`` unless set), logging to ``output_dir/lane_logs/lane<i>.log``; returns every run's state
    afterwards. Lane ``i`` takes every ``lanes``-th unfinished run, so each lane gets a mix; a lane stopped by
    ``limit_s`` leaves its run resumable.
    Writes no report: that is ``harmonicdet study STUDY --report-only``."""
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"--lanes must be an integer >= 1, got {lanes!r}")
    if limit_s is not None and not limit_s > 0:
        raise ValueError(f"--limit-s must be a number of seconds > 0, got {limit_s!r}")
    study = load_study(path)
    folders = study_folders(study)
    unfinished = [run.name for run in selected_runs(study, only) if run_state(run) != "done"]
    running = min(lanes, len(unfinished))
    if running:
        for folder in folders:
            folder.mark()
        # torch's default of one thread per core in every lane oversubscribes the cores
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // running))
        log_dir = study.output_dir / "lane_logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        processes = []
        for lane in range(running):
            command = [sys.executable, "-m", "harmonicdet", "study", str(path), "--no-report", "--quiet",
                       "--only", *unfinished[lane::lanes]]
            with open(log_dir / f"lane{lane}.log", "a", encoding="utf-8") as log:
                processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                  env={**os.environ, "OMP_NUM_THREADS": threads}))
            say(f"[study] lane {lane}: {len(unfinished[lane::lanes])} runs, log {log_dir / f'lane{lane}.log'}")
        for process in processes:
            try:
                process.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                process.terminate()  # SIGTERM: the run checkpoints and stays resumable
                process.wait()
    return {run.name: run_state(run) for run in study.runs}
