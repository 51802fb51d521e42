"""Detectors: ``standard`` is torchvision bit for bit; the harmonic presets couple classification and box quality.

Head-level tests feed hand-built head outputs with one positive into the part of
each family that computes the loss (FCOS/RetinaNet head, R-CNN RoI heads, the SSD
model); model-level tests run small models (32-64 FPN channels, 128 px, batch 2).
"""

import copy
import dataclasses
import math
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.ssd import SSD
from torchvision.ops import sigmoid_focal_loss

from harmonicdet.models import (
    HarmonicFCOSHead,
    HarmonicRetinaNetHead,
    HarmonicRoIHeads,
    HarmonicSSD,
    QFLFCOSHead,
    QFLRetinaNetHead,
    StandardFCOSHead,
    build_detector,
    fpn_backbone,
    loss_stats,
    pre_nms_candidates,
)

NUM_CLASSES = 5
ARCHS = ["fcos", "retinanet", "faster_rcnn", "mask_rcnn", "ssd"]
HARMONIC = ["harmonic", "harmonic_iou", "harmonicdet"]
CORE = ["standard"] + HARMONIC  # the paper's ablation presets (PRESETS also holds the posweight control and qfl)
LEVEL_KEYS = {f"pos_p{level}" for level in range(3, 8)}  # FCOS heads' per-level positive counts
CLASS_TYPES = {"fcos": FCOS, "retinanet": RetinaNet, "faster_rcnn": FasterRCNN, "mask_rcnn": MaskRCNN, "ssd": SSD}
KEYS = {  # the loss-dict keys of (classification, box regression, task contrast) per family
    "rcnn": ("loss_classifier", "loss_box_reg", "loss_task_contrast"),
    "one_stage": ("classification", "bbox_regression", "task_contrast"),
}


def keys_of(arch):
    return KEYS["rcnn" if "rcnn" in arch else "one_stage"]


def small_model(arch, loss="standard", **options):
    # FCOS's GroupNorm(32) needs 64 channels for 1x1 levels; SSDlite has no FPN
    channels = {"ssd": None, "fcos": 64}.get(arch, 32)
    size = dict(backbone="mobilenet_v3_large") if arch == "ssd" else dict(backbone="resnet18", fpn_channels=channels)
    return build_detector(arch, NUM_CLASSES, loss=loss, image_size=128, **dict(size, **options))


def pair(arch, loss, **options):
    """A small model with ``loss`` and a standard one with the same weights."""
    torch.manual_seed(0)
    model = small_model(arch, loss, **options)
    standard = small_model(arch)
    standard.load_state_dict(model.state_dict())
    return model, standard


def batch(arch, targets="two"):
    """Two images (96x112, 128x128) and targets: ``two`` boxes + one, ``empty`` second image, ``none``, ``tiny``."""
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 96, 112, generator=g), torch.rand(3, 128, 128, generator=g)]
    boxes = torch.tensor([[10.0, 20.0, 60.0, 70.0], [50.0, 40.0, 90.0, 95.0]])
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    if targets == "two":
        result = [{"boxes": boxes, "labels": torch.tensor([1, 3])}, {"boxes": boxes[:1] + 5, "labels": torch.tensor([2])}]
    elif targets == "empty":
        result = [{"boxes": boxes, "labels": torch.tensor([1, 3])}, empty]
    elif targets == "none":
        result = [dict(empty), dict(empty)]
    elif targets == "tiny":  # near-degenerate: a 0.001 px sliver, a sub-pixel box, boxes over the whole/beyond the image
        result = [{"boxes": torch.tensor([[30.0, 30.0, 30.001, 60.0], [5.0, 5.0, 5.5, 5.5], [0.0, 0.0, 112.0, 96.0]]),
                   "labels": torch.tensor([1, 2, 3])},
                  {"boxes": torch.tensor([[100.0, 100.0, 140.0, 150.0]]), "labels": torch.tensor([4])}]
    else:
        raise AssertionError(targets)
    if arch == "mask_rcnn":
        for image, t in zip(images, result):
            masks = torch.zeros(len(t["boxes"]), *image.shape[1:], dtype=torch.uint8)
            for m, (x1, y1, x2, y2) in zip(masks, t["boxes"].floor().int().tolist()):
                m[y1:y2 + 1, x1:x2 + 1] = 1
            t["masks"] = masks
    return images, result


def few_detections(*models):
    """At most 10 detections per image: random Mask R-CNNs otherwise paste 100 masks per image."""
    for model in models:
        (model.roi_heads if hasattr(model, "roi_heads") else model).detections_per_img = 10
    return models


def train_losses(model, arch, targets="two"):
    torch.manual_seed(3)  # the R-CNN samplers draw RoIs at random
    model.train()
    images, t = batch(arch, targets)
    return model(images, t)


# ---------------------------------------------------------------- standard = torchvision


