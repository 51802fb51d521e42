"""The model's ``loss_function``: :func:`harmonic_loss_function` and :class:`HarmonicLossFunction`.

A transformers detection model calls ``self.loss_function(logits, labels, device, pred_boxes,
config, outputs_class, outputs_coord, enc_topk_logits=..., enc_topk_bboxes=...,
denoising_meta_values=..., predicted_corners=..., initial_reference_points=...)`` and takes
``(loss, loss_dict, auxiliary_outputs)`` back; ``PreTrainedModel.loss_function`` has a public
setter. :class:`HarmonicLossFunction` has that signature: it arranges the outputs as the stock
``RTDetrForObjectDetectionLoss`` / ``DFineForObjectDetectionLoss`` of transformers 5.25 do
(the denoising queries split off, per-layer outputs as ``auxiliary_outputs`` with the encoder's
top-k last) and calls :class:`~harmonicdet.integrations.transformers.criterion.HarmonicRTDetrLoss`
or :class:`~harmonicdet.integrations.transformers.criterion.HarmonicDFineLoss`. ``loss`` is the
sum of ``loss_dict``, as in the stock functions.

The function is an attribute of the model instance only: ``save_pretrained`` writes the
config and weights as for a stock model, and the checkpoint loads without harmonicdet.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from transformers.loss.loss_d_fine import _set_aux_loss2
from transformers.loss.loss_rt_detr import _set_aux_loss

from harmonicdet.losses.options import HarmonicOptions
from harmonicdet.models.presets import harmonic_options

from .criterion import QUERY_KEYS, HarmonicDFineLoss, HarmonicRTDetrLoss

__all__ = ["ARCHS", "DETR_PRESETS", "HarmonicLossFunction", "harmonic_loss_function", "loss_options"]

ARCHS = {"rt_detr": ("rt_detr",), "rt_detr_v2": ("rt_detr_v2",), "d_fine": ("d_fine",)}  # arch -> config.model_type
DETR_PRESETS = ("standard", "harmonic", "harmonic_iou", "harmonicdet")
_REFUSED_OPTIONS = ("box_loss", "positive_weight")  # the model keeps its L1 + GIoU; no control preset here


def loss_options(preset: str = "harmonicdet", **overrides: Any) -> Optional[HarmonicOptions]:
    """The validated options of a preset for the DETR losses; ``None`` for ``"standard"`` (the model's own loss).

    Presets and options as :func:`harmonicdet.models.presets.harmonic_options` (``alpha``, ``gamma``,
    ``tc_margin``, ``detach_factors``, ``beta_c_mode``); ``box_loss``, ``positive_weight`` and the
    presets ``qfl`` and ``standard_posweight`` are refused.
    """
    if preset not in DETR_PRESETS:
        raise ValueError(f"preset must be one of {DETR_PRESETS} for transformers' DETR losses, got {preset!r}")
    refused = sorted(set(overrides) & set(_REFUSED_OPTIONS))
    if refused:
        raise ValueError(f"option(s) {refused} are not available with transformers' DETR losses "
                         "(the model keeps its own L1 + GIoU box loss)")
    return harmonic_options(preset, overrides)


def _rt_detr_outputs(logits, pred_boxes, config, outputs_class, outputs_coord, enc_topk_logits, enc_topk_bboxes,
                     denoising_meta_values, **_) -> Tuple[Dict[str, Any], Optional[List[Dict[str, Tensor]]]]:
    """The criterion's outputs dict and ``auxiliary_outputs``, as ``RTDetrForObjectDetectionLoss`` arranges them."""
    if denoising_meta_values is not None:  # the loss is over the normal queries only
        _, logits = torch.split(logits, denoising_meta_values["dn_num_split"], dim=1)
        _, pred_boxes = torch.split(pred_boxes, denoising_meta_values["dn_num_split"], dim=1)
    outputs = {"logits": logits, "pred_boxes": pred_boxes}
    auxiliary_outputs = None
    if config.auxiliary_loss:
        if denoising_meta_values is not None:
            dn_out_coord, outputs_coord = torch.split(outputs_coord, denoising_meta_values["dn_num_split"], dim=2)
            dn_out_class, outputs_class = torch.split(outputs_class, denoising_meta_values["dn_num_split"], dim=2)
        auxiliary_outputs = _set_aux_loss(outputs_class[:, :-1].transpose(0, 1), outputs_coord[:, :-1].transpose(0, 1))
        outputs["auxiliary_outputs"] = auxiliary_outputs
        outputs["auxiliary_outputs"].extend(_set_aux_loss([enc_topk_logits], [enc_topk_bboxes]))
        if denoising_meta_values is not None:
            outputs["dn_auxiliary_outputs"] = _set_aux_loss(dn_out_class.transpose(0, 1), dn_out_coord.transpose(0, 1))
            outputs["denoising_meta_values"] = denoising_meta_values
    return outputs, auxiliary_outputs


def _d_fine_outputs(logits, pred_boxes, config, outputs_class, outputs_coord, enc_topk_logits, enc_topk_bboxes,
                    denoising_meta_values, predicted_corners, initial_reference_points,
                    **_) -> Tuple[Dict[str, Any], Optional[List[Dict[str, Tensor]]]]:
    """The criterion's outputs dict and ``auxiliary_outputs``, as ``DFineForObjectDetectionLoss`` arranges them."""
    if denoising_meta_values is not None:
        _, logits = torch.split(logits, denoising_meta_values["dn_num_split"], dim=1)
        _, pred_boxes = torch.split(pred_boxes, denoising_meta_values["dn_num_split"], dim=1)
    outputs = {"logits": logits, "pred_boxes": pred_boxes.clamp(min=0, max=1)}
    auxiliary_outputs = None
    if config.auxiliary_loss:
        split = denoising_meta_values["dn_num_split"] if denoising_meta_values is not None else None
        coord = outputs_coord.clamp(min=0, max=1)
        if split is not None:
            dn_coord, coord = torch.split(coord, split, dim=2)
            dn_class, outputs_class = torch.split(outputs_class, split, dim=2)
            dn_corners, predicted_corners = torch.split(predicted_corners, split, dim=2)
            dn_refs, initial_reference_points = torch.split(initial_reference_points, split, dim=2)
        auxiliary_outputs = _set_aux_loss2(
            outputs_class[:, :-1].transpose(0, 1), coord[:, :-1].transpose(0, 1),
            predicted_corners[:, :-1].transpose(0, 1), initial_reference_points[:, :-1].transpose(0, 1),
            predicted_corners[:, -1], outputs_class[:, -1])
        outputs["auxiliary_outputs"] = auxiliary_outputs
        outputs["auxiliary_outputs"].extend(_set_aux_loss([enc_topk_logits], [enc_topk_bboxes.clamp(min=0, max=1)]))
        if split is not None:
            outputs["dn_auxiliary_outputs"] = _set_aux_loss2(
                dn_class.transpose(0, 1), dn_coord.transpose(0, 1), dn_corners.transpose(0, 1),
                dn_refs.transpose(0, 1), dn_corners[:, -1], dn_class[:, -1])
            outputs["denoising_meta_values"] = denoising_meta_values
    return outputs, auxiliary_outputs


_FAMILIES = {"rt_detr": (HarmonicRTDetrLoss, _rt_detr_outputs), "rt_detr_v2": (HarmonicRTDetrLoss, _rt_detr_outputs),
             "d_fine": (HarmonicDFineLoss, _d_fine_outputs)}


class HarmonicLossFunction:
    """A detection model's ``loss_function`` with the Harmonic loss on the Hungarian-matched queries.

    Args:
        arch: ``"rt_detr"``, ``"rt_detr_v2"`` or ``"d_fine"`` (the model's ``config.model_type``).
        options: validated :class:`~harmonicdet.losses.HarmonicOptions` (:func:`loss_options`);
            ``None``: the model's stock criterion.

    Attributes:
        last_stats: floats of the last call (``{}`` for the stock loss): the means over the final layer's
            matched queries of :data:`~harmonicdet.integrations.transformers.criterion.QUERY_KEYS`
            (``beta_c`` the factor used; ``beta_c_kl``, ``beta_c_bce``, ``beta_c_ceiling``, ``prob`` and
            ``target`` its alternatives and the IoU target, as in ``docs/integrations/transformers.md``),
            its ``reversed_frac``, ``num_matched``, and ``reversed_frac_all``, the fraction over every
            supervised group (auxiliary layers, encoder top-k, denoising).
        last_queries: the final layer's per-query tensors of :data:`QUERY_KEYS` (detached, CPU) of the last call.
    """

    def __init__(self, arch: str, options: Optional[HarmonicOptions] = None) -> None:
        if arch not in _FAMILIES:
            raise ValueError(f"arch must be one of {tuple(_FAMILIES)}, got {arch!r}")
        if options is not None and not isinstance(options, HarmonicOptions):
            raise ValueError(f"options must be a HarmonicOptions (loss_options()) or None, "
                             f"got {type(options).__name__}")
        if options is not None and (options.box_loss is not None or options.positive_weight is not None):
            raise ValueError("options.box_loss and options.positive_weight are not available with transformers' "
                             "DETR losses")
        self.arch, self.options = arch, options
        self.last_stats: Dict[str, float] = {}
        self.last_queries: Dict[str, Tensor] = {}

    def __repr__(self) -> str:
        return f"HarmonicLossFunction(arch={self.arch!r}, options={self.options!r})"

    def __call__(self, logits: Tensor, labels: List[Dict[str, Tensor]], device: torch.device, pred_boxes: Tensor,
                 config: Any, outputs_class: Optional[Tensor] = None, outputs_coord: Optional[Tensor] = None,
                 **kwargs: Any) -> Tuple[Tensor, Dict[str, Tensor], Optional[List[Dict[str, Tensor]]]]:
        """``(loss, loss_dict, auxiliary_outputs)`` as the stock ``*ForObjectDetectionLoss``; ``loss`` sums
        ``loss_dict``."""
        if config.model_type not in ARCHS[self.arch]:
            raise ValueError(f"this loss function is for arch {self.arch!r}, but the model is {config.model_type!r}")
        criterion_class, arrange = _FAMILIES[self.arch]
        criterion = criterion_class(config, self.options).to(device)
        arguments = {"enc_topk_logits": None, "enc_topk_bboxes": None, "denoising_meta_values": None,
                     "predicted_corners": None, "initial_reference_points": None, **kwargs}
        outputs, auxiliary_outputs = arrange(logits, pred_boxes, config, outputs_class, outputs_coord, **arguments)
        loss_dict = criterion(outputs, labels)
        self._summarise(criterion.group_records)
        return sum(loss_dict.values()), loss_dict, auxiliary_outputs

    def _summarise(self, records: List[Dict[str, Tensor]]) -> None:
        if self.options is None or not records:
            self.last_stats, self.last_queries = {}, {}
            return
        final = records[0]
        count = int(final["beta_c"].numel())
        self.last_queries = {key: final[key].cpu() for key in QUERY_KEYS}
        self.last_stats = {key: float(final[key].mean()) if count else float("nan") for key in QUERY_KEYS}
        self.last_stats["reversed_frac"] = float(final["reversed_frac"])
        self.last_stats["num_matched"] = float(count)
        matched = [r["beta_c"].numel() for r in records]
        reversed_all = sum(float(r["reversed_frac"]) * n for r, n in zip(records, matched))
        self.last_stats["reversed_frac_all"] = reversed_all / max(sum(matched), 1)


def harmonic_loss_function(arch: str, preset: str = "harmonicdet", **overrides: Any) -> HarmonicLossFunction:
    """``model.loss_function = harmonic_loss_function("rt_detr", preset="harmonicdet")``: the options of
    :func:`loss_options` (validated here, once) in a :class:`HarmonicLossFunction` for ``arch``."""
    return HarmonicLossFunction(arch, loss_options(preset, **overrides))
