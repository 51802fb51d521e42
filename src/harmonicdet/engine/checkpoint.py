"""Atomic checkpoints with everything needed to resume a run exactly; one reader for every checkpoint file.

Files: ``last.pt`` (:func:`save_checkpoint`: model, optimiser, scheduler, scaler, RNG,
position, config) and ``model_final.pt`` (:func:`save_model`: ``{"model": state_dict,
"config": config}``; older runs hold a bare state dict, still read, without a config).
:func:`read_torch_file` turns any unreadable file into a ``ValueError`` naming it.

Config checks: ``--resume`` refuses a config that differs from the checkpoint's in anything
but :data:`RESUME_MAY_DIFFER` (:func:`check_resume_config`); evaluation refuses a model
config that differs from the one the weights were trained with in :data:`MODEL_FIELDS`
(:func:`check_model_config`). Both name the differing fields.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from harmonicdet.data.scenes import scenes_paths
from harmonicdet.io import atomic_write, read_jsonl

LAST = "last.pt"
FINAL = "model_final.pt"

# fields a resumed run may change: the schedule length, logging, evaluation and where the run lives
# (train.max_iters also reshapes a cosine schedule from the resumed iteration on; everything else, data
# and data.num_workers included, changes what the weights would be, so it is refused)
RESUME_MAY_DIFFER = ("train.max_iters", "train.log_every", "eval", "output_dir")
# fields of the model config that must match the checkpoint's for evaluation (the network and its inference)
MODEL_FIELDS = ("arch", "loss", "num_classes", "backbone", "options")


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


def _interrupted(err: BaseException) -> bool:
    """Whether ``err`` is, or was raised while handling, a ``KeyboardInterrupt`` (torch.save's zip writer
    turns an interrupt into a ``RuntimeError`` when it closes)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`~harmonicdet.io.atomic_write` (fsync before the rename).

    On any error, Ctrl-C included, the temporary file is removed and ``path`` keeps its old
    content; an interrupt is re-raised as ``KeyboardInterrupt``.
    """
    try:
        with atomic_write(path, fsync=True) as f:
            torch.save(obj, f)
    except BaseException as err:
        if not isinstance(err, KeyboardInterrupt) and _interrupted(err):
            raise KeyboardInterrupt from None
        raise


def save_checkpoint(path: Path, *, model: torch.nn.Module, optimizer, scheduler, scaler, iteration: int,
                    epoch: int, batch_in_epoch: int, config: Dict[str, Any], train_seconds: float) -> None:
    """Model, optimiser, scheduler, AMP scaler, RNG states, position in the data order and ``train_seconds``, the
    wall-clock seconds of training up to ``iteration`` summed over the sittings that produced it."""
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
            "train_seconds": train_seconds,
        },
        path,
    )


def save_model(path: Path, model: torch.nn.Module, config: Mapping[str, Any]) -> None:
    """``model_final.pt``: the weights and the config they were trained with."""
    atomic_torch_save({"model": model.state_dict(), "config": config}, path)


def read_torch_file(path: Path, map_location: Optional[torch.device] = None, what: str = "checkpoint") -> Any:
    """``torch.load`` of ``path``; a missing file is ``FileNotFoundError``, an unreadable one a ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        # our own files hold numpy RNG state and config dicts, so full unpickling is needed
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - empty, truncated, text or foreign: all reported with the path
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{what} {path} could not be read ({type(err).__name__}: {detail})") from None


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in value.items())


def load_checkpoint(path: Path, map_location: Optional[torch.device] = None) -> Dict[str, Any]:
    """A training checkpoint (``last.pt``), checked to hold at least the model and the iteration."""
    path = Path(path)
    checkpoint = read_torch_file(path, map_location)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a training checkpoint")
    missing = {"model", "iteration"} - set(checkpoint)
    if missing:
        raise ValueError(f"checkpoint {path} lacks the fields {sorted(missing)}")
    return checkpoint


def load_model_state(path: Path) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Any]]]:
    """``(state_dict, config)`` of ``model_final.pt``, ``last.pt`` or a bare state dict (config ``None``)."""
    path = Path(path)
    content = read_torch_file(path, map_location="cpu")
    if isinstance(content, dict) and "model" in content:
        state, config = content["model"], content.get("config")
    else:
        state, config = content, None
    if not _is_state_dict(state):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__} that is not a state dict of tensors "
                         "(expected model_final.pt, last.pt or a model's state_dict)")
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"checkpoint {path}: its config is a {type(config).__name__}, not a mapping")
    return state, config


