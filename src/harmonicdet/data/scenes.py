"""The embedded default data: Fashion-MNIST items composed into occluded scenes, written as a COCO dataset.

Each scene is a 128x128 RGB image on a smooth, randomly coloured, textured
background with noise. It holds 2-6 Fashion-MNIST items, each scaled to 16-56 px
and tinted a random colour, pasted in order through the item's own mask (its
grey levels), so later items occlude earlier ones. A placement that would leave
an earlier item with less than half of its pixels visible is rejected and
re-drawn (up to 30 times, then the item is dropped). The box of an item is the
tight box of its mask as placed (its full extent, occluded parts included: the
occlusion bound keeps at least half of it visible); each annotation also records
``visible_fraction``. Train scenes use Fashion-MNIST's train split, val scenes its
test split; everything is a function of the seed.
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

from .fashion_mnist import CLASSES, load_split

SIZE = 128
ITEMS_PER_IMAGE = (2, 6)
ITEM_SIZE = (16, 56)
MASK_THRESHOLD = 0.1  # grey level (0-1) above which a pixel belongs to the item
MAX_HIDDEN = 0.5
_PLACEMENT_TRIES = 30
_SPLITS = {"train": "train", "val": "test"}  # scene split -> Fashion-MNIST split


def _background(rng: np.random.Generator) -> np.ndarray:
    """Smooth random colours (bilinear upsampling of a 4x4 grid), a sinusoidal texture and pixel noise."""
    grid = rng.uniform(0.1, 0.9, size=(4, 4, 3)).astype(np.float32)
    coarse = Image.fromarray((grid * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BILINEAR)
    image = np.asarray(coarse, dtype=np.float32) / 255
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    angle, frequency, phase = rng.uniform(0, np.pi), rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
    texture = np.sin(frequency * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
    image += rng.uniform(0.02, 0.08) * texture[..., None]
    image += rng.normal(0, 0.03, size=image.shape).astype(np.float32)
    return image


def _item(rng: np.random.Generator, pixels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A scaled item: ``(alpha [s, s] in 0..1, tinted colour [s, s, 3])``."""
    side = int(rng.integers(ITEM_SIZE[0], ITEM_SIZE[1] + 1))
    alpha = np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR), dtype=np.float32) / 255
    tint = rng.uniform(0, 1, size=3).astype(np.float32)
    colour = tint * (0.35 + 0.65 * alpha[..., None])  # keeps the item's internal shading
    return alpha, colour


def compose_scene(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray) -> Tuple[np.ndarray, List[dict]]:
    """One scene: ``(uint8 image [128, 128, 3], objects)``, objects with ``box`` (xyxy), ``label``, ``area``,
    ``visible_fraction`` and the Fashion-MNIST ``source_index``."""
    canvas = _background(rng)
    full: List[np.ndarray] = []  # each placed item's mask on the canvas
    visible: List[np.ndarray] = []
    objects: List[dict] = []
    for _ in range(int(rng.integers(ITEMS_PER_IMAGE[0], ITEMS_PER_IMAGE[1] + 1))):
        index = int(rng.integers(len(images)))
        alpha, colour = _item(rng, images[index])
        side = alpha.shape[0]
        for _try in range(_PLACEMENT_TRIES):
            x, y = (int(v) for v in rng.integers(0, SIZE - side + 1, size=2))
            mask = np.zeros((SIZE, SIZE), dtype=bool)
            mask[y:y + side, x:x + side] = alpha > MASK_THRESHOLD
            if not mask.any():
                break
            if all((v & ~mask).sum() >= (1 - MAX_HIDDEN) * f.sum() for v, f in zip(visible, full)):
                break
        else:
            continue  # no placement keeps every earlier item half visible: drop this one
        if not mask.any():
            continue
        a = alpha[..., None]
        canvas[y:y + side, x:x + side] = canvas[y:y + side, x:x + side] * (1 - a) + colour * a
        visible = [v & ~mask for v in visible]
        full.append(mask)
        visible.append(mask.copy())
        ys, xs = np.nonzero(mask)
        objects.append({"box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                        "label": int(labels[index]), "area": int(mask.sum()), "source_index": index})
    for obj, v, f in zip(objects, visible, full):
        obj["visible_fraction"] = round(float(v.sum() / f.sum()), 4)
    return (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8), objects


def _write_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, compress_level=1)


def _params(num_train: int, num_val: int, seed: int) -> Dict[str, Any]:
    return {"generator": "harmonicdet.data.scenes", "version": 1, "seed": seed,
            "num_train": num_train, "num_val": num_val}


def make_scenes(out_dir: str | os.PathLike, *, num_train: int = 2000, num_val: int = 300, seed: int = 0,
                fashion_mnist: Optional[str | os.PathLike] = None, workers: int = 4) -> Dict[str, Path]:
    """Write ``out_dir/{train,val}/*.png`` and ``out_dir/annotations/instances_{train,val}.json``.

    An existing dataset made with the same parameters (recorded in each JSON's
    ``info``) is reused as it is. Returns the paths of the image folders and
    annotation files (keys ``train_images``, ``train_annotations``, ``val_...``).
    """
    if num_train < 0 or num_val < 0:
        raise ValueError(f"scene counts must be non-negative, got train={num_train} val={num_val}")
    out = Path(out_dir)
    params = _params(num_train, num_val, seed)
    paths = {}
    for split in _SPLITS:
        paths[f"{split}_images"] = out / split
        paths[f"{split}_annotations"] = out / "annotations" / f"instances_{split}.json"
    if all(_matches(paths[f"{s}_annotations"], params) for s in _SPLITS):
        return paths
    categories = [{"id": i + 1, "name": name, "supercategory": "fashion"} for i, name in enumerate(CLASSES)]
    for split_index, (split, source) in enumerate(_SPLITS.items()):
        count = num_train if split == "train" else num_val
        images, labels = load_split(source, fashion_mnist)
        rng = np.random.default_rng([seed, split_index])
        folder = paths[f"{split}_images"]
        folder.mkdir(parents=True, exist_ok=True)
        gt = {"info": dict(params, split=split, fashion_mnist_split=source), "images": [], "annotations": [],
              "categories": categories}
        with ThreadPoolExecutor(max_workers=workers) as pool:  # PNG encoding releases the GIL
            pending = []
            for image_id in range(1, count + 1):
                pixels, objects = compose_scene(rng, images, labels)
                name = f"{image_id:06d}.png"
                pending.append(pool.submit(_write_png, folder / name, pixels))
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
    return paths


def _matches(path: Path, params: Dict[str, Any]) -> bool:
    if not path.is_file():
        return False
    try:
        info = json.loads(path.read_text()).get("info", {})
    except (OSError, ValueError):
        return False
    return all(info.get(k) == v for k, v in params.items())
