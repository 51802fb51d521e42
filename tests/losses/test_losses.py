"""Losses against the supplement's closed forms (float64) and their API contracts."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from harmonicdet.losses import (
    HarmonicIoULoss,
    HarmonicLoss,
    HarmonicOptions,
    QFLOptions,
    TaskContrastLoss,
    aligned_box_iou,
    harmonic_factors,
    harmonic_iou_from_iou,
    harmonic_iou_loss,
    harmonic_loss,
    harmonic_sigmoid_detection_loss,
    harmonic_softmax_detection_loss,
    harmonic_terms,
    localization_loss,
    reversed_fraction,
    task_contrast_loss,
    weight_reduce_loss,
)

DT = torch.float64
# p near 0 and 1 included, as the closed forms are steepest there
P_GRID = torch.tensor([1e-8, 1e-4, 0.01, 0.05, 0.2, 0.5, 0.8, 0.99, 1 - 1e-6], dtype=DT)
T_GRID = torch.tensor([-3.0, -1.0, -0.5, -0.1, -1e-3, 1e-3, 0.05, 0.3, 0.99, 1.5, 4.0], dtype=DT)


def _grid(a, b):
    aa, bb = torch.meshgrid(a, b, indexing="ij")
    return aa.reshape(-1), bb.reshape(-1)


def _smooth_l1(t, beta=1.0):
    return F.smooth_l1_loss(t, torch.zeros_like(t), beta=beta, reduction="none")


def test_gradient_wrt_offset_matches_eq_s5():
    p, t = _grid(P_GRID, T_GRID)
    t = t.clone().requires_grad_(True)
    loc = _smooth_l1(t)
    harmonic_loss(-torch.log(p), loc, reduction="sum").backward()
    dloc_dt = torch.where(t.detach().abs() < 1, t.detach(), t.detach().sign())
    expected = (1 + p + torch.exp(-loc.detach()) * torch.log(p)) * dloc_dt
    torch.testing.assert_close(t.grad, expected, rtol=1e-12, atol=1e-12)


def test_gradient_wrt_probability_matches_eq_s10():
    p, loc = _grid(P_GRID, torch.tensor([0.0, 0.01, 0.3, 1.0, 2.5, 10.0], dtype=DT))
    p = p.clone().requires_grad_(True)
    harmonic_loss(-torch.log(p), loc, reduction="sum").backward()
    expected = loc - (1 + torch.exp(-loc)) / p.detach()
    torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-12)


def test_gradient_wrt_cls_loss_matches_eq_s8_and_sign_condition_s9():
    x, y = _grid(torch.linspace(0, 8, 17, dtype=DT), torch.linspace(0, 8, 17, dtype=DT))
    x = x.clone().requires_grad_(True)
    harmonic_loss(x, y, reduction="sum").backward()
    expected = 1 + torch.exp(-y) - y * torch.exp(-x.detach())
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)
    # Eq. S-9: F increases in x exactly where x > ln y - ln(1 + e^-y)
    condition = x.detach() > torch.log(y) - torch.log1p(torch.exp(-y))
    assert torch.equal(x.grad > 0, condition)
    # the same condition makes dL/dp negative (Eq. S-10)
    p = torch.exp(-x.detach())
    assert torch.equal((y - (1 + torch.exp(-y)) / p) < 0, condition)


def test_regression_gradient_reverses_for_low_score_and_small_loss():
    # S-5's factor 1 + p + exp(-L) log p < 0 for small p and L: documented behaviour, not a bug
    t = torch.tensor([0.1, 0.1, 0.1], dtype=DT, requires_grad=True)
    p = torch.tensor([0.05, 0.3, 0.9], dtype=DT)
    harmonic_loss(-torch.log(p), _smooth_l1(t), reduction="sum").backward()
    assert t.grad[0] < 0 < t.grad[1]
    assert t.grad[2] > 0
    # the plain CE + SmoothL1 gradient is independent of p (supplementary Fig. 1b)
    t2 = t.detach().clone().requires_grad_(True)
    (-torch.log(p) + _smooth_l1(t2)).sum().backward()
    torch.testing.assert_close(t2.grad, torch.full_like(p, 0.1))


def test_detach_factors_makes_factors_constants():
    cls = torch.tensor([0.3, 2.0], dtype=DT, requires_grad=True)
    loc = torch.tensor([0.7, 0.1], dtype=DT, requires_grad=True)
    harmonic_loss(cls, loc, detach_factors=True, reduction="sum").backward()
    beta_c, beta_r = harmonic_factors(cls.detach(), loc.detach())
    torch.testing.assert_close(cls.grad, 1 + beta_r)
    torch.testing.assert_close(loc.grad, 1 + beta_c)


def test_detach_beta_r_gradients_match_closed_forms():
    # beta_r constant: S-5 loses its exp(-L) log p term, S-10 keeps its +L term
    p, t = _grid(P_GRID, T_GRID)
    p, t = p.clone().requires_grad_(True), t.clone().requires_grad_(True)
    loc = _smooth_l1(t)
    harmonic_loss(-torch.log(p), loc, detach_factors="beta_r", reduction="sum").backward()
    dloc_dt = torch.where(t.detach().abs() < 1, t.detach(), t.detach().sign())
    box_factor = 1 + p.detach()
    torch.testing.assert_close(t.grad, box_factor * dloc_dt, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.grad, loc.detach() - (1 + torch.exp(-loc.detach())) / p.detach(),
                               rtol=1e-12, atol=1e-12)
    # the reversal is gone: the box gradient has the sign of dL/dt for every p and t
    assert (t.grad * dloc_dt >= 0).all() and (box_factor >= 1).all()
    full = p.detach() + 1 + torch.exp(-loc.detach()) * torch.log(p.detach())
    assert (full < 0).any()  # the grid does hold positives that the full coupling reverses


def test_detach_beta_c_gradients_match_closed_forms():
    # beta_c constant: S-5 whole, S-10 without its +L term
    p, t = _grid(P_GRID, T_GRID)
    p, t = p.clone().requires_grad_(True), t.clone().requires_grad_(True)
    loc = _smooth_l1(t)
    harmonic_loss(-torch.log(p), loc, detach_factors="beta_c", reduction="sum").backward()
    dloc_dt = torch.where(t.detach().abs() < 1, t.detach(), t.detach().sign())
    expected_t = (1 + p.detach() + torch.exp(-loc.detach()) * torch.log(p.detach())) * dloc_dt
    torch.testing.assert_close(t.grad, expected_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.grad, -(1 + torch.exp(-loc.detach())) / p.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", [False, True, "beta_c", "beta_r"])
@pytest.mark.parametrize("given_beta_c", [False, True])
def test_detach_modes_match_autograd_with_detached_factors(mode, given_beta_c):
    g = torch.Generator().manual_seed(5)
    cls = (torch.rand(32, generator=g, dtype=DT) * 4).requires_grad_(True)
    loc = (torch.rand(32, generator=g, dtype=DT) * 3).requires_grad_(True)
    beta_c = torch.rand(32, generator=g, dtype=DT).requires_grad_(True) if given_beta_c else None
    inputs = (cls, loc) + ((beta_c,) if given_beta_c else ())
    got = torch.autograd.grad(harmonic_loss(cls, loc, beta_c=beta_c, detach_factors=mode, reduction="sum"),
                              inputs, allow_unused=True)
    bc = beta_c if given_beta_c else torch.exp(-cls)
    br = torch.exp(-loc)
    bc = bc.detach() if mode in (True, "beta_c") else bc
    br = br.detach() if mode in (True, "beta_r") else br
    want = torch.autograd.grad(((1 + br) * cls + (1 + bc) * loc).sum(), inputs, allow_unused=True)
    zeros = torch.zeros(32, dtype=DT)
    for a, b in zip(got, want):
        torch.testing.assert_close(zeros if a is None else a, zeros if b is None else b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["beta", "both", 1, None])
def test_unknown_detach_mode_is_refused(mode):
    with pytest.raises(ValueError, match="detach_factors must be one of"):
        harmonic_loss(torch.ones(2), torch.ones(2), detach_factors=mode)


def test_reversed_fraction_equals_hand_count():
    # S-5 factor 1 + p + beta_r log p: p=0.05, L=0.01 -> 1.05 + 0.990 * -2.996 < 0 (reversed);
    # p=0.05, L=3 -> 1.05 - 0.149 > 0; p=0.2, L=0 -> 1.2 - 1.609 < 0 (reversed); p=0.9, L=0 -> > 0
    p = torch.tensor([0.05, 0.05, 0.2, 0.9], dtype=DT)
    beta_r = torch.exp(-torch.tensor([0.01, 3.0, 0.0, 0.0], dtype=DT))
    assert reversed_fraction(p, beta_r).item() == 0.5
    assert reversed_fraction(p, beta_r, "beta_c").item() == 0.5
    assert reversed_fraction(p, beta_r, "beta_r").item() == 0.0 == reversed_fraction(p, beta_r, True).item()
    assert reversed_fraction(p[:0], beta_r[:0]).item() == 0.0


def test_softmax_objective_logs_reversed_fraction_of_a_crafted_batch():
    # 2 classes + background; positives with p = 0.05, 0.05, 0.9, 0.1 and SmoothL1 0, 5, 0, 0:
    # S-5's factor 1 + p + exp(-L) log p is negative for the 1st (1.05 - 3.0) and 4th (1.1 - 2.3) only
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.85, 0.05, 0.1],
                          [0.8, 0.1, 0.1]], dtype=DT)
    labels = torch.tensor([1, 1, 1, 2, 0])
    deltas = torch.tensor([[0.0] * 4, [5.0 + 0.5 / 9, 0, 0, 0], [0.0] * 4, [0.0] * 4], dtype=DT)
    kwargs = dict(box_deltas=deltas, box_targets=torch.zeros_like(deltas), alpha=0.0, return_stats=True)
    _, stats = harmonic_softmax_detection_loss(torch.log(probs), labels, **kwargs)
    assert stats["reversed_frac"].item() == 0.5
    _, stats = harmonic_softmax_detection_loss(torch.log(probs), labels, detach_factors="beta_r", **kwargs)
    assert stats["reversed_frac"].item() == 0.0
    _, stats = harmonic_softmax_detection_loss(torch.log(probs), labels, positive_weight=1.9, **kwargs)
    assert stats["reversed_frac"].item() == 0.0


@pytest.mark.parametrize("given_beta_c", [False, True])
def test_closed_form_backward_matches_autograd_in_float64(given_beta_c):
    # the fused Function's backward (S-5/S-10) against autograd through the plain expression
    g = torch.Generator().manual_seed(3)
    cls = (torch.rand(64, generator=g, dtype=torch.float64) * 5).requires_grad_(True)
    loc = (torch.rand(64, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    beta_c = torch.rand(64, generator=g, dtype=torch.float64).requires_grad_(True) if given_beta_c else None
    w_cls, w_loc = torch.randn(64, generator=g, dtype=torch.float64), torch.randn(64, generator=g, dtype=torch.float64)
    inputs = (cls, loc) + ((beta_c,) if given_beta_c else ())

    cls_term, loc_term = harmonic_terms(cls, loc, beta_c=beta_c)
    fused = torch.autograd.grad((cls_term * w_cls + loc_term * w_loc).sum(), inputs)
    bc = beta_c if given_beta_c else torch.exp(-cls)
    reference = ((1 + torch.exp(-loc)) * cls * w_cls + (1 + bc) * loc * w_loc).sum()
    expected = torch.autograd.grad(reference, inputs)
    for got, want in zip(fused, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert torch.autograd.gradcheck(lambda *x: harmonic_terms(x[0], x[1], beta_c=x[2] if given_beta_c else None),
                                    inputs)


def test_harmonic_factors_and_value():
    cls = torch.tensor([-math.log(0.25), 0.0], dtype=DT)
    loc = torch.tensor([0.5, 3.0], dtype=DT)
    beta_c, beta_r = harmonic_factors(cls, loc)
    torch.testing.assert_close(beta_c, torch.tensor([0.25, 1.0], dtype=DT))
    torch.testing.assert_close(beta_r, torch.exp(-loc))
    expected = (1 + torch.exp(-loc)) * cls + (1 + beta_c) * loc
    torch.testing.assert_close(harmonic_loss(cls, loc), expected)


def test_harmonic_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        harmonic_loss(torch.zeros(3), torch.zeros(4))


# ---- Harmonic IoU loss -------------------------------------------------------------------------


def test_hiou_reference_values():
    iou = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=DT)
    expected = torch.tensor([1.0, 0.896580, 0.691581, 0.0], dtype=DT)
    torch.testing.assert_close(harmonic_iou_from_iou(iou, 0.8), expected, atol=5e-7, rtol=0)


def test_hiou_on_boxes_reproduces_reference_values():
    # target [0, 0, s, 1] inside pred [0, 0, 1, 1] has IoU s
    s = torch.tensor([1e-9, 0.25, 0.5, 1.0], dtype=DT)
    pred = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=DT).expand(4, 4)
    target = torch.stack([torch.zeros_like(s), torch.zeros_like(s), s, torch.ones_like(s)], dim=1)
    expected = torch.tensor([1.0, 0.896580, 0.691581, 0.0], dtype=DT)
    torch.testing.assert_close(harmonic_iou_loss(pred, target, 0.8), expected, atol=5e-7, rtol=0)


@pytest.mark.parametrize("gamma", [-1.0, 0.0, 0.3, 0.8, 1.0])
def test_hiou_gradient_matches_eq_s12(gamma):
    iou = torch.linspace(0, 1, 101, dtype=DT).requires_grad_(True)
    harmonic_iou_from_iou(iou, gamma).sum().backward()
    iou_ = iou.detach()
    expected = (1 + iou_) ** (gamma - 1) * ((gamma - 1) - (gamma + 1) * iou_)
    torch.testing.assert_close(iou.grad, expected, rtol=1e-12, atol=1e-12)
    # Eq. S-13: gamma <= 1 makes the loss non-increasing on [0, 1]
    assert (iou.grad <= 1e-15).all()
    assert (harmonic_iou_from_iou(iou_, gamma).diff() <= 0).all()


@pytest.mark.parametrize("gamma", [1.0001, 2.0, float("inf"), float("nan")])
def test_hiou_refuses_gamma_that_breaks_monotonicity(gamma):
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="S-13|finite"):
        harmonic_iou_loss(boxes, boxes, gamma)
    with pytest.raises(ValueError):
        HarmonicIoULoss(gamma=gamma)


def test_hiou_gamma_zero_is_plain_iou_loss():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g, dtype=DT) * 50
    wh = torch.rand(50, 2, generator=g, dtype=DT) * 30 + 1
    pred = torch.cat([xy, xy + wh], dim=1)
    target = pred + torch.randn(50, 4, generator=g, dtype=DT) * 5
    target[:, 2:] = torch.maximum(target[:, 2:], target[:, :2] + 0.5)
    expected = 1 - box_iou(pred, target).diagonal()
    torch.testing.assert_close(harmonic_iou_loss(pred, target, 0.0, eps=0.0), expected)
    torch.testing.assert_close(aligned_box_iou(pred, target, eps=0.0), 1 - expected)


def test_hiou_gradient_flows_to_prediction_only_through_iou():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0]], dtype=DT, requires_grad=True)
    target = torch.tensor([[0.5, 0.0, 2.0, 3.0], [1.0, 1.5, 3.5, 4.0]], dtype=DT)
    harmonic_iou_loss(pred, target, 0.8, reduction="sum").backward()
    pred2 = pred.detach().clone().requires_grad_(True)
    iou = aligned_box_iou(pred2, target)
    iou.backward(gradient=(1 + iou.detach()) ** (-0.2) * ((0.8 - 1) - 1.8 * iou.detach()))
    torch.testing.assert_close(pred.grad, pred2.grad)


def test_degenerate_boxes_give_finite_loss_and_gradient():
    pred = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 4.0]],
        requires_grad=True,
    )
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0], [3.0, 3.0, 1.0, 1.0], [1.0, 1.0, 1.0, 4.0]])
    loss = harmonic_iou_loss(pred, target)
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, torch.ones(4))  # degenerate pairs have IoU 0
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_aligned_box_iou_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        aligned_box_iou(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="same shape"):
        harmonic_iou_loss(torch.zeros(3, 5), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="floating point"):
        aligned_box_iou(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long))


@settings(max_examples=200, deadline=None)
@given(
    coords=st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=8, max_size=8),
    gamma=st.floats(-2.0, 1.0),
)
def test_hiou_is_finite_for_any_boxes(coords, gamma):
    pred = torch.tensor(coords[:4]).reshape(1, 4).requires_grad_(True)
    target = torch.tensor(coords[4:]).reshape(1, 4)
    loss = harmonic_iou_loss(pred, target, gamma)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(pred.grad).all()
    assert -1e-6 <= float(aligned_box_iou(pred.detach(), target)) <= 1 + 1e-6


@settings(max_examples=200, deadline=None)
@given(
    cls=st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=8),
    loc=st.floats(0, 1e4, allow_nan=False),
    detach=st.booleans(),
)
def test_harmonic_loss_is_finite_for_any_nonnegative_losses(cls, loc, detach):
    c = torch.tensor(cls, requires_grad=True)
    l_ = torch.full_like(c, loc).requires_grad_(True)
    out = harmonic_loss(c, l_, detach_factors=detach, reduction="mean")
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(c.grad).all() and torch.isfinite(l_.grad).all()


# ---- reductions --------------------------------------------------------------------------------


def test_weight_and_avg_factor_follow_mmdetection():
    loss = torch.tensor([1.0, 2.0, 3.0])
    w = torch.tensor([1.0, 0.0, 2.0])
    assert weight_reduce_loss(loss, w, "sum").item() == 7.0
    assert weight_reduce_loss(loss, w, "mean").item() == pytest.approx(7.0 / 3)
    assert weight_reduce_loss(loss, w, "mean", avg_factor=2).item() == pytest.approx(3.5)
    torch.testing.assert_close(weight_reduce_loss(loss, w, "none"), torch.tensor([1.0, 0.0, 6.0]))
    with pytest.raises(ValueError, match="avg_factor can not be used"):
        weight_reduce_loss(loss, w, "sum", avg_factor=2)
    with pytest.raises(ValueError, match="reduction must be one of"):
        weight_reduce_loss(loss, reduction="avg")
    with pytest.raises(ValueError, match="does not broadcast"):
        weight_reduce_loss(loss, torch.ones(4))


@pytest.mark.parametrize("reduction,avg_factor", [("mean", None), ("sum", None), ("mean", 0)])
def test_empty_input_gives_connected_zero(reduction, avg_factor):
    pred = torch.zeros(0, 4, requires_grad=True)
    cls = torch.zeros(0, requires_grad=True)
    for out in (
        harmonic_iou_loss(pred, pred.detach(), reduction=reduction, avg_factor=avg_factor),
        harmonic_loss(cls, cls, reduction=reduction, avg_factor=avg_factor),
        task_contrast_loss(torch.zeros(0, 3), cls, cls, reduction=reduction, avg_factor=avg_factor),
    ):
        assert out.item() == 0.0 and out.requires_grad
        out.backward()
    assert pred.grad.shape == (0, 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 300.0, 300.0]], dtype=dtype, requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 11.0, 12.0], [10.0, 10.0, 290.0, 310.0]], dtype=dtype)
    loss = harmonic_iou_loss(pred, target, reduction="mean")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all() and pred.grad.dtype == dtype
    ref = harmonic_iou_loss(pred.detach().double(), target.double(), reduction="mean")
    assert abs(loss.item() - ref.item()) < 1e-2
    cls = torch.tensor([0.1, 3.0, 20.0], dtype=dtype, requires_grad=True)
    loc = torch.tensor([0.5, 0.0, 100.0], dtype=dtype, requires_grad=True)
    out = harmonic_loss(cls, loc, reduction="sum")
    out.backward()
    assert out.dtype == dtype and torch.isfinite(out) and torch.isfinite(cls.grad).all()


# ---- task-contrasting loss ---------------------------------------------------------------------


def test_task_contrast_loss_values():
    probs = torch.tensor([[0.7, 0.2, 0.1], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=DT)
    gt_prob = torch.tensor([0.7, 1.0, 0.5], dtype=DT)
    iou = torch.tensor([0.2, 0.9, 0.45], dtype=DT)
    entropy = torch.tensor([-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)), 0.0, math.log(2)])
    gap = torch.tensor([0.5 - 0.2, 0.0, 0.0])  # |p - IoU| - m clipped at 0 (0.1 and 0.05 are within the margin)
    expected = (gap / (1 + torch.exp(entropy))).to(DT)
    torch.testing.assert_close(task_contrast_loss(probs, gt_prob, iou, 0.2), expected)


def test_task_contrast_gradients_reach_score_and_iou_but_not_entropy():
    probs = torch.tensor([[0.9, 0.1]], dtype=DT, requires_grad=True)
    iou = torch.tensor([0.3], dtype=DT, requires_grad=True)
    gt_prob = probs[:, 0]
    task_contrast_loss(probs, gt_prob, iou, 0.2).sum().backward()
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    w = 1 / (1 + math.exp(h))
    assert iou.grad.item() == pytest.approx(-w)
    # d/dp0 of w*(p0 - iou - m) through gt_prob only, the normalised weight is constant
    torch.testing.assert_close(probs.grad, torch.tensor([[w, 0.0]], dtype=DT))


def test_task_contrast_loss_validates():
    with pytest.raises(ValueError, match="margin"):
        task_contrast_loss(torch.ones(2, 2), torch.ones(2), torch.ones(2), margin=-1)
    with pytest.raises(ValueError, match=r"class_probs \(N, K\)"):
        task_contrast_loss(torch.ones(2), torch.ones(2), torch.ones(2))


# ---- per-head objectives -----------------------------------------------------------------------


def _softmax_case(dtype=DT):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, generator=g, dtype=dtype)
    labels = torch.tensor([0, 2, 0, 1, 3, 0])
    deltas = torch.randn(3, 4, generator=g, dtype=dtype)
    targets = torch.randn(3, 4, generator=g, dtype=dtype)
    pred_boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 20, 25], [2, 3, 8, 9]], dtype=dtype)
    target_boxes = torch.tensor([[1, 0, 11, 12], [5, 6, 18, 25], [0, 0, 8, 8]], dtype=dtype)
    return logits, labels, deltas, targets, pred_boxes, target_boxes


def test_softmax_objective_equals_its_definition():
    logits, labels, deltas, targets, pb, tb = _softmax_case()
    losses, stats = harmonic_softmax_detection_loss(
        logits, labels, deltas, targets, pb, tb, tc_margin=0.2, return_stats=True
    )
    ce = F.cross_entropy(logits, labels, reduction="none")
    pos = labels > 0
    iou = aligned_box_iou(pb, tb)
    loc = F.smooth_l1_loss(deltas, targets, beta=1 / 9, reduction="none").sum(1) + 1.5 * harmonic_iou_from_iou(iou)
    p = torch.exp(-ce[pos])
    total = (ce[~pos].sum() + harmonic_loss(ce[pos], loc).sum()) / 6
    torch.testing.assert_close(losses["loss_cls"] + losses["loss_loc"], total)
    torch.testing.assert_close(losses["loss_loc"], ((1 + p) * loc).sum() / 6)
    probs = F.softmax(logits[pos], dim=1)
    torch.testing.assert_close(losses["loss_tc"], task_contrast_loss(probs, p, iou, 0.2).sum() / 6)
    torch.testing.assert_close(stats["beta_c"], p.mean())
    torch.testing.assert_close(stats["beta_r"], torch.exp(-loc).mean())
    assert stats["num_pos"].item() == 3
    assert set(losses) == {"loss_cls", "loss_loc", "loss_tc"}


def test_softmax_objective_couples_classification_to_box_quality():
    logits, labels, deltas, targets, pb, tb = _softmax_case()

    def cls_grad(deltas_):
        lg = logits.clone().requires_grad_(True)
        out = harmonic_softmax_detection_loss(lg, labels, deltas_, targets, pb, tb, alpha=0.0)
        (out["loss_cls"] + out["loss_loc"]).backward()
        return lg.grad

    g_good, g_bad = cls_grad(targets + 0.01), cls_grad(targets + 1.0)
    assert not torch.allclose(g_good[labels > 0], g_bad[labels > 0])
    torch.testing.assert_close(g_good[labels == 0], g_bad[labels == 0])  # negatives untouched


def test_softmax_objective_with_extreme_logits_is_finite():
    logits, labels, deltas, targets, pb, tb = _softmax_case(torch.float32)
    logits = (torch.sign(logits) * 1e4).requires_grad_(True)
    out = harmonic_softmax_detection_loss(logits, labels, deltas, targets, pb, tb, tc_margin=0.2)
    sum(out.values()).backward()
    assert all(torch.isfinite(v) for v in out.values()) and torch.isfinite(logits.grad).all()


def test_softmax_objective_without_positives():
    logits = torch.randn(5, 3, requires_grad=True)
    labels = torch.zeros(5, dtype=torch.long)
    deltas = torch.zeros(0, 4, requires_grad=True)
    out = harmonic_softmax_detection_loss(logits, labels, deltas, torch.zeros(0, 4), alpha=0.0)
    torch.testing.assert_close(out["loss_cls"], F.cross_entropy(logits, labels))
    assert out["loss_loc"].item() == 0.0
    (out["loss_cls"] + out["loss_loc"]).backward()
    assert deltas.grad.shape == (0, 4)


def test_sigmoid_objective_equals_its_definition_in_both_beta_c_modes():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 3, generator=g, dtype=DT)
    targets = torch.zeros(5, 3, dtype=DT)
    targets[1, 2] = targets[3, 0] = 1
    pb = torch.tensor([[0, 0, 10, 10], [2, 2, 9, 9]], dtype=DT)
    tb = torch.tensor([[1, 1, 10, 12], [0, 0, 9, 9]], dtype=DT)
    focal = sigmoid_focal_loss(logits, targets, reduction="none").sum(1)
    pos = torch.tensor([False, True, False, True, False])
    loc = generalized_box_iou_loss(pb, tb)
    out = harmonic_sigmoid_detection_loss(logits, targets, pred_boxes=pb, target_boxes=tb, box_loss="giou", alpha=0.0)
    torch.testing.assert_close(out["loss_cls"], (focal[~pos].sum() + ((1 + torch.exp(-loc)) * focal[pos]).sum()) / 2)
    torch.testing.assert_close(out["loss_loc"], ((1 + torch.exp(-focal[pos])) * loc).sum() / 2)
    p = torch.sigmoid(logits[pos]).gather(1, torch.tensor([[2], [0]])).squeeze(1)
    out = harmonic_sigmoid_detection_loss(
        logits, targets, pred_boxes=pb, target_boxes=tb, box_loss="giou", alpha=0.0, beta_c_mode="prob"
    )
    torch.testing.assert_close(out["loss_loc"], ((1 + p) * loc).sum() / 2)
    with pytest.raises(ValueError, match="beta_c_mode"):
        harmonic_sigmoid_detection_loss(logits, targets, pred_boxes=pb, target_boxes=tb, beta_c_mode="p")


@pytest.mark.parametrize("c", [1.0, 2.0, 0.5])
def test_positive_weight_gives_constant_factors(c):
    """``positive_weight=c``: Eq. S-1 with beta_c = beta_r = c - 1, i.e. the positives' terms times c."""
    logits, labels, deltas, targets, pb, tb = _softmax_case()
    ce = F.cross_entropy(logits, labels, reduction="none")
    pos = labels > 0
    loc = F.smooth_l1_loss(deltas, targets, beta=1 / 9, reduction="none").sum(1)
    out, stats = harmonic_softmax_detection_loss(logits, labels, deltas, targets, alpha=0.0, positive_weight=c,
                                                 return_stats=True)
    torch.testing.assert_close(out["loss_cls"], (ce[~pos].sum() + c * ce[pos].sum()) / 6, rtol=1e-14, atol=0)
    torch.testing.assert_close(out["loss_loc"], c * loc.sum() / 6, rtol=1e-14, atol=0)
    torch.testing.assert_close(stats["beta_c"], torch.exp(-ce[pos]).mean())  # still the would-be factors
    g = torch.Generator().manual_seed(2)
    sig_logits = torch.randn(5, 3, generator=g, dtype=DT)
    sig_targets = torch.zeros(5, 3, dtype=DT)
    sig_targets[1, 2] = sig_targets[3, 0] = 1
    focal = sigmoid_focal_loss(sig_logits, sig_targets, reduction="none").sum(1)
    spos = sig_targets.amax(1) > 0
    giou = generalized_box_iou_loss(pb[:2], tb[:2])
    out = harmonic_sigmoid_detection_loss(sig_logits, sig_targets, pred_boxes=pb[:2], target_boxes=tb[:2],
                                          box_loss="giou", alpha=0.0, positive_weight=c)
    torch.testing.assert_close(out["loss_cls"], (focal[~spos].sum() + c * focal[spos].sum()) / 2)
    torch.testing.assert_close(out["loss_loc"], c * giou.sum() / 2)
    if c == 1.0:  # exactly the plain losses
        plain = (sigmoid_focal_loss(sig_logits, sig_targets, reduction="sum") / 2, giou.sum() / 2)
        torch.testing.assert_close((out["loss_cls"], out["loss_loc"]), plain)
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="positive_weight"):
            harmonic_softmax_detection_loss(logits, labels, deltas, targets, alpha=0.0, positive_weight=bad)


