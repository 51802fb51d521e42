"""Evaluate a trained run: COCO AP plus the prediction-consistency report, written beside the weights;
and the gradient norms per branch of its training loss at its final weights."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch.utils.data import DataLoader

from harmonicdet.analysis.branch_gradients import branch_gradient_norms
from harmonicdet.analysis.consistency import consistency_report
from harmonicdet.engine import distributed as dist_utils
from harmonicdet.data import collate
from harmonicdet.engine.from_config import build_datasets, build_model, coco_ground_truth
from harmonicdet.engine.checkpoint import FINAL, check_model_config, load_model_state
from harmonicdet.engine.config import Config, load_config
from harmonicdet.engine.coco_evaluation import evaluate
from harmonicdet.io import write_json_atomic
from harmonicdet.output_folder import OutputFolder, flat_layout

COMMAND = "harmonicdet eval"  # what an --out's marker (harmonicdet.output_folder.MARKER) names as its maker


def load_weights(model: torch.nn.Module, checkpoint: Path, config: Optional[Config] = None) -> None:
    """Load ``model_final.pt``, a training checkpoint or a bare state dict into ``model``.

    With ``config``, a checkpoint that carries its training config must match it in the
    model fields (:func:`~harmonicdet.engine.checkpoint.check_model_config`).
    """
    path = Path(checkpoint)
    state, trained_with = load_model_state(path)
    if config is not None:
        check_model_config(trained_with, config, path)
    _load_state(model, state, path)


def _load_state(model: torch.nn.Module, state: Dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit the configured model: {err}") from None


def evaluate_run(config: Config, *, checkpoint: Path, out_dir: Optional[Path] = None,
                 show_progress: bool = True) -> Dict[str, Any]:
    """Writes ``results.json`` (COCO detections) and ``eval.json`` (metrics + consistency); returns the report.

    ``out_dir`` defaults to the checkpoint's folder (the run's); another one follows the folder rule of
    :mod:`harmonicdet.output_folder` (new, empty or made by ``harmonicdet eval``).
    """
    device = dist_utils.resolve_device(config["train"]["device"])
    dist_utils.init_from_env(device)
    out = Path(checkpoint).parent if out_dir is None else Path(out_dir)
    folder = None if out.resolve() == Path(checkpoint).parent.resolve() else \
        OutputFolder(out, COMMAND, {"checkpoint": str(checkpoint)}, name="--out",
                     recognise=flat_layout("eval.json", "results.json", "candidates.json"))
    state, trained_with = load_model_state(Path(checkpoint))  # an unreadable or foreign file fails before any work
    check_model_config(trained_with, config, Path(checkpoint))
    _, val_set = build_datasets(config, need_val=True)
    model = build_model(config)
    _load_state(model, state, Path(checkpoint))
    model.to(device)
    if folder is not None and dist_utils.is_main_process():
        folder.mark()
    evaluated = evaluate(model, val_set, device=device, batch_size=config["eval"]["batch_size"],
                         results_path=out / "results.json", candidates=bool(config["eval"]["candidates"]),
                         show_progress=show_progress)
    if not evaluated:
        return {}
    consistency = consistency_report(coco_ground_truth(val_set), evaluated["results"],
                                     candidates=evaluated.get("candidates"))
    report = {
        "checkpoint": str(checkpoint),
        "summary": {**evaluated["metrics"], **_consistency_summary(consistency)},
        "metrics": evaluated["metrics"],
        "consistency": consistency,
    }
    write_json_atomic(report, out / "eval.json")
    return report


def _consistency_summary(report: Dict[str, Any]) -> Dict[str, Any]:
    overall = report.get("overall", {})
    return {key: overall[key] for key in ("spearman", "pearson") if key in overall}


def run_gradient_norms(run_dir: Path, *, batches: int = 4, batch_size: int = 8, seed: int = 0) -> Dict[str, Any]:
    """Mean :func:`~harmonicdet.analysis.branch_gradients.branch_gradient_norms` of a trained run.

    Loads ``run_dir/config.yaml`` and ``run_dir/model_final.pt`` and averages over the first
    ``batches`` training batches of ``batch_size`` images, in dataset order with the training
    augmentation seeded by ``seed`` (the same images for every run of a study). On CPU.
    Returns ``{"run", "batches", "batch_size", "norms": {term: {branch: mean}},
    "backbone_cosine": {"a|b": mean}}``.
    """
    run_dir = Path(run_dir)
    if batches < 1 or batch_size < 1:
        raise ValueError(f"batches and batch_size must be >= 1, got {batches} and {batch_size}")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} does not exist: not a training run folder")
    config = load_config(config_path)
    train_set, _ = build_datasets(config, need_val=False)
    if len(train_set) < batches * batch_size:
        raise ValueError(f"{run_dir}: {batches} batches of {batch_size} need {batches * batch_size} training "
                         f"images, the run's training set has {len(train_set)}")
    model = build_model(config)
    load_weights(model, run_dir / FINAL, config)
    torch.manual_seed(seed)  # the training transforms' flips
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=False, collate_fn=collate)
    per_batch = [branch_gradient_norms(model, images, targets)
                 for (images, targets), _ in zip(loader, range(batches))]
    norms = {term: {branch: statistics.fmean(b["norms"][term][branch] for b in per_batch) for branch in branch_norms}
             for term, branch_norms in per_batch[0]["norms"].items()}
    cosine = {pair: statistics.fmean(b["backbone_cosine"][pair] for b in per_batch)
              for pair in per_batch[0]["backbone_cosine"]}
    return {"run": str(run_dir), "batches": batches, "batch_size": batch_size, "norms": norms,
            "backbone_cosine": cosine}
