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


@pytest.fixture
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