def test_options_object_is_validated_once_and_equals_the_keywords():
    """``options=`` (what the heads pass) gives the keywords' result bit for bit; the object checks every field."""
    logits, labels, deltas, targets, pb, tb = _softmax_case()
    keywords = dict(alpha=1.0, gamma=0.5, tc_margin=0.1, detach_factors="beta_r", box_loss="l1")
    by_keywords = harmonic_softmax_detection_loss(logits, labels, deltas, targets, pb, tb, **keywords)
    by_options = harmonic_softmax_detection_loss(logits, labels, deltas, targets, pb, tb,
                                                 options=HarmonicOptions(**keywords))
    assert by_keywords.keys() == by_options.keys()
    assert all(torch.equal(by_keywords[k], by_options[k]) for k in by_keywords)
    # options.box_loss None: the objective's box_loss (the head's own); keyword defaults are alpha 1.5, gamma 0.8
    own = harmonic_softmax_detection_loss(logits, labels, deltas, targets, pb, tb, box_loss="l1",
                                          options=HarmonicOptions(alpha=1.5, gamma=0.8))
    default = harmonic_softmax_detection_loss(logits, labels, deltas, targets, pb, tb, box_loss="l1")
    assert all(torch.equal(own[k], default[k]) for k in default)
    with pytest.raises(TypeError, match="not both"):
        harmonic_softmax_detection_loss(logits, labels, deltas, targets, pb, tb, options=HarmonicOptions(), alpha=1.0)
    with pytest.raises(TypeError, match="HarmonicOptions"):
        harmonic_softmax_detection_loss(logits, labels, deltas, targets, pb, tb, options={"alpha": 1.0})
    with pytest.raises(TypeError):
        harmonic_softmax_detection_loss(logits, labels, deltas, targets, pb, tb, margin=0.2)
    bad = [({"alpha": -1.0}, "alpha"), ({"alpha": float("nan")}, "alpha"), ({"gamma": 1.5}, "S-13"),
           ({"tc_margin": -0.1}, "tc_margin"), ({"tc_margin": float("inf")}, "tc_margin"),
           ({"detach_factors": "both"}, "detach_factors"), ({"beta_c_mode": "p"}, r"beta_c_mode must be one of"),
           ({"box_loss": "huber"}, "box_loss must be one of"), ({"box_loss": "none"}, "alpha > 0"),
           ({"positive_weight": 0.0}, "positive_weight")]
    for fields, message in bad:
        with pytest.raises(ValueError, match=message):
            HarmonicOptions(**fields)
    options = HarmonicOptions(alpha=1, positive_weight=2)
    assert (options.alpha, options.positive_weight) == (1.0, 2.0) and isinstance(options.alpha, float)
    with pytest.raises(AttributeError):
        options.alpha = 2.0  # frozen: a head's options stay valid
    with pytest.raises(ValueError, match="gamma"):
        dataclasses.replace(options, gamma=2.0)  # a copy is validated again
    assert QFLOptions().qfl_beta == 2.0
    with pytest.raises(ValueError, match="beta"):
        QFLOptions(qfl_beta=-1.0)


