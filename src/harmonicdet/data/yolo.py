"""Write any HarmonicDetection dataset (scenes, COCO, VOC) in the YOLO layout, with its COCO ground truth.

Layout under ``out``::

    images/{train,val}/<image_id>.<ext>     the source images, copied
    labels/{train,val}/<image_id>.txt       one "class cx cy w h" line per object (normalised)
    data.yaml                               path, train, val, nc, names (Ultralytics)
    {train,val}.json                        COCO ground truth of each split

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

import os
import shutil
from pathlib import Path
from typing import Dict, Mapping

import yaml

from harmonicdet.io import write_json_atomic, write_text_atomic

from .base import DetectionDataset

SPLITS = ("train", "val")


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


def write_yolo_dataset(out_dir: str | os.PathLike, splits: Mapping[str, DetectionDataset], *,
                       decimals: int = 6) -> Dict[str, Path]:
    """Write ``splits`` (``{"train": ds, "val": ds}``, every split optional) in the YOLO layout.

    Args:
        out_dir: output folder (created; files of an earlier export are overwritten, others left).
        splits: the datasets; all must have the same classes.
        decimals: digits of the normalised label coordinates (6: 1e-4 px at 128 px).

    Returns:
        ``{"data_yaml", "<split>_images", "<split>_labels", "<split>_json"}`` paths.
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
    out = Path(out_dir).resolve()
    paths: Dict[str, Path] = {}
    for split, dataset in splits.items():
        image_dir, label_dir = out / "images" / split, out / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for record in dataset.records:
            stem = str(record.image_id)
            if record.image_id < 0:
                raise ValueError(f"image id {record.image_id} ({record.path}): YOLO needs non-negative numeric stems")
            target = image_dir / f"{stem}{record.path.suffix.lower()}"
            if not (target.is_file() and target.stat().st_size == record.path.stat().st_size):
                shutil.copyfile(record.path, target)
            lines = []
            for box, label, ignore in zip(record.boxes, record.labels, record.ignore):
                if ignore:
                    continue
                x1, y1, x2, y2 = box
                cx, cy = (x1 + x2) / 2 / record.width, (y1 + y2) / 2 / record.height
                w, h = (x2 - x1) / record.width, (y2 - y1) / record.height
                lines.append(f"{label - 1} " + " ".join(f"{v:.{decimals}f}" for v in (cx, cy, w, h)))
            (label_dir / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        json_path = out / f"{split}.json"
        write_json_atomic(yolo_ground_truth(dataset), json_path)
        paths.update({f"{split}_images": image_dir, f"{split}_labels": label_dir, f"{split}_json": json_path})
    # Ultralytics needs both entries: a missing split is stood in for by the other one
    data = {"path": str(out), **{s: f"images/{s if s in splits else next(iter(splits))}" for s in SPLITS},
            "nc": len(classes), "names": {i: name for i, name in enumerate(classes)}}
    yaml_path = out / "data.yaml"
    # last and atomic: a data.yaml that exists means a complete dataset (yolo-study's lanes wait for it)
    write_text_atomic("# written by harmonicdet data yolo; class index k is category_id k + 1 in {train,val}.json\n"
                      + yaml.safe_dump(data, sort_keys=False), yaml_path)
    paths["data_yaml"] = yaml_path
    return paths


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
