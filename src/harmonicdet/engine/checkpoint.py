"""Atomic checkpoints with everything needed to resume a run exactly."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

LAST = "last.pt"


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path: Path, *, model: torch.nn.Module, optimizer, scheduler, scaler, iteration: int,
                    epoch: int, batch_in_epoch: int, config: Dict[str, Any]) -> None:
    """Model, optimiser, scheduler, AMP scaler, RNG states and position in the data order."""
    atomic_torch_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "iteration": iteration,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "rng": rng_state(),
            "config": config,
        },
        path,
    )


def load_checkpoint(path: Path, map_location: Optional[torch.device] = None) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        # our own files hold numpy RNG state and config dicts, so full unpickling is needed
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"checkpoint {path} could not be read: {err}") from None
    missing = {"model", "iteration"} - set(checkpoint) if isinstance(checkpoint, dict) else {"model"}
    if missing:
        raise ValueError(f"checkpoint {path} lacks the fields {sorted(missing)}")
    return checkpoint
