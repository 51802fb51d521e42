"""The one validated schema of a run config (pydantic v2): types, ranges, enums, sections as mappings.

:func:`harmonicdet.engine.config.load_config` merges defaults, files and ``--set``
overrides into a plain nested dict, then :func:`validate_config` checks it here and
returns the same plain dict shape (floats as floats). Every error is one line
naming the field by its dotted path, e.g. ``train.lr: Input should be a valid
number, got 'abc'``.

Free-form fields stay free-form: ``model.loss_options`` (checked by the loss
presets, :func:`harmonicdet.models.presets.harmonic_options`, whose errors the model
builder prefixes with ``model.loss_options.<key>``), ``model.options`` (keywords of
``build_detector``) and ``data.train`` / ``data.val`` (dataset arguments).
``data.scenes`` is checked here (``out``, ``train``, ``val``, ``seed``,
``fashion_mnist``) and dumped with only the keys it was given.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer
from typing_extensions import Annotated

from harmonicdet.models.backbones import BACKBONES
from harmonicdet.models.factory import ARCHS
from harmonicdet.models.presets import PRESETS, LossOptions, harmonic_options

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]

# strict: no str -> number or int -> bool coercion (an int is accepted for a float field);
# finite floats only; unknown fields refused
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Section(BaseModel):
    model_config = _STRICT


class ModelSection(_Section):
    arch: Literal[ARCHS]  # type: ignore[valid-type]
    backbone: Optional[Literal[BACKBONES]]  # type: ignore[valid-type]
    num_classes: Annotated[int, Field(ge=2)]
    image_size: Annotated[int, Field(ge=32)]
    loss: Literal[PRESETS]  # type: ignore[valid-type]
    loss_options: Dict[str, Any]
    options: Dict[str, Any]
    pretrained: Optional[Annotated[str, Field(min_length=1)]]


class ScenesSpec(_Section):
    out: Annotated[str, Field(min_length=1)]
    train: PositiveInt = 2000
    val: PositiveInt = 300
    seed: NonNegativeInt = 0
    fashion_mnist: Optional[str] = None


class DataSection(_Section):
    format: Literal["coco", "voc"]
    train: Dict[str, Any]
    val: Dict[str, Any]
    skip_invalid: bool
    scenes: Optional[ScenesSpec]
    hflip: bool
    num_workers: NonNegativeInt

    @field_serializer("scenes")
    def _scenes_as_given(self, scenes: Optional[ScenesSpec]) -> Optional[Dict[str, Any]]:
        return None if scenes is None else scenes.model_dump(exclude_unset=True)


class TrainSection(_Section):
    batch_size: PositiveInt
    max_iters: PositiveInt
    optimizer: Literal["sgd", "adamw"]
    lr: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: NonNegativeFloat
    schedule: Literal["cosine", "step", "constant"]
    steps: List[PositiveInt]
    step_gamma: PositiveFloat
    warmup_iters: NonNegativeInt
    warmup_factor: Annotated[float, Field(ge=0, le=1)]
    grad_clip: Optional[PositiveFloat]
    amp: bool
    log_every: PositiveInt
    checkpoint_every: Optional[PositiveInt]
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")]


class EvalSection(_Section):
    batch_size: PositiveInt
    candidates: bool
    every: Optional[PositiveInt] = None  # periodic evaluation every K iterations
    subset: Optional[PositiveInt] = None  # val images of the periodic evaluation


class RunConfig(_Section):
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)]
    output_dir: Annotated[str, Field(min_length=1)]
    model: ModelSection
    data: DataSection
    train: TrainSection
    eval: EvalSection


def _dotted(loc) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def validate_config(config: Mapping[str, Any], origin=None) -> Dict[str, Any]:
    """``config`` checked against :class:`RunConfig`, as a plain nested dict.

    Raises a one-line ``ValueError`` naming the first bad field's dotted path (and,
    with ``origin(path) -> str``, where the value came from: a file or a ``--set``).
    """
    for section in ("model", "data", "train", "eval"):
        value = config.get(section)
        if not isinstance(value, Mapping):
            where = origin(section) if origin else "config"
            raise ValueError(f"{where}: {section} must be a mapping of its fields, got {type(value).__name__}")
    try:
        validated = RunConfig.model_validate(dict(config)).model_dump()
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        path = _dotted(first["loc"])
        where = f"{origin(path)}: " if origin else ""
        got = first.get("input")
        shown = "" if isinstance(got, Mapping) else f", got {got!r}"
        raise ValueError(f"{where}{path}: {first['msg']}{shown}") from None
    try:
        config_loss_options(validated["model"])
    except ValueError as err:
        raise ValueError(f"{origin('model.loss_options')}: {err}" if origin else str(err)) from None
    return validated


def config_loss_options(model: Mapping[str, Any]) -> LossOptions:
    """The options object of a config's ``model`` section (``loss`` and ``loss_options``): the one conversion
    from a config, by :func:`harmonicdet.models.presets.harmonic_options`; its error names
    ``model.loss_options``."""
    try:
        return harmonic_options(model["loss"], model["loss_options"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"model.loss_options: {err}") from None
