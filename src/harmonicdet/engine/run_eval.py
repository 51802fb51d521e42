"""Evaluate a trained run: COCO AP plus the prediction-consistency report, written beside the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch

from harmonicdet.analysis.consistency import consistency_report
from harmonicdet.engine import distributed as dist_utils
from harmonicdet.engine.builders import build_datasets, build_model, coco_ground_truth
from harmonicdet.engine.checkpoint import load_checkpoint
from harmonicdet.engine.config import Config
from harmonicdet.engine.evaluate import evaluate
from harmonicdet.io import write_json_atomic
from harmonicdet.engine.train import resolve_device


def load_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    """Load ``model_final.pt`` (a state dict) or a training checkpoint (``{"model": ...}``)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not fit the configured model: {err}") from None


def evaluate_run(config: Config, *, checkpoint: Path, out_dir: Optional[Path] = None,
                 show_progress: bool = True) -> Dict[str, Any]:
    """Writes ``results.json`` (COCO detections) and ``eval.json`` (metrics + consistency); returns the report."""
    device = resolve_device(config["train"]["device"])
    dist_utils.init_from_env(device)
    out = Path(out_dir) if out_dir is not None else Path(checkpoint).parent
    _, val_set = build_datasets(config, need_val=True)
    model = build_model(config)
    load_weights(model, checkpoint)
    model.to(device)
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
