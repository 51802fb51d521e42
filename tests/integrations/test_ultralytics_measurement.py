"""The measurements of the Harmonic loss inside YOLO training: the TAL overlap and its inputs."""


import pytest

pytest.importorskip("ultralytics")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from ultralytics.cfg import get_cfg  # noqa: E402

from harmonicdet.integrations.ultralytics import HarmonicDetectionModel, loss_options  # noqa: E402
from harmonicdet.integrations.ultralytics.measurement import (  # noqa: E402
    measure_overlap,
    tal_overlap,
    yolo_batches,
)


def test_tal_overlap_on_a_crafted_batch():
    """Hand-computed: beta_r falls with t (Spearman -1), and splits exactly at t's median (eta^2 = 1 with 2 bins);
    beta_c alternates across the median (eta^2 = 0, Spearman from the ranks 0,1,0,1 vs 1..4)."""
    t = torch.tensor([0.1, 0.2, 0.3, 0.4])
    anchors = {"target": t, "beta_r": torch.tensor([0.9, 0.8, 0.1, 0.0]), "beta_c": torch.tensor([0.0, 1.0, 0.0, 1.0])}
    out = tal_overlap(anchors, bins=2)
    assert out["num_anchors"] == 4
    cls = out["cls_weight_1_plus_beta_r"]
    assert cls["spearman"] == pytest.approx(-1.0)
    # Pearson of (1.9, 1.8, 1.1, 1.0) with (0.1, .., 0.4): centred x = (.45, .35, -.35, -.45), y = (-.15, -.05, .05, .15)
    x, y = np.array([0.45, 0.35, -0.35, -0.45]), np.array([-0.15, -0.05, 0.05, 0.15])
    assert cls["pearson"] == pytest.approx(float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)))
    # bins at the median of t: means 1.85 and 1.05 about 1.45 (between: 4 * 0.4^2), total: 0.65
    assert cls["eta2"] == pytest.approx(4 * 0.4**2 / (0.45**2 + 0.35**2 + 0.35**2 + 0.45**2))
    box = out["box_weight_1_plus_beta_c"]
    assert box["eta2"] == pytest.approx(0.0)
    # ranks of beta_c: ties (0, 0) -> 0.5, (1, 1) -> 2.5: (0.5, 2.5, 0.5, 2.5) against (0, 1, 2, 3)
    rx, ry = np.array([-1.0, 1.0, -1.0, 1.0]), np.array([-1.5, -0.5, 0.5, 1.5])
    assert box["spearman"] == pytest.approx(float(rx @ ry / np.linalg.norm(rx) / np.linalg.norm(ry)))


def test_tal_overlap_of_a_monotone_function_and_of_constants():
    t = torch.linspace(0.01, 1.0, 2000)
    out = tal_overlap({"target": t, "beta_r": t**3, "beta_c": torch.full_like(t, 0.5)})
    cls = out["cls_weight_1_plus_beta_r"]
    assert cls["spearman"] == pytest.approx(1.0) and cls["eta2"] > 0.99  # a monotone function of t
    assert out["box_weight_1_plus_beta_c"] == {"spearman": None, "pearson": None, "eta2": None}  # constant
    single = tal_overlap({"target": t[:1], "beta_r": t[:1], "beta_c": t[:1]})
    assert single["cls_weight_1_plus_beta_r"]["spearman"] is None


def _yolo_folder(tmp_path):
    """Two 64 px images, the first with two boxes, the second with none, in Ultralytics' layout."""
    root = tmp_path / "yolo"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for name, value in (("a", 64), ("b", 128)):
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(root / "images" / "train" / f"{name}.png")
    (root / "labels" / "train" / "a.txt").write_text("2 0.5 0.25 0.5 0.25\n0 0.25 0.75 0.25 0.5\n")
    (root / "labels" / "train" / "b.txt").write_text("")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnc: 3\nnames: [a, b, c]\n")
    return root / "data.yaml"


def test_yolo_batches_read_images_and_labels(tmp_path):
    batches = yolo_batches(_yolo_folder(tmp_path), "train", batch=2, limit=10)
    assert len(batches) == 1
    batch = batches[0]
    assert batch["img"].shape == (2, 3, 64, 64)
    assert batch["img"][0, 0, 0, 0] == pytest.approx(64 / 255) and batch["img"][1, 2, 5, 5] == pytest.approx(128 / 255)
    assert batch["batch_idx"].tolist() == [0.0, 0.0] and batch["cls"].flatten().tolist() == [2.0, 0.0]
    torch.testing.assert_close(batch["bboxes"], torch.tensor([[0.5, 0.25, 0.5, 0.25], [0.25, 0.75, 0.25, 0.5]]))


def test_measure_overlap_leaves_the_model_unchanged(tmp_path):
    torch.manual_seed(0)
    model = HarmonicDetectionModel("yolov8n.yaml", nc=3, verbose=False, loss={"loss": "standard"})
    model.args = get_cfg()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = measure_overlap(model, yolo_batches(_yolo_folder(tmp_path), "train", 2, 2), loss_options("harmonicdet"))
    assert out["num_anchors"] > 0
    for weight in ("cls_weight_1_plus_beta_r", "box_weight_1_plus_beta_c"):
        assert all(v is None or -1.0 - 1e-9 <= v <= 1.0 + 1e-9 for v in out[weight].values())
    assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("variant", ["harmonicdet", "harmonicdet_beta_r", "harmonic_iou", "harmonicdet_prob",
                                     "harmonicdet_hiou_only", "harmonicdet_hiou_only_a1", "harmonic_iou_hiou_only"])
def test_study_presets_take_a_finite_step(variant):
    """Each preset of the YOLO study trains one step of YOLOv8n with a finite loss and finite, non-zero gradients."""
    from harmonicdet.apps.yolo_study import variant_options
    from harmonicdet.integrations.ultralytics import build_criterion

    torch.manual_seed(0)
    model = HarmonicDetectionModel("yolov8n.yaml", nc=3, verbose=False, loss={"loss": "standard"})
    model.args = get_cfg()
    model.train()
    boxes = torch.tensor([[0.3, 0.3, 0.3, 0.4], [0.7, 0.6, 0.2, 0.3], [0.5, 0.5, 0.5, 0.5]])
    batch = {"img": torch.rand(2, 3, 64, 64), "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
             "cls": torch.tensor([[0.0], [2.0], [1.0]]), "bboxes": boxes}
    criterion = build_criterion(model, variant_options(variant))
    loss, items = criterion(model(batch["img"]), batch)
    loss.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss).all() and all(torch.isfinite(v).all() for v in items.values())
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    stats = criterion.last_stats
    assert stats["num_fg"] > 0 and 0 <= float(stats["reversed_frac"]) <= 1
    if variant.endswith("_hiou_only"):  # CIoU dropped: the box_loss entry is 0, HIoU and DFL train the boxes
        assert float(loss[0].detach()) == 0.0 and float(loss[2].detach()) > 0 and float(loss[3].detach()) > 0
    if variant.endswith("_beta_r"):
        assert float(stats["reversed_frac"]) == 0.0  # beta_r a constant: no reversed box gradient (Eq. S-5)
