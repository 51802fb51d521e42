"""Faster / Mask R-CNN with harmonic RoI heads: torchvision's ``RoIHeads`` with a harmonic box-head loss."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads

from harmonicdet.losses import HarmonicOptions, harmonic_softmax_detection_loss

from .stats import HarmonicStatsMixin


class HarmonicRoIHeads(HarmonicStatsMixin, RoIHeads):
    """``RoIHeads`` whose box-head loss is the Harmonic loss (Eq. S-1) over the sampled RoIs.

    Per sampled RoI, ``cls`` is the softmax cross-entropy over the C+1 classes
    (``beta_c = exp(-CE) = p``, Eq. S-4). A positive RoI's ``L_loc`` is torchvision's
    SmoothL1 (beta 1/9, summed over the 4 offsets of its ground-truth class) plus
    ``alpha * L_HIoU`` on the box decoded from the proposal with the heads' own box
    coder (``box_loss`` overrides the SmoothL1 term). Negatives keep their plain CE.
    All terms are divided by the number of sampled RoIs, as torchvision's
    ``fastrcnn_loss`` (mean CE; box loss sum / N). The RPN, the mask branch and
    inference are torchvision's. With a TC margin the dict gains ``"loss_task_contrast"``.

    Integration: :meth:`forward` runs torchvision's ``RoIHeads.forward`` unchanged
    (torchvision's module-level ``fastrcnn_loss`` is not touched); during a training
    forward it keeps the sampled RoIs (``select_training_samples``) and the box
    predictor's output (a forward hook on this instance's ``box_predictor``, removed
    right after), then replaces ``loss_classifier`` and ``loss_box_reg`` with
    :meth:`compute_box_loss`.
    """

    def __init__(self, *args, options: HarmonicOptions, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.options = options

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
        self._sampled = sampled  # read back by forward() of the same call
        return sampled

    def forward(self, features: Dict[str, Tensor], proposals: List[Tensor], image_shapes: List[Tuple[int, int]],
                targets: Optional[List[Dict[str, Tensor]]] = None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        captured: Dict[str, Tuple[Tensor, Tensor]] = {}
        handle = self.box_predictor.register_forward_hook(lambda module, inputs, output: captured.update(out=output))
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
        finally:
            handle.remove()
            sampled = self.__dict__.pop("_sampled", None)
        class_logits, box_regression = captured["out"]
        sampled_proposals, matched_idxs, labels, regression_targets = sampled
        losses.update(self.compute_box_loss(class_logits, box_regression, sampled_proposals, matched_idxs, labels,
                                            regression_targets, targets))
        return result, losses

    def compute_box_loss(self, class_logits: Tensor, box_regression: Tensor, proposals: List[Tensor],
                         matched_idxs: List[Tensor], labels: List[Tensor], regression_targets: List[Tensor],
                         targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """The harmonic replacement of torchvision's ``fastrcnn_loss``.

        Args:
            class_logits: Tensor[N, C+1] and ``box_regression`` Tensor[N, 4(C+1)]: the box
                predictor's output for the N sampled RoIs of the batch.
            proposals, matched_idxs, labels, regression_targets: per image, what
                ``select_training_samples`` returned (RoIs, their ground-truth index,
                label, 0 for background, and encoded targets).
            targets: the images' targets (``"boxes"`` in the transformed image).

        Returns:
            ``{"loss_classifier", "loss_box_reg"[, "loss_task_contrast"]}``.
        """
        labels_t = torch.cat(labels)
        positive = torch.where(labels_t > 0)[0]
        deltas = box_regression.reshape(class_logits.shape[0], -1, 4)[positive, labels_t[positive]]
        matched_boxes = torch.cat([t["boxes"][m.clamp(min=0)] if len(t["boxes"]) else t["boxes"].new_zeros((len(m), 4))
                                   for t, m in zip(targets, matched_idxs)])
        losses, stats = harmonic_softmax_detection_loss(
            class_logits, labels_t, deltas, torch.cat(regression_targets)[positive],
            self.box_coder.decode_single(deltas, torch.cat(proposals)[positive].to(deltas.dtype)),
            matched_boxes[positive],
            options=self.options, box_loss="smooth_l1", smooth_l1_beta=1.0 / 9, avg_factor=labels_t.numel(),
            return_stats=True,
        )
        self._record_stats(stats)
        out = {"loss_classifier": losses["loss_cls"], "loss_box_reg": losses["loss_loc"]}
        if "loss_tc" in losses:
            out["loss_task_contrast"] = losses["loss_tc"]
        return out
