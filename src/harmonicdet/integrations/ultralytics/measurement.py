"""Measurements of the Harmonic loss inside YOLO training: what the factors reach over TAL's foreground anchors,
and the step time of each loss side by side."""

from __future__ import annotations

import statistics
import time
from typing import Any, Dict, List, Mapping, Optional

import torch

from harmonicdet.losses.options import HarmonicOptions

__all__ = ["bench_steps", "factor_measurement"]


def factor_measurement(anchors: Mapping[str, Any]) -> Dict[str, Any]:
    """What the candidate factors reach over foreground anchors (the decisions of the integration's docstring).

    ``beta_c``: BCE against a soft target ``t`` is at least the target's entropy ``H(t)``, so
    ``exp(-BCE) <= exp(-H(t))`` (the ceiling, ``exp(-BCE) / exp(-KL)``) even for a perfect
    prediction, while ``exp(-KL)`` reaches 1. Reported for the anchors with ``t >= 0.3`` and for
    those with ``t >= 0.1`` predicted within 0.05 of their target: medians of ``exp(-KL)`` (used),
    ``exp(-BCE)`` and the ceiling. ``beta_r`` with the gains outside vs inside the exponent:
    quantiles p10/p50/p90 (a factor ``1 + beta`` that stays at 1 couples nothing).

    Args:
        anchors: float tensors over the same anchors: ``target``, ``prob``, ``beta_c``, ``beta_c_bce``,
            ``beta_r``, ``beta_r_gains_inside``.
    """
    t, p = anchors["target"], anchors["prob"]
    out: Dict[str, Any] = {"num_anchors": int(t.numel()), "target_quantiles": _quantiles(t)}
    for name, mask in (("target_ge_0.3", t >= 0.3), ("target_ge_0.1_predicted", (t >= 0.1) & ((p - t).abs() < 0.05))):
        entry: Dict[str, Any] = {"num_anchors": int(mask.sum())}
        if mask.any():
            ceiling = anchors["beta_c_bce"][mask] / anchors["beta_c"][mask].clamp(min=1e-12)
            entry.update({"beta_c_median": float(anchors["beta_c"][mask].median()),
                          "beta_c_bce_median": float(anchors["beta_c_bce"][mask].median()),
                          "ceiling_median": float(ceiling.median())})
        out[name] = entry
    for key in ("beta_r", "beta_r_gains_inside"):
        out[key] = {"quantiles": _quantiles(anchors[key])}
    return out


def _quantiles(x: Any) -> Dict[str, float]:
    q = torch.quantile(x.double()[:1_000_000], torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2])}


def bench_steps(model_yaml: str, options: Mapping[str, Optional[HarmonicOptions]], reps: int, imgsz: int,
                batch: int) -> Dict[str, Any]:
    """Median time of a training step (forward, loss, backward) and of the loss alone, per named loss ``options``
    (``None``: Ultralytics' own loss).

    The variants alternate on the same model and batch (random images, 4 boxes each), so a
    shared machine's load affects them alike.
    """
    from ultralytics.cfg import get_cfg

    from .criterion import build_criterion
    from .trainer import HarmonicDetectionModel

    variants = list(options)
    torch.manual_seed(0)
    model = HarmonicDetectionModel(model_yaml, nc=10, verbose=False)
    model.args = get_cfg()
    model.train()
    img = torch.rand(batch, 3, imgsz, imgsz)
    centres, sizes = 0.2 + 0.6 * torch.rand(batch * 4, 2), 0.12 + 0.32 * torch.rand(batch * 4, 2)
    data = {"img": img, "batch_idx": torch.arange(batch).repeat_interleave(4).float(),
            "cls": torch.randint(0, 10, (batch * 4, 1)).float(), "bboxes": torch.cat([centres, sizes], 1)}
    criteria = {v: build_criterion(model, options[v]) for v in variants}
    step: Dict[str, List[float]] = {v: [] for v in variants}
    loss_only: Dict[str, List[float]] = {v: [] for v in variants}
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
