"""Pre-NMS candidates: a detector's eval output with NMS switched off, for the NMS ranking loss."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


def _nms_owner(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    roi_heads = getattr(model, "roi_heads", None)
    owner = roi_heads if roi_heads is not None else model
    if not hasattr(owner, "nms_thresh") or not hasattr(owner, "detections_per_img"):
        raise ValueError(f"{type(model).__name__} has no nms_thresh/detections_per_img to switch NMS off")
    return owner


@contextmanager
def pre_nms_candidates(model: nn.Module, max_per_image: int = 1000) -> Iterator[nn.Module]:
    """Inside the block, ``model`` (eval mode) returns its scored candidates before NMS.

    NMS with an IoU threshold of 1 suppresses nothing, so the output is the
    candidates that passed the score threshold and top-k, up to ``max_per_image``.
    The instance's settings are restored on exit, also after an error.
    """
    owner = _nms_owner(model)
    saved = owner.nms_thresh, owner.detections_per_img
    owner.nms_thresh, owner.detections_per_img = 1.0, max_per_image
    try:
        yield model
    finally:
        owner.nms_thresh, owner.detections_per_img = saved
