"""Run configurations: YAML files merged over defaults, with ``--set key=value`` overrides.

A config is a nested dict with the sections ``model``, ``data``, ``train``,
``eval`` and the top-level ``seed`` and ``output_dir``; :data:`DEFAULTS` lists every
field and its default. Unknown fields are refused, naming the field, so a typo in
a config never silently falls back to a default.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

import yaml

Config = Dict[str, Any]

DEFAULTS: Config = {
    "seed": 0,
    "output_dir": "runs/default",
    "model": {
        "arch": "fcos",  # faster_rcnn | mask_rcnn | retinanet | fcos | ssd
        "backbone": "resnet18",
        "num_classes": 11,  # including background, torchvision's convention
        "image_size": 128,
        "loss": "standard",  # standard | harmonic | harmonic_iou | harmonicdet | standard_posweight | qfl
        "loss_options": {},  # alpha, gamma, tc_margin, detach_factors, beta_c_mode, box_loss, positive_weight, qfl_beta
        "options": {},  # other build_detector keywords, e.g. fpn_channels
        "pretrained": None,  # path to a local state dict
    },
    "data": {
        "format": "coco",  # coco | voc
        "train": {},  # dataset arguments, e.g. {ann_file: ..., img_dir: ...}
        "val": {},
        "skip_invalid": False,
        "scenes": None,  # {out, train, val, seed, fashion_mnist}: generate Fashion-MNIST scenes if missing
        "hflip": True,
        "num_workers": 0,
    },
    "train": {
        "batch_size": 16,
        "max_iters": 1000,
        "optimizer": "sgd",  # sgd | adamw
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "cosine",  # cosine | step | constant
        "steps": [],  # iterations of the step schedule
        "step_gamma": 0.1,
        "warmup_iters": 100,
        "warmup_factor": 0.001,
        "grad_clip": 10.0,  # max gradient norm; null disables
        "amp": True,  # used only on CUDA
        "log_every": 10,
        "checkpoint_every": None,  # iterations; null: once per epoch
        "device": "auto",  # auto | cpu | cuda | cuda:N
    },
    "eval": {
        "batch_size": 16,
        "candidates": False,  # also collect pre-NMS candidates for the NMS ranking loss
        "every": None,  # iterations: evaluate during training every K iterations and at the end; null: never
        "subset": None,  # images of the validation set the periodic evaluation uses (the first N); null: all
    },
}


def _merge(base: Config, update: Mapping[str, Any], where: str, schema: Mapping[str, Any] = DEFAULTS) -> Config:
    for key, value in update.items():
        if key not in schema:
            raise ValueError(f"{where}: unknown field {key!r} (valid: {', '.join(sorted(schema))})")
        # sections of DEFAULTS merge field by field; free-form fields ({} or None there) take the value as it is
        if isinstance(schema[key], dict) and schema[key] and not isinstance(value, Mapping):
            raise ValueError(f"{where}: {key} must be a mapping of its fields, got {type(value).__name__}")
        if isinstance(schema[key], dict) and schema[key] and isinstance(value, Mapping):
            _merge(base[key], value, f"{where}.{key}", schema[key])
        else:
            base[key] = copy.deepcopy(value)
    return base


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"--set {text!r}: expected key=value, e.g. train.lr=0.02")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def load_config(path: Optional[str | Path] = None, overrides: Iterable[str] = (),
                base: Optional[Mapping[str, Any]] = None) -> Config:
    """Defaults, then ``base``, then the YAML file at ``path``, then ``key=value`` overrides.

    Override values are parsed as YAML (``train.lr=0.02``, ``model.loss_options={alpha: 1}``).
    The result is validated by :func:`harmonicdet.engine.schema.validate_config` (types, ranges,
    enums); an error names the field and the file or ``--set`` that gave it.
    """
    config = copy.deepcopy(DEFAULTS)
    origins: Dict[str, str] = {}
    if base is not None:
        _merge(config, base, "config")
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from None
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{path}: the top level must be a mapping of sections")
        _merge(config, loaded, str(path))
        _record_origins(origins, loaded, str(path))
    for text in overrides:
        keys, value = _parse_override(text)
        nested: Dict[str, Any] = value
        for key in reversed(keys):
            nested = {key: nested}
        _merge(config, nested, f"--set {text}")
        _record_origins(origins, nested, f"--set {text}")
    from harmonicdet.engine.schema import validate_config  # pydantic and the model constants, only when loading

    return validate_config(config, origin=lambda field: _origin(origins, field))


def _record_origins(origins: Dict[str, str], update: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Remember which file or ``--set`` gave each (dotted) field, for error messages."""
    for key, value in update.items():
        origins[prefix + str(key)] = source
        if isinstance(value, Mapping):
            _record_origins(origins, value, source, f"{prefix}{key}.")


def _origin(origins: Mapping[str, str], field: str) -> str:
    parts = field.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in origins:
            return origins[".".join(parts[:end])]
    return "config"


def dump_config(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)


def shipped_config(name: str) -> Path:
    """Path of a config shipped in ``harmonicdet/configs`` (the repository's ``configs/``)."""
    path = resources.files("harmonicdet") / "configs" / name
    if not path.is_file():
        raise ValueError(f"no shipped config {name!r}")
    return Path(str(path))
