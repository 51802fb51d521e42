"""The embedded default data: Fashion-MNIST items composed into occluded scenes, written as a COCO dataset.

Each scene is a 128x128 RGB image on a smooth, randomly coloured background
(bilinear upsampling of a random 4x4 colour grid) with a sinusoidal texture and
pixel noise. It holds 2-6 Fashion-MNIST items: the number is drawn uniformly from
2..6, each item is a random image of the split, scaled to a random square side of
16-56 px and tinted a random colour (its grey levels kept as shading). Items are
pasted in order, so later items occlude earlier ones, through the item's mask
(grey level > ``MASK_THRESHOLD``; the mask's edge is feathered over one threshold
width so it stays anti-aliased while everything inside the mask is opaque).

Occlusion bound: a placement that would leave any earlier item with less than
half of its mask pixels visible is rejected and re-drawn (up to
``PLACEMENT_TRIES`` positions); an item that finds no placement is dropped, and a
new item is drawn in its place (at most ``EXTRA_ITEMS`` times per scene, which in
practice always reaches the drawn count). Each annotation records
``visible_fraction`` (visible mask pixels / mask pixels, always >= 0.5) and the
item's ``source_index`` in its Fashion-MNIST split.

Boxes are amodal: the tight box of the item's whole mask as placed (its full
extent, occluded parts included). The occlusion bound keeps every item at least
half visible, so the whole extent stays identifiable, and the box does not shrink
or jump when another item happens to cover an edge. ``area`` is the mask's pixel
count (what COCO's small/medium/large split uses).

Train scenes draw items from Fashion-MNIST's train split, val scenes from its test
split (``info.fashion_mnist_split`` in each JSON says which). Everything is a
function of the seed: each split uses ``numpy.random.default_rng([seed, k])``
(k = 0 train, 1 val), so the train scenes do not depend on ``num_val`` and vice versa.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from harmonicdet.io import write_json_atomic
from harmonicdet.output_folder import OutputFolder

from .fashion_mnist import CLASSES, find_fashion_mnist, fingerprint, load_split

SIZE = 128
ITEMS_PER_IMAGE = (2, 6)
ITEM_SIZE = (16, 56)
MASK_THRESHOLD = 0.1  # grey level (0-1) above which a pixel belongs to the item
MAX_HIDDEN = 0.5  # at most this fraction of an earlier item's mask may end up covered
PLACEMENT_TRIES = 30
EXTRA_ITEMS = 10
FORMAT_VERSION = 2  # bump when the rendering changes, so stale outputs are not reused
COMMAND = "harmonicdet data scenes"  # what the folder's marker names as its maker
_SPLITS = {"train": "train", "val": "test"}  # scene split -> Fashion-MNIST split
_GRID = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def _background(rng: np.random.Generator) -> np.ndarray:
    """Smooth random colours (bilinear upsampling of a 4x4 grid), a sinusoidal texture and pixel noise."""
    grid = rng.uniform(0.1, 0.9, size=(4, 4, 3)).astype(np.float32)
    coarse = Image.fromarray((grid * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR)
    image = np.asarray(coarse, dtype=np.float32) / 255
    yy, xx = _GRID
    angle, frequency, phase = rng.uniform(0, np.pi), rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
    texture = np.sin(frequency * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
    image += rng.uniform(0.02, 0.08) * texture[..., None]
    image += rng.normal(0, 0.03, size=image.shape).astype(np.float32)
    return image


def _item(rng: np.random.Generator, pixels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scaled, tinted item: ``(mask [s, s] bool, opacity [s, s] in 0..1, colour [s, s, 3])``."""
    side = int(rng.integers(ITEM_SIZE[0], ITEM_SIZE[1] + 1))
    grey = np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255
    tint = rng.uniform(0, 1, size=3).astype(np.float32)
    colour = tint * (0.35 + 0.65 * grey[..., None])  # keeps the item's internal shading
    opacity = np.clip((grey - MASK_THRESHOLD / 2) / MASK_THRESHOLD, 0, 1)  # 0.5 at the threshold, 1 from 1.5x
    return grey > MASK_THRESHOLD, opacity, colour


