"""Train- and eval-time transforms, with boxes moved by ``torchvision.transforms.v2`` and ``tv_tensors``."""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def build_transforms(train: bool, *, hflip: bool = True) -> v2.Compose:
    """``(image, target)`` transforms for :class:`~harmonicdet.data.DetectionDataset` samples.

    Training: a random horizontal flip (``hflip``). Both train and eval then clamp boxes to
    the image, convert the image to float32 in 0-1 (``v2.ToDtype(scale=True)``) and drop
    boxes left empty (``v2.SanitizeBoundingBoxes``, which drops their labels too).
    Boxes are moved by v2 through their ``tv_tensors.BoundingBoxes`` type, never by hand.

    Neither resizes: the detector's own ``GeneralizedRCNNTransform``-style transform
    resizes and maps its outputs back to the original image coordinates, the
    coordinates of :meth:`~harmonicdet.data.DetectionDataset.coco_ground_truth`.
    """
    steps = []
    if train and hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    steps += [v2.ClampBoundingBoxes(), v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes()]
    return v2.Compose(steps)
