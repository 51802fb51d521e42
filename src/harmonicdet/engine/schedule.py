"""Optimiser and per-iteration learning-rate schedule (linear warm-up, then cosine, step or constant)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch


def build_optimizer(model: torch.nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    name = cfg["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"train.optimizer: unknown optimiser {name!r} (valid: sgd, adamw)")


def lr_factor(iteration: int, cfg: Mapping[str, Any]) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based)."""
    max_iters, warmup = cfg["max_iters"], cfg["warmup_iters"]
    name = cfg["schedule"]
    if name == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(iteration, max_iters) / max(1, max_iters)))
    elif name == "step":
        factor = cfg["step_gamma"] ** sum(iteration >= s for s in cfg["steps"])
    elif name == "constant":
        factor = 1.0
    else:
        raise ValueError(f"train.schedule: unknown schedule {name!r} (valid: cosine, step, constant)")
    if iteration < warmup:
        alpha = iteration / warmup
        factor *= cfg["warmup_factor"] * (1 - alpha) + alpha
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any]) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, cfg)  # validates the schedule name before training starts
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
