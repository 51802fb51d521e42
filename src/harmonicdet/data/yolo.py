"""Write any HarmonicDetection dataset (scenes, COCO, VOC) in the YOLO layout, with its COCO ground truth.

Layout under ``out``::

    images/{train,val}/<image_id>.<ext>     the source images, copied
    labels/{train,val}/<image_id>.txt       one "class cx cy w h" line per object (normalised)
    data.yaml                               path, train, val, nc, names (Ultralytics)
    {train,val}.json                        COCO ground truth of each split
    .harmonicdet.json                       the folder's marker (harmonicdet.output_folder)

The export is checked and written atomically: each image file's size must be its annotation's
(a mismatch is refused by name), boxes are clipped to their image (counted, and dropped when
nothing is left), images are copied whole, and the folder is written beside ``out`` and renamed
into place, replacing an earlier export as a whole (see :func:`write_yolo_dataset`).

**Conventions**, chosen so Ultralytics' ``val(save_json=True)`` ``predictions.json`` is
COCO results for ``val.json`` as it is (``harmonicdet consistency --gt val.json --dt
predictions.json``): Ultralytics writes ``image_id = int(file stem)`` for numeric stems and
``category_id = class index + 1`` (for datasets it does not recognise as COCO: no ``coco``
with a ``val2017.txt`` path). So image files are named by their COCO image id, the YOLO
class index is the dataset's contiguous label minus 1 (labels 1..K in category-id order),
and the JSONs' category ids are those labels: ``category_id = class index + 1``. A source
whose ids are already 1..K (the scenes, VOC) keeps them; other ids are renumbered, and each
category of the JSON keeps its original id as ``source_id``. Objects the source ignores
(COCO crowd, VOC difficult) are not YOLO training labels (YOLO has no ignore flag) but stay
in the JSON as ``iscrowd=1``, as :meth:`DetectionDataset.coco_ground_truth` writes them.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml
from PIL import Image

from harmonicdet.io import write_json_atomic, write_text_atomic
from harmonicdet.output_folder import OutputFolder

from .base import DetectionDataset, ImageRecord

SPLITS = ("train", "val")
COMMAND = "harmonicdet data yolo"  # what the folder's marker names as its maker
_OWN = ("images", "labels", "data.yaml", "train.json", "val.json")
_HEADER = "# written by harmonicdet data yolo"


def yolo_ground_truth(dataset: DetectionDataset) -> Dict:
    """The dataset's COCO ground truth with the YOLO conventions: file names ``<id><ext>``, category id = label."""
    gt = dataset.coco_ground_truth()
    label_of = {cid: label for label, cid in dataset.label_to_category_id.items()}
    ext = {r.image_id: r.path.suffix.lower() for r in dataset.records}
    for image in gt["images"]:
        image["file_name"] = f"{image['id']}{ext[image['id']]}"
    for ann in gt["annotations"]:
        ann["category_id"] = label_of[ann["category_id"]]
    gt["categories"] = [{"id": label_of[c["id"]], "name": c["name"], "source_id": c["id"]} for c in gt["categories"]]
    return gt


def image_size(record: ImageRecord) -> Tuple[int, int]:
    """``(width, height)`` of the record's image file, read from its header; a ``ValueError`` naming the file when it
    cannot be read or its size is not the annotation's (the boxes would be in another image's pixels)."""
    try:
        with Image.open(record.path) as image:
            size = image.size
    # ImportError: Ultralytics, once imported, patches Image.open to load pi-heif on an unidentified file
    except (OSError, ValueError, ImportError) as err:
        raise ValueError(f"image {record.path} (image_id {record.image_id}) could not be read: {err}") from None
    if size != (record.width, record.height):
        raise ValueError(f"image {record.path} (image_id {record.image_id}) is {size[0]}x{size[1]} but its "
                         f"annotation says {record.width}x{record.height}; correct the annotation's width and height")
    return size


def clip_to_image(box: List[float], width: float, height: float) -> List[float]:
    """``box`` (xyxy) intersected with the image ``[0, width] x [0, height]``."""
    return [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
            min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]


def clipped_to_images(dataset: DetectionDataset, decimals: int) -> Tuple[DetectionDataset, Dict[str, int]]:
    """A copy of ``dataset`` with every box clipped to its image (after :func:`image_size` checked the image) and
    the boxes left without width or height at ``decimals`` digits of the normalised coordinates dropped; and the
    counts ``{"boxes", "clipped", "dropped"}`` (boxes: those kept, ignored objects included)."""
    counts = {"boxes": 0, "clipped": 0, "dropped": 0}
    records = []
    for record in dataset.records:
        width, height = image_size(record)
        kept: Dict[str, List[Any]] = {"boxes": [], "labels": [], "ignore": [], "areas": []}
        for box, label, ignore, area in zip(record.boxes, record.labels, record.ignore, record.areas):
            inside = clip_to_image(box, width, height)
            if round((inside[2] - inside[0]) / width, decimals) <= 0 \
                    or round((inside[3] - inside[1]) / height, decimals) <= 0:
                counts["dropped"] += 1
                continue
            counts["clipped"] += int(inside != list(box))
            counts["boxes"] += 1
            for key, value in zip(kept, (inside, label, ignore,
                                         min(area, (inside[2] - inside[0]) * (inside[3] - inside[1])))):
                kept[key].append(value)
        records.append(dataclasses.replace(record, **kept))
    clipped = copy.copy(dataset)
    clipped.records = records
    return clipped, counts


