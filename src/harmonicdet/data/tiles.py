"""Fixed-size tiles of large annotated photographs, written as a COCO dataset split by source image.

Tile positions, per axis of length ``L`` (width or height), tile side ``T`` and overlap
``O`` (stride ``S = T - O``): ``0, S, 2S, ...`` while the tile ends before the border,
then one tile shifted to end exactly at the border (``L - T``), so every pixel is in a
tile and no edge strip is lost (the last two tiles overlap by ``O`` or more). An axis
shorter than ``T`` has one tile at 0, padded with black on the right or bottom: every
tile is ``T x T``. Tiles are the grid of these positions in x and y.

Boxes (continuous ``xyxy`` pixels, as the dataset readers give them): a box ``b`` is
intersected with the tile's window ``w``; its *visible fraction* is
``area(b ∩ w) / area(b)``, and it is kept, as ``b ∩ w`` in tile coordinates, when that
fraction is at least ``min_visible`` (default 0.5; a box whose intersection has zero
width or height is never kept). So a box wholly inside a tile is kept as it is, and one
cut by a tile border is clipped to it when at least half of it lies inside. Objects
marked ignore (VOC difficult, COCO crowd) follow the same rule and stay ``iscrowd=1``.
A tile's annotation keeps ``visible_fraction`` and ``area`` is the clipped box's area.

Tiles with no kept object are dropped unless ``keep_empty``: with partial annotations
(e.g. tree crowns), an empty tile is more often unannotated objects than background.

Split by source image: every tile of a source image goes to the same split, so no
photograph contributes to both train and val. The val images are named, or a fraction
of the sources is drawn with ``numpy.random.default_rng(seed)`` from the sources sorted
by file name (at least one source in each split).

Output (``out``): ``train/`` and ``val/`` PNGs named ``<source stem>_x<X>_y<Y>.png`` (the
tile's top-left corner in the source), ``annotations/instances_{train,val}.json`` (COCO;
image ids from 1 in the order source file name, y, x; each image entry also has
``source``, ``x``, ``y``; ``info`` records the parameters and the split) and
:data:`MARKER`, the list of what was written. Everything is a function of the inputs
and the parameters: a rerun writes identical files. ``out`` follows the folder rule of
:mod:`harmonicdet.output_folder`: new, empty or made by this command (anything else is
refused before any work); the dataset is written to a staging folder beside it and renamed
into place, replacing an earlier output as a whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from harmonicdet.checks import is_finite_number, is_int
from harmonicdet.io import write_json_atomic
from harmonicdet.output_folder import MARKER, OutputFolder  # noqa: F401  (MARKER: the file listing what was written)

from .base import DetectionDataset, ImageRecord

COMMAND = "harmonicdet data tiles"  # what the folder's marker (harmonicdet.output_folder.MARKER) names as its maker
FORMAT_VERSION = 1  # bump when the output changes for the same inputs
SPLITS = ("train", "val")


@dataclass(frozen=True)
class TileSpec:
    """How source images are cut (see the module docstring)."""

    size: int = 400
    overlap: int = 100
    min_visible: float = 0.5
    keep_empty: bool = False

    def __post_init__(self) -> None:
        if not is_int(self.size) or self.size < 32:
            raise ValueError(f"tile size must be an integer >= 32, got {self.size!r}")
        if not is_int(self.overlap) or not 0 <= self.overlap < self.size:
            raise ValueError(f"overlap must be an integer in [0, size {self.size}), got {self.overlap!r}")
        if not is_finite_number(self.min_visible) or not 0 < self.min_visible <= 1:
            raise ValueError(f"min_visible must be a number in (0, 1], got {self.min_visible!r}")


def tile_starts(length: int, size: int, overlap: int) -> List[int]:
    """Tile offsets along an axis of ``length`` pixels: ``0, S, 2S, ...`` (``S = size - overlap``) while the
    tile ends inside, then ``length - size`` (a tile ending at the border); ``[0]`` when ``length <= size``."""
    if length <= size:
        return [0]
    return list(range(0, length - size, size - overlap)) + [length - size]


def clip_box(box: Sequence[float], window: Sequence[float],
             min_visible: float) -> Optional[Tuple[List[float], float]]:
    """``(box ∩ window in window coordinates, visible fraction)``, or ``None`` when the fraction is below
    ``min_visible`` or the intersection is empty; boxes and the window are ``xyxy``."""
    x1, y1, x2, y2 = (max(box[0], window[0]), max(box[1], window[1]), min(box[2], window[2]), min(box[3], window[3]))
    if x2 <= x1 or y2 <= y1:
        return None
    fraction = (x2 - x1) * (y2 - y1) / ((box[2] - box[0]) * (box[3] - box[1]))
    if fraction < min_visible:
        return None
    return [x1 - window[0], y1 - window[1], x2 - window[0], y2 - window[1]], fraction


def split_sources(names: Sequence[str], *, val_images: Optional[Sequence[str]] = None,
                  val_fraction: Optional[float] = None, seed: int = 0) -> Dict[str, List[str]]:
    """``{"train": [...], "val": [...]}`` source names (sorted): ``val_images`` named (file names or stems), or
    ``round(val_fraction * n)`` sources (at least 1, at most n - 1) drawn with ``default_rng(seed)``."""
    names = sorted(names)
    if (val_images is None) == (val_fraction is None):
        raise ValueError("give exactly one of val_images (--val-images) and val_fraction (--val-fraction)")
    if val_images is not None:
        by_name = {**{Path(n).stem: n for n in names}, **{n: n for n in names}}
        unknown = [v for v in val_images if v not in by_name]
        if unknown:
            raise ValueError(f"--val-images: {unknown} are not source images (known: {', '.join(names)})")
        val = {by_name[v] for v in val_images}
    else:
        if not is_finite_number(val_fraction) or not 0 < val_fraction < 1:
            raise ValueError(f"--val-fraction must be a number in (0, 1), got {val_fraction!r}")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"--seed must be an integer >= 0, got {seed!r}")
        count = min(max(1, round(val_fraction * len(names))), len(names) - 1)
        val = {names[i] for i in np.random.default_rng(seed).permutation(len(names))[:count]}
    split = {"train": [n for n in names if n not in val], "val": [n for n in names if n in val]}
    for name, members in split.items():
        if not members:
            raise ValueError(f"the {name} split would have no source image ({len(names)} in all)")
    return split


def _tile_objects(record: ImageRecord, window: Sequence[float], spec: TileSpec) -> List[Dict[str, Any]]:
    objects = []
    for box, label, ignore in zip(record.boxes, record.labels, record.ignore):
        kept = clip_box(box, window, spec.min_visible)
        if kept is not None:
            objects.append({"box": kept[0], "label": label, "ignore": ignore, "visible_fraction": kept[1]})
    return objects


def _written_before_markers(out: Path) -> Optional[List[str]]:
    """What an earlier version listed in its own marker, ``.harmonicdet-tiles.json`` (that file included), or
    ``None``."""
    old = out / ".harmonicdet-tiles.json"
    try:
        return [*json.loads(old.read_text(encoding="utf-8"))["files"], old.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_split(dataset: DetectionDataset, indices: List[int], folder: Path, split: str,
                 spec: TileSpec, categories: List[Dict[str, Any]], category_of: Dict[int, int],
                 info: Dict[str, Any]) -> None:
    """Write one split's tiles and JSON under ``folder``."""
    (folder / split).mkdir(parents=True)
    gt: Dict[str, Any] = {"info": dict(info, split=split), "images": [], "annotations": [], "categories": categories}
    for index in indices:
        record = dataset.records[index]
        image = dataset.load_image(index)
        if image.size != (record.width, record.height):
            raise ValueError(f"image {record.path} is {image.size[0]}x{image.size[1]} but its annotation "
                             f"says {record.width}x{record.height}")
        stem = Path(record.file_name or record.path.name).stem
        for y in tile_starts(record.height, spec.size, spec.overlap):
            for x in tile_starts(record.width, spec.size, spec.overlap):
                objects = _tile_objects(record, (x, y, x + spec.size, y + spec.size), spec)
                if not objects and not spec.keep_empty:
                    continue
                image_id = len(gt["images"]) + 1
                name = f"{split}/{stem}_x{x}_y{y}.png"
                image.crop((x, y, x + spec.size, y + spec.size)).save(folder / name, compress_level=1)
                gt["images"].append({"id": image_id, "file_name": Path(name).name, "width": spec.size,
                                     "height": spec.size, "source": record.file_name or record.path.name,
                                     "x": x, "y": y})
                for obj in objects:
                    x1, y1, x2, y2 = obj["box"]
                    gt["annotations"].append({
                        "id": len(gt["annotations"]) + 1, "image_id": image_id,
                        "category_id": category_of[obj["label"]], "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1), "iscrowd": int(obj["ignore"]),
                        "visible_fraction": round(obj["visible_fraction"], 4)})
    name = f"annotations/instances_{split}.json"
    write_json_atomic(gt, folder / name)


