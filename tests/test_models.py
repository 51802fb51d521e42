"""Detectors: standard is torchvision bit for bit; harmonic presets couple classification to box quality."""

import pytest
import torch
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.roi_heads import RoIHeads

from harmonicdet.models import build_detector, loss_stats, pre_nms_candidates

ARCHS = [("fcos", "resnet18"), ("retinanet", "resnet18"), ("faster_rcnn", "resnet18"),
         ("mask_rcnn", "resnet18"), ("ssd", "mobilenet_v3_large")]
HARMONIC = ["harmonic", "harmonic_iou", "harmonicdet"]
CLASS_TYPES = {"fcos": FCOS, "retinanet": RetinaNet, "faster_rcnn": FasterRCNN, "mask_rcnn": MaskRCNN, "ssd": SSD}


def batch(arch, empty_second=True):
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 96, 112, generator=g), torch.rand(3, 128, 128, generator=g)]
    boxes = torch.tensor([[10.0, 20.0, 60.0, 70.0], [50.0, 40.0, 90.0, 95.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} if empty_second
               else {"boxes": boxes[:1] + 5, "labels": torch.tensor([2])}]
    if arch == "mask_rcnn":
        for image, t in zip(images, targets):
            masks = torch.zeros(len(t["boxes"]), *image.shape[1:], dtype=torch.uint8)
            for m, (x1, y1, x2, y2) in zip(masks, t["boxes"].int().tolist()):
                m[y1:y2, x1:x2] = 1
            t["masks"] = masks
    return images, targets


def pair(arch, backbone, loss, **options):
    """A model with ``loss`` and a plain torchvision-headed model with the same weights."""
    torch.manual_seed(0)
    model = build_detector(arch, 5, loss=loss, backbone=backbone, image_size=128, **options)
    torch.manual_seed(0)
    standard = build_detector(arch, 5, loss="standard", backbone=backbone, image_size=128)
    standard.load_state_dict(model.state_dict())
    return model, standard


def losses_of(model, arch, **kwargs):
    torch.manual_seed(3)  # R-CNN samplers draw RoIs at random
    model.train()
    images, targets = batch(arch, **kwargs)
    return model(images, targets)


@pytest.mark.parametrize("arch,backbone", ARCHS)
def test_standard_is_torchvision_bit_for_bit(arch, backbone):
    model, _ = pair(arch, backbone, "standard")
    assert type(model) is CLASS_TYPES[arch]
    head_type = {"fcos": FCOSHead, "retinanet": RetinaNetHead, "faster_rcnn": RoIHeads, "mask_rcnn": RoIHeads}
    if arch in head_type:  # torchvision's own head classes, not subclasses
        assert type(model.roi_heads if "rcnn" in arch else model.head) is head_type[arch]
    # the same torchvision class with its own heads, loaded with the weights: equal losses
    torch.manual_seed(0)
    reference = build_detector(arch, 5, backbone=backbone, image_size=128)
    reference.load_state_dict(model.state_dict())
    ours, theirs = losses_of(model, arch), losses_of(reference, arch)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert loss_stats(model) == {}


@pytest.mark.slow
@pytest.mark.parametrize("loss", HARMONIC)
@pytest.mark.parametrize("arch,backbone", ARCHS)
def test_harmonic_training_step(arch, backbone, loss):
    model, standard = pair(arch, backbone, loss)
    assert isinstance(model, CLASS_TYPES[arch])
    losses = losses_of(model, arch, empty_second=False)
    expected_keys = set(losses_of(standard, arch, empty_second=False))
    if loss == "harmonicdet":
        expected_keys.add("loss_task_contrast" if "rcnn" in arch else "task_contrast")
    assert set(losses) == expected_keys
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    cls_params, box_params = _branches(model, arch)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in cls_params)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in box_params)
    stats = loss_stats(model)
    assert set(stats) == {"beta_c", "beta_r"} and all(0 < v <= 1 for v in stats.values())


def _branches(model, arch):
    if arch in ("fcos", "retinanet"):
        return (list(model.head.classification_head.parameters()), list(model.head.regression_head.parameters()))
    if arch == "ssd":
        return (list(model.head.classification_head.parameters()), list(model.head.regression_head.parameters()))
    predictor = model.roi_heads.box_predictor
    return list(predictor.cls_score.parameters()), list(predictor.bbox_pred.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["standard"] + HARMONIC)
@pytest.mark.parametrize("arch,backbone", ARCHS)
def test_empty_targets_and_degenerate_boxes_give_finite_losses(arch, backbone, loss):
    model, _ = pair(arch, backbone, loss)
    images, targets = batch(arch)
    targets[0]["boxes"] = torch.tensor([[10.0, 20.0, 60.0, 70.0], [30.0, 30.0, 30.5, 30.5]])
    if arch == "mask_rcnn":
        targets[0]["masks"] = targets[0]["masks"][:2]
    # every image empty: no positive anchor anywhere
    empty = [{k: v[:0] for k, v in t.items()} for t in targets]
    for batch_targets in (targets, empty):
        torch.manual_seed(3)
        model.train()
        losses = model(images, batch_targets)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        sum(losses.values()).backward()