def torchvision_reference(model, arch):
    """The same detector assembled directly from torchvision's classes (their own heads), same weights."""
    backbone, size = copy.deepcopy(model.backbone), dict(min_size=128, max_size=128)
    if arch == "fcos":
        reference = FCOS(backbone, NUM_CLASSES, anchor_generator=copy.deepcopy(model.anchor_generator), **size)
    elif arch == "retinanet":
        reference = RetinaNet(backbone, NUM_CLASSES, anchor_generator=copy.deepcopy(model.anchor_generator), **size)
    else:
        cls = MaskRCNN if arch == "mask_rcnn" else FasterRCNN
        reference = cls(backbone, NUM_CLASSES, rpn_anchor_generator=copy.deepcopy(model.rpn.anchor_generator), **size)
    reference.load_state_dict(model.state_dict())
    return reference


@pytest.mark.parametrize("arch", ARCHS)
def test_standard_is_an_unmodified_torchvision_model_bit_for_bit(arch):
    torch.manual_seed(0)
    if arch == "ssd":  # torchvision's own SSDlite320 builder against ours at 320 px
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        model = build_detector("ssd", NUM_CLASSES, image_size=320)
        reference = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
        reference.load_state_dict(model.state_dict())
    else:
        model = small_model(arch)
        reference = torchvision_reference(model, arch)
    assert type(model) is CLASS_TYPES[arch]
    # torchvision's own head classes; FCOS's is a subclass that calls FCOSHead's forward and compute_loss
    # unchanged and only records the per-level positive counts (the equalities below check it)
    head_type = {"fcos": StandardFCOSHead, "retinanet": RetinaNetHead, "faster_rcnn": RoIHeads, "mask_rcnn": RoIHeads}
    if arch in head_type:
        assert type(model.roi_heads if "rcnn" in arch else model.head) is head_type[arch]
    assert loss_stats(model) == {}
    ours, theirs = train_losses(model, arch), train_losses(reference, arch)
    assert list(ours) == list(theirs)
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    stats = loss_stats(model)
    if arch == "fcos":  # objects of ~50 px: all on P3 with torchvision's scale ranges
        assert set(stats) == LEVEL_KEYS and stats["pos_p3"] > 0 and sum(stats.values()) == stats["pos_p3"]
    else:
        assert stats == {}
    with torch.no_grad():
        images, _ = batch(arch)
        few_detections(model, reference)
        for a, b in zip(model.eval()(images), reference.eval()(images)):
            assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["fcos", "retinanet", "faster_rcnn", "mask_rcnn"])
def test_standard_resnet50_at_512_is_torchvisions_builder(arch):
    """At >= 512 px with ResNet-50, ``standard`` is torchvision's ``*_resnet50_fpn`` detector itself."""
    from torchvision.models import detection

    builder = {"fcos": detection.fcos_resnet50_fpn, "retinanet": detection.retinanet_resnet50_fpn,
               "faster_rcnn": detection.fasterrcnn_resnet50_fpn, "mask_rcnn": detection.maskrcnn_resnet50_fpn}[arch]
    torch.manual_seed(0)
    model = build_detector(arch, NUM_CLASSES, backbone="resnet50", image_size=512)
    reference = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, min_size=512, max_size=512)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        ours, theirs = train_losses(model, arch), train_losses(reference, arch)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


# ---------------------------------------------------------------- head level: one positive

ANCHORS = torch.tensor([[0.0, 0.0, 32.0, 32.0], [32.0, 0.0, 64.0, 32.0], [0.0, 32.0, 32.0, 64.0], [64.0, 64.0, 96.0, 96.0]])
GT = torch.tensor([[2.0, 3.0, 30.0, 34.0]])
POS, LABEL = 0, 2  # anchor 0 is the positive, of class 2
HEAD_ARCHS = ["fcos", "retinanet", "faster_rcnn", "ssd"]


@lru_cache(maxsize=None)
def _built_loss_part(arch, loss):
    """Built once per (arch, loss), as building is the slow part; never run nor changed: tests use copies."""
    torch.manual_seed(0)
    model = small_model(arch, loss)
    return model if arch == "ssd" else model.roi_heads if "rcnn" in arch else model.head


def loss_part(arch, loss, **options):
    """A fresh copy of the module that computes the loss (FCOS/RetinaNet head, R-CNN RoI heads, the SSD model).

    The calling test owns it: it may set its options (``options`` replaces fields of the
    preset's) and reads the ``last_stats`` of its own forward, not another test's.
    """
    part = copy.deepcopy(_built_loss_part(arch, loss))
    if options:
        part.options = dataclasses.replace(part.options, **options)
    return part


def matched_default(arch):
    # RetinaNet: anchor 2 lies between the IoU thresholds and is ignored
    return torch.tensor([0, -1, -2 if arch == "retinanet" else -1, -1])


