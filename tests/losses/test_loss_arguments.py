"""The losses' mmdetection arguments checked where they enter: avg_factor and loss_weight finite and >= 0, beta_c a
probability, weight a tensor (a plain list refused by name); valid arguments give the hand-computed values."""

import math

import pytest
import torch

from harmonicdet.losses import (
    HarmonicIoULoss,
    HarmonicLoss,
    QualityFocalLoss,
    TaskContrastLoss,
    harmonic_iou_loss,
    harmonic_loss,
    quality_focal_loss,
    task_contrast_loss,
)
from harmonicdet.losses.detection_losses import harmonic_softmax_detection_loss
from harmonicdet.losses.reduction import weight_reduce_loss

BOXES = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
TARGETS = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])  # IoU 1 and 0.5


def calls_with(**arguments):
    """Every loss function and module call, with ``arguments`` (weight, avg_factor) added."""
    cls, loc = torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.25])
    probs, gt_prob, iou = torch.tensor([[0.6, 0.3], [0.2, 0.7]]), torch.tensor([0.6, 0.7]), torch.tensor([0.4, 0.9])
    logits, soft = torch.zeros(2, 3), torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.9, 0.0]])
    return {
        "harmonic_loss": lambda: harmonic_loss(cls, loc, reduction="mean", **arguments),
        "harmonic_iou_loss": lambda: harmonic_iou_loss(BOXES, TARGETS, reduction="mean", **arguments),
        "task_contrast_loss": lambda: task_contrast_loss(probs, gt_prob, iou, reduction="mean", **arguments),
        "quality_focal_loss": lambda: quality_focal_loss(logits, soft, reduction="mean", **arguments),
        "HarmonicLoss": lambda: HarmonicLoss()(cls, loc, **arguments),
        "HarmonicIoULoss": lambda: HarmonicIoULoss()(BOXES, TARGETS, **arguments),
        "TaskContrastLoss": lambda: TaskContrastLoss()(probs, (gt_prob, iou), **arguments),
        "QualityFocalLoss": lambda: QualityFocalLoss()(logits, soft, **arguments),
    }


@pytest.mark.parametrize("avg_factor", [-1, -0.5, torch.tensor(-2.0), float("nan"), float("inf"), True, "2",
                                        torch.tensor([1.0, 2.0])],
                         ids=["-1", "-0.5", "tensor(-2)", "nan", "inf", "True", "str", "two-element"])
def test_a_negative_or_non_numeric_avg_factor_is_refused_by_every_loss(avg_factor):
    for name, call in calls_with(avg_factor=avg_factor).items():
        with pytest.raises(ValueError, match="avg_factor") as refused:
            call()
        assert "\n" not in str(refused.value), name
    logits, labels = torch.zeros(3, 4), torch.tensor([1, 0, 2])
    with pytest.raises(ValueError, match="avg_factor"):
        harmonic_softmax_detection_loss(logits, labels, torch.zeros(2, 4), torch.zeros(2, 4), BOXES, TARGETS,
                                        avg_factor=avg_factor)


def test_a_valid_avg_factor_divides_the_summed_loss():
    loss = torch.tensor([1.0, 2.0, 3.0])
    assert float(weight_reduce_loss(loss, avg_factor=2)) == pytest.approx(3.0)
    assert float(weight_reduce_loss(loss, avg_factor=torch.tensor(4.0))) == pytest.approx(1.5)
    # 0 (no positives): mmdetection's eps keeps it finite, as before
    assert float(weight_reduce_loss(torch.zeros(0), avg_factor=0)) == 0.0


@pytest.mark.parametrize("loss_weight", [-1.0, float("nan"), float("inf"), True, "1"])
def test_a_negative_or_non_numeric_loss_weight_is_refused_by_every_module(loss_weight):
    for module in (HarmonicLoss, HarmonicIoULoss, TaskContrastLoss, QualityFocalLoss):
        with pytest.raises(ValueError, match=r"^loss_weight must be a finite number >= 0, got "):
            module(loss_weight=loss_weight)
    assert HarmonicIoULoss(loss_weight=0).loss_weight == 0.0  # switches the term off


@pytest.mark.parametrize("beta_c,shown", [([1.5, 0.2], "[0.2, 1.5]"), ([-0.1, 0.5], "[-0.1, 0.5]"),
                                          ([float("nan"), 0.5], "nan")])
def test_beta_c_outside_zero_one_is_refused(beta_c, shown):
    with pytest.raises(ValueError, match=r"^beta_c must lie in \[0, 1\]") as refused:
        harmonic_loss(torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.25]), beta_c=torch.tensor(beta_c))
    assert shown in str(refused.value)


def test_beta_c_at_the_ends_of_zero_one_gives_eq_s1():
    # (1 + exp(-L_loc)) CE + (1 + beta_c) L_loc, by hand: (1 + e^-0.5) * 1 + 2 * 0.5 and (1 + e^-0.25) * 0.5 + 0.25
    value = harmonic_loss(torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.25]), beta_c=torch.tensor([1.0, 0.0]))
    expected = [1 + math.exp(-0.5) + 1.0, (1 + math.exp(-0.25)) * 0.5 + 0.25]
    assert value.tolist() == pytest.approx(expected, rel=1e-6)


def test_a_plain_list_as_weight_is_refused_by_name_and_a_tensor_weighs():
    for call in calls_with(weight=[1.0, 2.0]).values():
        with pytest.raises(ValueError, match=r"weight must be a torch.Tensor .*\(e.g. torch.tensor\(values\)\), "
                                             r"got list$"):
            call()
    # HIoU with gamma 0.8 at IoU 1 and 0.5: 0 and 1.5^0.8 * 0.5; weights 1 and 2, mean over 2
    weighted = harmonic_iou_loss(BOXES, TARGETS, reduction="mean", weight=torch.tensor([1.0, 2.0]))
    assert float(weighted) == pytest.approx((0 + 2 * 1.5 ** 0.8 * 0.5) / 2, rel=1e-5)
