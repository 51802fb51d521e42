"""The training loop: deterministic per seed, resumable, DDP under ``torchrun``, AMP on CUDA.

Layout of ``output_dir``: ``config.yaml`` (the resolved config), ``metrics.jsonl``
(one JSON object per iteration: loss terms, harmonic factor means, learning rate,
throughput), ``eval_history.jsonl`` (with ``eval.every``: AP, AP50, AP75 and
Spearman(score, IoU) on the first ``eval.subset`` validation images at every K-th
iteration and the last), ``provenance.json`` (package version and git commit of
every sitting that trained the run), ``last.pt`` (the checkpoint ``--resume``
continues from, written atomically) and ``model_final.pt`` (the trained weights).

``output_dir`` follows the folder rule of :mod:`harmonicdet.output_folder`: new, empty, or
a run folder (its marker ``.harmonicdet.json``, or the layout above for runs made before
markers); a run with ``last.pt`` continues only with ``resume``, and a finished one
(``model_final.pt``) is refused. Nothing is written until the config, the data, the model
and the checkpoint to resume are accepted.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from tqdm import tqdm

from harmonicdet.analysis.consistency import consistency_report
from harmonicdet.data import collate
from harmonicdet.engine import distributed as dist_utils
from harmonicdet.engine.from_config import build_datasets, build_model, coco_ground_truth
from harmonicdet.engine.checkpoint import (FINAL, LAST, check_resume_config, load_checkpoint, save_checkpoint, save_model,
                                           set_rng_state)
from harmonicdet.engine.config import Config, dump_config
from harmonicdet.engine.coco_evaluation import evaluate
from harmonicdet.engine.schedule import build_optimizer, build_scheduler
from harmonicdet.io import read_jsonl, write_text_atomic
from harmonicdet.models import loss_stats
from harmonicdet.output_folder import OutputFolder
from harmonicdet.provenance import record_sitting


class MetricsLog:
    """Append-only JSON-lines log written by rank 0; on resume, records after the checkpoint are dropped."""

    def __init__(self, path: Path, resume_iteration: Optional[int], *, tensorboard: bool = True) -> None:
        self.path = path
        if resume_iteration is not None and path.exists():
            kept = [json.dumps(record) for record in read_jsonl(path) if record.get("iteration", 0) <= resume_iteration]
            write_text_atomic("".join(line + "\n" for line in kept), path)
        elif path.exists():
            path.unlink()
        self._file = open(path, "a", encoding="utf-8", buffering=1)
        self._tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: only with tensorboard installed

            self._tb = SummaryWriter(str(path.parent / "tensorboard")) if tensorboard else None
        except ImportError:
            pass

    def write(self, record: Dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, record["iteration"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _epoch_batches(sampler: DistributedSampler, epoch: int, batch_size: int, skip: int) -> List[List[int]]:
    """The epoch's batches of dataset indices (a function of seed and epoch only), minus the first ``skip``."""
    sampler.set_epoch(epoch)
    return list(BatchSampler(list(sampler), batch_size, drop_last=True))[skip:]


class PeriodicEvaluation:
    """``eval.every``: AP and Spearman(score, IoU) on a fixed validation subset, appended to ``eval_history.jsonl``.

    Runs before the checkpoint of the same iteration is written, so a run killed in
    between re-evaluates after ``--resume`` (records after the checkpoint are dropped)
    and each evaluated iteration appears exactly once. The global RNG is forked, so
    the training run is the same with or without it.
    """

    def __init__(self, config: Config, val_set, out: Optional[Path], resume_iteration: Optional[int],
                 device: torch.device, model: torch.nn.Module) -> None:
        self.every = config["eval"]["every"]
        self.max_iters = config["train"]["max_iters"]
        self.model, self.device = model, device
        self.batch_size = config["eval"]["batch_size"]
        self.val_set = None
        self.log = None
        if self.every is None:
            return
        subset = config["eval"]["subset"]
        self.val_set = val_set.first(subset) if subset else val_set
        self.ground_truth = coco_ground_truth(self.val_set)
        if out is not None:
            self.log = MetricsLog(out / "eval_history.jsonl", resume_iteration, tensorboard=False)

    def due(self, iteration: int) -> bool:
        return self.every is not None and (iteration % self.every == 0 or iteration == self.max_iters)

    def __call__(self, iteration: int) -> None:
        t0 = time.perf_counter()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            evaluated = evaluate(self.model, self.val_set, device=self.device, batch_size=self.batch_size,
                                 show_progress=False)
        self.model.train()
        if self.log is None or not evaluated:
            return
        overall = consistency_report(self.ground_truth, evaluated["results"])["overall"] \
            if evaluated["results"] else {}
        record = {"iteration": iteration, **{k: evaluated["metrics"][k] for k in ("AP", "AP50", "AP75")},
                  "spearman": overall.get("spearman"), "images": len(self.val_set),
                  "seconds": time.perf_counter() - t0}
        self.log.write(record)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _to_device(images, targets, device):
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]
    return images, targets


