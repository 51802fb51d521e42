"""The supplementary figures, computed by autograd through the library's own losses.

Every surface here is the gradient of :func:`harmonicdet.losses.harmonic_loss` or
the value of :func:`harmonicdet.losses.harmonic_iou_loss`, never a typed-in
formula, so the figures are evidence that the code is the paper:

* Fig. 1: ``|dL/dt|`` over ``(p, t)``; (a) Harmonic loss (Eq. S-5), (b) CE + SmoothL1.
* Fig. 2: ``dL_Har/dp`` over ``(p, L)`` (Eq. S-10).
* Fig. 3: training-loss curves of real runs (from ``metrics.jsonl`` files).
* Fig. 4: ``L_HIoU`` against IoU for several ``gamma`` (Eq. S-11).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from harmonicdet.checks import is_finite_number
from harmonicdet.io import atomic_write, read_jsonl
from harmonicdet.losses import harmonic_iou_loss, harmonic_loss

from .plotting import new_figure, save_figure  # also importable from here, their first home

DEFAULT_GAMMAS = (0.0, 0.25, 0.5, 0.8, 1.0)


def offset_gradient_surface(
    p: torch.Tensor, t: torch.Tensor, *, harmonic: bool = True, smooth_l1_beta: float = 1.0
) -> torch.Tensor:
    """``|dL/dt|`` on the grid ``p x t`` with ``CE = -log p`` and ``L = SmoothL1(t)`` (Fig. 1).

    ``harmonic=True`` differentiates :func:`harmonic_loss` (Eq. S-5); ``False`` the
    standard ``CE + SmoothL1``, whose gradient does not depend on ``p``.

    Returns:
        Tensor[len(p), len(t)], float64.
    """
    pp, tt = torch.meshgrid(p.double(), t.double(), indexing="ij")
    tt = tt.clone().requires_grad_(True)
    ce = -torch.log(pp)
    loc = F.smooth_l1_loss(tt, torch.zeros_like(tt), beta=smooth_l1_beta, reduction="none")
    loss = harmonic_loss(ce.flatten(), loc.flatten()) if harmonic else ce + loc
    (grad,) = torch.autograd.grad(loss.sum(), tt)
    return grad.abs()


def probability_gradient_surface(p: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """``dL_Har/dp`` on the grid ``p x L`` with ``CE = -log p`` (Fig. 2, Eq. S-10).

    Returns:
        Tensor[len(p), len(loc)], float64.
    """
    pp, ll = torch.meshgrid(p.double(), loc.double(), indexing="ij")
    pp = pp.clone().requires_grad_(True)
    loss = harmonic_loss(-torch.log(pp).flatten(), ll.flatten())
    (grad,) = torch.autograd.grad(loss.sum(), pp)
    return grad


def harmonic_iou_curves(iou: torch.Tensor, gammas: Sequence[float]) -> torch.Tensor:
    """``L_HIoU`` of box pairs whose IoU is ``iou`` (Fig. 4, Eq. S-11).

    The pairs are a unit square and ``[0, 0, s, 1]`` inside it, whose IoU is ``s``.

    Returns:
        Tensor[len(gammas), len(iou)], float64.
    """
    s = iou.double()
    pred = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64).expand(len(s), 4)
    target = torch.stack([torch.zeros_like(s), torch.zeros_like(s), s, torch.ones_like(s)], dim=1)
    return torch.stack([harmonic_iou_loss(pred, target, g, eps=0.0) for g in gammas])


def figure_data(gammas: Sequence[float] = DEFAULT_GAMMAS, resolution: int = 121) -> Dict[str, np.ndarray]:
    """All arrays the figures plot, keyed by name (saved beside the PNGs as ``figure_data.npz``)."""
    p = torch.linspace(0.01, 1.0, resolution, dtype=torch.float64)
    t = torch.linspace(-3.0, 3.0, resolution, dtype=torch.float64)
    loc = torch.linspace(0.0, 5.0, resolution, dtype=torch.float64)
    iou = torch.linspace(0.0, 1.0, resolution, dtype=torch.float64)
    return {
        "p": p.numpy(),
        "t": t.numpy(),
        "loc": loc.numpy(),
        "iou": iou.numpy(),
        "gammas": np.asarray(gammas, dtype=np.float64),
        "fig1a_harmonic_dt": offset_gradient_surface(p, t, harmonic=True).numpy(),
        "fig1b_standard_dt": offset_gradient_surface(p, t, harmonic=False).numpy(),
        "fig2_harmonic_dp": probability_gradient_surface(p, loc).numpy(),
        "fig4_hiou": harmonic_iou_curves(iou, gammas).detach().numpy(),
    }


def _heatmap(ax, z, x, y, title, xlabel, ylabel, cmap, zero_contour=False):
    mesh = ax.pcolormesh(x, y, z, cmap=cmap, shading="auto")
    ax.figure.colorbar(mesh, ax=ax)
    if zero_contour and z.min() < 0 < z.max():
        ax.contour(x, y, z, levels=[0.0], colors="white", linewidths=1.5)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def plot_figures(data: Mapping[str, np.ndarray], out_dir: Path) -> List[Path]:
    """Write ``fig1_offset_gradient.png``, ``fig2_probability_gradient.png`` and ``fig4_hiou.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    p, t, loc, iou = data["p"], data["t"], data["loc"], data["iou"]
    paths = []

    fig = new_figure(11, 4.2)
    ax_a, ax_b = fig.subplots(1, 2)
    vmax = max(data["fig1a_harmonic_dt"].max(), data["fig1b_standard_dt"].max())
    for ax, key, title in (
        (ax_a, "fig1a_harmonic_dt", "(a) Harmonic loss, |dL_Har/dt| (Eq. S-5)"),
        (ax_b, "fig1b_standard_dt", "(b) CE + SmoothL1, |dL/dt| (flat in p)"),
    ):
        mesh = ax.pcolormesh(t, p, data[key], cmap="viridis", shading="auto", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("regression offset t = d - d_hat")
        ax.set_ylabel("ground-truth class probability p")
    fig.colorbar(mesh, ax=[ax_a, ax_b], label="|dL/dt|")
    fig.suptitle("Supplementary Fig. 1: gradient w.r.t. the regression offset (SmoothL1, beta = 1)")
    paths.append(save_figure(fig, out_dir / "fig1_offset_gradient.png"))

    fig = new_figure(6.2, 4.6)
    ax = fig.subplots()
    z = np.clip(data["fig2_harmonic_dp"], -20, None)  # -(1+e^-L)/p diverges at p -> 0
    _heatmap(ax, z, loc, p, "Supplementary Fig. 2: dL_Har/dp (Eq. S-10), clipped at -20\n"
             "white: dL/dp = 0 (Eq. S-9 boundary)", "localisation loss L", "probability p", "magma",
             zero_contour=True)
    paths.append(save_figure(fig, out_dir / "fig2_probability_gradient.png"))

    fig = new_figure(6.2, 4.6)
    ax = fig.subplots()
    for gamma, curve in zip(data["gammas"], data["fig4_hiou"]):
        ax.plot(iou, curve, label=f"gamma = {gamma:g}" + (" (plain IoU loss)" if gamma == 0 else ""))
    ax.set_xlabel("IoU")
    ax.set_ylabel("L_HIoU = (1 + IoU)^gamma (1 - IoU)")
    ax.set_title("Supplementary Fig. 4: Harmonic IoU loss (Eq. S-11)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(save_figure(fig, out_dir / "fig4_hiou.png"))
    return paths


def read_loss_curve(metrics_path: Path, key: str = "loss") -> Tuple[np.ndarray, np.ndarray]:
    """``(iterations, values)`` of ``key`` from a training run's ``metrics.jsonl`` (or its ``.gz`` copy), read by
    :func:`harmonicdet.io.read_jsonl`; records without ``key`` (e.g. evaluation records) are skipped."""
    iterations, values = [], []
    for number, record in enumerate(read_jsonl(metrics_path), start=1):
        if key in record:
            if "iteration" not in record:
                raise ValueError(f"{metrics_path}: record {number} with {key!r} has no 'iteration' field")
            iterations.append(int(record["iteration"]))
            values.append(float(record[key]))
    if not values:
        raise ValueError(f"{metrics_path}: no record has the field {key!r}")
    return np.asarray(iterations), np.asarray(values)


def plot_loss_curves(
    runs: Iterable[Tuple[str, Path]], out_path: Path, key: str = "loss", smooth: int = 20
) -> Path:
    """Supplementary Fig. 3: training-loss curves of one or more runs (moving average of ``smooth`` iterations)."""
    fig = new_figure(6.8, 4.4)
    ax = fig.subplots()
    for label, metrics_path in runs:
        it, val = read_loss_curve(Path(metrics_path), key)
        ax.plot(it, val, alpha=0.25, linewidth=0.8)
        if len(val) >= smooth > 1:
            kernel = np.ones(smooth) / smooth
            ax.plot(it[smooth - 1 :], np.convolve(val, kernel, mode="valid"), color=ax.lines[-1].get_color(), label=label)
        else:
            ax.lines[-1].set_label(label)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"training {key}")
    ax.set_title("Supplementary Fig. 3: training loss", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, out_path)


def write_figures(out_dir: Path, gammas: Sequence[float] = DEFAULT_GAMMAS) -> List[Path]:
    """Compute :func:`figure_data`, save it as ``figure_data.npz`` and plot Fig. 1, 2 and 4."""
    if len(gammas) == 0 or any(not is_finite_number(g) for g in gammas):
        raise ValueError(f"gammas must be finite numbers, got {list(gammas)}")
    data = figure_data(gammas)
    paths = plot_figures(data, out_dir)
    npz = out_dir / "figure_data.npz"
    with atomic_write(npz) as f:
        np.savez(f, **data)
    return paths + [npz]
