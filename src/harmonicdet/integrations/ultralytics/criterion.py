"""The Harmonic loss as an Ultralytics criterion: :class:`HarmonicDetectionLoss` and :func:`build_criterion`.

The loss, term by term, is in :mod:`harmonicdet.integrations.ultralytics`'s docstring.

What Ultralytics logs: the criterion returns the loss vector it back-propagates (``box``, ``cls``,
``dfl``/``l1``, then ``hiou`` and ``tc`` for the presets that have them; the trainer sums it) and a
dict of detached items whose keys become ``results.csv``'s columns. The items are always
Ultralytics' three names, so ``results.csv`` has the same columns for every preset and for the
stock loss: ``hiou`` is added to ``box_loss`` and ``tc`` to ``cls_loss`` (:data:`FOLDED_INTO`), and
the items still sum to the loss. ``last_terms`` keeps the split and Ultralytics' own three terms
of the same batch (``stock_*``) for the run's ``harmonicdet_loss.csv``.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from ultralytics.utils.loss import E2ELoss, v8DetectionLoss
from ultralytics.utils.metrics import bbox_iou
from ultralytics.utils.tal import bbox2dist, make_anchors

from harmonicdet.losses.harmonic_iou_loss import harmonic_iou_from_iou
from harmonicdet.losses.harmonic_loss import harmonic_terms, reversed_fraction
from harmonicdet.losses.task_contrast_loss import task_contrast_loss
from harmonicdet.losses.options import HarmonicOptions
from harmonicdet.models.presets import harmonic_options

__all__ = ["DEFAULT_PRESET", "EXTRA_TERMS", "FOLDED_INTO", "YOLO_PRESETS", "HarmonicDetectionLoss", "build_criterion",
           "criterion_stats", "last_anchors", "last_terms", "loss_options"]

YOLO_PRESETS = ("standard", "harmonic", "harmonic_iou", "harmonicdet")
DEFAULT_PRESET = "harmonic"
_REFUSED_OPTIONS = ("positive_weight",)  # no control preset here
_BOX_LOSSES = ("none",)  # box_loss: "none" drops CIoU (HIoU in its place, as on FCOS); None/absent keeps it
EXTRA_TERMS = ("hiou_loss", "tc_loss")
FOLDED_INTO = {"hiou_loss": "box_loss", "tc_loss": "cls_loss"}  # the logged item a term adds to when not its own


def loss_options(loss: str = DEFAULT_PRESET, **overrides: Any) -> Optional[HarmonicOptions]:
    """The validated options of a preset for YOLO; ``None`` for ``"standard"`` (Ultralytics' own loss).

    Presets and options as :func:`harmonicdet.models.presets.harmonic_options` (``alpha``,
    ``gamma``, ``tc_margin``, ``detach_factors``, ``beta_c_mode``). ``box_loss="none"`` (needs ``alpha > 0``)
    drops CIoU from ``L_loc``, leaving DFL/L1 and HIoU (HIoU in CIoU's place, as on FCOS); any other
    ``box_loss`` is refused (left out, YOLO keeps CIoU), as are the presets ``qfl`` and ``standard_posweight``.
    """
    if loss not in YOLO_PRESETS:
        raise ValueError(f"loss must be one of {YOLO_PRESETS} for Ultralytics, got {loss!r}")
    refused = sorted(set(overrides) & set(_REFUSED_OPTIONS))
    if refused:
        raise ValueError(f"option(s) {refused} are not available with Ultralytics")
    if overrides.get("box_loss") is not None and overrides["box_loss"] not in _BOX_LOSSES:
        raise ValueError(f"box_loss must be 'none' (HIoU in CIoU's place) or left out with Ultralytics, "
                         f"got {overrides['box_loss']!r}")
    return harmonic_options(loss, overrides)


def _loss_spec(loss: str, overrides: Mapping[str, Any]) -> Dict[str, Any]:
    loss_options(loss, **overrides)  # validate now, not at the first batch
    return {"loss": loss, **dict(overrides)}


def _options_of(spec: Mapping[str, Any]) -> Optional[HarmonicOptions]:
    spec = dict(spec)
    return loss_options(spec.pop("loss", DEFAULT_PRESET), **spec)


class HarmonicDetectionLoss(v8DetectionLoss):
    """``v8DetectionLoss`` with Eq. S-1 on each foreground anchor (see the module docstring).

    Args:
        model: the (de-paralleled) ``DetectionModel``; gains come from ``model.args``.
        tal_topk, tal_topk2: TAL settings, as ``v8DetectionLoss`` (``E2ELoss`` passes them).
        options: :func:`loss_options`; ``None``: exactly ``v8DetectionLoss``.
        split_items: log ``hiou_loss`` and ``tc_loss`` as items of their own (the ``results.csv`` columns of
            runs begun before they were folded; the trainer sets it only to resume such a run).

    Attributes:
        loss_names: Ultralytics' three names, as ``v8DetectionLoss``.
        term_names: the loss vector's entries: ``loss_names`` then those of :data:`EXTRA_TERMS` the options add.
        item_names: the keys of the logged items: ``loss_names``, or ``term_names`` with ``split_items``.
        last_terms: detached, of the last call (per image, gains applied, as the items): every one of
            ``term_names``, and ``stock_box_loss``, ``stock_cls_loss``, ``stock_dfl_loss`` (or
            ``stock_l1_loss``), the terms of Ultralytics' own loss on the same assignment.
        last_stats: detached statistics of the last call (means over foreground anchors):
            ``beta_c``, ``beta_r`` (the factors used), ``beta_c_bce`` (``exp(-BCE)``, no entropy
            removed), ``beta_c_ceiling`` (``exp(-H(t))``, the most ``beta_c_bce`` can reach),
            ``beta_c_gains_inside`` and ``beta_r_gains_inside`` (the factors with the gains in
            the exponent), ``beta_r_std`` and ``beta_r_gains_inside_std``, ``target_score``,
            ``num_fg``.
        last_anchors: detached per-foreground-anchor tensors of the last call: ``target`` (TAL's
            score of the assigned class), ``prob`` (its sigmoid), ``beta_c``, ``beta_c_bce``,
            ``beta_r``, ``beta_r_gains_inside``, ``iou``.
    """

    def __init__(self, model: torch.nn.Module, tal_topk: int = 10, tal_topk2: Optional[int] = None, *,
                 options: Optional[HarmonicOptions] = None, split_items: bool = False) -> None:
        super().__init__(model, tal_topk=tal_topk, tal_topk2=tal_topk2)
        self.options = options
        self.last_stats: Dict[str, torch.Tensor] = {}
        self.last_anchors: Dict[str, torch.Tensor] = {}
        self.last_terms: Dict[str, torch.Tensor] = {}
        self.loss_names = tuple(self.loss_names)
        has = {"hiou_loss": options is not None and options.alpha > 0,
               "tc_loss": options is not None and options.tc_margin is not None}
        self.term_names = self.loss_names + tuple(name for name in EXTRA_TERMS if has[name])
        self.item_names = self.term_names if split_items else self.loss_names

    def loss_items(self, loss: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The logged items of a loss vector (``term_names`` order): ``item_names``, each term not among them
        added to its :data:`FOLDED_INTO` item."""
        terms = dict(zip(self.term_names, loss.detach()))
        items = {name: terms[name] for name in self.item_names}
        for name, value in terms.items():
            if name not in items:
                items[FOLDED_INTO[name]] = items[FOLDED_INTO[name]] + value
        return items

    # ---- per-anchor terms -------------------------------------------------------------------
    def anchor_terms(self, pred_scores, pred_distri, pred_bboxes, anchor_points, stride_tensor, imgsz,
                     target_labels, target_bboxes, target_scores, fg_mask) -> Dict[str, torch.Tensor]:
        """Ultralytics' per-anchor terms (``target_bboxes`` in grid units, as ``BboxLoss`` gets them).

        Returns ``cls_bg`` (summed BCE of background anchors) and, per foreground anchor,
        ``bce``, ``cls_entropy``, ``weight`` (``w``), ``box`` (``1 - CIoU``), ``iou`` (plain),
        ``dfl`` (DFL or L1) and ``dfl_entropy``, ``probs`` and ``label``: with unit factors
        ``cls_gain (cls_bg + sum bce) / T``, ``box_gain sum w box / T``, ``dfl_gain sum w dfl / T``
        are Ultralytics' three losses.
        """
        dtype = pred_scores.dtype
        fg = fg_mask.nonzero(as_tuple=True)
        targets = target_scores.to(dtype)
        bce = self.bce(pred_scores, targets)
        t_fg = targets[fg]
        entropy = -(torch.special.xlogy(t_fg, t_fg) + torch.special.xlogy(1 - t_fg, 1 - t_fg))
        if self.class_weights is not None:
            bce = bce * self.class_weights
            entropy = entropy * self.class_weights.view(1, -1)
        cls_all = bce.sum(-1)
        terms = {"cls_bg": (cls_all * (~fg_mask)).sum(), "bce": cls_all[fg], "cls_entropy": entropy.sum(-1),
                 "weight": target_scores[fg].sum(-1)}
        pred_fg, target_fg = pred_bboxes[fg], target_bboxes[fg]
        terms["box"] = 1.0 - bbox_iou(pred_fg, target_fg, xywh=False, CIoU=True).squeeze(-1)
        terms["iou"] = bbox_iou(pred_fg, target_fg, xywh=False).squeeze(-1)
        if self.use_dfl:
            ltrb = bbox2dist(anchor_points, target_bboxes, self.reg_max - 1)[fg]
            dfl = self.bbox_loss.dfl_loss(pred_distri[fg].view(-1, self.reg_max), ltrb).squeeze(-1)
            ltrb = ltrb.clamp(0, self.reg_max - 1 - 0.01)  # DFLoss's clamp, so the entropy is its minimum
            right = ltrb - ltrb.floor()
            left = 1 - right
            terms["dfl_entropy"] = -(torch.special.xlogy(left, left) + torch.special.xlogy(right, right)).mean(-1)
        else:  # YOLO26: L1 on the ltrb distances normalised by the image size; its minimum is 0
            scale = imgsz[[1, 0, 1, 0]]
            ltrb = bbox2dist(anchor_points, target_bboxes) * stride_tensor / scale
            dfl = F.l1_loss((pred_distri * stride_tensor / scale)[fg], ltrb[fg], reduction="none").mean(-1)
            terms["dfl_entropy"] = torch.zeros_like(dfl)
        terms["dfl"] = dfl
        terms["probs"] = pred_scores[fg].sigmoid()
        terms["label"] = target_labels[fg].long()
        return terms

    # ---- the loss -----------------------------------------------------------------------------
    def get_assigned_targets_and_loss(self, preds: Dict[str, torch.Tensor], batch: Dict[str, Any],
                                      **assign_kwargs) -> tuple:
        """As ``v8DetectionLoss.get_assigned_targets_and_loss``, with Eq. S-1 on the foreground anchors."""
        if self.options is None:
            assigned, loss, items = super().get_assigned_targets_and_loss(preds, batch, **assign_kwargs)
            self.last_terms = {**items, **{f"stock_{k}": v for k, v in items.items()}}
            return assigned, loss, items
        pred_distri = preds["boxes"].permute(0, 2, 1).contiguous()
        pred_scores = preds["scores"].permute(0, 2, 1).contiguous()
        anchor_points, stride_tensor = make_anchors(preds["feats"], self.stride, 0.5)
        dtype = pred_scores.dtype
        batch_size = pred_scores.shape[0]
        imgsz = torch.tensor(preds["feats"][0].shape[2:], device=self.device, dtype=dtype) * self.stride[0]
        targets = torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"]), 1)
        targets = self.preprocess(targets.to(self.device), batch_size, scale_tensor=imgsz[[1, 0, 1, 0]])
        gt_labels, gt_bboxes = targets.split((1, 4), 2)
        mask_gt = gt_bboxes.sum(2, keepdim=True).gt_(0.0)
        pred_bboxes = self.bbox_decode(anchor_points, pred_distri)
        target_labels, target_bboxes, target_scores, fg_mask, target_gt_idx = self.assigner(
            pred_scores.detach().sigmoid(),
            (pred_bboxes.detach() * stride_tensor).type(gt_bboxes.dtype),
            anchor_points * stride_tensor,
            gt_labels,
            gt_bboxes,
            mask_gt,
            **assign_kwargs,
        )
        target_scores_sum = target_scores.sum().clamp_(min=1)
        terms = self.anchor_terms(pred_scores, pred_distri, pred_bboxes, anchor_points, stride_tensor, imgsz,
                                  target_labels, target_bboxes / stride_tensor, target_scores, fg_mask)
        loss = self.harmonic_loss(terms, target_scores_sum)
        return (
            (fg_mask, target_gt_idx, target_bboxes, anchor_points, stride_tensor),
            loss,
            self.loss_items(loss),
        )

    def harmonic_loss(self, terms: Mapping[str, torch.Tensor], target_scores_sum: torch.Tensor) -> torch.Tensor:
        """The loss vector (``loss_names`` order, gains applied, not times the batch size) from :meth:`anchor_terms`."""
        opts, hyp = self.options, self.hyp
        g_box, g_cls, g_dfl = float(hyp.box), float(hyp.cls), float(hyp.dfl)
        kl = terms["bce"] - terms["cls_entropy"]
        dtype = kl.dtype
        dfl_kl = terms["dfl"] - terms["dfl_entropy"]
        keep_box = opts.box_loss != "none"  # "none": CIoU dropped, HIoU in its place (as on FCOS)
        parts = ([(g_box, terms["box"])] if keep_box else []) + [(g_dfl, dfl_kl)]
        if opts.alpha > 0:
            parts.append((opts.alpha * g_box, harmonic_iou_from_iou(terms["iou"], opts.gamma)))
        gains = sum(g for g, _ in parts)
        mix = [g / gains for g, _ in parts] if gains > 0 else [1.0 / len(parts)] * len(parts)
        loc = sum(m * c for m, (_, c) in zip(mix, parts)).to(dtype)
        gt_prob = terms["probs"].gather(1, terms["label"].unsqueeze(1)).squeeze(1)
        beta_c = gt_prob.to(dtype) if opts.beta_c_mode == "prob" else None
        cls_term, loc_term = harmonic_terms(kl, loc, detach_factors=opts.detach_factors, beta_c=beta_c)
        weight = terms["weight"].to(dtype)
        cls_total = g_cls * (terms["cls_bg"] + cls_term.sum() + terms["cls_entropy"].sum()) / target_scores_sum
        loc_total = (weight * (gains * loc_term + g_dfl * terms["dfl_entropy"])).sum() / target_scores_sum
        with torch.no_grad():  # the logged split of loc_total into its parts, by their values
            factor = 1 + (beta_c if beta_c is not None else torch.exp(-kl))
            values = ([(weight * factor * g_box * terms["box"]).sum()] if keep_box else []) + [
                (weight * (factor * g_dfl * dfl_kl + g_dfl * terms["dfl_entropy"])).sum()]
            if opts.alpha > 0:
                values.append((weight * factor * parts[-1][0] * parts[-1][1]).sum())
            values = torch.stack(values)
            shares = values / values.sum().clamp(min=torch.finfo(values.dtype).tiny)
        box_parts = loc_total * shares.to(loc_total.dtype)
        if not keep_box:  # the box_loss entry: 0, no CIoU part
            box_parts = torch.cat([box_parts.new_zeros(1), box_parts])
        out = [box_parts[0], cls_total, box_parts[1]]
        if opts.alpha > 0:
            out.append(box_parts[2])
        if opts.tc_margin is not None:
            tc = task_contrast_loss(terms["probs"], gt_prob, terms["iou"].to(gt_prob.dtype), margin=opts.tc_margin)
            out.append(tc.sum() / target_scores_sum)
        self._record(terms, kl, loc, beta_c, gains, g_cls)
        loss = torch.stack([o.to(dtype).reshape(()) for o in out])
        with torch.no_grad():  # Ultralytics' own three terms on this assignment (unit factors), for the logs
            stock = (g_box * (weight * terms["box"]).sum(), g_cls * (terms["cls_bg"] + terms["bce"].sum()),
                     g_dfl * (weight * terms["dfl"]).sum())
            self.last_terms = dict(zip(self.term_names, loss.detach()))
            self.last_terms.update({f"stock_{name}": (value / target_scores_sum).to(dtype)
                                    for name, value in zip(self.loss_names, stock)})
        return loss

    @torch.no_grad()
    def _record(self, terms, kl, loc, beta_c, gains, g_cls) -> None:
        n = max(int(kl.numel()), 1)

        def mean(x: torch.Tensor) -> torch.Tensor:
            return x.float().sum() / n

        def std(x: torch.Tensor) -> torch.Tensor:
            return x.float().std(correction=0) if x.numel() > 1 else x.new_zeros((), dtype=torch.float32)

        beta_r, beta_r_in = torch.exp(-loc), torch.exp(-gains * loc)
        beta_c = beta_c if beta_c is not None else torch.exp(-kl)
        gt_target = terms["weight"]
        self.last_stats = {
            "beta_c": mean(beta_c),
            "reversed_frac": reversed_fraction(beta_c.float(), beta_r.float(), self.options.detach_factors),
            "beta_r": mean(beta_r),
            "beta_c_bce": mean(torch.exp(-terms["bce"])),
            "beta_c_ceiling": mean(torch.exp(-terms["cls_entropy"])),
            "beta_c_gains_inside": mean(torch.exp(-g_cls * kl)),
            "beta_r_gains_inside": mean(beta_r_in),
            "beta_r_std": std(beta_r),
            "beta_r_gains_inside_std": std(beta_r_in),
            "target_score": mean(gt_target),
            "num_fg": torch.tensor(float(kl.numel())),
        }
        gt_prob = terms["probs"].gather(1, terms["label"].unsqueeze(1)).squeeze(1)
        self.last_anchors = {  # per foreground anchor, for measurements (harmonicdet yolo-study)
            "target": gt_target.float(), "prob": gt_prob.float(), "beta_c": torch.exp(-kl).float(),
            "beta_c_bce": torch.exp(-terms["bce"]).float(), "beta_r": beta_r.float(),
            "beta_r_gains_inside": beta_r_in.float(), "iou": terms["iou"].float()}


def build_criterion(model: torch.nn.Module, options: Optional[HarmonicOptions], *, split_items: bool = False):
    """The criterion ``DetectionModel.init_criterion`` would build, with the harmonic loss.

    ``E2ELoss`` (YOLO26's one-to-many + one-to-one heads) with ``loss_fn=HarmonicDetectionLoss``
    when the head has ``one2one_cv2``, else :class:`HarmonicDetectionLoss`. ``options=None``
    builds exactly Ultralytics' criterion; ``split_items`` as :class:`HarmonicDetectionLoss`.
    """
    if getattr(model.model[-1], "one2one_cv2", None) is not None:
        return E2ELoss(model, loss_fn=functools.partial(HarmonicDetectionLoss, options=options,
                                                        split_items=split_items))
    return HarmonicDetectionLoss(model, options=options, split_items=split_items)


def _criterion(model: torch.nn.Module) -> Any:
    """The model's criterion (the one-to-many branch for YOLO26; unwrapped from DDP); ``None`` before the first loss."""
    criterion = getattr(getattr(model, "module", model), "criterion", None)
    return getattr(criterion, "one2many", criterion)


def criterion_stats(model: torch.nn.Module) -> Dict[str, float]:
    """``last_stats`` of the model's criterion as floats; ``{}`` before any (or for Ultralytics' own loss)."""
    return {k: float(v) for k, v in getattr(_criterion(model), "last_stats", {}).items()}


def last_terms(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """``last_terms`` of the branch whose items Ultralytics logs (YOLO26: the one-to-one); ``{}`` before any."""
    criterion = getattr(getattr(model, "module", model), "criterion", None)
    return dict(getattr(getattr(criterion, "one2one", criterion), "last_terms", None) or {})


def last_anchors(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The last batch's per-foreground-anchor factors of the model's criterion, on the CPU; ``{}`` before any."""
    return {k: v.cpu() for k, v in (getattr(_criterion(model), "last_anchors", None) or {}).items()}
