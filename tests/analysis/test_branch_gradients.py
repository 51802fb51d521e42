"""Gradient norms per branch: closed form on a linear toy, the harmonic coupling in FCOS, the CLI on a run."""

import json
import math

import pytest
import torch
from torch import nn

from harmonicdet.analysis.branch_gradients import branch_gradient_norms, detector_branches
from harmonicdet.cli import main
from harmonicdet.engine.train import train
from harmonicdet.models import build_detector



class LinearToy(nn.Module):
    """backbone f = W x; terms L_cls = c.f and L_reg = r.f, so dL_cls/dW = c x^T and dL_reg/dW = r x^T."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(2, 3, bias=False)
        self.head = nn.Module()
        self.head.classification_head = nn.Linear(3, 1, bias=False)
        self.head.regression_head = nn.Linear(3, 1, bias=False)

    def forward(self, images, targets):
        features = self.backbone(images[0])
        return {"cls": self.head.classification_head(features).sum(),
                "reg": self.head.regression_head(features).sum(),
                "constant": torch.tensor(1.0)}  # not differentiable: left out


def test_norms_and_backbone_cosine_equal_the_closed_form():
    torch.manual_seed(0)
    model = LinearToy()
    x = torch.tensor([3.0, 4.0])
    c, r = model.head.classification_head.weight[0].detach(), model.head.regression_head.weight[0].detach()
    w = model.backbone.weight.detach()
    out = branch_gradient_norms(model, [x], [{}])

    assert set(out["norms"]) == {"cls", "reg"}
    assert out["norms"]["cls"]["backbone"] == pytest.approx(float(c.norm()) * 5.0, rel=1e-6)  # |c x^T| = |c||x|
    assert out["norms"]["reg"]["backbone"] == pytest.approx(float(r.norm()) * 5.0, rel=1e-6)
    assert out["norms"]["cls"]["head.classification_head"] == pytest.approx(float((w @ x).norm()), rel=1e-6)
    assert out["norms"]["cls"]["head.regression_head"] == 0.0  # a term does not reach a branch it does not use
    assert out["backbone_cosine"]["cls|reg"] == pytest.approx(float(c @ r / (c.norm() * r.norm())), rel=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_branches_and_errors():
    model = LinearToy()
    assert list(detector_branches(model)) == ["backbone", "head.classification_head", "head.regression_head"]
    with pytest.raises(ValueError, match="must include 'backbone'"):
        branch_gradient_norms(model, [torch.ones(2)], [{}], branches={"head": list(model.head.parameters())})
    model.backbone.weight.data[0, 0] = math.nan
    with pytest.raises(ValueError, match="loss term 'cls' is not finite"):
        branch_gradient_norms(model, [torch.ones(2)], [{}])


def _batch():
    torch.manual_seed(0)
    images = [torch.rand(3, 128, 128) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 30.0, 110.0, 100.0]]),
                "labels": torch.tensor([1, 2])} for _ in images]
    return images, targets


@pytest.mark.parametrize("loss,options,coupled", [
    ("standard", {}, False),
    ("harmonicdet", {}, True),
    ("harmonicdet", {"detach_factors": True}, False),
])
def test_harmonic_fcos_couples_the_branches_unless_detached(loss, options, coupled):
    torch.manual_seed(0)
    model = build_detector("fcos", 3, loss=loss, backbone="resnet18", fpn_channels=64, **options)
    norms = branch_gradient_norms(model, *_batch())["norms"]
    # Eq. S-1: the classification term is weighted by 1 + beta_r (the IoU, from the regression branch)
    # and the box term by 1 + beta_c (the class probability, from the classification branch)
    cross = (norms["classification"]["head.regression_head"], norms["bbox_regression"]["head.classification_head"])
    assert all(n > 0 for n in cross) if coupled else cross == (0.0, 0.0)
    assert norms["classification"]["head.classification_head"] > 0 and norms["bbox_regression"]["backbone"] > 0


def test_gradients_command_on_a_trained_run(scenes, tmp_path, capsys, tiny_config):
    out = train(tiny_config(scenes, tmp_path / "run", **{"train.max_iters": 1}), show_progress=False)
    report_path = tmp_path / "gradients.json"
    assert main(["gradients", str(out), "--batches", "2", "--batch-size", "4", "--out", str(report_path)]) == 0
    [report] = json.loads(report_path.read_text())
    assert report["batches"] == 2 and set(report["norms"]) == {"classification", "bbox_regression", "bbox_ctrness"}
    assert set(report["norms"]["classification"]) == {"backbone", "head.classification_head", "head.regression_head"}
    assert -1 <= report["backbone_cosine"]["classification|bbox_regression"] <= 1
    assert "backbone cosine classification|bbox_regression" in capsys.readouterr().out

    assert main(["gradients", str(out), "--batches", "5", "--batch-size", "4"]) == 2  # 16 training scenes
    assert f"{out}: 5 batches of 4 need 20 training images" in capsys.readouterr().err
    assert main(["gradients", str(tmp_path)]) == 2
    assert f"{tmp_path / 'config.yaml'} does not exist" in capsys.readouterr().err
