"""Datasets and models from a run config: the one place that maps config fields to constructors."""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Tuple

import torch

from harmonicdet.data import (
    CocoDetectionDataset,
    VocDetectionDataset,
    build_transforms,
    make_scenes,
    scenes_paths,
)
from harmonicdet.engine.config import Config
from harmonicdet.engine.schema import config_loss_options
from harmonicdet.models import build_detector

__all__ = ["build_datasets", "build_model", "coco_ground_truth"]

_DATASETS = {"coco": CocoDetectionDataset, "voc": VocDetectionDataset}


def _prepare_scenes(config: Config) -> None:
    """Generate the Fashion-MNIST scenes a config asks for and point empty data splits at them."""
    scenes = config["data"]["scenes"]
    if not scenes:
        return
    if config["data"]["format"] != "coco":
        raise ValueError("data.scenes: the scenes are a COCO dataset; set data.format: coco")
    make_scenes(scenes["out"], num_train=scenes.get("train", 2000), num_val=scenes.get("val", 300),
                seed=scenes.get("seed", 0), fashion_mnist=scenes.get("fashion_mnist"))
    for split in ("train", "val"):
        if not config["data"][split]:
            config["data"][split] = scenes_paths(scenes["out"], split)


def _dataset(config: Config, split: str, train: bool):
    data = config["data"]
    arguments = dict(data[split])
    if not arguments:
        raise ValueError(f"data.{split}: no dataset given (e.g. {{img_dir: ..., ann_file: ...}} or data.scenes)")
    transforms = build_transforms(train, hflip=bool(data["hflip"]))
    try:
        return _DATASETS[data["format"]](**arguments, transforms=transforms, skip_invalid=bool(data["skip_invalid"]))
    except TypeError as err:
        raise ValueError(f"data.{split}: {err}") from None


def build_datasets(config: Config, *, need_val: bool = True) -> Tuple[Any, Optional[Any]]:
    """``(train_set, val_set)`` of a config; ``val_set`` is ``None`` unless ``need_val``.

    Checks that ``model.num_classes`` is the number of dataset classes plus background.
    """
    _prepare_scenes(config)
    train_set = _dataset(config, "train", train=True)
    if train_set.num_objects == 0:
        source = getattr(train_set, "ann_file", None) or config["data"]["train"]
        skipped = f" ({train_set.num_skipped} invalid ones skipped)" if train_set.num_skipped else ""
        raise ValueError(f"data.train: {source} has no annotated objects{skipped}: nothing to train on")
    expected = len(train_set.classes) + 1
    if config["model"]["num_classes"] != expected:
        raise ValueError(f"model.num_classes is {config['model']['num_classes']} but the training data has "
                         f"{len(train_set.classes)} classes (+1 background = {expected})")
    val_set = _dataset(config, "val", train=False) if need_val else None
    if val_set is not None and val_set.num_objects == 0:
        warnings.warn(f"data.val: {getattr(val_set, 'ann_file', None) or config['data']['val']} has no annotated "
                      "objects: AP will be undefined", stacklevel=2)
    if val_set is not None and list(val_set.classes) != list(train_set.classes):
        raise ValueError(f"data.val: classes {val_set.classes} differ from the training classes {train_set.classes}")
    return train_set, val_set


def build_model(config: Config) -> torch.nn.Module:
    """The detector of ``config['model']`` (see :func:`harmonicdet.models.build_detector`)."""
    model = config["model"]
    options = dict(model["options"])
    clash = set(options) & set(model["loss_options"])
    if clash:
        raise ValueError(f"model.options and model.loss_options both set {sorted(clash)}")
    return build_detector(model["arch"], model["num_classes"], loss=config_loss_options(model),
                          backbone=model["backbone"], image_size=model["image_size"], pretrained=model["pretrained"],
                          **options)


def coco_ground_truth(dataset) -> Dict[str, Any]:
    """The COCO ground-truth dict of a HarmonicDet dataset (original image coordinates)."""
    return dataset.coco_ground_truth()
