"""What every HarmonicDet detection dataset is: parsed, validated records served as torchvision targets.

A dataset holds one :class:`ImageRecord` per image. ``__getitem__`` returns
``(image, target)`` as torchvision's detection models take them: a
``tv_tensors.Image`` (float, 0-1) and ``{"boxes": BoundingBoxes (xyxy),
"labels": int64 contiguous 1..K (0 is background), "image_id": int}``. Objects
marked ignore (COCO crowd, VOC difficult) are not training targets but stay in
:meth:`DetectionDataset.coco_ground_truth`, flagged ``iscrowd=1``: pycocotools
and faster-coco-eval derive their per-object ``ignore`` flag from ``iscrowd``
(a separate ``"ignore"`` key is overwritten by pycocotools), so detections
matched to these objects count neither as true nor as false positives.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from harmonicdet.images import rgb8


@dataclass
class ImageRecord:
    image_id: int
    path: Path
    width: int
    height: int
    boxes: List[List[float]] = field(default_factory=list)  # xyxy, original pixels
    labels: List[int] = field(default_factory=list)  # contiguous, 1..K
    ignore: List[bool] = field(default_factory=list)  # crowd / difficult
    areas: List[float] = field(default_factory=list)  # for COCO's small/medium/large split
    file_name: Optional[str] = None  # as the annotation file names it (default: ``path.name``)


class InvalidAnnotation(ValueError):
    """An annotation that does not describe a valid object; the message names its file and entry."""


class DetectionDataset(Dataset):
    """Base class: subclasses parse their format into ``self.records`` through :meth:`_add_object`.

    Attributes:
        classes: class names; label ``i + 1`` is ``classes[i]`` (0 is background).
        label_to_category_id: contiguous label -> category id of :meth:`coco_ground_truth`.
        num_skipped: annotations skipped (with a warning) under ``skip_invalid``.
        records: one :class:`ImageRecord` per image, boxes in original pixels.

    ``__getitem__`` applies ``transforms(image, target)`` to a uint8 ``tv_tensors.Image``
    (:func:`harmonicdet.data.build_transforms` converts it to float 0-1); without
    transforms the image is returned as float32 in 0-1.
    """

    def __init__(self, classes: Sequence[str], category_ids: Sequence[int], *,
                 transforms: Optional[Callable] = None, skip_invalid: bool = False) -> None:
        self.classes: List[str] = list(classes)
        self.label_to_category_id: Dict[int, int] = {i + 1: int(c) for i, c in enumerate(category_ids)}
        self.transforms = transforms
        self.skip_invalid = skip_invalid
        self.num_skipped = 0
        self.records: List[ImageRecord] = []

    def _reject(self, message: str) -> None:
        """Raise, or with ``skip_invalid`` warn and count."""
        if not self.skip_invalid:
            raise InvalidAnnotation(message)
        self.num_skipped += 1
        warnings.warn(f"skipped: {message}", stacklevel=3)

    def _add_object(self, record: ImageRecord, where: str, box_xyxy: Sequence[float], label: int,
                    ignore: bool, area: Optional[float] = None) -> None:
        x1, y1, x2, y2 = (float(v) for v in box_xyxy)
        if not all(np.isfinite([x1, y1, x2, y2])):
            return self._reject(f"{where}: box {list(box_xyxy)} is not finite")
        if x2 <= x1 or y2 <= y1:
            return self._reject(f"{where}: box {[x1, y1, x2, y2]} (xyxy) has non-positive width or height")
        if x2 <= 0 or y2 <= 0 or x1 >= record.width or y1 >= record.height:
            return self._reject(f"{where}: box {[x1, y1, x2, y2]} (xyxy) lies entirely outside its "
                                f"{record.width}x{record.height} image")
        if not 1 <= label <= len(self.classes):
            return self._reject(f"{where}: label {label} is outside the {len(self.classes)} classes")
        record.boxes.append([x1, y1, x2, y2])
        record.labels.append(label)
        record.ignore.append(bool(ignore))
        record.areas.append(float(area) if area is not None else (x2 - x1) * (y2 - y1))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_objects(self) -> int:
        """Objects that are training targets (not ignored), over all images."""
        return sum(not ignored for record in self.records for ignored in record.ignore)

    def first(self, count: int) -> "DetectionDataset":
        """The same dataset restricted to its first ``count`` images (all of them if it has fewer)."""
        subset = copy.copy(self)
        subset.records = self.records[:count]
        return subset

    def load_image(self, index: int) -> Image.Image:
        record = self.records[index]
        try:
            with Image.open(record.path) as image:
                return rgb8(image)
        # ImportError: Ultralytics, once imported, patches Image.open to load pi-heif on an unidentified file
        except (OSError, ValueError, ImportError) as err:
            raise ValueError(f"image {record.path} (image_id {record.image_id}) could not be read: {err}") from None

    def __getitem__(self, index: int) -> Tuple[Any, Dict[str, Any]]:
        record = self.records[index]
        pil = self.load_image(index)
        if pil.size != (record.width, record.height):
            raise ValueError(f"image {record.path} is {pil.size[0]}x{pil.size[1]} but its annotation "
                             f"says {record.width}x{record.height}")
        keep = [i for i, ignored in enumerate(record.ignore) if not ignored]
        image = tv_tensors.Image(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
        if self.transforms is None:  # the transforms end in ToDtype(float32, scale=True); without them, do it here
            image = tv_tensors.wrap(image.float().div_(255), like=image)
        boxes = torch.tensor([record.boxes[i] for i in keep], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(record.height, record.width)),
            "labels": torch.tensor([record.labels[i] for i in keep], dtype=torch.int64),
            "image_id": record.image_id,
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def coco_ground_truth(self) -> Dict[str, Any]:
        """The dataset as a COCO ground-truth dict (original coordinates; ignored objects as ``iscrowd=1``)."""
        images, annotations = [], []
        for record in self.records:
            images.append({"id": record.image_id, "file_name": record.file_name or record.path.name,
                           "width": record.width, "height": record.height})
            for box, label, ignore, area in zip(record.boxes, record.labels, record.ignore, record.areas):
                annotations.append({"id": len(annotations) + 1, "image_id": record.image_id,
                                    "category_id": self.label_to_category_id[label],
                                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "area": area,
                                    "iscrowd": int(ignore)})
        categories = [{"id": cid, "name": self.classes[label - 1]} for label, cid in self.label_to_category_id.items()]
        return {"images": images, "annotations": annotations, "categories": categories}


def collate(batch: Sequence[Tuple[Any, Dict[str, Any]]]) -> Tuple[List[Any], List[Dict[str, Any]]]:
    """``(images, targets)`` lists, the input torchvision's detection models take."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
