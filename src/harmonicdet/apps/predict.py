"""``harmonicdet predict``: a trained detector on image files, drawn and written as COCO results.

The model is built from the run config by :func:`~harmonicdet.engine.from_config.build_model`
(any arch the package builds) and loaded with the run's ``model_final.pt`` or ``last.pt``;
it runs in batches on ``train.device`` (``auto``: CUDA when available). Images are
fed at their own size: the detector's transform resizes them and maps its boxes back,
so the boxes are in the input's pixels.

Outputs in ``out_dir``:

* one PNG per input image, of the input's size: each detection with
  ``score >= score_thresh`` (at most ``max_per_image``, the highest scores) as a box in its
  class colour with ``name score``;
* ``predictions.json``: COCO results ``{image_id, category_id, bbox [x, y, w, h], score}``
  of **every** detection the model returns (its own score threshold and detection cap
  apply, ``score_thresh`` does not), so the file can be scored by ``harmonicdet
  consistency`` or COCO evaluation;
* ``images.json``: COCO-style ``images`` entries ``{id, file_name, width, height, png}``.

``out_dir`` follows the folder rule of :mod:`harmonicdet.output_folder`: new, empty or made by
``predict`` (its marker records the checkpoint, the images and the thresholds), and it may not
hold an input image. It is written beside and renamed into place, replacing an earlier
prediction as a whole, so no picture of an earlier run remains. Images with more than 8 bits
per value (16-bit PNGs) are scaled to 8 bits (:func:`harmonicdet.images.rgb8`).

Image ids and categories: with ``gt`` (a COCO instances file), each input is matched to
the ground-truth image whose ``file_name`` it is -- first by its path relative to the
folder it was found in (or its name for files given directly), then by its file name
alone -- and takes that image's id; categories are the ground truth's. Without ``gt``,
images are numbered 1, 2, ... in input order (folders sorted by name) and categories are
those of the config's training data (its annotation file's ``categories``, the VOC classes,
or the Fashion-MNIST classes of ``data.scenes``; nothing is loaded or generated). An image
that matches no ground-truth entry, or several, raises ``ValueError``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from harmonicdet.engine.from_config import build_datasets, build_model
from harmonicdet.engine.config import Config
from harmonicdet.engine.coco_evaluation import detections_to_coco
from harmonicdet.engine.trained_run import load_weights
from harmonicdet.engine.distributed import resolve_device
from harmonicdet.checks import is_finite_number, is_int
from harmonicdet.images import rgb8
from harmonicdet.io import write_image_atomic, write_json_atomic
from harmonicdet.output_folder import OutputFolder, flat_layout

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
COMMAND = "harmonicdet predict"  # what --out's marker (harmonicdet.output_folder.MARKER) names as its maker


def find_images(inputs: Sequence[Any]) -> List[Tuple[Path, str]]:
    """``(path, name)`` of every image: files as given, folders' image files sorted by name (not recursive).

    ``name`` is the path relative to the folder it was found in (a given file: its file name).
    """
    found: List[Tuple[Path, str]] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"image folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found += [(p, p.name) for p in files]
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise ValueError(f"image {path} does not exist")
    if not found:
        raise ValueError("no images given")
    seen: Dict[Path, int] = {}
    for i, (path, _) in enumerate(found):
        key = path.resolve()
        if key in seen:
            raise ValueError(f"image {path} is given twice (inputs {seen[key]} and {i})")
        seen[key] = i
    return found


def _read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return rgb8(image)
    except (OSError, ValueError) as err:
        raise ValueError(f"image {path} could not be read: {err}") from None


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tuple[int, np.ndarray]:
        return index, np.array(_read_image(self.paths[index]))


def _ids_from_gt(gt: Any, images: Sequence[Tuple[Path, str]]) -> Tuple[List[int], Dict[str, Any]]:
    """Image ids of ``images`` matched by ``file_name`` in the COCO ground truth ``gt`` (path), and its data."""
    path = Path(gt)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"ground-truth file {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list):
        raise ValueError(f"{path}: expected a COCO instances dict with 'images' and 'categories' lists")
    by_file: Dict[str, List[int]] = {}
    by_name: Dict[str, List[int]] = {}
    for i, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) \
                or not isinstance(entry.get("file_name"), str):
            raise ValueError(f"{path}: images[{i}] needs an integer id and a file_name")
        file_name = entry["file_name"].replace("\\", "/")
        by_file.setdefault(file_name, []).append(entry["id"])
        by_name.setdefault(Path(file_name).name, []).append(entry["id"])
    ids = []
    for image, name in images:
        matches = by_file.get(name) or by_name.get(Path(name).name, [])
        if len(matches) != 1:
            what = "no" if not matches else f"{len(matches)} ({', '.join(map(str, matches[:5]))})"
            raise ValueError(f"image {image}: {what} image entries of {path} have the file_name {name!r}")
        ids.append(matches[0])
    return ids, data


def _config_categories(config: Config) -> List[Tuple[int, str]]:
    """``(category id, name)`` of the config's training data, read without loading (or generating) the data."""
    data = config["data"]
    train = dict(data["train"])
    if data["format"] == "voc":
        from harmonicdet.data.voc import VOC_CLASSES

        return list(enumerate(train.get("classes", VOC_CLASSES), start=1))
    if not train and data["scenes"]:  # the Fashion-MNIST scenes: categories 1..10 (see make_scenes)
        from harmonicdet.data import FASHION_MNIST_CLASSES

        return list(enumerate(FASHION_MNIST_CLASSES, start=1))
    if data["format"] == "coco" and train.get("ann_file"):
        path = Path(train["ann_file"])
        try:
            categories = json.loads(path.read_text(encoding="utf-8"))["categories"]
            return [(int(c["id"]), str(c["name"])) for c in categories]
        except FileNotFoundError:
            raise ValueError(f"data.train.ann_file {path} does not exist: give --gt for the class names") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: no COCO categories ({err}); give --gt for the class names") from None
    train_set, _ = build_datasets(config, need_val=False)
    return [(train_set.label_to_category_id[i + 1], name) for i, name in enumerate(train_set.classes)]