def test_localization_loss_terms_and_errors():
    deltas = torch.tensor([[0.5, -0.05, 0.0, 2.0]], dtype=DT)
    zeros = torch.zeros_like(deltas)
    loc, iou = localization_loss(deltas, zeros, box_loss="l1", alpha=0.0)
    assert iou is None and loc.item() == pytest.approx(2.55)
    pb = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=DT)
    tb = torch.tensor([[0.0, 0.0, 2.0, 1.0]], dtype=DT)
    loc, iou = localization_loss(pred_boxes=pb, target_boxes=tb, box_loss="none", alpha=2.0, gamma=0.0)
    assert iou.item() == pytest.approx(0.5) and loc.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs pred_boxes"):
        localization_loss(deltas, zeros, alpha=1.5)
    with pytest.raises(ValueError, match="box_loss must be one of"):
        localization_loss(deltas, zeros, box_loss="iou")
    with pytest.raises(ValueError, match="needs box_deltas"):
        localization_loss(pred_boxes=pb, target_boxes=tb)
    with pytest.raises(ValueError, match="no localisation loss"):
        localization_loss(pred_boxes=pb, target_boxes=tb, box_loss="none", alpha=0.0)


# ---- mmdetection-style modules -----------------------------------------------------------------


def test_modules_follow_mmdetection_signature():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    module = HarmonicIoULoss(gamma=0.8, loss_weight=2.0)
    per_box = harmonic_iou_loss(pred, target, 0.8)
    torch.testing.assert_close(module(pred, target), 2.0 * per_box.mean())
    torch.testing.assert_close(module(pred, target, reduction_override="none"), 2.0 * per_box)
    w4 = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(module(pred, target, weight=w4, avg_factor=4.0), 2.0 * (0.5 * per_box[0] + per_box[1]) / 4)
    with pytest.raises(ValueError, match="reduction must be one of"):
        module(pred, target, reduction_override="avg")

    cls, loc = torch.tensor([0.2, 1.0]), torch.tensor([0.4, 0.3])
    torch.testing.assert_close(HarmonicLoss(reduction="sum", loss_weight=0.5)(cls, loc), 0.5 * harmonic_loss(cls, loc).sum())
    probs = torch.tensor([[0.9, 0.1]])
    tc = TaskContrastLoss(margin=0.1)(probs, (probs[:, 0], torch.tensor([0.2])))
    torch.testing.assert_close(tc, task_contrast_loss(probs, probs[:, 0], torch.tensor([0.2]), 0.1).mean())