def compose_scene(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, List[dict]]:
    """One scene: ``(uint8 image [128, 128, 3], objects)``.

    Each object is a dict with ``box`` (xyxy, integer pixel edges, the tight box of
    the item's whole mask), ``label`` (Fashion-MNIST class 0-9), ``area`` (mask
    pixels), ``visible_fraction`` and ``source_index`` (index into ``images``).
    """
    canvas = _background(rng)
    wanted = int(rng.integers(ITEMS_PER_IMAGE[0], ITEMS_PER_IMAGE[1] + 1))
    visible = np.zeros((ITEMS_PER_IMAGE[1], SIZE, SIZE), dtype=bool)  # visible mask of each placed item
    full_counts = np.zeros(ITEMS_PER_IMAGE[1], dtype=np.int64)
    objects: List[dict] = []
    for _draw in range(wanted + EXTRA_ITEMS):
        if len(objects) == wanted:
            break
        index = int(rng.integers(len(images)))
        mask, opacity, colour = _item(rng, images[index])
        count = int(mask.sum())
        if count == 0:
            continue  # an (all but) empty image: nothing to annotate
        side = mask.shape[0]
        placed = len(objects)
        need = (1 - MAX_HIDDEN) * full_counts[:placed]
        for _try in range(PLACEMENT_TRIES):
            x, y = (int(v) for v in rng.integers(0, SIZE - side + 1, size=2))
            window = visible[:placed, y:y + side, x:x + side]
            remaining = visible[:placed].sum((1, 2)) - (window & mask).sum((1, 2))
            if np.all(remaining >= need):
                break
        else:
            continue  # no placement keeps every earlier item half visible: drop this item
        a = opacity[..., None]
        canvas[y:y + side, x:x + side] = canvas[y:y + side, x:x + side] * (1 - a) + colour * a
        visible[:placed, y:y + side, x:x + side] &= ~mask
        visible[placed, y:y + side, x:x + side] = mask
        full_counts[placed] = count
        ys, xs = np.nonzero(mask)
        objects.append({"box": [x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1],
                        "label": int(labels[index]), "area": count, "source_index": index})
    for k, obj in enumerate(objects):
        obj["visible_fraction"] = round(float(visible[k].sum() / full_counts[k]), 4)
    return (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8), objects


def _write_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, compress_level=1)


def scenes_paths(out: str | os.PathLike, split: str) -> Dict[str, str]:
    """The COCO dataset arguments (``img_dir``, ``ann_file``) of one split of the scenes under ``out``: the one
    definition of the scenes' folder layout."""
    out = Path(out)
    return {"img_dir": str(out / split), "ann_file": str(out / "annotations" / f"instances_{split}.json")}


def _paths(out: Path) -> Dict[str, Path]:
    paths = {}
    for split in _SPLITS:
        layout = scenes_paths(out, split)
        paths[f"{split}_images"] = Path(layout["img_dir"])
        paths[f"{split}_annotations"] = Path(layout["ann_file"])
    return paths