def _written_before_markers(out: Path) -> Optional[List[str]]:
    """The entries of an export written before markers existed (its ``data.yaml`` begins with this module's
    header, nothing else beside the layout); ``None`` for any other folder."""
    entries = sorted(p.name for p in out.iterdir())
    try:
        ours = (out / "data.yaml").read_text(encoding="utf-8").startswith(_HEADER)
    except (OSError, UnicodeDecodeError):
        return None
    return entries if ours and set(entries) <= set(_OWN) else None


def yolo_output_folder(out_dir: str | os.PathLike, settings: Any = None) -> OutputFolder:
    """The export's folder under the rule of :mod:`harmonicdet.output_folder` (checked here, before any work)."""
    return OutputFolder(out_dir, COMMAND, settings, name="--out", recognise=_written_before_markers)


def write_yolo_dataset(out_dir: str | os.PathLike, splits: Mapping[str, DetectionDataset], *,
                       decimals: int = 6) -> Dict[str, Any]:
    """Write ``splits`` (``{"train": ds, "val": ds}``, every split optional) in the YOLO layout.

    Every image's file is opened to check that its size is the annotation's (otherwise a
    ``ValueError`` naming it: the boxes would be in another image's pixels) and copied whole.
    Boxes that extend past their image are clipped to it, in the labels and in the JSONs
    (Ultralytics drops a label with a coordinate outside [0, 1] as corrupt); a box with no
    width or height left at ``decimals`` digits is dropped; both are counted.

    Args:
        out_dir: output folder, under the rule of :mod:`harmonicdet.output_folder`: new, empty or made
            by this function, then replaced as a whole (written beside it and renamed into place, so no
            file of an earlier export remains and an interrupted export leaves the earlier one).
        splits: the datasets; all must have the same classes.
        decimals: digits of the normalised label coordinates (6: 1e-4 px at 128 px).

    Returns:
        ``{"data_yaml", "<split>_images", "<split>_labels", "<split>_json"}`` paths and per split
        ``"<split>_boxes"``: ``{"boxes", "clipped", "dropped"}``.
    """
    if not splits:
        raise ValueError("no split to write")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"splits must be among {SPLITS}, got {unknown}")
    classes = None
    for name, dataset in splits.items():
        if classes is None:
            classes = list(dataset.classes)
        elif list(dataset.classes) != classes:
            raise ValueError(f"split {name!r} has classes {dataset.classes}, another split {classes}")
    for dataset in splits.values():
        for record in dataset.records:
            if record.image_id < 0:
                raise ValueError(f"image id {record.image_id} ({record.path}): YOLO needs non-negative numeric stems")
    out = Path(out_dir).resolve()
    folder = yolo_output_folder(out, {"classes": classes, "decimals": decimals,
                                      "images": {s: len(d.records) for s, d in splits.items()}})
    clipped = {split: clipped_to_images(dataset, decimals) for split, dataset in splits.items()}
    result: Dict[str, Any] = {}
    with folder.replace() as staging:
        for split, (dataset, counts) in clipped.items():
            image_dir, label_dir = staging / "images" / split, staging / "labels" / split
            image_dir.mkdir(parents=True)
            label_dir.mkdir(parents=True)
            for record in dataset.records:
                shutil.copyfile(record.path, image_dir / f"{record.image_id}{record.path.suffix.lower()}")
                lines = []
                for box, label, ignore in zip(record.boxes, record.labels, record.ignore):
                    if ignore:
                        continue
                    x1, y1, x2, y2 = box
                    cx, cy = (x1 + x2) / 2 / record.width, (y1 + y2) / 2 / record.height
                    w, h = (x2 - x1) / record.width, (y2 - y1) / record.height
                    lines.append(f"{label - 1} " + " ".join(f"{v:.{decimals}f}" for v in (cx, cy, w, h)))
                (label_dir / f"{record.image_id}.txt").write_text("".join(line + "\n" for line in lines))
            write_json_atomic(yolo_ground_truth(dataset), staging / f"{split}.json")
            result.update({f"{split}_images": out / "images" / split, f"{split}_labels": out / "labels" / split,
                           f"{split}_json": out / f"{split}.json", f"{split}_boxes": counts})
        # Ultralytics needs both entries: a missing split is stood in for by the other one
        data = {"path": str(out), **{s: f"images/{s if s in splits else next(iter(splits))}" for s in SPLITS},
                "nc": len(classes), "names": {i: name for i, name in enumerate(classes)}}
        write_text_atomic(f"{_HEADER}; class index k is category_id k + 1 in {{train,val}}.json\n"
                          + yaml.safe_dump(data, sort_keys=False), staging / "data.yaml")
    result["data_yaml"] = out / "data.yaml"
    return result


def read_yolo_labels(label_file: str | os.PathLike, width: float, height: float):
    """``(classes, boxes_xyxy)`` of a YOLO label file, in pixels of a ``width`` x ``height`` image."""
    classes, boxes = [], []
    for line in Path(label_file).read_text().splitlines():
        if not line.strip():
            continue
        k, cx, cy, w, h = line.split()
        cx, cy, w, h = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
        classes.append(int(k))
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return classes, boxes