def exact_regression(arch, boxes, matched):
    """Encoded offsets that decode every anchor to its matched box (any box for negatives)."""
    part = _built_loss_part(arch, "standard")  # only its box coder is read
    gt = boxes[matched.clamp(min=0)] if len(boxes) else ANCHORS
    if arch == "fcos":
        return part.box_coder.encode(ANCHORS, gt)
    coder = part.regression_head.box_coder if arch == "retinanet" else part.box_coder
    encoded = coder.encode_single(gt, ANCHORS)
    return encoded[:, None, :].expand(-1, NUM_CLASSES, -1).clone() if arch == "faster_rcnn" else encoded


def leaves(arch, *, shift=0.0, logit_shift=0.0, boxes=GT, matched=None):
    """Class logits Tensor[4, C] and box regression (R-CNN: Tensor[4, C, 4]) requiring grad.

    ``shift`` moves only the positive's regression (its ground-truth class for R-CNN),
    ``logit_shift`` only the positive's ground-truth logit.
    """
    matched = matched_default(arch) if matched is None else matched
    g = torch.Generator().manual_seed(0)
    cls_logits = torch.randn(4, NUM_CLASSES, generator=g) * 0.5
    cls_logits[POS, LABEL] += logit_shift
    regression = exact_regression(arch, boxes, matched)
    if arch == "faster_rcnn":
        regression[POS, LABEL] += shift
    else:
        regression[POS] += shift
    return cls_logits.requires_grad_(True), regression.requires_grad_(True)


def head_losses(arch, loss, cls_logits, regression, *, boxes=GT, matched=None, part=None):
    """The loss dict of ``arch``'s loss part for one image, keys renamed to ``cls``, ``box``, ``tc`` (and others).

    ``part``: the test's own :func:`loss_part` (to read its stats or use other options); default a fresh one.
    """
    matched = matched_default(arch) if matched is None else matched
    part = loss_part(arch, loss) if part is None else part
    targets = [{"boxes": boxes, "labels": torch.full((len(boxes),), LABEL, dtype=torch.int64)}]
    if arch == "faster_rcnn":
        labels = [torch.where(matched >= 0, LABEL, 0)]
        gt = boxes[matched.clamp(min=0)] if len(boxes) else torch.zeros(4, 4)
        regression_targets = [part.box_coder.encode_single(gt, ANCHORS)]
        box_regression = regression.flatten(1)
        if loss == "standard":
            cls, box = fastrcnn_loss(cls_logits, box_regression, labels, regression_targets)
            out = {"loss_classifier": cls, "loss_box_reg": box}
        else:
            out = part.compute_box_loss(cls_logits, box_regression, [ANCHORS], [matched], labels,
                                        regression_targets, targets)
    else:
        outputs = {"cls_logits": cls_logits[None], "bbox_regression": regression[None]}
        if arch == "fcos":
            outputs["bbox_ctrness"] = torch.zeros(1, 4, 1)
        out = part.compute_loss(targets, outputs, [ANCHORS], [matched])
    rename = dict(zip(keys_of(arch), ("cls", "box", "tc")))
    return {rename.get(k, k): v for k, v in out.items()}


@pytest.mark.parametrize("loss", CORE)
@pytest.mark.parametrize("arch", HEAD_ARCHS)
def test_positive_classification_gradient_depends_on_its_box_only_when_harmonic(arch, loss):
    grads = []
    for shift in (0.0, 0.3):
        cls_logits, regression = leaves(arch, shift=shift)
        (grad,) = torch.autograd.grad(head_losses(arch, loss, cls_logits, regression)["cls"], cls_logits)
        grads.append(grad[POS])
        assert torch.isfinite(grad).all()
    if loss == "standard":
        assert torch.equal(grads[0], grads[1])
    else:
        assert not torch.allclose(grads[0], grads[1], rtol=1e-3, atol=0)
        # a worse box (smaller beta_r) weights the positive's classification loss less
        assert grads[1][LABEL].abs() < grads[0][LABEL].abs()


@pytest.mark.parametrize("loss", CORE)
@pytest.mark.parametrize("arch", HEAD_ARCHS)
def test_positive_box_gradient_depends_on_its_score_only_when_harmonic(arch, loss):
    grads = []
    for logit_shift in (0.0, 2.0):
        cls_logits, regression = leaves(arch, shift=0.3, logit_shift=logit_shift)
        (grad,) = torch.autograd.grad(head_losses(arch, loss, cls_logits, regression)["box"], regression)
        grads.append(grad[POS])
    if loss == "standard":
        assert torch.equal(grads[0], grads[1])
    else:
        assert not torch.allclose(grads[0], grads[1], rtol=1e-3, atol=0)


def positive_cls_loss(arch, cls_logits):
    """torchvision's own per-sample classification loss of the positive."""
    if arch in ("faster_rcnn", "ssd"):
        return F.cross_entropy(cls_logits[POS:POS + 1], torch.tensor([LABEL]))
    return sigmoid_focal_loss(cls_logits[POS], F.one_hot(torch.tensor(LABEL), NUM_CLASSES).float()).sum()