def _categories(config: Config, gt_data: Optional[Dict[str, Any]], gt_path: Optional[Any]) -> Tuple[List[str],
                                                                                                    Dict[int, int]]:
    """Class names (label ``i + 1`` is ``names[i]``) and ``label -> category_id``, from ``gt`` or the config."""
    num_classes = config["model"]["num_classes"]
    if gt_data is not None:
        categories = []
        for i, c in enumerate(gt_data["categories"]):
            if not isinstance(c, dict) or not isinstance(c.get("id"), int):
                raise ValueError(f"{gt_path}: categories[{i}] needs an integer id")
            categories.append((c["id"], str(c.get("name", c["id"]))))
        where = str(gt_path)
    else:
        categories, where = _config_categories(config), "the config's training data"
    categories.sort()
    if len(categories) + 1 != num_classes:
        raise ValueError(f"{where} has {len(categories)} categories but model.num_classes is {num_classes} "
                         f"({num_classes - 1} classes + background)")
    return [n for _, n in categories], {i + 1: c for i, (c, _) in enumerate(categories)}


def _png_names(images: Sequence[Tuple[Path, str]], ids: Sequence[int]) -> List[str]:
    stems = [Path(name).stem for _, name in images]
    if len(set(stems)) == len(stems):
        return [f"{s}.png" for s in stems]
    return [f"{i}_{s}.png" for i, s in zip(ids, stems)]


