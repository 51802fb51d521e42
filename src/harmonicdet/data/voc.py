"""Pascal-VOC-format detection datasets: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Optional, Sequence

from .base import DetectionDataset, ImageRecord, InvalidAnnotation

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


class VocDetectionDataset(DetectionDataset):
    """One split of a VOC-layout dataset.

    Labels are positions 1..K in ``classes``; ``label_to_category_id`` maps them to
    the same numbers. Boxes keep VOC's 1-based pixel coordinates as written (as
    torchvision's ``VOCDetection`` does). Difficult objects are not training
    targets and are exported as ``iscrowd=1`` in :meth:`coco_ground_truth`, so COCO
    evaluation ignores detections on them as the VOC protocol does. Errors name
    the XML file and the object index.

    Args:
        root: the folder holding ``Annotations``, ``JPEGImages`` and ``ImageSets``.
        split: the ``ImageSets/Main/<split>.txt`` list (``train``, ``val``, ``trainval``, ``test``).
        classes: class names (default: the 20 VOC classes).
        transforms, skip_invalid: as :class:`CocoDetectionDataset`.
        train: kept for symmetry; difficult objects are ignored in both training and evaluation.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *, classes: Sequence[str] = VOC_CLASSES,
                 transforms: Optional[Callable] = None, skip_invalid: bool = False, train: bool = True) -> None:
        super().__init__(classes, range(1, len(classes) + 1), transforms=transforms, skip_invalid=skip_invalid)
        self.root = Path(root)
        list_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"VOC split list {list_file} does not exist")
        label_of = {name: i + 1 for i, name in enumerate(self.classes)}
        names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        for image_index, name in enumerate(names):
            xml_path = self.root / "Annotations" / f"{name}.xml"
            try:
                tree = ET.parse(xml_path)
            except FileNotFoundError:
                raise FileNotFoundError(f"{list_file.name} line {image_index + 1}: {xml_path} does not exist") from None
            except ET.ParseError as err:
                raise InvalidAnnotation(f"{xml_path}: not valid XML ({err})") from None
            node = tree.getroot()
            file_name = node.findtext("filename") or f"{name}.jpg"
            width, height = node.findtext("size/width"), node.findtext("size/height")
            if width is None or height is None:
                raise InvalidAnnotation(f"{xml_path}: missing size/width or size/height")
            path = self.root / "JPEGImages" / file_name
            if not path.is_file():
                raise FileNotFoundError(f"{xml_path}: image file {path} does not exist")
            record = ImageRecord(image_index + 1, path, int(float(width)), int(float(height)))
            for i, obj in enumerate(node.findall("object")):
                where = f"{xml_path.name}: object[{i}]"
                class_name = obj.findtext("name")
                coords = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
                if class_name is None or None in coords:
                    self._reject(f"{where}: missing name or bndbox/xmin..ymax")
                    continue
                class_name = class_name.strip()
                if class_name not in label_of:
                    self._reject(f"{where}: class {class_name!r} is not in the {len(self.classes)} classes")
                    continue
                try:
                    box = [float(v) for v in coords]
                except ValueError:
                    self._reject(f"{where}: bndbox {coords} is not numeric")
                    continue
                difficult = (obj.findtext("difficult") or "0").strip() == "1"
                self._add_object(record, where, box, label_of[class_name], ignore=difficult)
            self.records.append(record)
