"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """16 train and 8 val Fashion-MNIST scenes, seed 0, written as a COCO dataset."""
    from harmonicdet.data import make_scenes

    out = tmp_path_factory.mktemp("scenes")
    make_scenes(out, num_train=16, num_val=8, seed=0)
    return out


def _tiny_config(scenes, out, **overrides) -> dict:
    """A few-iteration CPU config on the test scenes; ``overrides`` are ``key=value`` strings."""
    from harmonicdet.engine.builders import scenes_paths
    from harmonicdet.engine.config import load_config

    base = {
        "output_dir": str(out),
        "model": {"arch": "fcos", "backbone": "resnet18", "image_size": 128},
        "data": {"train": scenes_paths(scenes, "train"), "val": scenes_paths(scenes, "val")},
        "train": {"batch_size": 4, "max_iters": 4, "warmup_iters": 0, "log_every": 1, "device": "cpu"},
        "eval": {"batch_size": 8},
    }
    return load_config(base=base, overrides=[f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture
def tiny_config():
    """``tiny_config(scenes, out, **overrides)``: a few-iteration CPU training config on the test scenes."""
    return _tiny_config