@pytest.mark.slow
@pytest.mark.parametrize("loss", HARMONIC)
@pytest.mark.parametrize("arch,backbone", ARCHS)
def test_eval_output_is_identical_to_standard(arch, backbone, loss):
    model, standard = pair(arch, backbone, loss)
    images, _ = batch(arch)
    with torch.no_grad():
        ours, theirs = model.eval()(images), standard.eval()(images)
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def _fcos_head_outputs(head, box_shift):
    """Hand-built head outputs with one positive location whose box is off by ``box_shift``."""
    anchors = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 0.0, 16.0, 8.0], [40.0, 40.0, 48.0, 48.0]])]
    target = [{"boxes": torch.tensor([[0.0, 0.0, 12.0, 10.0]]), "labels": torch.tensor([2])}]
    matched = [torch.tensor([0, -1, -1])]
    exact = head.box_coder.encode(anchors[0], target[0]["boxes"].expand(3, 4))
    cls_logits = torch.zeros(1, 3, 5, requires_grad=True)
    regression = (exact + box_shift).unsqueeze(0).clone().requires_grad_(True)
    outputs = {"cls_logits": cls_logits, "bbox_regression": regression, "bbox_ctrness": torch.zeros(1, 3, 1)}
    return target, outputs, anchors, matched, cls_logits


@pytest.mark.parametrize("loss", ["standard"] + HARMONIC)
def test_classification_gradient_of_a_positive_depends_on_its_box_only_when_harmonic(loss):
    head = build_detector("fcos", 5, loss=loss).head
    grads = []
    for shift in (0.0, 0.3):
        target, outputs, anchors, matched, cls_logits = _fcos_head_outputs(head, shift)
        losses = head.compute_loss(target, outputs, anchors, matched)
        (grad,) = torch.autograd.grad(losses["classification"], cls_logits)
        grads.append(grad[0, 0])
    if loss == "standard":
        assert torch.equal(grads[0], grads[1])
    else:
        assert not torch.allclose(grads[0], grads[1])
        # a worse box (smaller beta_r) weights the positive's classification loss less
        assert grads[1][2].abs() < grads[0][2].abs()


@pytest.mark.parametrize("arch", ["faster_rcnn", "ssd", "retinanet"])
def test_coupling_in_every_family(arch):
    """Moving only the box regression changes the classification loss under harmonic, not under standard."""
    backbone = "mobilenet_v3_large" if arch == "ssd" else "resnet18"
    for loss, coupled in (("standard", False), ("harmonic", True)):
        model, _ = pair(arch, backbone, loss)
        base = losses_of(model, arch)
        regression = _branches(model, arch)[1]
        with torch.no_grad():
            for p in regression:
                p.add_(0.05)
        moved = losses_of(model, arch)
        cls_key = "loss_classifier" if "rcnn" in arch else "classification"
        assert torch.equal(base[cls_key], moved[cls_key]) != coupled


def test_options_and_errors():
    model = build_detector("fcos", 5, loss="harmonicdet", gamma=0.5, tc_margin=0.1, detach_factors=True)
    assert (model.head.options.gamma, model.head.options.tc_margin, model.head.options.alpha) == (0.5, 0.1, 1.5)
    with pytest.raises(ValueError, match="arch must be one of"):
        build_detector("yolo", 5)
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_detector("fcos", 5, backbone="vgg")
    with pytest.raises(ValueError, match="loss must be one of"):
        build_detector("fcos", 5, loss="harmonious")
    with pytest.raises(ValueError, match=r"unknown loss option\(s\) \['alhpa'\]"):
        build_detector("fcos", 5, loss="harmonic", alhpa=1.0)
    with pytest.raises(ValueError, match="S-13"):
        build_detector("retinanet", 5, loss="harmonic_iou", gamma=1.5)
    with pytest.raises(ValueError, match="takes no loss options"):
        build_detector("fcos", 5, alpha=1.0)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        build_detector("fcos", 5, pretrained="/nowhere.pt")


def test_pretrained_state_dict_loads(tmp_path):
    source = build_detector("retinanet", 5)
    torch.save(source.state_dict(), tmp_path / "full.pt")
    torch.save(source.backbone.body.state_dict(), tmp_path / "body.pt")
    for name in ("full.pt", "body.pt"):
        model = build_detector("retinanet", 5, loss="harmonic", pretrained=str(tmp_path / name))
        assert torch.equal(model.backbone.body.conv1.weight, source.backbone.body.conv1.weight)
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        build_detector("retinanet", 5, pretrained=str(tmp_path / "bad.pt"))


@pytest.mark.parametrize("arch,backbone", [("fcos", "resnet18"), ("faster_rcnn", "resnet18")])
def test_pre_nms_candidates_are_a_superset_and_settings_restored(arch, backbone):
    model = build_detector(arch, 5, backbone=backbone).eval()
    if arch == "fcos":
        model.score_thresh = 0.0
    else:
        model.roi_heads.score_thresh = 0.0
    images, _ = batch(arch)
    owner = model.roi_heads if arch == "faster_rcnn" else model
    saved = (owner.nms_thresh, owner.detections_per_img)
    with torch.no_grad():
        after_nms = model(images)
        with pre_nms_candidates(model, max_per_image=500):
            before_nms = model(images)
    assert (owner.nms_thresh, owner.detections_per_img) == saved
    for a, b in zip(after_nms, before_nms):
        assert len(b["boxes"]) >= len(a["boxes"])
        assert len(b["boxes"]) <= 500
    assert sum(len(b["boxes"]) for b in before_nms) > sum(len(a["boxes"]) for a in after_nms)