@pytest.mark.parametrize("arch", HEAD_ARCHS)
def test_harmonic_is_eq_s1_on_torchvisions_own_terms(arch):
    """``harmonic``: cls gains ``exp(-L) * cls_pos``, box becomes ``(1 + exp(-cls_pos)) * L`` (same normaliser)."""
    cls_logits, regression = leaves(arch, shift=0.3)
    standard = head_losses(arch, "standard", cls_logits, regression)
    part = loss_part(arch, "harmonic")
    harmonic = head_losses(arch, "harmonic", cls_logits, regression, part=part)
    n = 4 if arch == "faster_rcnn" else 1  # sampled RoIs, resp. foreground anchors
    cls_pos, loc_pos = positive_cls_loss(arch, cls_logits), standard["box"] * n
    torch.testing.assert_close(harmonic["cls"], standard["cls"] + torch.exp(-loc_pos) * cls_pos / n)
    torch.testing.assert_close(harmonic["box"], (1 + torch.exp(-cls_pos)) * loc_pos / n)
    assert set(harmonic) == set(standard)
    stats = loss_stats(part)
    assert stats["beta_r"] == pytest.approx(math.exp(-loc_pos.item()), rel=1e-5)
    assert stats["beta_c"] == pytest.approx(math.exp(-cls_pos.item()), rel=1e-5)


@pytest.mark.parametrize("arch", HEAD_ARCHS)
def test_hiou_uses_the_box_decoded_by_the_models_own_coder(arch):
    # an exact regression decodes to the ground truth: IoU 1, HIoU 0, so harmonic_iou == harmonic
    exact = head_losses(arch, "harmonic_iou", *leaves(arch))
    plain = head_losses(arch, "harmonic", *leaves(arch))
    for key in ("cls", "box"):
        torch.testing.assert_close(exact[key], plain[key], atol=1e-5, rtol=1e-5)
    # a shifted one costs more than without HIoU
    assert head_losses(arch, "harmonic_iou", *leaves(arch, shift=0.3))["box"] > \
        head_losses(arch, "harmonic", *leaves(arch, shift=0.3))["box"] + 0.05
    with_tc = head_losses(arch, "harmonicdet", *leaves(arch, shift=0.3))
    assert set(with_tc) == set(exact) | {"tc"} and torch.isfinite(with_tc["tc"])


@pytest.mark.parametrize("loss", CORE + ["standard_posweight"])
@pytest.mark.parametrize("arch", HEAD_ARCHS)
def test_head_losses_finite_without_positives_and_for_sliver_boxes(arch, loss):
    cases = [  # (boxes, matched): no ground truth at all; a ground truth no anchor matched; a 0.001 px sliver
        (torch.zeros(0, 4), torch.full((4,), -1)),
        (GT, torch.full((4,), -1)),
        (torch.tensor([[10.0, 2.0, 10.001, 30.0]]), matched_default(arch)),
    ]
    for boxes, matched in cases:
        cls_logits, regression = leaves(arch, boxes=boxes, matched=matched)
        part = loss_part(arch, loss)
        out = head_losses(arch, loss, cls_logits, regression, boxes=boxes, matched=matched, part=part)
        harmonised = [v for k, v in out.items() if k in ("cls", "box", "tc")]  # FCOS centerness is torchvision's
        assert all(torch.isfinite(v) for v in harmonised), out
        grads = torch.autograd.grad(sum(harmonised), (cls_logits, regression))
        assert all(torch.isfinite(g).all() for g in grads)
        if (matched < 0).all() and loss != "standard":
            # no positive: the negatives' plain loss, exactly torchvision's up to summation order
            standard = head_losses(arch, "standard", cls_logits, regression, boxes=boxes, matched=matched)
            torch.testing.assert_close(out["cls"], standard["cls"])
            assert out["box"] == 0 and loss_stats(part) == {"beta_c": 0.0, "beta_r": 0.0, "reversed_frac": 0.0}


# ---------------------------------------------------------------- model level


@pytest.mark.parametrize("loss", HARMONIC)
@pytest.mark.parametrize("arch", ARCHS)
def test_harmonic_training_step(arch, loss):
    torch.manual_seed(0)
    model = small_model(arch, loss)
    assert isinstance(model, CLASS_TYPES[arch])
    losses = train_losses(model, arch)
    cls_key, box_key, tc_key = keys_of(arch)
    assert {cls_key, box_key} <= set(losses) and (tc_key in losses) == (loss == "harmonicdet")
    assert all(torch.isfinite(v) for v in losses.values()), losses
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    sum(losses.values()).backward()
    cls_params, box_params = branches(model, arch)
    for params in (cls_params, box_params):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    optimizer.step()
    stats = loss_stats(model)
    assert set(stats) == {"beta_c", "beta_r", "reversed_frac"} | (LEVEL_KEYS if arch == "fcos" else set())
    assert all(0 < stats[k] <= 1 for k in ("beta_c", "beta_r")) and 0 <= stats["reversed_frac"] <= 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def branches(model, arch):
    if arch == "ssd" or arch in ("fcos", "retinanet"):
        return list(model.head.classification_head.parameters()), list(model.head.regression_head.parameters())
    predictor = model.roi_heads.box_predictor
    return list(predictor.cls_score.parameters()), list(predictor.bbox_pred.parameters())


