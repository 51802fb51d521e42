"""The Ultralytics trainer and model that train with the Harmonic loss; checkpoints load without harmonicdet."""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER, RANK, WEIGHTS_DIR

from .criterion import DEFAULT_PRESET, _loss_spec, _options_of, build_criterion
from .environment import ensure_fonts

__all__ = ["HarmonicDetectionModel", "HarmonicDetectionTrainer"]


class HarmonicDetectionModel(DetectionModel):
    """A ``DetectionModel`` whose ``init_criterion`` builds the harmonic criterion.

    Args:
        cfg, ch, nc, verbose: as ``DetectionModel``.
        loss: ``{"loss": preset, **options}``, stored as the plain dict ``harmonicdet_loss``
            (plain data, so pickled checkpoints need no harmonicdet).
    """

    def __init__(self, cfg="yolo11n.yaml", ch: int = 3, nc: Optional[int] = None, verbose: bool = True, *,
                 loss: Optional[Mapping[str, Any]] = None) -> None:
        spec = dict(loss) if loss is not None else {"loss": DEFAULT_PRESET}
        _options_of(spec)  # validate before building the network
        super().__init__(cfg, ch=ch, nc=nc, verbose=verbose)
        self.harmonicdet_loss = spec

    def init_criterion(self):
        return build_criterion(self, _options_of(self.harmonicdet_loss))


def _plain_class(model: torch.nn.Module) -> type:
    """The first Ultralytics class in the model's MRO (``DetectionModel`` for :class:`HarmonicDetectionModel`)."""
    for cls in type(model).__mro__:
        if cls.__module__.split(".")[0] == "ultralytics":
            return cls
    return type(model)


class HarmonicDetectionTrainer(DetectionTrainer):
    """Ultralytics' ``DetectionTrainer`` training with the Harmonic loss (default preset ``"harmonic"``).

    ``YOLO("yolo11n.yaml").train(data=..., trainer=HarmonicDetectionTrainer)``; options through
    :meth:`with_options`. Checkpoints store a plain ``DetectionModel``; resuming with this
    trainer restores the loss the checkpoint was trained with.
    """

    loss_spec: Mapping[str, Any] = {"loss": DEFAULT_PRESET}
    explicit_options: bool = False

    @classmethod
    def with_options(cls, loss: str = DEFAULT_PRESET, **options: Any) -> type:
        """A trainer class carrying a loss preset and options (validated now).

        ``trainer=HarmonicDetectionTrainer.with_options("harmonicdet", detach_factors=True)``;
        options as :func:`loss_options`. ``"standard"`` is Ultralytics' own loss (a control).
        """
        spec = _loss_spec(loss, options)
        name = f"{cls.__name__}_{loss}"
        return type(name, (cls,), {"loss_spec": spec, "explicit_options": True, "__module__": cls.__module__,
                                   "__qualname__": name, "__doc__": f"{cls.__name__} with {spec}."})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ensure_fonts()
        self.active_loss_spec: Dict[str, Any] = dict(self.loss_spec)
        super().__init__(*args, **kwargs)

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """A :class:`HarmonicDetectionModel`; on resume, with the loss stored in the checkpoint."""
        if getattr(self, "resume", False) and weights is not None:
            saved = getattr(weights, "harmonicdet_loss", None)
            if saved is None:
                raise ValueError("this checkpoint was trained with Ultralytics' stock loss; resume it without "
                                 "trainer=HarmonicDetectionTrainer, or start a new run")
            if self.explicit_options and dict(saved) != dict(self.loss_spec):
                raise ValueError(f"the checkpoint was trained with {dict(saved)}, the trainer has "
                                 f"{dict(self.loss_spec)}: resume with trainer=HarmonicDetectionTrainer")
            self.active_loss_spec = dict(saved)
        model = HarmonicDetectionModel(cfg, nc=self.data["nc"], ch=self.data["channels"],
                                       verbose=verbose and RANK == -1, loss=self.active_loss_spec)
        model = self.set_model_names_for_load(model)
        if weights:
            model.load(weights)
        if RANK in {-1, 0}:
            LOGGER.info(f"harmonicdet: loss {self.active_loss_spec}")
        return model

    def _setup_train(self):
        # check_amp() downloads yolo26n.pt on CUDA; offline without it, skip the check and train in fp32
        if (os.environ.get("YOLO_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on", "y", "t"}
                and self.device.type == "cuda" and self.args.amp not in (False, "fp32", "bf16")
                and not (WEIGHTS_DIR / "yolo26n.pt").is_file()):
            LOGGER.warning(f"harmonicdet: offline and {WEIGHTS_DIR / 'yolo26n.pt'} is missing, so Ultralytics' AMP "
                           "check cannot run: training with amp=False (place the file there, or pass amp='bf16')")
            self.args.amp = False
        return super()._setup_train()

    def save_model(self):
        """Ultralytics' checkpoint, with the model saved as its Ultralytics class (loads without harmonicdet)."""
        ema = self.ema.ema if getattr(self, "ema", None) is not None else None
        if ema is None:
            return super().save_model()
        own = type(ema)
        ema.__class__ = _plain_class(ema)
        try:
            return super().save_model()
        finally:
            ema.__class__ = own
