"""Bad input: every user mistake is exit code 2 and one line naming the file, field or index; nothing is lost."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from harmonicdet.cli import main
from harmonicdet.engine.builders import scenes_paths
from harmonicdet.engine.config import DEFAULTS, load_config


def run_cli(capsys, *argv):
    """``harmonicdet ARGV`` in-process: ``(exit code, stderr)``; an uncaught exception fails the test."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def assert_refused(code, err, *named):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("harmonicdet")]
    assert len(lines) == 1, err
    for name in named:
        assert name in lines[0], (name, lines[0])


def tiny(scenes, out, **sections):
    config = {
        "output_dir": str(out),
        "model": {"arch": "fcos", "backbone": "resnet18", "image_size": 128, "options": {"fpn_channels": 64}},
        "data": {"train": scenes_paths(scenes, "train"), "val": scenes_paths(scenes, "val")},
        "train": {"batch_size": 4, "max_iters": 2, "warmup_iters": 0, "log_every": 1, "device": "cpu",
                  "checkpoint_every": 1},
        "eval": {"batch_size": 8},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def write_config(path: Path, config) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


# ------------------------------------------------------------------ config (train verb)

CONFIG_CASES = [
    ("train.lr=abc", "train.lr"),
    ("train.max_iters=abc", "train.max_iters"),
    ("model.image_size=abc", "model.image_size"),
    ("train.device=tpu", "train.device"),
    ("seed=abc", "seed"),
    ("model.loss_options={gamma: abc}", "model.loss_options.gamma"),
    ("train=[1,2]", "train"),
    ("train.lr=.inf", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.max_iters=-5", "train.max_iters"),
    ("train.warmup_iters=-3", "train.warmup_iters"),
    ("train.checkpoint_every=0", "train.checkpoint_every"),
    ("train.checkpoint_every=-2", "train.checkpoint_every"),
    ("train.amp=maybe", "train.amp"),
    ("model.arch=yolo", "model.arch"),
    ("model.loss_options={detach_factors: sometimes}", "model.loss_options.detach_factors"),
    ("data.scenes={out: x, train: 0}", "data.scenes.train"),
    ("model.loss_options=[1]", "model.loss_options"),
    ("train.bogus=1", "bogus"),
]


@pytest.mark.parametrize("override,field", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_train_refuses_a_bad_config_value_naming_the_field(scenes, tmp_path, capsys, override, field):
    config = write_config(tmp_path / "c.yaml", tiny(scenes, tmp_path / "run", model={"loss": "harmonicdet"}))
    code, err = run_cli(capsys, "train", config, "--quiet", "--set", override)
    assert_refused(code, err, field)
    assert not (tmp_path / "run").exists()


def test_config_schema_covers_every_default_and_keeps_the_dict_shape(tmp_path):
    from harmonicdet.engine.schema import RunConfig

    def fields(model):
        return set(model.model_fields)

    assert fields(RunConfig) == set(DEFAULTS)
    for section in ("model", "data", "train", "eval"):
        assert set(DEFAULTS[section]) <= fields(RunConfig.model_fields[section].annotation), section
    from harmonicdet.engine.schema import validate_config

    config = load_config(None, ["model.loss=harmonic", "model.loss_options={detach_factors: beta_r}",
                                "data.scenes={out: s}"])
    assert isinstance(config, dict) and config["model"]["loss_options"] == {"detach_factors": "beta_r"}
    periodic = validate_config({**config, "eval": {**config["eval"], "every": 5, "subset": 3}})
    assert periodic["eval"]["every"] == 5 and periodic["eval"]["subset"] == 3
    for bad in ({"every": 0}, {"subset": -1}):
        with pytest.raises(ValueError, match=f"eval.{next(iter(bad))}"):
            validate_config({**config, "eval": {**config["eval"], **bad}})
    assert config["data"]["scenes"] == {"out": "s"}  # dumped as given
    assert load_config(None, ["train.lr=1"])["train"]["lr"] == 1.0