# harmonic_iou takes harmonicdet's path less the TC term; harmonic (no HIoU, FCOS keeps its GIoU) takes its own
@pytest.mark.parametrize("loss", ["standard", "harmonicdet", pytest.param("harmonic", marks=pytest.mark.slow)])
@pytest.mark.parametrize("arch", ARCHS)
def test_empty_images_no_positives_and_degenerate_boxes_give_finite_losses(arch, loss):
    model = small_model(arch, loss)
    for targets in ("empty", "none", "tiny"):
        losses = train_losses(model, arch, targets)
        assert all(torch.isfinite(v) for v in losses.values()), (targets, losses)
        sum(losses.values()).backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad()


def test_fcos_batch_with_ground_truth_but_no_positive_location():
    model = small_model("fcos", "harmonicdet").train()
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    # boxes that hold no location (FCOS's locations of stride s lie at multiples of s)
    targets = [{"boxes": torch.tensor([[1.0, 1.0, 3.0, 3.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[9.0, 41.0, 15.0, 47.0]]), "labels": torch.tensor([2])}]
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["bbox_regression"] == 0
    assert loss_stats(model) == {"beta_c": 0.0, "beta_r": 0.0, "reversed_frac": 0.0, **{k: 0.0 for k in LEVEL_KEYS}}
    sum(losses.values()).backward()
    # the negatives still train the classification branch; with no positive the box branch gets exactly nothing
    cls_params, box_params = branches(model, "fcos")
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert all(p.grad is None or (p.grad == 0).all() for p in box_params)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in cls_params)


