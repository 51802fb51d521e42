"""The Harmonic loss in Ultralytics YOLO training (YOLOv8, YOLO11, YOLO26), offline.

Usage (``pip install "harmonicdet[ultralytics]"``)::

    from harmonicdet.integrations.ultralytics import HarmonicDetectionTrainer   # before ultralytics
    from ultralytics import YOLO
    YOLO("yolo11n.yaml").train(data="data.yaml", trainer=HarmonicDetectionTrainer, epochs=100)
    # options: a trainer class that carries them (Ultralytics refuses unknown train() keys)
    trainer = HarmonicDetectionTrainer.with_options("harmonicdet", detach_factors=True, tc_margin=0.3)

Nothing of Ultralytics is patched: the trainer's ``get_model`` returns
:class:`HarmonicDetectionModel`, a ``DetectionModel`` whose ``init_criterion`` returns
:class:`HarmonicDetectionLoss` (a ``v8DetectionLoss``), or for YOLO26's end-to-end head
``E2ELoss(model, loss_fn=HarmonicDetectionLoss)``.

**The loss.** Ultralytics' per-anchor terms, with TAL's soft targets ``t`` (the
normalised alignment metric of the assigned class, 0 elsewhere) and ``w = sum_k t_k``:
``cls = sum_k BCE(x_k, t_k)``, ``box = 1 - CIoU``, ``dfl`` (or YOLO26's ``l1``), summed as
``cls_gain * sum_all cls / T + box_gain * sum_fg w box / T + dfl_gain * sum_fg w dfl / T``,
``T = max(1, sum t)``. Eq. S-1 is applied per foreground anchor to

* ``L_cls = sum_k [BCE(x_k, t_k) - H(t_k)]`` = KL(t || sigmoid(x)), the BCE minus its
  minimum, the targets' binary entropy ``H``. Against a soft target BCE never reaches 0, so
  ``exp(-BCE)`` stays below ``exp(-H(t))`` however good the prediction (studies/yolo/first_measurements:
  on the scenes that ceiling averages well below 1); ``exp(-KL)`` is 1 when the prediction
  equals the target, as ``exp(-CE) = p`` is for the paper's one-hot targets.
* ``L_loc = (box_gain * box + dfl_gain * (dfl - H_dfl) [+ alpha * box_gain * HIoU]) / G``,
  ``G`` the sum of those gains: the box loss as Ultralytics weighs its parts, but on the
  scale of one unit-weight loss. DFL's two-bin soft target has the same entropy floor
  ``H_dfl`` (mean over the 4 sides), removed likewise; YOLO26's L1 has none. Option
  ``box_loss="none"`` (``alpha > 0``) drops the CIoU part (HIoU in its place, as on FCOS;
  ``box_loss`` then logs 0 before HIoU is added to it).

``beta_c = exp(-L_cls)`` (or with ``beta_c_mode="prob"`` the sigmoid probability of the
assigned class), ``beta_r = exp(-L_loc)``: **the gains sit outside the exponentials**. With
them inside (``exp(-7.5 (1 - CIoU) - ...)``) ``beta_r`` is near 0 for all but perfect
boxes and the coupling vanishes (measured in studies/yolo/first_measurements). Then, by
:func:`harmonicdet.losses.harmonic_terms` (gradients through the factors unless
``detach_factors``), the terms Ultralytics sums become

* ``cls_loss = cls_gain * (sum_bg BCE + sum_fg [(1 + beta_r) L_cls + H(t)]) / T``,
* ``box_loss + dfl_loss [+ hiou_loss] = sum_fg w [(1 + beta_c) G L_loc + dfl_gain H_dfl] / T``,
  split by each part's share,
* ``tc_loss = sum_fg TC(p, IoU) / T`` with ``tc_margin`` (gain 1).

The entropies are constants: background anchors keep plain BCE, and with ``beta = 0`` every
term is Ultralytics' own, so ``T`` and the gains keep their meaning. Preset ``"standard"``
is Ultralytics' loss itself (``v8DetectionLoss`` / ``E2ELoss``), to the bit.

**What is logged.** ``results.csv`` has Ultralytics' columns for every preset
(``train/``/``val/`` ``box_loss``, ``cls_loss``, ``dfl_loss`` or YOLO26's ``l1_loss``): the
terms above as back-propagated, with ``hiou_loss`` added to ``box_loss`` and ``tc_loss`` to
``cls_loss``. They are **not on the stock scale** (the factors weigh them up to 2x, HIoU adds
to the box term): compare runs on the ``stock_*`` columns of the run folder's
``harmonicdet_loss.csv``, Ultralytics' own three terms on the same batches, which the trainer
writes per epoch beside each term on its own and the means of ``beta_c``, ``beta_r`` and
``reversed_frac``; ``harmonicdet_loss.yaml`` states the loss
(:mod:`~harmonicdet.integrations.ultralytics.run_log`).

**Offline.** Importing this package first calls
:func:`~harmonicdet.integrations.ultralytics.environment.prepare_environment`, which sets, unless
already set, ``YOLO_OFFLINE=1`` (Ultralytics skips its import-time DNS probe, update checks and
usage events) and ``YOLO_AUTOINSTALL=0`` (no ``pip`` subprocess). The settings folder is
Ultralytics' own per-user one (``YOLO_CONFIG_DIR`` if set, else e.g. ``~/.config/Ultralytics``),
as for a stock run, whatever the working directory; the trainer copies matplotlib's
DejaVuSans.ttf there as ``Arial.ttf`` and ``Arial.Unicode.ttf`` (Ultralytics' dataset check
downloads them otherwise). Import it **before** ``ultralytics``: the variables are read when
Ultralytics is imported. On a CUDA
device the AMP check downloads ``yolo26n.pt``; without that file in Ultralytics' weights
folder the trainer skips the check (a warning) and trains without AMP.

**Checkpoints** hold the model as Ultralytics' own ``DetectionModel`` (plus a plain dict
attribute ``harmonicdet_loss``), so they load in a process that never imported harmonicdet.
Resuming:

* ``train(resume=True, trainer=HarmonicDetectionTrainer)`` restores the harmonic loss with the
  checkpoint's options (a trainer with other explicit options is refused) and appends to both
  ``harmonicdet_loss`` files.
* ``YOLO("last.pt").train(resume=True)`` without ``trainer=`` resumes with **Ultralytics'
  stock loss**: Ultralytics cannot be told otherwise without patching it. Nothing is
  corrupted (``results.csv`` keeps its columns), and the run folder shows it:
  ``harmonicdet_loss.csv`` has no rows for those epochs
  (:func:`~harmonicdet.integrations.ultralytics.run_log.epochs_without_harmonic_loss`).
  Its checkpoints lose ``harmonicdet_loss``; a later resume with the harmonic trainer takes
  the loss from ``harmonicdet_loss.yaml``, warns, and records the stock epochs there.
* A run begun when ``results.csv`` had ``hiou_loss``/``tc_loss`` columns keeps them when
  resumed with the harmonic trainer (its rows stay as long as its header).
"""

from __future__ import annotations

from .environment import ensure_fonts, prepare_environment

prepare_environment()  # before anything below imports ultralytics: it reads these variables at its import

from .criterion import (  # noqa: E402
    DEFAULT_PRESET,
    YOLO_PRESETS,
    HarmonicDetectionLoss,
    build_criterion,
    criterion_stats,
    last_anchors,
    last_terms,
    loss_options,
)
from .run_log import epochs_without_harmonic_loss  # noqa: E402
from .trainer import HarmonicDetectionModel, HarmonicDetectionTrainer  # noqa: E402

__all__ = ["DEFAULT_PRESET", "YOLO_PRESETS", "HarmonicDetectionLoss", "HarmonicDetectionModel",
           "HarmonicDetectionTrainer", "build_criterion", "criterion_stats", "ensure_fonts",
           "epochs_without_harmonic_loss", "last_anchors", "last_terms", "loss_options", "prepare_environment"]
