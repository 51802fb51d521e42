"""Fixtures shared by the test modules."""

import gzip
import os
import socket
import struct
from pathlib import Path

import numpy as np
import pytest


def _write_idx(path, array, magic=None) -> None:
    """``array`` as a gzipped IDX file of unsigned bytes; ``magic`` (4 bytes) replaces the header's magic number.
    The gzip header's time is 0, so equal arrays give equal bytes (and an equal Fashion-MNIST fingerprint)."""
    header = (magic or struct.pack(">BBBB", 0, 0, 8, array.ndim)) + b"".join(struct.pack(">I", d) for d in array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def write_idx():
    """``write_idx(path, array, magic=None)``: writes ``array`` as a gzipped IDX file (Fashion-MNIST's format)."""
    return _write_idx


def _write_fashion_mnist_stand_in(folder, per_split: int = 300) -> None:
    """Fashion-MNIST's four files with ``per_split`` made-up 28x28 items per split, every label 0-9 equally often.

    Item of label k: a filled ellipse, half-height 3 + k and half-width 12 - k px (so the classes differ in shape),
    its centre jittered by up to 2 px, random grey levels 96-255 inside and black outside (so the scenes' mask, the
    pixels above 10% grey, is the ellipse). Deterministic: seeded numpy.
    """
    from harmonicdet.data.fashion_mnist import FILES

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28]
    for images_name, labels_name in FILES.values():
        labels = rng.permutation(np.arange(per_split) % 10)
        images = np.zeros((per_split, 28, 28), dtype=np.uint8)
        for image, label in zip(images, labels):
            cy, cx = 13.5 + rng.integers(-2, 3, size=2)
            inside = ((yy - cy) / (3 + label)) ** 2 + ((xx - cx) / (12 - label)) ** 2 <= 1
            image[inside] = rng.integers(96, 256, size=int(inside.sum()))
        _write_idx(Path(folder) / images_name, images)
        _write_idx(Path(folder) / labels_name, labels)


@pytest.fixture(scope="session", autouse=True)
def fashion_mnist(tmp_path_factory):
    """The Fashion-MNIST folder of the session: the real files where :func:`~harmonicdet.data.find_fashion_mnist`
    finds them (``$HARMONICDET_FASHION_MNIST``, Debian's ``dataset-fashion-mnist``), else a small stand-in
    written to a temporary folder and named in ``$HARMONICDET_FASHION_MNIST`` for the session (subprocesses too)."""
    from harmonicdet.data.fashion_mnist import ENV_VAR, find_fashion_mnist

    try:
        found = find_fashion_mnist()
    except FileNotFoundError:
        if os.environ.get(ENV_VAR):
            raise  # a folder named explicitly but incomplete is the caller's mistake, not a reason to make data up
        found = None
    if found is not None:
        yield found
        return
    folder = tmp_path_factory.mktemp("fashion_mnist_stand_in")
    _write_fashion_mnist_stand_in(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VAR, str(folder))
        yield folder


@pytest.fixture
def no_network(monkeypatch):
    """Refuses (and counts) every socket connection and DNS lookup: the list of calls, empty when none was tried."""
    calls = []

    def deny(*args, **kwargs):
        calls.append(args[:1])
        raise OSError("network refused by the test")

    for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
                        (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, deny)
    return calls


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """16 train and 8 val Fashion-MNIST scenes, seed 0, written as a COCO dataset."""
    from harmonicdet.data import make_scenes

    out = tmp_path_factory.mktemp("scenes")
    make_scenes(out, num_train=16, num_val=8, seed=0)
    return out


def _tiny_config(scenes, out, **overrides) -> dict:
    """A few-iteration CPU config on the test scenes; ``overrides`` are ``key=value`` strings."""
    from harmonicdet.data import scenes_paths
    from harmonicdet.engine.config import load_config

    base = {
        "output_dir": str(out),
        "model": {"arch": "fcos", "backbone": "resnet18", "image_size": 128},
        "data": {"train": scenes_paths(scenes, "train"), "val": scenes_paths(scenes, "val")},
        "train": {"batch_size": 4, "max_iters": 4, "warmup_iters": 0, "log_every": 1, "device": "cpu"},
        "eval": {"batch_size": 8},
    }
    return load_config(base=base, overrides=[f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(scenes, out, **overrides)``: a few-iteration CPU training config on the test scenes."""
    return _tiny_config


class FakeDemoRuns:
    """Stands in for the demo's training, evaluation and plots: ``trained`` lists the configs it was given;
    ``results(config)``, when set, gives the COCO results its evaluation writes to ``results.json``."""

    def __init__(self):
        self.trained = []
        self.results = None

    def train(self, config, **kwargs):  # the timing probe reads step_time
        import json
        from pathlib import Path

        self.trained.append(config)
        out = Path(config["output_dir"])
        out.mkdir(parents=True)
        (out / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "step_time": 0.01, "loss": 1.0})
                                                   + "\n" for i in range(1, 4)))
        return out

    def evaluate_run(self, config, checkpoint, **kwargs):
        import json
        from pathlib import Path

        if self.results is not None:
            (Path(checkpoint).parent / "results.json").write_text(json.dumps(self.results(config)))
        report = {"metrics": {"AP": 0.1, "AP50": 0.2, "AP75": 0.05}, "consistency": {"overall": {"spearman": 0.5}}}
        (Path(checkpoint).parent / "eval.json").write_text(json.dumps(report))
        return report


@pytest.fixture
def fake_demo_runs(monkeypatch):
    """The demo with :class:`FakeDemoRuns` in place of training, evaluation and the plots."""
    from harmonicdet.apps import demo

    fake = FakeDemoRuns()
    monkeypatch.setattr(demo, "train", fake.train)
    monkeypatch.setattr(demo, "evaluate_run", fake.evaluate_run)
    monkeypatch.setattr(demo, "plot_loss_curves", lambda runs, path: path)
    monkeypatch.setattr(demo, "plot_consistency_comparison", lambda reports, labels, out: [])
    return fake
