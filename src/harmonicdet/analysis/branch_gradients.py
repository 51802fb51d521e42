"""Gradient norms per branch: how hard each loss term pulls on each part of a detector.

For one batch in training mode every loss term ``L_k`` the detector returns is
back-propagated on its own, and for every branch ``g`` (a group of parameters)
the L2 norm ``||dL_k / d theta_g||`` is taken. The branches of a torchvision
detector are its ``backbone`` and each child module of its other top-level
modules: FCOS / RetinaNet ``head.classification_head`` and
``head.regression_head``; Faster R-CNN ``rpn.head``, ``roi_heads.box_head`` and
``roi_heads.box_predictor``.

Two readings matter for the Harmonic loss (Eq. S-1): a term's norm on a branch it
does not own is the coupling (with ``detach_factors=False`` the classification
term reaches the regression branch through ``beta_r``, and the box term the
classification branch through ``beta_c``); and on the shared backbone the cosine
between two terms' gradients says whether the tasks pull together (> 0) or apart.
"""

from __future__ import annotations

import itertools
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["branch_gradient_norms", "detector_branches"]


def detector_branches(model: nn.Module) -> Dict[str, List[nn.Parameter]]:
    """``{branch name: trainable parameters}``: ``backbone``, then each child of the other top-level modules."""
    branches: Dict[str, List[nn.Parameter]] = {}
    for name, module in model.named_children():
        parts = [(name, module)] if name == "backbone" else [
            (f"{name}.{child_name}", child) for child_name, child in module.named_children()]
        for part_name, part in parts:
            params = [p for p in part.parameters() if p.requires_grad]
            if params:
                branches[part_name] = params
    if "backbone" not in branches:
        raise ValueError(f"{type(model).__name__} has no trainable 'backbone' module")
    return branches


def branch_gradient_norms(model: nn.Module, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]],
                          branches: Optional[Mapping[str, Sequence[nn.Parameter]]] = None) -> Dict[str, Dict]:
    """Per loss term, the gradient norm on every branch, and the terms' pairwise cosine on the backbone.

    Args:
        model: a torchvision-style detector; it is put in training mode (as in training, BatchNorm uses
            the batch statistics and updates its running estimates) and its ``.grad`` fields are left empty.
        images, targets: one batch, as the detector's ``forward`` takes it.
        branches: ``{name: parameters}``; default :func:`detector_branches`. Needs a ``"backbone"`` entry.

    Returns:
        ``{"norms": {term: {branch: float}}, "backbone_cosine": {"term_a|term_b": float}}``; the cosine
        is ``nan``-free: a pair where either gradient is zero gets ``0.0``.
    """
    branches = dict(branches) if branches is not None else detector_branches(model)
    if "backbone" not in branches:
        raise ValueError(f"branches must include 'backbone', got {sorted(branches)}")
    model.train()
    losses = model(list(images), [dict(t) for t in targets])
    terms = {name: value for name, value in losses.items() if value.requires_grad}
    if not terms:
        raise ValueError("the model returned no differentiable loss term")
    for name, value in terms.items():
        if not torch.isfinite(value):
            raise ValueError(f"loss term {name!r} is not finite ({value.item()})")

    names = list(branches)
    flat = [p for name in names for p in branches[name]]
    sizes = [len(branches[name]) for name in names]
    norms: Dict[str, Dict[str, float]] = {}
    backbone_grads: Dict[str, Tensor] = {}
    terms_left = len(terms)
    for term, value in terms.items():
        terms_left -= 1
        grads = torch.autograd.grad(value, flat, retain_graph=terms_left > 0, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(flat, grads)]
        per_branch, start = {}, 0
        for name, size in zip(names, sizes):
            vector = torch.cat([g.reshape(-1) for g in grads[start:start + size]])
            per_branch[name] = float(vector.norm())
            if name == "backbone":
                backbone_grads[term] = vector
            start += size
        norms[term] = per_branch
    cosine = {}
    for a, b in itertools.combinations(terms, 2):
        ga, gb = backbone_grads[a], backbone_grads[b]
        denominator = float(ga.norm() * gb.norm())
        cosine[f"{a}|{b}"] = float(ga @ gb) / denominator if denominator > 0 else 0.0
    return {"norms": norms, "backbone_cosine": cosine}
