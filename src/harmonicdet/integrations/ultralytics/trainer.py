"""The Ultralytics trainer and model that train with the Harmonic loss; checkpoints load without harmonicdet.

The trainer also records the run's loss in its folder (:mod:`.run_log`: ``harmonicdet_loss.yaml``
and ``harmonicdet_loss.csv``) through its own hook on Ultralytics' events, no user callback.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER, RANK, WEIGHTS_DIR

from .criterion import DEFAULT_PRESET, EXTRA_TERMS, _criterion, _loss_spec, _options_of, build_criterion, last_terms
from .environment import ensure_fonts
from .run_log import (LOSS_FILE, EpochLossLog, csv_columns, epochs_without_harmonic_loss, stated_loss,
                      write_loss_statement)

__all__ = ["HarmonicDetectionModel", "HarmonicDetectionTrainer"]


class HarmonicDetectionModel(DetectionModel):
    """A ``DetectionModel`` whose ``init_criterion`` builds the harmonic criterion.

    Args:
        cfg, ch, nc, verbose: as ``DetectionModel``.
        loss: ``{"loss": preset, **options}``, stored as the plain dict ``harmonicdet_loss``
            (plain data, so pickled checkpoints need no harmonicdet).
        split_items: the criterion logs ``hiou_loss`` and ``tc_loss`` as items of their own (see
            :class:`~harmonicdet.integrations.ultralytics.criterion.HarmonicDetectionLoss`); stored, only when
            set, as the plain bool ``harmonicdet_split_items``.
    """

    harmonicdet_split_items = False

    def __init__(self, cfg="yolo11n.yaml", ch: int = 3, nc: Optional[int] = None, verbose: bool = True, *,
                 loss: Optional[Mapping[str, Any]] = None, split_items: bool = False) -> None:
        spec = dict(loss) if loss is not None else {"loss": DEFAULT_PRESET}
        _options_of(spec)  # validate before building the network
        super().__init__(cfg, ch=ch, nc=nc, verbose=verbose)
        self.harmonicdet_loss = spec
        if split_items:  # the EMA copy made from this model keeps it, so validation logs the same items
            self.harmonicdet_split_items = True

    def init_criterion(self):
        return build_criterion(self, _options_of(self.harmonicdet_loss), split_items=self.harmonicdet_split_items)


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
    trainer restores the loss the checkpoint was trained with. ``results.csv`` has Ultralytics'
    columns for every preset; the run folder gets ``harmonicdet_loss.yaml`` and
    ``harmonicdet_loss.csv`` (:mod:`.run_log`). A run whose ``results.csv`` began with
    ``hiou_loss``/``tc_loss`` columns keeps them when resumed.
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
        self.split_items = False
        super().__init__(*args, **kwargs)
        self.epoch_loss_log = EpochLossLog(self.save_dir)

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """A :class:`HarmonicDetectionModel`; on resume, with the loss stored in the checkpoint."""
        if getattr(self, "resume", False) and weights is not None:
            # a checkpoint saved by a stock resume of a harmonic run has lost it; the run folder still states it
            saved = getattr(weights, "harmonicdet_loss", None) or stated_loss(self.save_dir)
            if saved is None:
                raise ValueError("this checkpoint was trained with Ultralytics' stock loss; resume it without "
                                 "trainer=HarmonicDetectionTrainer, or start a new run")
            if self.explicit_options and dict(saved) != dict(self.loss_spec):
                raise ValueError(f"the checkpoint was trained with {dict(saved)}, the trainer has "
                                 f"{dict(self.loss_spec)}: resume with trainer=HarmonicDetectionTrainer")
            self.active_loss_spec = dict(saved)
            header = csv_columns(self.csv)
            self.split_items = any(f"train/{name}" in header for name in EXTRA_TERMS)  # keep the run's columns
        model = HarmonicDetectionModel(cfg, nc=self.data["nc"], ch=self.data["channels"],
                                       verbose=verbose and RANK == -1, loss=self.active_loss_spec,
                                       split_items=self.split_items)
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

    def run_callbacks(self, event: str) -> None:
        """This trainer's record of its loss (``harmonicdet_loss.yaml``/``.csv``), then Ultralytics' callbacks."""
        if RANK in {-1, 0}:
            if event == "on_train_start":
                self._start_loss_record()
            elif event == "on_train_epoch_start":
                self.epoch_loss_log.reset()
            elif event == "on_train_batch_end":
                self.epoch_loss_log.add_batch(last_terms(self.model),
                                              getattr(_criterion(self.model), "last_stats", None) or {})
        super().run_callbacks(event)

    def _start_loss_record(self) -> None:
        resume = bool(getattr(self, "resume", False))
        missing = epochs_without_harmonic_loss(self.save_dir, up_to=self.start_epoch) if resume else []
        stated = (self.save_dir / LOSS_FILE).is_file()
        self.epoch_loss_log.start(self.start_epoch, resume)
        write_loss_statement(self.save_dir, self.active_loss_spec, self.start_epoch, resume=resume,
                             split_items=self.split_items, epochs_not_logged=missing)
        if missing:
            why = ("were trained without HarmonicDetectionTrainer (a resume without trainer=...: Ultralytics' stock "
                   "loss)" if stated else "were trained before harmonicdet recorded its loss in the run folder")
            span = f"epoch {missing[0]}" if len(missing) == 1 else f"epochs {missing[0]}-{missing[-1]}"
            LOGGER.warning(f"harmonicdet: {span} of {self.save_dir} {why}; resuming with {self.active_loss_spec}")

    def save_metrics(self, metrics):
        """Ultralytics' row of ``results.csv``, then the epoch's row of ``harmonicdet_loss.csv``."""
        super().save_metrics(metrics)
        self.epoch_loss_log.write(self.epoch + 1)

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