# the harmonic presets differ only in their losses (compute_loss); inference is torchvision's for every one of them
@pytest.mark.parametrize("arch", ARCHS)
def test_eval_output_is_identical_to_standard(arch):
    model, standard = few_detections(*pair(arch, "harmonicdet"))
    images, _ = batch(arch)
    with torch.no_grad():
        ours, theirs = model.eval()(images), standard.eval()(images)
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("arch", ["fcos", "faster_rcnn"])
def test_two_losses_in_one_process_and_under_autocast(arch):
    """A harmonic and a standard model side by side (no global patching), in bfloat16 autocast too."""
    model, standard = pair(arch, "harmonicdet")
    reference = torchvision_reference(standard, arch)
    before = train_losses(standard, arch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        harmonic = train_losses(model, arch)
    assert all(torch.isfinite(v) for v in harmonic.values()) and keys_of(arch)[2] in harmonic
    sum(harmonic.values()).backward()
    after, theirs = train_losses(standard, arch), train_losses(reference, arch)
    assert all(torch.equal(before[k], after[k]) and torch.equal(after[k], theirs[k]) for k in theirs)


def test_loss_stats_unwraps_a_ddp_like_wrapper():
    class Wrapper(nn.Module):  # DistributedDataParallel keeps the model as .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    model = small_model("retinanet", "harmonic")
    assert loss_stats(model) == {} and loss_stats(Wrapper(model)) == {}
    train_losses(model, "retinanet")
    stats = loss_stats(Wrapper(model))
    assert stats == loss_stats(model) and set(stats) == {"beta_c", "beta_r", "reversed_frac"}
    assert all(isinstance(v, float) for v in stats.values()) and all(0 < stats[k] <= 1 for k in ("beta_c", "beta_r"))
    assert loss_stats(Wrapper(small_model("retinanet"))) == {}


# ---------------------------------------------------------------- construction, options, weights, NMS


def test_options_and_errors():
    model = build_detector("fcos", 5, loss="harmonicdet", gamma=0.5, tc_margin=0.1, detach_factors=True,
                           beta_c_mode="prob", box_loss="giou")
    o = model.head.options
    assert (o.gamma, o.tc_margin, o.alpha, o.detach_factors, o.beta_c_mode, o.box_loss) == \
        (0.5, 0.1, 1.5, True, "prob", "giou")
    assert small_model("ssd", "harmonic_iou", alpha=0.5).options.alpha == 0.5
    assert small_model("faster_rcnn", "harmonicdet", tc_margin=None).roi_heads.options.tc_margin is None
    with pytest.raises(ValueError, match="'yolo'"):
        build_detector("yolo", 5)
    with pytest.raises(ValueError, match="'vgg'"):
        build_detector("fcos", 5, backbone="vgg")
    with pytest.raises(ValueError, match="'resnet18'"):
        build_detector("ssd", 5, backbone="resnet18")
    with pytest.raises(ValueError, match="'harmonious'"):
        build_detector("fcos", 5, loss="harmonious")
    with pytest.raises(ValueError, match=r"unknown loss option\(s\) \['alhpa', 'margin'\]"):
        build_detector("fcos", 5, loss="harmonic", alhpa=1.0, margin=0.1)
    with pytest.raises(ValueError, match="S-13"):
        build_detector("retinanet", 5, loss="harmonic_iou", gamma=1.5)
    with pytest.raises(ValueError, match="'huber'"):
        build_detector("retinanet", 5, loss="harmonic", box_loss="huber")
    with pytest.raises(ValueError, match="alpha > 0"):
        build_detector("retinanet", 5, loss="harmonic", box_loss="none")
    with pytest.raises(ValueError, match="takes no loss options"):
        build_detector("fcos", 5, alpha=1.0)
    with pytest.raises(ValueError, match="fpn_channels"):
        build_detector("fcos", 5, fpn_channels=48)
    with pytest.raises(ValueError, match="num_classes"):
        build_detector("fcos", 1)
    # the control and the QFL baseline
    assert small_model("ssd", "standard_posweight").options.positive_weight == 1.9
    assert small_model("faster_rcnn", "standard_posweight", positive_weight=3).roi_heads.options.positive_weight == 3
    for bad in (0, -1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="positive_weight"):
            build_detector("retinanet", 5, loss="standard_posweight", positive_weight=bad)
    with pytest.raises(ValueError, match="positive_weight"):
        build_detector("retinanet", 5, loss="harmonic", positive_weight=2.0)
    with pytest.raises(ValueError, match="detach_factors"):
        build_detector("retinanet", 5, loss="standard_posweight", detach_factors=True)
    with pytest.raises(ValueError, match="positive_weight"):
        build_detector("retinanet", 5, positive_weight=2.0)
    for arch in ("faster_rcnn", "mask_rcnn", "ssd"):
        with pytest.raises(ValueError, match="qfl"):
            build_detector(arch, 5, loss="qfl")
    with pytest.raises(ValueError, match=r"unknown loss option\(s\) \['alpha'\]"):
        build_detector("fcos", 5, loss="qfl", alpha=1.0)
    with pytest.raises(ValueError, match="beta"):
        build_detector("fcos", 5, loss="qfl", qfl_beta=-1.0)
    assert build_detector("retinanet", 5, loss="qfl", qfl_beta=1.5).head.options.qfl_beta == 1.5
    # FCOS scale-range options
    model = build_detector("fcos", 5, fcos_anchor_sizes=[2, 4, 8, 16, 32.5], center_sampling_radius=6)
    assert model.anchor_generator.sizes == ((2,), (4,), (8,), (16,), (32.5,)) and model.center_sampling_radius == 6.0
    default = build_detector("fcos", 5, loss="harmonic")
    assert default.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,)) and default.center_sampling_radius == 1.5
    for bad in ((2, 4, 8, 16), (2, 4, 8, 16, 32, 64), (2, 4, 4, 16, 32), (4, 2, 8, 16, 32), (0, 4, 8, 16, 32),
                (-2, 4, 8, 16, 32), (2, 4, 8, 16, float("inf")), "2,4,8,16,32", 8):
        with pytest.raises(ValueError, match="fcos_anchor_sizes"):
            build_detector("fcos", 5, fcos_anchor_sizes=bad)
    for bad in (0, -1.5, float("nan"), "6"):
        with pytest.raises(ValueError, match="center_sampling_radius"):
            build_detector("fcos", 5, center_sampling_radius=bad)
    for arch in ("retinanet", "ssd", "faster_rcnn"):
        with pytest.raises(ValueError, match="'fcos'"):
            build_detector(arch, 5, fcos_anchor_sizes=(2, 4, 8, 16, 32))
        with pytest.raises(ValueError, match="'fcos'"):
            build_detector(arch, 5, center_sampling_radius=2.0)


@pytest.mark.parametrize("box_loss", ["smooth_l1", "l1", "giou", "none"])
def test_box_loss_option_in_every_family(box_loss):
    for arch in HEAD_ARCHS:
        part = loss_part(arch, "harmonic", alpha=1.5, box_loss=box_loss)
        out = head_losses(arch, "harmonic", *leaves(arch, shift=0.3), part=part)
        assert torch.isfinite(out["box"]) and out["box"] > 0, (arch, box_loss)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "mobilenet_v3_large"])
def test_backbones_give_five_levels_at_the_expected_strides(name):
    x = torch.rand(1, 3, 128, 128)
    for levels, sizes in (("p3p7", [16, 8, 4, 2, 1]), ("p2p6", [32, 16, 8, 4, 2])):
        body = fpn_backbone(name, levels=levels, fpn_channels=16).eval()
        with torch.no_grad():
            features = body(x)
        assert [f.shape[-1] for f in features.values()] == sizes and body.out_channels == 16
    assert all(p.requires_grad for p in body.parameters())
    frozen = fpn_backbone(name, trainable_layers=0, frozen_bn=True)
    assert not any(p.requires_grad for p in frozen.body.parameters())


