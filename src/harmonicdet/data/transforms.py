"""Train- and eval-time transforms, with boxes moved by ``torchvision.transforms.v2`` and ``tv_tensors``."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torchvision.transforms import v2


def build_transforms(train: bool, *, hflip: bool = True, image_size: Optional[int] = None,
                     scale_range: Sequence[float] = (0.8, 1.2)) -> v2.Compose:
    """``(image, target)`` transforms: training adds a horizontal flip and, with ``image_size``, a random
    resize of the shorter side within ``scale_range`` of it. Evaluation does not resize: the detector's
    own transform does, and maps its outputs back to the original coordinates."""
    steps = []
    if train and hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if train and image_size is not None:
        low, high = (int(round(image_size * s)) for s in scale_range)
        steps.append(v2.RandomShortestSize(list(range(low, high + 1, 8)) or [image_size], antialias=True))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes()]
    return v2.Compose(steps)
