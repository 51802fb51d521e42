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
    the same numbers. VOC's ``bndbox`` values are 1-based inclusive pixel indices;
    like detectron2 they become continuous coordinates ``[xmin - 1, ymin - 1, xmax,
    ymax]`` (a box covering the whole image is ``[0, 0, W, H]``), so ``xmax == xmin`` is
    a one-pixel-wide box and ``xmax < xmin`` an invalid one. Difficult objects are not
    training targets and are exported as ``iscrowd=1`` in :meth:`coco_ground_truth`, so
    COCO evaluation (pycocotools, faster-coco-eval) ignores detections matched to them,
    as the VOC protocol does. Image ids are the 1-based line numbers of the split list.
    Errors name the XML file and the object index (``000005.xml: object[2]: ...``);
    ``skip_invalid`` skips bad objects (unknown class, missing or non-numeric or empty
    ``bndbox``) with a warning, while a missing XML or image file or a bad ``size`` always raises.

    Args:
        root: the folder holding ``Annotations``, ``JPEGImages`` and ``ImageSets``.
        split: the ``ImageSets/Main/<split>.txt`` list (``train``, ``val``, ``trainval``, ``test``).
        classes: class names (default: the 20 VOC classes).
        transforms, skip_invalid: as :class:`CocoDetectionDataset`.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *, classes: Sequence[str] = VOC_CLASSES,
                 transforms: Optional[Callable] = None, skip_invalid: bool = False) -> None:
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
            file_name = (node.findtext("filename") or "").strip() or f"{name}.jpg"
            width, height = node.findtext("size/width"), node.findtext("size/height")
            if width is None or height is None:
                raise InvalidAnnotation(f"{xml_path}: missing size/width or size/height")
            path = self.root / "JPEGImages" / file_name
            if not path.is_file():
                raise FileNotFoundError(f"{xml_path}: image file {path} does not exist")
            try:
                width, height = int(float(width)), int(float(height))
            except ValueError:
                raise InvalidAnnotation(f"{xml_path}: size {width}x{height} is not numeric") from None
            if width <= 0 or height <= 0:
                raise InvalidAnnotation(f"{xml_path}: size {width}x{height} is not positive")
            record = ImageRecord(image_index + 1, path, width, height, file_name=file_name)
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
                    xmin, ymin, xmax, ymax = (float(v) for v in coords)
                except ValueError:
                    self._reject(f"{where}: bndbox {coords} is not numeric")
                    continue
                if xmax < xmin or ymax < ymin:
                    self._reject(f"{where}: bndbox (xmin, ymin, xmax, ymax) = {tuple(c.strip() for c in coords)} "
                                 "has non-positive width or height")
                    continue
                difficult = (obj.findtext("difficult") or "0").strip() == "1"
                self._add_object(record, where, [xmin - 1, ymin - 1, xmax, ymax], label_of[class_name],
                                 ignore=difficult)
            self.records.append(record)