def make_tiles(dataset: DetectionDataset, out: str | os.PathLike, spec: TileSpec = TileSpec(), *,
               val_images: Optional[Sequence[str]] = None, val_fraction: Optional[float] = None, seed: int = 0,
               single_class: Optional[str] = None) -> Dict[str, Any]:
    """Cut ``dataset``'s images into tiles and write them to ``out`` as a COCO dataset split by source image.

    Args:
        dataset: the source (:class:`~harmonicdet.data.VocDetectionDataset` or
            :class:`~harmonicdet.data.CocoDetectionDataset`); source file names must have distinct stems.
        out: the output folder: new, empty, or made by this function before (then replaced).
        spec: tile size, overlap, ``min_visible`` and ``keep_empty`` (see the module docstring).
        val_images, val_fraction, seed: the split (:func:`split_sources`); exactly one of the first two.
        single_class: every object becomes this one class (e.g. ``"tree"`` for crowns labelled
            ``Tree``/``Alive``/``Dead``); default: the dataset's classes and category ids.

    Returns:
        ``{"train_images", "train_annotations", "val_images", "val_annotations"}`` paths and per split
        ``"<split>_counts"``: ``{"sources", "tiles", "boxes"}``.
    """
    out = Path(out)
    OutputFolder(out, COMMAND, name="--out", recognise=_written_before_markers)  # refused before any work
    sources: Dict[str, int] = {}  # source file name -> dataset index
    stems: Dict[str, str] = {}
    for index, record in enumerate(dataset.records):
        name = record.file_name or record.path.name
        if Path(name).stem in stems:
            raise ValueError(f"source images {stems[Path(name).stem]!r} and {name!r} have the same stem; "
                             "tile names would collide")
        stems[Path(name).stem], sources[name] = name, index
    split = split_sources(list(sources), val_images=val_images, val_fraction=val_fraction, seed=seed)
    if single_class is not None:
        if not single_class.strip():
            raise ValueError("--single-class must be a non-empty class name")
        categories = [{"id": 1, "name": single_class}]
        category_of = {label: 1 for label in dataset.label_to_category_id}
    else:
        categories = [{"id": cid, "name": dataset.classes[label - 1]}
                      for label, cid in dataset.label_to_category_id.items()]
        category_of = dict(dataset.label_to_category_id)
    info = {"generator": "harmonicdet.data.tiles", "version": FORMAT_VERSION, **asdict(spec),
            "single_class": single_class, "train_sources": split["train"], "val_sources": split["val"],
            "val_images": None if val_images is None else list(val_images), "val_fraction": val_fraction,
            "seed": seed}
    with OutputFolder(out, COMMAND, info, name="--out", recognise=_written_before_markers).replace() as staging:
        for name in SPLITS:
            _write_split(dataset, [sources[s] for s in split[name]], staging, name, spec, categories, category_of,
                         info)
    result: Dict[str, Any] = {}
    for name in SPLITS:
        gt = json.loads((out / "annotations" / f"instances_{name}.json").read_text(encoding="utf-8"))
        result[f"{name}_images"] = out / name
        result[f"{name}_annotations"] = out / "annotations" / f"instances_{name}.json"
        result[f"{name}_counts"] = {"sources": len(split[name]), "tiles": len(gt["images"]),
                                    "boxes": len(gt["annotations"])}
    return result