_MISSING = object()


def _flatten(config: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(config, Mapping) and config:
        flat: Dict[str, Any] = {}
        for key, value in config.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: config}


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any],
                       allowed: Sequence[str] = ()) -> List[str]:
    """Dotted fields whose values differ between two configs, except those under an ``allowed`` prefix.

    A field one config lacks counts as its default (:data:`~harmonicdet.engine.config.DEFAULTS`),
    so configs written before a field was added still compare equal.
    """
    from harmonicdet.engine.config import DEFAULTS

    defaults = _flatten(DEFAULTS)
    old, new = _flatten(stored), _flatten(current)
    differing = []
    for key in sorted(set(old) | set(new)):
        if any(key == a or key.startswith(a + ".") for a in allowed):
            continue
        a, b = old.get(key, defaults.get(key, _MISSING)), new.get(key, defaults.get(key, _MISSING))
        if a != b:
            differing.append(key)
    return differing


def _shown(config: Mapping[str, Any], key: str) -> str:
    value = _flatten(config).get(key, _MISSING)
    return "(unset)" if value is _MISSING else repr(value)


def scene_paths_filled(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config`` with empty data splits pointed at its ``data.scenes``, as training resolves them."""
    data = config.get("data")
    scenes = data.get("scenes") if isinstance(data, Mapping) else None
    if not isinstance(scenes, Mapping) or "out" not in scenes:
        return config
    splits = {split: data.get(split) or scenes_paths(scenes["out"], split) for split in ("train", "val")}
    return {**config, "data": {**data, **splits}}


def check_resume_config(stored: Optional[Mapping[str, Any]], current: Mapping[str, Any], path: Path) -> None:
    """Refuse to resume the checkpoint at ``path`` under a config that changes more than :data:`RESUME_MAY_DIFFER`."""
    if not isinstance(stored, Mapping):
        raise ValueError(f"checkpoint {path} holds no config to compare with; it cannot be resumed safely")
    differing = config_differences(scene_paths_filled(stored), scene_paths_filled(current), RESUME_MAY_DIFFER)
    if differing:
        shown = "; ".join(f"{k}: {_shown(stored, k)} -> {_shown(current, k)}" for k in differing[:5])
        more = f" and {len(differing) - 5} more" if len(differing) > 5 else ""
        raise ValueError(f"--resume: the config differs from the one {path} was trained with in {shown}{more}; "
                         f"only {', '.join(RESUME_MAY_DIFFER)} may change (choose another output_dir for a new run)")


def check_model_config(stored: Optional[Mapping[str, Any]], current: Mapping[str, Any], path: Path) -> None:
    """Refuse a ``model`` config that differs from the checkpoint's in :data:`MODEL_FIELDS` (no stored config: no check)."""
    if stored is None:
        return
    stored_model, model = stored.get("model", {}), current["model"]
    differing = [f"model.{k}" for k in MODEL_FIELDS
                 if config_differences({k: stored_model.get(k, _MISSING)}, {k: model.get(k, _MISSING)})]
    if differing:
        shown = "; ".join(f"{k}: {stored_model.get(k.split('.', 1)[1])!r} in the checkpoint, "
                          f"{model.get(k.split('.', 1)[1])!r} in the config" for k in differing)
        raise ValueError(f"checkpoint {path} was trained with another model: {shown}")


def interruption_message(out: Path) -> str:
    """What a user needs after Ctrl-C: the iteration reached (``metrics.jsonl``) and where ``--resume`` starts."""
    out = Path(out)
    reached = 0
    try:
        records = read_jsonl(out / "metrics.jsonl") if (out / "metrics.jsonl").is_file() else []
        reached = max((int(r.get("iteration", 0)) for r in records), default=0)
    except (ValueError, OSError):
        pass
    try:
        resume_at = int(load_checkpoint(out / LAST, map_location="cpu")["iteration"]) if (out / LAST).is_file() \
            else None
    except (ValueError, OSError, TypeError):
        resume_at = None
    if resume_at is None:
        return f"interrupted at iteration {reached}; no checkpoint yet: run again without --resume to start over"
    return f"interrupted at iteration {reached}; --resume continues from iteration {resume_at}"