COMMAND = "harmonicdet train"  # what output_dir's marker (harmonicdet.output_folder.MARKER) names as its maker
# what a training run folder holds: this module's files, the evaluation's and a study's (study_timing.json)
RUN_FILES = ("config.yaml", "metrics.jsonl", "eval_history.jsonl", "provenance.json", LAST, FINAL, "tensorboard",
             "eval.json", "results.json", "candidates.json", "study_timing.json")


def _written_before_markers(out: Path) -> Optional[List[str]]:
    """The entries of a run folder written before markers existed: one with ``config.yaml`` and this module's
    log, provenance or a checkpoint; ``None`` for any other folder."""
    entries = {p.name for p in out.iterdir()}
    if "config.yaml" not in entries or not entries & {"metrics.jsonl", "provenance.json", LAST, FINAL}:
        return None
    return sorted(entries & set(RUN_FILES))


def _check_run(out: Path, config: Config, resume: bool, is_main: bool) -> Tuple[OutputFolder, Optional[Dict[str, Any]]]:
    """``output_dir`` under the folder rule of :mod:`harmonicdet.output_folder` (new, empty or a run folder) and the
    checkpoint to resume (``None`` for a new run), checked against ``config``; writes nothing."""
    folder = OutputFolder(out, COMMAND, name="output_dir", recognise=_written_before_markers)
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(out / LAST, map_location="cpu")
        check_resume_config(checkpoint.get("config"), config, out / LAST)  # before config.yaml is rewritten
    elif is_main and (out / LAST).exists():
        raise ValueError(f"{out} already holds a run (last.pt); pass --resume to continue it or choose another output_dir")
    elif is_main and (out / FINAL).exists():
        raise ValueError(f"{out} already holds a finished run ({FINAL}); choose another output_dir (or move that run "
                         "away to train it again)")
    return folder, checkpoint


def _start_sitting(folder: OutputFolder, config: Config, checkpoint: Optional[Dict[str, Any]]) -> None:
    """Rank 0, once everything is accepted: the marker, ``config.yaml`` and this sitting's provenance."""
    out = folder.mark()
    (out / "config.yaml").write_text(dump_config(config))
    record_sitting(out, checkpoint["iteration"] if checkpoint else 0)


class _Optimisation:
    """What a training step updates besides the model: optimiser, learning-rate schedule and AMP scaler."""

    def __init__(self, model: torch.nn.Module, cfg_train: Dict[str, Any], device: torch.device) -> None:
        self.optimizer = build_optimizer(model, cfg_train)
        self.scheduler = build_scheduler(self.optimizer, cfg_train)
        self.use_amp = bool(cfg_train["amp"]) and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        self.grad_clip = cfg_train["grad_clip"]


def _restore(checkpoint: Dict[str, Any], model: torch.nn.Module, opt: _Optimisation) -> Tuple[int, int, int]:
    """Load a ``last.pt`` into the model, optimiser, schedule, scaler and the RNGs; returns ``(iteration, epoch,
    batch_in_epoch)``, where training continues."""
    model.load_state_dict(checkpoint["model"])
    opt.optimizer.load_state_dict(checkpoint["optimizer"])
    opt.scheduler.load_state_dict(checkpoint["scheduler"])
    if opt.scaler is not None and checkpoint.get("scaler"):
        opt.scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    return checkpoint["iteration"], checkpoint["epoch"], checkpoint["batch_in_epoch"]


def _loader(train_set, sampler: DistributedSampler, config: Config, epoch: int, skip: int) -> DataLoader:
    """The epoch's batches after the first ``skip``; the loader's own seeded generator keeps it from drawing on
    the global RNG, so resuming mid-epoch is exact."""
    batches = _epoch_batches(sampler, epoch, config["train"]["batch_size"], skip)
    return DataLoader(train_set, batch_sampler=batches, collate_fn=collate, num_workers=config["data"]["num_workers"],
                      generator=torch.Generator().manual_seed(config["seed"] * 100_003 + epoch))


def _step(train_model: torch.nn.Module, model: torch.nn.Module, images, targets, opt: _Optimisation,
          iteration: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], float]:
    """One optimisation step; returns the loss, its terms and the learning rate the step used."""
    autocast = torch.autocast("cuda", dtype=torch.float16) if opt.use_amp else nullcontext()
    with autocast:
        loss_dict = train_model(images, targets)
    loss = sum(loss_dict.values())
    if not torch.isfinite(loss):
        terms = {k: float(v) for k, v in loss_dict.items()}
        raise FloatingPointError(f"iteration {iteration}: non-finite training loss {terms}")
    opt.optimizer.zero_grad(set_to_none=True)
    if opt.scaler is not None:
        opt.scaler.scale(loss).backward()
        opt.scaler.unscale_(opt.optimizer)
    else:
        loss.backward()
    if opt.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
    if opt.scaler is not None:
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
    else:
        opt.optimizer.step()
    lr = opt.optimizer.param_groups[0]["lr"]
    opt.scheduler.step()
    return loss, loss_dict, lr


