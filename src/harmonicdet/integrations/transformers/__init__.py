"""The Harmonic loss in Hugging Face transformers' detection transformers: RT-DETR (v1, v2) and D-FINE.

Usage (``pip install "harmonicdet[transformers]"``)::

    from transformers import RTDetrForObjectDetection
    from harmonicdet.integrations.transformers import harmonic_loss_function
    model = RTDetrForObjectDetection(config)          # or .from_pretrained(...)
    model.loss_function = harmonic_loss_function("rt_detr", preset="harmonicdet")
    loss = model(pixel_values=images, labels=labels).loss   # a plain loop, or transformers' Trainer

Nothing of transformers is patched: ``PreTrainedModel.loss_function`` has a public setter, and
the function set is :class:`HarmonicLossFunction`, whose criterion subclasses transformers' own
``RTDetrLoss`` / ``DFineLoss`` (:mod:`.criterion` states the loss term by term). Presets
``standard`` (the model's own loss), ``harmonic``, ``harmonic_iou``, ``harmonicdet``; options
``alpha``, ``gamma``, ``tc_margin``, ``detach_factors``, ``beta_c_mode``
(``harmonic_loss_function("d_fine", "harmonic", detach_factors="beta_c")``). With the gradient
through ``beta_c`` (``detach_factors=False``, the presets' default) DETR's box weights (7-10
against VFL's <= 1) push the matched queries' scores away from their IoU (measured in
``docs/integrations/transformers.md``): prefer ``detach_factors="beta_c"``. The statistics
of the last batch (``beta_c``, ``beta_r``, ``reversed_frac``...) are in the function's
``last_stats``. The function belongs to the model instance, not its config: ``save_pretrained``
writes a stock checkpoint that loads in a process that never imported harmonicdet, and a
reloaded model trains with the stock loss until the function is set again.

:mod:`.evaluation` turns the model's outputs into COCO results for the package's COCO
evaluator and consistency report; ``harmonicdet detr-study`` (:mod:`harmonicdet.apps.detr_study`) trains and
reports stock vs harmonic runs on the scenes.
"""

from __future__ import annotations

from .criterion import HarmonicDFineLoss, HarmonicMatchedLoss, HarmonicRTDetrLoss
from .loss_function import ARCHS, DETR_PRESETS, HarmonicLossFunction, harmonic_loss_function, loss_options

__all__ = ["ARCHS", "DETR_PRESETS", "HarmonicDFineLoss", "HarmonicLossFunction", "HarmonicMatchedLoss",
           "HarmonicRTDetrLoss", "harmonic_loss_function", "loss_options"]
