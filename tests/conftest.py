"""Fixtures shared by the test modules."""

import pytest


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """16 train and 8 val Fashion-MNIST scenes, seed 0, written as a COCO dataset."""
    from harmonicdet.data import make_scenes

    out = tmp_path_factory.mktemp("scenes")
    make_scenes(out, num_train=16, num_val=8, seed=0)
    return out