def _record(model: torch.nn.Module, iteration: int, epoch: int, loss: torch.Tensor,
            loss_dict: Dict[str, torch.Tensor], lr: float, step_time: float, images: int) -> Dict[str, Any]:
    """The ``metrics.jsonl`` line of a step: loss and its terms, lr, throughput and :func:`loss_stats`."""
    record = {"iteration": iteration, "epoch": epoch, "loss": float(loss.detach()), "lr": lr,
              "step_time": step_time, "images_per_s": images / step_time}
    record.update({k: float(v.detach()) for k, v in loss_dict.items()})
    record.update({k: float(v) for k, v in loss_stats(model).items()})
    return record


def _checkpoint(path: Optional[Path], model: torch.nn.Module, opt: _Optimisation, config: Config, iteration: int,
                epoch: int, batch_index: int, end_of_epoch: bool, train_seconds: float) -> None:
    """``last.pt`` (rank 0: ``path`` set) pointing at the batch after ``batch_index``; every rank waits for it."""
    next_epoch, next_skip = (epoch + 1, 0) if end_of_epoch else (epoch, batch_index + 1)
    if path is not None:
        save_checkpoint(path, model=model, optimizer=opt.optimizer, scheduler=opt.scheduler, scaler=opt.scaler,
                        iteration=iteration, epoch=next_epoch, batch_in_epoch=next_skip, config=config,
                        train_seconds=train_seconds)
    dist_utils.barrier()


def train(config: Config, *, resume: bool = False, show_progress: bool = True) -> Path:
    """Train the model ``config`` describes; returns the output folder.

    ``train.batch_size`` is the per-process batch; under ``torchrun`` the global batch
    is ``batch_size * world_size``. With ``resume``, continues from ``output_dir/last.pt``
    at the exact iteration, data order and RNG state where it was written.
    """
    cfg_train = config["train"]
    device = dist_utils.resolve_device(cfg_train["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed = dist_utils.init_from_env(device)
    is_main = dist_utils.is_main_process()
    out = Path(config["output_dir"])
    folder, checkpoint = _check_run(out, config, resume, is_main)

    torch.manual_seed(config["seed"])
    train_set, val_set = build_datasets(config, need_val=config["eval"]["every"] is not None)
    model = build_model(config).to(device)
    opt = _Optimisation(model, cfg_train, device)
    start_iter, epoch, skip = _restore(checkpoint, model, opt) if checkpoint is not None else (0, 0, 0)
    train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if distributed else model

    batch_size, max_iters = cfg_train["batch_size"], cfg_train["max_iters"]
    images_per_step = batch_size * dist_utils.world_size()
    sampler = DistributedSampler(train_set, num_replicas=dist_utils.world_size(), rank=dist_utils.rank(),
                                 shuffle=True, seed=config["seed"], drop_last=True)
    if len(sampler) < batch_size:
        raise ValueError(f"train.batch_size={batch_size} is larger than the {len(sampler)} training images per process")
    batches_per_epoch = len(sampler) // batch_size
    if is_main:  # nothing is written before the data, the model and the checkpoint are accepted
        _start_sitting(folder, config, checkpoint)
    every = cfg_train["checkpoint_every"] or batches_per_epoch
    resumed_at = start_iter if checkpoint else None
    log = MetricsLog(out / "metrics.jsonl", resumed_at) if is_main else None
    periodic = PeriodicEvaluation(config, val_set, out if is_main else None, resumed_at, device, model)
    progress = tqdm(total=max_iters, initial=start_iter, desc="train", unit="it", file=sys.stderr,
                    disable=not (show_progress and is_main), dynamic_ncols=True)
    train_model.train()
    iteration = start_iter
    # a checkpoint written before training time was kept counts its sittings as 0 s
    seconds_before, sitting_start = (checkpoint or {}).get("train_seconds", 0.0), time.perf_counter()
    try:
        while iteration < max_iters:
            for batch_index, (images, targets) in enumerate(_loader(train_set, sampler, config, epoch, skip),
                                                            start=skip):
                t0 = time.perf_counter()
                images, targets = _to_device(images, targets, device)
                loss, loss_dict, lr = _step(train_model, model, images, targets, opt, iteration)
                iteration += 1
                step_time = time.perf_counter() - t0
                if log is not None:
                    record = _record(model, iteration, epoch, loss, loss_dict, lr, step_time, images_per_step)
                    log.write(record)
                    shown = {"loss": record["loss"], **{k: record[k] for k in ("beta_c", "beta_r") if k in record}}
                    progress.set_postfix(shown, refresh=False)
                progress.update(1)
                end_of_epoch = batch_index + 1 == batches_per_epoch
                if periodic.due(iteration):
                    periodic(iteration)
                if iteration % every == 0 or end_of_epoch or iteration == max_iters:
                    _checkpoint(out / LAST if is_main else None, model, opt, config, iteration, epoch, batch_index,
                                end_of_epoch, seconds_before + time.perf_counter() - sitting_start)
                if iteration >= max_iters:
                    break
            epoch, skip = epoch + 1, 0
        if is_main:
            save_model(out / FINAL, model, config)
    finally:
        progress.close()
        periodic.close()
        if log is not None:
            log.close()
    dist_utils.barrier()
    return out