@torch.no_grad()
def predict(config: Config, *, checkpoint: Any, images: Sequence[Any], out_dir: Any, score_thresh: float = 0.3,
            gt: Optional[Any] = None, batch_size: Optional[int] = None, max_per_image: int = 50,
            show_progress: bool = True) -> Dict[str, Any]:
    """Run the config's detector with ``checkpoint`` on ``images`` (files or folders); see the module docstring.

    Returns ``{"predictions": path, "images": [{id, file_name, width, height, png}, ...],
    "num_detections": int, "device": str}``.
    """
    from tqdm import tqdm

    from harmonicdet.visualization import draw

    if not is_finite_number(score_thresh) or not 0 <= score_thresh <= 1:
        raise ValueError(f"--score-thresh must be a number in [0, 1], got {score_thresh!r}")
    if not is_int(max_per_image) or max_per_image < 1:
        raise ValueError(f"max_per_image (--max-dets) must be an integer >= 1, got {max_per_image!r}")
    if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
        raise ValueError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
    out = Path(out_dir)
    found = find_images(images)
    inside = [path for path, _ in found if path.resolve().is_relative_to(out.resolve())]
    if inside:
        raise ValueError(f"--out {out} holds the input image {inside[0]}, which writing --out would overwrite; "
                         "choose another --out")
    folder = OutputFolder(out, COMMAND, {"checkpoint": str(checkpoint), "images": [str(p) for p, _ in found],
                                         "gt": None if gt is None else str(gt), "score_thresh": score_thresh,
                                         "max_per_image": max_per_image}, name="--out",
                          recognise=flat_layout("predictions.json", "images.json", "*.png"))
    ids, gt_data = _ids_from_gt(gt, found) if gt is not None else (list(range(1, len(found) + 1)), None)
    pngs = _png_names(found, ids)
    classes, label_to_category_id = _categories(config, gt_data, gt)
    device = resolve_device(config["train"]["device"])
    model = build_model(config)
    load_weights(model, Path(checkpoint))
    model.to(device).eval()
    loader = DataLoader(_ImageFiles([p for p, _ in found]), batch_size=batch_size or config["eval"]["batch_size"],
                        shuffle=False, num_workers=int(config["data"]["num_workers"]), collate_fn=list)
    results: List[Dict[str, Any]] = []
    entries: List[Dict[str, Any]] = []
    with folder.replace() as staging, tqdm(total=len(found), desc="predict", unit="img", disable=not show_progress,
                                           file=sys.stderr) as bar:
        for batch in loader:
            indices = [i for i, _ in batch]
            tensors = [torch.from_numpy(pixels).permute(2, 0, 1).to(device).float().div_(255) for _, pixels in batch]
            outputs = model(tensors)
            results += detections_to_coco(outputs, [ids[i] for i in indices], label_to_category_id)
            for (index, pixels), output in zip(batch, outputs):
                scores = output["scores"].detach().cpu().numpy()
                keep = np.nonzero(scores >= score_thresh)[0]
                keep = keep[np.argsort(-scores[keep], kind="stable")][:max_per_image][::-1]
                labels = output["labels"].detach().cpu().numpy()[keep]
                picture = draw.render(
                    pixels, det_boxes=output["boxes"].detach().cpu().numpy()[keep], det_scores=scores[keep],
                    det_names=[classes[int(k) - 1] if 1 <= k <= len(classes) else str(int(k)) for k in labels],
                    det_colours=[draw.class_colour(int(k) - 1) for k in labels])
                write_image_atomic(picture, staging / pngs[index], compress_level=1)
                entries.append({"id": ids[index], "file_name": found[index][1], "width": int(pixels.shape[1]),
                                "height": int(pixels.shape[0]), "png": pngs[index]})
            bar.update(len(batch))
        write_json_atomic(results, staging / "predictions.json")
        write_json_atomic({"images": entries, "categories": [{"id": label_to_category_id[i + 1], "name": name}
                                                             for i, name in enumerate(classes)]},
                          staging / "images.json")
    return {"predictions": out / "predictions.json", "images": entries, "num_detections": len(results),
            "device": str(device)}