def test_pretrained_state_dict_loads(tmp_path):
    source = small_model("retinanet")
    torch.save(source.state_dict(), tmp_path / "full.pt")
    torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}}, tmp_path / "ckpt.pt")
    torch.save(source.backbone.body.state_dict(), tmp_path / "body.pt")
    classifier = dict(source.backbone.body.state_dict(), **{"fc.weight": torch.zeros(1000, 512)})
    torch.save(classifier, tmp_path / "imagenet.pt")
    for name in ("full.pt", "ckpt.pt", "body.pt", "imagenet.pt"):
        model = small_model("retinanet", "harmonic", pretrained=str(tmp_path / name))
        assert torch.equal(model.backbone.body.conv1.weight, source.backbone.body.conv1.weight), name
        if name != "full.pt":
            continue
        reference = source.state_dict()  # (frozen batch norm drops num_batches_tracked)
        assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        small_model("retinanet", pretrained=str(tmp_path / "bad.pt"))
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        small_model("fcos", pretrained=str(tmp_path / "nowhere.pt"))
    mismatched = small_model("retinanet", fpn_channels=16)  # another FPN width: shapes differ
    torch.save(mismatched.state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        small_model("retinanet", pretrained=str(tmp_path / "other.pt"))


@pytest.mark.parametrize("arch", ["fcos", "faster_rcnn"])
def test_pre_nms_candidates_are_a_superset_and_settings_restored(arch):
    model = small_model(arch).eval()
    owner = model.roi_heads if arch == "faster_rcnn" else model
    owner.score_thresh = 0.0
    images, _ = batch(arch)
    saved = (owner.nms_thresh, owner.detections_per_img)
    with torch.no_grad():
        after_nms = model(images)
        with pre_nms_candidates(model, max_per_image=500) as inside:
            assert inside is model and (owner.nms_thresh, owner.detections_per_img) == (1.0, 500)
            before_nms = model(images)
    assert (owner.nms_thresh, owner.detections_per_img) == saved
    for a, b in zip(after_nms, before_nms):
        assert len(a["boxes"]) <= len(b["boxes"]) <= 500
    assert sum(len(b["boxes"]) for b in before_nms) > sum(len(a["boxes"]) for a in after_nms)
    with pytest.raises(RuntimeError, match="boom"):
        with pre_nms_candidates(model):
            raise RuntimeError("boom")
    assert (owner.nms_thresh, owner.detections_per_img) == saved


def test_pre_nms_candidates_for_every_family_and_a_wrapper():
    class Wrapper(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    for arch, owner_of in (("retinanet", lambda m: m), ("ssd", lambda m: m), ("mask_rcnn", lambda m: m.roi_heads)):
        model = small_model(arch, "harmonic")
        owner = owner_of(model)
        saved = (owner.nms_thresh, owner.detections_per_img)
        with pre_nms_candidates(Wrapper(model), max_per_image=77):
            assert (owner.nms_thresh, owner.detections_per_img) == (1.0, 77)
        assert (owner.nms_thresh, owner.detections_per_img) == saved
    with pytest.raises(ValueError, match="Linear"):
        with pre_nms_candidates(nn.Linear(2, 2)):
            pass


def test_harmonic_classes_are_the_torchvision_classes():
    assert issubclass(HarmonicFCOSHead, FCOSHead) and issubclass(HarmonicRetinaNetHead, RetinaNetHead)
    assert issubclass(StandardFCOSHead, FCOSHead) and issubclass(QFLFCOSHead, FCOSHead)
    assert issubclass(QFLRetinaNetHead, RetinaNetHead) and isinstance(small_model("fcos", "qfl"), FCOS)
    # StandardFCOSHead adds no computation of its own to torchvision's: only these two methods, both delegating
    assert {k for k in vars(StandardFCOSHead) if callable(vars(StandardFCOSHead)[k])} == {"compute_loss"}
    assert issubclass(HarmonicRoIHeads, RoIHeads) and issubclass(HarmonicSSD, SSD)
    assert type(small_model("mask_rcnn", "harmonic").roi_heads) is HarmonicRoIHeads


# ---------------------------------------------------------------- standard_posweight: the constant-factor control


@pytest.mark.parametrize("arch", ARCHS)
def test_posweight_with_c_1_is_the_standard_loss(arch):
    model, standard = pair(arch, "standard_posweight", positive_weight=1.0)
    ours, theirs = train_losses(model, arch), train_losses(standard, arch)
    assert set(ours) == set(theirs)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-6, atol=1e-6, msg=key)
    stats = loss_stats(model)  # the values the harmonic factors would take, for comparison with harmonic runs
    assert {"beta_c", "beta_r"} <= set(stats) and all(0 < stats[k] <= 1 for k in ("beta_c", "beta_r"))


@pytest.mark.parametrize("arch", HEAD_ARCHS)
def test_posweight_multiplies_the_positive_terms_only(arch):
    """One positive: c = 2 doubles its classification and box terms; the negatives' loss is unchanged."""
    cls_logits, regression = leaves(arch, shift=0.3)
    standard = head_losses(arch, "standard", cls_logits, regression)
    n = 4 if arch == "faster_rcnn" else 1  # normaliser: sampled RoIs, resp. foreground anchors
    cls_pos = positive_cls_loss(arch, cls_logits) / n
    for c in (2.0, 1.9):
        part = loss_part(arch, "standard_posweight", positive_weight=c)
        out = head_losses(arch, "standard_posweight", cls_logits, regression, part=part)
        assert set(out) == set(standard)
        torch.testing.assert_close(out["box"], c * standard["box"])
        negatives = standard["cls"] - cls_pos
        torch.testing.assert_close(out["cls"] - c * cls_pos, negatives)
        for key in set(out) - {"cls", "box"}:  # FCOS centerness: torchvision's
            torch.testing.assert_close(out[key], standard[key])
        # no coupling: the positive's classification gradient does not depend on its box
        (grad,) = torch.autograd.grad(out["cls"], cls_logits, retain_graph=True)
        (grad_std,) = torch.autograd.grad(standard["cls"], cls_logits, retain_graph=True)
        torch.testing.assert_close(grad[POS], c * grad_std[POS])
        torch.testing.assert_close(grad[POS + 1:], grad_std[POS + 1:])


# ---------------------------------------------------------------- FCOS scale ranges at small image sizes

SMALL_IMAGE_FCOS = dict(fcos_anchor_sizes=(2, 4, 8, 16, 32), center_sampling_radius=6.0)


def sized_objects_batch():
    """Two 128 px images with square objects of 16, 32 and 56 px (centres off the location grid)."""
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 128, 128, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 24.0, 24.0], [56.0, 8.0, 88.0, 40.0], [36.0, 60.0, 92.0, 116.0]]),
         "labels": torch.tensor([1, 2, 3])},
        {"boxes": torch.tensor([[70.0, 30.0, 86.0, 46.0], [10.0, 70.0, 66.0, 126.0]]), "labels": torch.tensor([4, 1])},
    ]
    return images, targets


