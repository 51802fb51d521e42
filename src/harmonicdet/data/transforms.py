"""Train- and eval-time transforms, with boxes moved by ``torchvision.transforms.v2`` and ``tv_tensors``."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torchvision.transforms import v2


def build_transforms(train: bool, *, hflip: bool = True, image_size: Optional[int] = None,
                     scale_range: Sequence[float] = (0.8, 1.2)) -> v2.Compose:
    """``(image, target)`` transforms for :class:`~harmonicdet.data.DetectionDataset` samples.

    Training: a random horizontal flip (``hflip``) and, with ``image_size``, a random
    resize of the shorter side to a multiple of 8 within ``scale_range`` of
    ``image_size`` (``v2.RandomShortestSize``). Both train and eval then clamp boxes to
    the image, convert the image to float32 in 0-1 (``v2.ToDtype(scale=True)``) and drop
    boxes left empty (``v2.SanitizeBoundingBoxes``, which drops their labels too).
    Boxes are moved by v2 through their ``tv_tensors.BoundingBoxes`` type, never by hand.

    Evaluation does not resize: the detector's own ``GeneralizedRCNNTransform``-style
    transform resizes and maps its outputs back to the original image coordinates,
    the coordinates of :meth:`~harmonicdet.data.DetectionDataset.coco_ground_truth`.
    """
    steps = []
    if train and hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if train and image_size is not None:
        if image_size <= 0 or len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"image_size must be positive and scale_range (low, high) with 0 < low <= high; "
                             f"got {image_size} and {tuple(scale_range)}")
        low, high = (max(1, int(round(image_size * s))) for s in scale_range)
        sizes = list(range(low, high + 1, 8)) or [image_size]
        steps.append(v2.RandomShortestSize(sizes, antialias=True))
    steps += [v2.ClampBoundingBoxes(), v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes()]
    return v2.Compose(steps)
