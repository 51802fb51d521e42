"""COCO-format detection datasets: an instances JSON and a folder of images."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from harmonicdet.checks import is_int, is_number

from .base import DetectionDataset, ImageRecord, InvalidAnnotation


class CocoDetectionDataset(DetectionDataset):
    """A COCO instances file (``images``, ``annotations``, ``categories``) over ``img_dir``.

    Categories keep their names and ids; labels are their contiguous positions
    1..K in id order. Crowd objects (``iscrowd=1``) are kept for evaluation only.
    Every annotation is validated on load; errors name the file and the entry
    (``instances.json: annotations[7] (id 12): ...``); with ``skip_invalid`` a bad
    annotation is skipped with a warning and counted in ``num_skipped``. Problems
    with an image entry or a category (missing field, missing file, duplicate id)
    always raise: skipping them would silently change the dataset. Images are
    checked to exist on load and decoded in ``__getitem__`` (an unreadable one, or
    one whose size differs from its entry, raises ``ValueError`` naming it).

    Args:
        img_dir: folder the images' ``file_name`` are relative to.
        ann_file: the instances JSON.
        transforms: ``transforms.v2``-style callable ``(image, target) -> (image, target)``.
        skip_invalid: skip bad annotations instead of raising.
    """

    def __init__(self, img_dir: str | os.PathLike, ann_file: str | os.PathLike, *,
                 transforms: Optional[Callable] = None, skip_invalid: bool = False) -> None:
        self.img_dir, self.ann_file = Path(img_dir), Path(ann_file)
        name = self.ann_file.name
        try:
            data = json.loads(self.ann_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"annotation file {self.ann_file} does not exist") from None
        except ValueError as err:
            raise ValueError(f"{self.ann_file}: not valid JSON ({err})") from None
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key) if isinstance(data, dict) else None, list):
                raise InvalidAnnotation(f"{name}: missing the list {key!r}")
        categories = []
        for i, category in enumerate(data["categories"]):
            where = f"{name}: categories[{i}]"
            cid, cname = self._fields(category, where, ("id", "name"))
            if not is_int(cid) or not isinstance(cname, str):
                raise InvalidAnnotation(f"{where}: id must be an integer and name a string, got {cid!r}, {cname!r}")
            if cid in {c for c, _ in categories}:
                raise InvalidAnnotation(f"{where}: duplicate category id {cid}")
            categories.append((cid, cname))
        categories.sort()
        label_of = {cid: i + 1 for i, (cid, _) in enumerate(categories)}
        super().__init__([n for _, n in categories], [cid for cid, _ in categories],
                         transforms=transforms, skip_invalid=skip_invalid)
        by_id: Dict[int, ImageRecord] = {}
        for i, image in enumerate(data["images"]):
            where = f"{name}: images[{i}]"
            image_id, file_name, width, height = self._fields(image, where, ("id", "file_name", "width", "height"))
            if not is_int(image_id):
                raise InvalidAnnotation(f"{where}: id must be an integer, got {image_id!r}")
            if not isinstance(file_name, str) or not file_name:
                raise InvalidAnnotation(f"{where} (id {image_id}): file_name must be a non-empty string, "
                                        f"got {file_name!r}")
            path = self.img_dir / file_name
            if not path.is_file():
                raise FileNotFoundError(f"{where} (id {image_id}): image file {path} does not exist")
            if image_id in by_id:
                raise InvalidAnnotation(f"{where}: duplicate image id {image_id}")
            if not all(isinstance(v, (int, float)) and v > 0 for v in (width, height)):
                raise InvalidAnnotation(f"{where} (id {image_id}): width and height must be positive numbers, "
                                        f"got {width!r} x {height!r}")
            by_id[image_id] = ImageRecord(int(image_id), path, int(width), int(height), file_name=str(file_name))
        for i, ann in enumerate(data["annotations"]):
            where = f"{name}: annotations[{i}] (id {ann.get('id') if isinstance(ann, dict) else None})"
            try:
                image_id, category_id, bbox = self._fields(ann, where, ("image_id", "category_id", "bbox"))
                if not is_int(image_id) or image_id not in by_id:
                    raise InvalidAnnotation(f"{where}: image_id {image_id!r} is not in images")
                if not is_int(category_id) or category_id not in label_of:
                    raise InvalidAnnotation(f"{where}: category_id {category_id!r} is not in categories")
                if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
                    raise InvalidAnnotation(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
                if bbox[2] <= 0 or bbox[3] <= 0:
                    side = "width" if bbox[2] <= 0 else "height"
                    raise InvalidAnnotation(f"{where}: bbox {bbox} (x, y, w, h) has non-positive {side}")
            except InvalidAnnotation as err:
                self._reject(str(err))
                continue
            x, y, w, h = bbox
            area = ann.get("area")  # COCO's area is the mask's; without a usable one, the box's
            self._add_object(by_id[image_id], where, [x, y, x + w, y + h], label_of[category_id],
                             ignore=bool(ann.get("iscrowd", 0)),
                             area=area if is_number(area) and area > 0 else None)
        self.records = list(by_id.values())

    @staticmethod
    def _fields(entry: Any, where: str, keys) -> tuple:
        if not isinstance(entry, dict):
            raise InvalidAnnotation(f"{where}: expected an object, got {type(entry).__name__}")
        missing = [k for k in keys if k not in entry]
        if missing:
            raise InvalidAnnotation(f"{where}: missing field(s) {', '.join(missing)}")
        return tuple(entry[k] for k in keys)