@pytest.mark.parametrize("loss", ["standard", "harmonicdet", "qfl"])
def test_fcos_small_image_scale_ranges_use_the_pyramid(loss):
    images, targets = sized_objects_batch()
    counts = {}
    for name, options in (("default", {}), ("small", SMALL_IMAGE_FCOS)):
        torch.manual_seed(0)
        model = small_model("fcos", loss, **options).train()
        losses = model(images, targets)
        assert all(torch.isfinite(v) for v in losses.values())
        stats = loss_stats(model)
        assert LEVEL_KEYS <= set(stats) and all(float(v).is_integer() for k, v in stats.items() if k in LEVEL_KEYS)
        counts[name] = [stats[f"pos_p{level}"] for level in range(3, 8)]
    default, small = counts["default"], counts["small"]
    assert default[0] > 0 and default[1:] == [0.0] * 4  # torchvision's ranges: everything on P3
    assert sum(c > 0 for c in small) >= 3 and small[3:] == [0.0, 0.0]  # 16-56 px objects over P3-P5


def test_fcos_level_counts_match_torchvisions_matching():
    """The recorded counts are the foreground locations of torchvision's matcher, split by level."""
    images, targets = sized_objects_batch()
    model = small_model("fcos", **SMALL_IMAGE_FCOS).train()
    captured = {}
    original = model.head.compute_loss

    def spy(targets, head_outputs, anchors, matched_idxs):
        captured["matched"] = matched_idxs
        return original(targets, head_outputs, anchors, matched_idxs)

    model.head.compute_loss = spy  # instance attribute on our own model, for this test only
    model(images, targets)
    sizes = [16 * 16, 8 * 8, 4 * 4, 2 * 2, 1]  # locations per level of a 128 px image, strides 8 .. 128
    foreground = torch.stack(captured["matched"]) >= 0
    expected = [float(level.sum()) for level in foreground.split(sizes, dim=1)]
    stats = loss_stats(model)
    assert [stats[f"pos_p{level}"] for level in range(3, 8)] == expected and sum(expected) > 0


@pytest.mark.parametrize("loss", ["standard", "harmonicdet"])
def test_detector_kwargs_reach_the_torchvision_class(loss):
    model = build_detector("faster_rcnn", 5, loss=loss, fpn_channels=32,
                           detector_kwargs={"box_batch_size_per_image": 64, "rpn_post_nms_top_n_train": 300})
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 64
    assert model.rpn._post_nms_top_n["training"] == 300
    fcos = build_detector("fcos", 5, loss=loss, fpn_channels=64, detector_kwargs={"detections_per_img": 7})
    assert fcos.detections_per_img == 7


def test_detector_kwargs_errors_name_the_key():
    with pytest.raises(ValueError, match="FasterRCNN takes no argument 'box_batch'"):
        build_detector("faster_rcnn", 5, detector_kwargs={"box_batch": 64})
    with pytest.raises(ValueError, match="'rpn_anchor_generator' is set by build_detector"):
        build_detector("faster_rcnn", 5, detector_kwargs={"rpn_anchor_generator": None})
    with pytest.raises(ValueError, match="'center_sampling_radius' is set by build_detector"):
        build_detector("fcos", 5, detector_kwargs={"center_sampling_radius": 2.0})
