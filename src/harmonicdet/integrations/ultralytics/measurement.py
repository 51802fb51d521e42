"""Measurements of the Harmonic loss inside YOLO training: what the factors reach over TAL's foreground anchors,
and the step time of each loss side by side."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

from harmonicdet.analysis.consistency import correlations
from harmonicdet.losses.options import HarmonicOptions

__all__ = ["bench_steps", "factor_measurement", "measure_overlap", "tal_overlap", "yolo_batches"]

OVERLAP_BINS = 20  # quantile bins of the TAL target for the share of a weight's variance that t explains


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


def _explained_by_bins(weight: torch.Tensor, t: torch.Tensor, bins: int) -> Optional[float]:
    """The correlation ratio eta^2: the share of ``weight``'s variance between ``bins`` quantile bins of ``t`` (1:
    ``weight`` is a function of ``t``, up to the bins' width; 0: knowing ``t`` says nothing of it)."""
    weight = weight.double()
    total = float(((weight - weight.mean()) ** 2).sum())
    if total == 0:
        return None
    edges = torch.quantile(t.double(), torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1])
    group = torch.bucketize(t.double(), edges)
    counts = torch.bincount(group, minlength=bins).double()
    means = torch.zeros(bins, dtype=torch.float64).index_add_(0, group, weight) / counts.clamp(min=1)
    return float((counts * (means - weight.mean()) ** 2).sum()) / total


def tal_overlap(anchors: Mapping[str, torch.Tensor], bins: int = OVERLAP_BINS) -> Dict[str, Any]:
    """How far the Harmonic weights are already a function of TAL's target, over foreground anchors.

    TAL's target ``t = s^alpha u^beta`` rises with the IoU ``u``, as does the box-quality weight of Eq. S-1;
    if the weights are (nearly) a monotone function of ``t``, the coupling adds little to what TAL gives.
    For each weight, ``1 + beta_r`` (on the classification term) and ``1 + beta_c`` (on the box term), against
    ``t``: Spearman's rank correlation (+-1: a monotone function), Pearson's, and the correlation ratio
    ``eta^2`` over ``bins`` quantile bins of ``t`` (the share of the weight's variance any function of ``t``
    explains). ``None`` where a variable is constant or there are fewer than 2 anchors.

    Args:
        anchors: tensors over the same foreground anchors: ``target`` (``t``), ``beta_r``, ``beta_c``.
    """
    t = anchors["target"].flatten()
    out: Dict[str, Any] = {"num_anchors": int(t.numel())}
    for name, beta in (("cls_weight_1_plus_beta_r", anchors["beta_r"]), ("box_weight_1_plus_beta_c", anchors["beta_c"])):
        weight = 1 + beta.flatten()
        paired = correlations(weight, t)  # the consistency tool's Spearman (average ranks for ties) and Pearson
        out[name] = {"spearman": paired["spearman"], "pearson": paired["pearson"],
                     "eta2": _explained_by_bins(weight, t, bins) if t.numel() >= 2 else None}
    return out


def yolo_batches(data_yaml: Path, split: str, batch: int, limit: int) -> List[Dict[str, torch.Tensor]]:
    """The first ``limit`` images of a YOLO dataset's ``split`` with their labels, as Ultralytics' training
    batches (``img`` in [0, 1], ``batch_idx``, ``cls``, normalised ``bboxes`` cx cy w h), without augmentation;
    every image must have the size of the first (e.g. the scenes' squares)."""
    import numpy as np
    import yaml
    from PIL import Image

    from harmonicdet.data.yolo import read_yolo_labels

    spec = yaml.safe_load(Path(data_yaml).read_text(encoding="utf-8"))
    images = sorted((Path(spec.get("path", Path(data_yaml).parent)) / spec[split]).glob("*.png"))[:limit]
    batches = []
    for start in range(0, len(images), batch):
        pixels, index, classes, boxes = [], [], [], []
        for i, path in enumerate(images[start:start + batch]):
            image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
            pixels.append(torch.from_numpy(image).permute(2, 0, 1))
            labels_file = path.parent.parent.parent / "labels" / path.parent.name / f"{path.stem}.txt"
            labels, xyxy = read_yolo_labels(labels_file, 1.0, 1.0)
            for label, (x0, y0, x1, y1) in zip(labels, xyxy):
                index.append(float(i))
                classes.append([float(label)])
                boxes.append([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
        batches.append({"img": torch.stack(pixels), "batch_idx": torch.tensor(index),
                        "cls": torch.tensor(classes).reshape(-1, 1), "bboxes": torch.tensor(boxes).reshape(-1, 4)})
    return batches


@torch.no_grad()
def measure_overlap(model: torch.nn.Module, batches: List[Mapping[str, torch.Tensor]],
                    options: HarmonicOptions) -> Dict[str, Any]:
    """:func:`tal_overlap` of a trained YOLO ``model`` (any loss: the weights are those the harmonic criterion
    with ``options`` would give) over ``batches`` (:func:`yolo_batches`); the model is left as it was."""
    import copy

    from .criterion import build_criterion, last_anchors

    probe = copy.deepcopy(model).float().train()  # training-mode outputs, as the criterion sees them
    criterion = build_criterion(probe, options)
    probe.criterion = criterion
    collected: List[Dict[str, torch.Tensor]] = []
    for batch in batches:
        criterion(probe(batch["img"]), batch)
        collected.append(last_anchors(probe))
    anchors = {key: torch.cat([a[key] for a in collected]) for key in ("target", "beta_r", "beta_c")}
    return tal_overlap(anchors)
