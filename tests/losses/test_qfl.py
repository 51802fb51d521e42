"""Quality Focal Loss (GFL) against its closed forms, and the ``qfl`` preset in FCOS and RetinaNet."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import FCOS
from torchvision.ops import box_iou, generalized_box_iou_loss

from harmonicdet.losses import QualityFocalLoss, quality_focal_loss
from harmonicdet.models import QFLFCOS, QFLFCOSHead, QFLRetinaNetHead, build_detector, loss_stats

DT = torch.float64
X_GRID = torch.tensor([-30.0, -6.0, -2.0, -0.7, -0.1, 0.0, 0.2, 1.0, 3.0, 8.0, 30.0], dtype=DT)
Y_GRID = torch.tensor([0.0, 0.1, 0.37, 0.5, 0.8, 0.99, 1.0], dtype=DT)
NUM_CLASSES = 5


def grid():
    """Tensor[11, 7] logits and targets covering every (x, y) pair of the grids."""
    x, y = torch.meshgrid(X_GRID, Y_GRID, indexing="ij")
    return x.clone(), y.clone()


def closed_form(x, y, beta):
    """Element-wise QFL by the definition, with plain logs (float64, moderate logits only)."""
    s = torch.sigmoid(x)
    return (y - s).abs() ** beta * -((1 - y) * torch.log(1 - s) + y * torch.log(s))


def closed_form_grad(x, y, beta):
    """dQFL/dx = sign(s - y) |s - y|^(beta-1) (beta s (1-s) BCE + |s - y|^2), s = sigmoid(x)."""
    s = torch.sigmoid(x)
    d = s - y
    bce = F.softplus(x) - y * x  # -(y log s + (1-y) log(1-s)), stable
    return torch.sign(d) * d.abs() ** (beta - 1) * (beta * s * (1 - s) * bce + d.abs() ** 2)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 2.5])
def test_values_equal_the_closed_form(beta):
    x, y = grid()
    moderate = X_GRID.abs() <= 8  # plain logs of sigmoid lose precision beyond
    expected = closed_form(x[moderate], y[moderate], beta).sum(dim=1)
    torch.testing.assert_close(quality_focal_loss(x[moderate], y[moderate], beta=beta, reduction="none"), expected,
                               rtol=1e-12, atol=1e-14)
    assert torch.isfinite(quality_focal_loss(x, y, beta=beta, reduction="none")).all()


def test_negatives_and_ones_reduce_to_focal_forms():
    x = X_GRID[:, None]
    s = torch.sigmoid(x)
    # y = 0: sigma^beta * BCE(x, 0) = sigma^beta * softplus(x); y = 1: (1 - sigma)^beta * softplus(-x)
    # (atol: BCE-with-logits takes log(1 + e^-|x|), not log1p, so losses ~1e-40 at |x| = 30 are 1% off)
    torch.testing.assert_close(quality_focal_loss(x, torch.zeros_like(x), reduction="none"),
                               (s ** 2 * F.softplus(x)).squeeze(1), rtol=1e-12, atol=1e-30)
    torch.testing.assert_close(quality_focal_loss(x, torch.ones_like(x), beta=1.5, reduction="none"),
                               ((1 - s) ** 1.5 * F.softplus(-x)).squeeze(1), rtol=1e-12, atol=1e-30)


def test_hand_computed_values():
    x = torch.tensor([[0.0, 0.0, math.log(3.0), 0.0]], dtype=DT)
    y = torch.tensor([[0.5, 0.0, 1.0, 0.25]], dtype=DT)
    per_element = [
        0.0,  # sigma = y: no loss at all, whatever the BCE
        0.25 * math.log(2.0),  # 0.5^2 * ln 2
        0.0625 * -math.log(0.75),  # sigma = 0.75: 0.25^2 * -ln 0.75
        0.0625 * math.log(2.0),  # 0.25^2 * -(0.25 ln 0.5 + 0.75 ln 0.5)
    ]
    torch.testing.assert_close(quality_focal_loss(x, y, reduction="none"), torch.tensor([sum(per_element)], dtype=DT))
    assert quality_focal_loss(x[:, :1], y[:, :1]).item() == 0.0


def test_extreme_logits_are_finite_and_correct():
    x = torch.tensor([[-200.0, 200.0, 200.0, -200.0]])
    y = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    loss = quality_focal_loss(x, y, reduction="none")
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(quality_focal_loss(x, y, reduction="sum"), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    # right answers cost nothing; confidently wrong ones cost |x| = 200 each (factor 1)
    torch.testing.assert_close(loss, torch.tensor([400.0]))


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 2.5, 0.5])
def test_gradient_equals_the_closed_form(beta):
    x, y = grid()
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(quality_focal_loss(x, y, beta=beta, reduction="sum"), x)
    expected = closed_form_grad(x.detach(), y, beta)
    off_target = (torch.sigmoid(x.detach()) - y).abs() > 0  # sigma = y: the closed form's sign(0) * 0^(beta-1)
    torch.testing.assert_close(grad[off_target], expected[off_target], rtol=1e-10, atol=1e-14)
    assert torch.isfinite(grad).all() and (grad[~off_target] == 0).all()  # x = 0, y = 0.5: a minimum


def test_gradient_through_the_modulating_factor():
    """The factor |y - sigma|^beta is differentiated (GFL): the gradient differs from the constant-factor one."""
    x = torch.tensor([[0.3, -1.0]], dtype=DT, requires_grad=True)
    y = torch.tensor([[0.9, 0.0]], dtype=DT)
    (grad,) = torch.autograd.grad(quality_focal_loss(x, y, reduction="sum"), x)
    s = torch.sigmoid(x.detach())
    constant_factor = (y - s).abs() ** 2 * (s - y)
    assert not torch.allclose(grad, constant_factor)
    torch.testing.assert_close(grad, closed_form_grad(x.detach(), y, 2.0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("beta", [1.0, 2.0, 2.5])
def test_gradcheck(beta):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 3, generator=g, dtype=DT) * 2).requires_grad_(True)
    y = torch.rand(6, 3, generator=g, dtype=DT) * (torch.rand(6, 3, generator=g, dtype=DT) > 0.5)
    w = torch.rand(6, generator=g, dtype=DT)
    assert torch.autograd.gradcheck(lambda t: quality_focal_loss(t, y, weight=w, beta=beta, avg_factor=3.0), (x,))
    assert torch.autograd.gradgradcheck(lambda t: quality_focal_loss(t, y, beta=beta, reduction="sum"), (x,))


def test_fractional_beta_gradient_is_finite_where_sigma_equals_y():
    x = torch.zeros(1, 2, requires_grad=True)
    y = torch.tensor([[0.5, 0.2]])
    (grad,) = torch.autograd.grad(quality_focal_loss(x, y, beta=0.5, reduction="sum"), x)
    assert torch.isfinite(grad).all()


# ---------------------------------------------------------------- reductions, weights, errors


def test_reductions_weights_and_avg_factor():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, generator=g, dtype=DT), torch.rand(4, 3, generator=g, dtype=DT)
    per_sample = closed_form(x, y, 2.0).sum(dim=1)
    torch.testing.assert_close(quality_focal_loss(x, y, reduction="none"), per_sample)
    torch.testing.assert_close(quality_focal_loss(x, y), per_sample.mean())
    torch.testing.assert_close(quality_focal_loss(x, y, reduction="sum"), per_sample.sum())
    torch.testing.assert_close(quality_focal_loss(x, y, avg_factor=2.0), per_sample.sum() / 2.0)
    w = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=DT)
    torch.testing.assert_close(quality_focal_loss(x, y, weight=w, reduction="sum"), (w * per_sample).sum())
    w2 = torch.rand(4, 3, generator=g, dtype=DT)
    torch.testing.assert_close(quality_focal_loss(x, y, weight=w2, reduction="none"),
                               (w2 * closed_form(x, y, 2.0)).sum(dim=1))
    with pytest.raises(ValueError, match="avg_factor"):
        quality_focal_loss(x, y, reduction="sum", avg_factor=2.0)
    empty = torch.zeros(0, 3, requires_grad=True)
    for reduction, avg in (("mean", None), ("sum", None), ("mean", 0)):
        out = quality_focal_loss(empty, torch.zeros(0, 3), reduction=reduction, avg_factor=avg)
        assert out.item() == 0 and out.requires_grad
        out.backward()
        assert empty.grad.shape == (0, 3)  # an empty loss still differentiates: an empty gradient, no error


def test_errors_name_the_argument():
    x, y = torch.zeros(2, 3), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="same shape"):
        quality_focal_loss(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        quality_focal_loss(torch.zeros(3), torch.zeros(3))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"targets_score must lie in \[0, 1\]"):
            quality_focal_loss(x, torch.full((2, 3), bad))
    with pytest.raises(ValueError, match="floating point"):
        quality_focal_loss(x, torch.zeros(2, 3, dtype=torch.int64))
    for bad in (-1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="beta"):
            quality_focal_loss(x, y, beta=bad)
    with pytest.raises(ValueError, match="reduction"):
        quality_focal_loss(x, y, reduction="avg")
    with pytest.raises(ValueError, match="weight"):
        quality_focal_loss(x, y, weight=torch.ones(3))
    with pytest.raises(ValueError, match="beta"):
        QualityFocalLoss(beta=-2.0)


def test_module_follows_mmdetection_signature():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 3, generator=g), torch.rand(4, 3, generator=g)
    module = QualityFocalLoss(beta=1.5, loss_weight=2.0)
    per_sample = quality_focal_loss(x, y, beta=1.5, reduction="none")
    torch.testing.assert_close(module(x, y), 2.0 * per_sample.mean())
    torch.testing.assert_close(module(x, y, reduction_override="none"), 2.0 * per_sample)
    torch.testing.assert_close(module(x, y, weight=torch.ones(4), avg_factor=8.0), 2.0 * per_sample.sum() / 8.0)
    assert "beta=1.5" in repr(module) and "loss_weight=2.0" in repr(module)
    with pytest.raises(ValueError, match="reduction must be one of"):
        module(x, y, reduction_override="avg")


# ---------------------------------------------------------------- heads: one positive

ANCHORS = torch.tensor([[0.0, 0.0, 32.0, 32.0], [32.0, 0.0, 64.0, 32.0], [0.0, 32.0, 32.0, 64.0], [64.0, 64.0, 96.0, 96.0]])
GT = torch.tensor([[2.0, 3.0, 30.0, 34.0]])
LABEL = 2


def qfl_part(arch, **options):
    torch.manual_seed(0)
    channels = 64 if arch == "fcos" else 32
    return build_detector(arch, NUM_CLASSES, loss="qfl", fpn_channels=channels, **options).head


def one_positive(arch, head, shift):
    """Head outputs for one image with anchor 0 positive (RetinaNet: anchor 2 between thresholds)."""
    matched = torch.tensor([0, -1, -2 if arch == "retinanet" else -1, -1])
    g = torch.Generator().manual_seed(0)
    cls_logits = (torch.randn(4, NUM_CLASSES, generator=g) * 0.5).requires_grad_(True)
    gt = GT[matched.clamp(min=0)]
    if arch == "fcos":
        regression = head.box_coder.encode(ANCHORS, gt)
    else:
        regression = head.regression_head.box_coder.encode_single(gt, ANCHORS)
    regression[0] += shift
    regression.requires_grad_(True)
    outputs = {"cls_logits": cls_logits[None], "bbox_regression": regression[None]}
    if arch == "fcos":
        outputs["bbox_ctrness"] = torch.full((1, 4, 1), float("inf"))
    targets = [{"boxes": GT, "labels": torch.tensor([LABEL])}]
    return cls_logits, regression, outputs, targets, matched


def decoded_positive(arch, head, regression):
    if arch == "fcos":
        return head.box_coder.decode(regression[None, :1], ANCHORS[None, :1])[0]
    return head.regression_head.box_coder.decode_single(regression[:1], ANCHORS[:1])


@pytest.mark.parametrize("arch", ["fcos", "retinanet"])
@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_head_classification_is_qfl_with_the_detached_iou_target(arch, shift):
    head = qfl_part(arch)
    cls_logits, regression, outputs, targets, matched = one_positive(arch, head, shift)
    out = head.compute_loss(targets, outputs, [ANCHORS], [matched])
    assert set(out) == {"classification", "bbox_regression"}  # no centerness loss
    pred = decoded_positive(arch, head, regression.detach())
    iou = box_iou(pred, GT)[0, 0]
    assert (iou.item() == pytest.approx(1.0, abs=1e-5)) == (shift == 0.0)
    target = torch.zeros(4, NUM_CLASSES)
    target[0, LABEL] = iou
    valid = matched != -2
    expected = quality_focal_loss(cls_logits[valid], target[valid], reduction="sum")  # / 1 foreground
    torch.testing.assert_close(out["classification"], expected, rtol=1e-5, atol=1e-6)
    assert loss_stats(head)["iou_target"] == pytest.approx(iou.item(), rel=1e-5)
    if arch == "fcos":  # torchvision's GIoU, not weighted by the score
        torch.testing.assert_close(out["bbox_regression"], generalized_box_iou_loss(
            decoded_positive(arch, head, regression), GT, reduction="sum"))
    # the target is detached: the classification loss sends no gradient into the box branch
    grads = torch.autograd.grad(out["classification"], (cls_logits, regression), allow_unused=True)
    assert grads[1] is None or (grads[1] == 0).all()
    assert grads[0][~valid].abs().sum() == 0 and grads[0][valid].abs().sum() > 0


@pytest.mark.parametrize("arch", ["fcos", "retinanet"])
def test_head_without_positives_and_with_qfl_beta(arch):
    head = qfl_part(arch, qfl_beta=0.0)
    cls_logits, regression, outputs, targets, _ = one_positive(arch, head, 0.3)
    none = torch.full((4,), -1)
    out = head.compute_loss(targets, outputs, [ANCHORS], [none])
    # beta = 0: QFL is the plain BCE with all-zero targets over every anchor
    expected = F.binary_cross_entropy_with_logits(cls_logits, torch.zeros_like(cls_logits), reduction="sum")
    torch.testing.assert_close(out["classification"], expected)
    assert out["bbox_regression"] == 0 and loss_stats(head)["iou_target"] == 0.0
    sum(out.values()).backward()
    # d/dx BCE(x, 0) = sigmoid(x) per anchor and class; no positive, so the boxes get no gradient
    torch.testing.assert_close(cls_logits.grad, torch.sigmoid(cls_logits.detach()))
    assert regression.grad is None or (regression.grad == 0).all()


# ---------------------------------------------------------------- models


def small(arch, **options):
    return build_detector(arch, NUM_CLASSES, loss="qfl", fpn_channels=64 if arch == "fcos" else 32, **options)


def a_batch():
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 96, 112, generator=g), torch.rand(3, 128, 128, generator=g)]
    boxes = torch.tensor([[10.0, 20.0, 60.0, 70.0], [50.0, 40.0, 90.0, 95.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 3])}, {"boxes": boxes[:1] + 5, "labels": torch.tensor([2])}]
    return images, targets


@pytest.mark.parametrize("arch", ["fcos", "retinanet"])
def test_qfl_training_step(arch):
    torch.manual_seed(0)
    model = small(arch).train()
    assert isinstance(model.head, QFLFCOSHead if arch == "fcos" else QFLRetinaNetHead)
    assert loss_stats(model) == {}
    images, targets = a_batch()
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # every parameter is trained (no dead centerness conv for DistributedDataParallel to trip over)
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    stats = loss_stats(model)
    levels = {f"pos_p{level}" for level in range(3, 8)} if arch == "fcos" else set()
    assert set(stats) == {"iou_target"} | levels and 0 <= stats["iou_target"] <= 1
    assert all(isinstance(v, float) for v in stats.values())
    # no positives in a batch: finite, zero box loss
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    model.zero_grad()
    losses = model(images, [dict(empty), dict(empty)])
    assert all(torch.isfinite(v) for v in losses.values()) and losses["bbox_regression"] == 0
    sum(losses.values()).backward()
    # every anchor a negative: the classification branch still learns, the box branch gets exactly nothing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert all(p.grad is None or (p.grad == 0).all() for p in model.head.regression_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.classification_head.parameters())


def test_qfl_fcos_has_no_centerness_and_scores_by_the_class_probability():
    torch.manual_seed(0)
    model = small("fcos")
    assert type(model) is QFLFCOS and not any("ctrness" in k for k in model.state_dict())
    reference = FCOS(model.backbone, NUM_CLASSES, anchor_generator=model.anchor_generator, head=model.head,
                     min_size=128, max_size=128)  # torchvision's postprocess: sqrt(sigmoid(cls) * sigmoid(ctrness))
    with torch.no_grad():  # a visible score spread: raise the classification bias
        model.head.classification_head.cls_logits.bias.fill_(0.5)
    for m in (model, reference):
        m.eval().score_thresh = 0.0
        m.detections_per_img = 50
    images, _ = a_batch()
    with torch.no_grad():
        ours, theirs = model(images), reference(images)
    for a, b in zip(ours, theirs):
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        # the unit centerness leaves torchvision only its square root: same boxes, scores squared
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["scores"], b["scores"] ** 2)
    # a standard FCOS checkpoint loads, its centerness convolution dropped
    standard = build_detector("fcos", NUM_CLASSES, fpn_channels=64)
    assert any("ctrness" in k for k in standard.state_dict())
    model.load_state_dict(standard.state_dict())
    assert torch.equal(model.head.regression_head.bbox_reg.weight, standard.head.regression_head.bbox_reg.weight)
    with pytest.raises(RuntimeError, match="Missing key"):
        standard.load_state_dict(model.state_dict())
    # and the head's centerness output is exactly 1 after the sigmoid
    features = list(model.backbone(torch.rand(1, 3, 64, 64)).values())
    with torch.no_grad():
        assert (torch.sigmoid(model.head(features)["bbox_ctrness"]) == 1).all()