def make_scenes(out_dir: str | os.PathLike, *, num_train: int = 2000, num_val: int = 300, seed: int = 0,
                fashion_mnist: Optional[str | os.PathLike] = None, workers: int = 4) -> Dict[str, Path]:
    """Write the scenes as a COCO dataset and return its paths.

    Writes ``out_dir/train/NNNNNN.png``, ``out_dir/val/NNNNNN.png`` (image ids from
    1) and ``out_dir/annotations/instances_{train,val}.json``. Each JSON records the
    generator's parameters in ``info`` (``seed``, ``num_train``, ``num_val``, format
    version, SHA-256 of the Fashion-MNIST files, which split the items came from).

    ``out_dir`` follows the folder rule of :mod:`harmonicdet.output_folder`: new, empty, or made
    by this function (its marker records the parameters). The dataset is written to a
    staging folder beside it and renamed into place, so an interrupted run leaves either
    nothing or the earlier, complete dataset, never a mix.

    Reuse: a folder made with the same parameters, every file still there, is returned as it
    is; one with other parameters is replaced as a whole. A folder written before markers
    existed (both JSONs from this generator and nothing else beside them) is reused only when
    its parameters match and every image it lists is older than its JSON (a later run cut
    short would have rewritten some), and replaced otherwise.

    Args:
        out_dir: output folder.
        num_train, num_val: number of scenes per split.
        seed: the only source of randomness.
        fashion_mnist: folder of the four ``*-ubyte.gz`` files; default
            ``$HARMONICDET_FASHION_MNIST``, then the standard locations
            (see :func:`~harmonicdet.data.find_fashion_mnist`).
        workers: threads encoding PNGs (composition itself is sequential and seeded).

    Returns:
        ``{"train_images", "train_annotations", "val_images", "val_annotations"}`` paths.
    """
    for name, value in (("num_train", num_train), ("num_val", num_val), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    out = Path(out_dir)
    source = find_fashion_mnist(fashion_mnist)
    params = {"generator": "harmonicdet.data.scenes", "version": FORMAT_VERSION, "seed": int(seed),
              "num_train": int(num_train), "num_val": int(num_val), "fashion_mnist_sha256": fingerprint(source)}
    paths = _paths(out)
    folder = OutputFolder(out, COMMAND, params, recognise=_written_before_markers)
    if folder.complete():
        return paths
    if folder.made_before and not folder.marker.is_file() \
            and all(_reusable(paths[f"{s}_annotations"], paths[f"{s}_images"], params) for s in _SPLITS):
        return paths
    with folder.replace(reuse_same=True) as staging:
        _write_scenes(_paths(staging), params, source, workers)
    return paths


def _write_scenes(paths: Dict[str, Path], params: Dict[str, Any], source: Path, workers: int) -> None:
    """Compose and write both splits' images and JSONs at ``paths`` (:func:`make_scenes`' layout)."""
    categories = [{"id": i + 1, "name": name, "supercategory": "fashion"} for i, name in enumerate(CLASSES)]
    for split_index, (split, fashion_split) in enumerate(_SPLITS.items()):
        count = params["num_train"] if split == "train" else params["num_val"]
        images, labels = load_split(fashion_split, source)
        rng = np.random.default_rng([params["seed"], split_index])
        image_dir = paths[f"{split}_images"]
        image_dir.mkdir(parents=True, exist_ok=True)
        gt: Dict[str, Any] = {"info": dict(params, split=split, fashion_mnist_split=fashion_split,
                                           description="Fashion-MNIST items composed into occluded scenes; "
                                           "boxes are the full (amodal) extent of each item"),
                              "images": [], "annotations": [], "categories": categories}
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PNG encoding releases the GIL
            pending = []
            for image_id in range(1, count + 1):
                pixels, objects = compose_scene(rng, images, labels)
                name = f"{image_id:06d}.png"
                pending.append(pool.submit(_write_png, image_dir / name, pixels))
                gt["images"].append({"id": image_id, "file_name": name, "width": SIZE, "height": SIZE})
                for obj in objects:
                    x1, y1, x2, y2 = obj["box"]
                    gt["annotations"].append({
                        "id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": obj["label"] + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": obj["area"], "iscrowd": 0,
                        "visible_fraction": obj["visible_fraction"], "source_index": obj["source_index"]})
            for job in pending:
                job.result()
        write_json_atomic(gt, paths[f"{split}_annotations"])


def _written_before_markers(out: Path) -> Optional[List[str]]:
    """The entries of scenes written before markers existed: a JSON of this generator, and nothing but the
    scenes' own folders; ``None`` for any other folder."""
    own = {"annotations", "train", "val"}
    entries = {p.name for p in out.iterdir()}
    if not entries <= own:
        return None
    for split in _SPLITS:
        try:
            info = json.loads(Path(scenes_paths(out, split)["ann_file"]).read_text(encoding="utf-8"))["info"]
            if info.get("generator") == "harmonicdet.data.scenes":
                return sorted(entries)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


def _reusable(ann_file: Path, image_dir: Path, params: Dict[str, Any]) -> bool:
    """Whether an unmarked split is complete with ``params``: its JSON records them and every image it lists
    exists and is no newer than the JSON (written after its images; a later, interrupted run rewrites images
    but not the JSON)."""
    if not ann_file.is_file():
        return False
    try:
        gt = json.loads(ann_file.read_text(encoding="utf-8"))
        info = gt.get("info", {})
        if any(info.get(k) != v for k, v in params.items()):
            return False
        written = ann_file.stat().st_mtime
        return all((image_dir / image["file_name"]).stat().st_mtime <= written for image in gt["images"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False
