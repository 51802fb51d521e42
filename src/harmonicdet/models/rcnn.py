"""Faster / Mask R-CNN with harmonic RoI heads: torchvision's ``RoIHeads`` with a harmonic box loss."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads

from harmonicdet.losses import harmonic_softmax_detection_loss

from .presets import HarmonicOptions, HarmonicStatsMixin


class HarmonicRoIHeads(HarmonicStatsMixin, RoIHeads):
    """``RoIHeads`` whose box-head loss is the Harmonic loss (Eq. S-1) over the sampled RoIs.

    ``cls`` is the softmax cross-entropy, ``L_loc`` torchvision's SmoothL1
    (beta 1/9) on the class-specific offsets plus ``alpha * L_HIoU`` on the box
    decoded from the proposal with the heads' own box coder. Both terms are divided
    by the number of sampled RoIs, as torchvision's ``fastrcnn_loss``. Inference,
    the RPN and the mask branch are torchvision's. With a TC margin the dict gains
    ``"loss_task_contrast"``.

    The box predictor's output is read through a forward hook registered for the
    duration of one training forward, so torchvision's ``forward`` runs unchanged.
    """

    def __init__(self, *args, options: HarmonicOptions, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.options = options
        self.last_stats = {}

    @classmethod
    def from_roi_heads(cls, heads: RoIHeads, options: HarmonicOptions) -> "HarmonicRoIHeads":
        """The same sub-modules and settings as ``heads``, with the harmonic loss."""
        if heads.keypoint_predictor is not None:
            raise ValueError("harmonic losses are not implemented for keypoint R-CNN")
        return cls(heads.box_roi_pool, heads.box_head, heads.box_predictor,
                   heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
                   heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
                   heads.box_coder.weights, heads.score_thresh, heads.nms_thresh, heads.detections_per_img,
                   mask_roi_pool=heads.mask_roi_pool, mask_head=heads.mask_head,
                   mask_predictor=heads.mask_predictor, options=options)

    def select_training_samples(self, proposals, targets):
        sampled = super().select_training_samples(proposals, targets)
        self._sampled = (sampled, targets)  # read back in forward() of the same call
        return sampled

    def forward(self, features: Dict[str, Tensor], proposals: List[Tensor], image_shapes: List[Tuple[int, int]],
                targets: Optional[List[Dict[str, Tensor]]] = None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        captured = {}
        handle = self.box_predictor.register_forward_hook(lambda module, inputs, output: captured.update(out=output))
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
        finally:
            handle.remove()
            sampled, targets = self.__dict__.pop("_sampled")
        class_logits, box_regression = captured["out"]
        losses.update(self._box_loss(class_logits, box_regression, *sampled, targets))
        return result, losses

    def _box_loss(self, class_logits: Tensor, box_regression: Tensor, proposals: List[Tensor],
                  matched_idxs: List[Tensor], labels: List[Tensor], regression_targets: List[Tensor],
                  targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        matched_boxes = [t["boxes"][m.clamp(min=0)] if len(t["boxes"]) else t["boxes"].new_zeros((len(m), 4))
                         for t, m in zip(targets, matched_idxs)]
        labels_t = torch.cat(labels)
        positive = torch.where(labels_t > 0)[0]
        deltas = box_regression.reshape(class_logits.shape[0], -1, 4)[positive, labels_t[positive]]
        o = self.options
        losses, stats = harmonic_softmax_detection_loss(
            class_logits, labels_t, deltas, torch.cat(regression_targets)[positive],
            self.box_coder.decode_single(deltas, torch.cat(proposals)[positive]),
            torch.cat(matched_boxes)[positive],
            box_loss="smooth_l1", smooth_l1_beta=1.0 / 9, alpha=o.alpha, gamma=o.gamma, tc_margin=o.tc_margin,
            detach_factors=o.detach_factors, avg_factor=labels_t.numel(), return_stats=True,
        )
        self._record_stats(stats)
        out = {"loss_classifier": losses["loss_cls"], "loss_box_reg": losses["loss_loc"]}
        if "loss_tc" in losses:
            out["loss_task_contrast"] = losses["loss_tc"]
        return out
