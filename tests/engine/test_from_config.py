"""Models from a run config: the config's loss options become one options object, and the heads hold it."""

import pytest

from harmonicdet.engine.from_config import build_model
from harmonicdet.losses import HarmonicOptions, QFLOptions
from harmonicdet.models.presets import harmonic_options


@pytest.mark.parametrize("arch,loss,loss_options", [
    ("fcos", "harmonicdet", "{gamma: 0.5, tc_margin: 0.1}"),
    ("retinanet", "harmonic", "{detach_factors: beta_r}"),
    ("faster_rcnn", "harmonic_iou", "{alpha: 0.5}"),
    ("ssd", "standard_posweight", "{positive_weight: 1.5}"),
    ("fcos", "qfl", "{qfl_beta: 1.0}"),
])
def test_build_model_makes_the_options_object_once_and_every_head_holds_that_object(
        arch, loss, loss_options, tmp_path, tiny_config, monkeypatch):
    overrides = {"model.arch": arch, "model.loss": loss, "model.loss_options": loss_options}
    if arch == "ssd":
        overrides["model.backbone"] = "mobilenet_v3_large"
    config = tiny_config(tmp_path / "scenes", tmp_path / "run", **overrides)  # build_model never reads the data
    made = []
    for option_class in (HarmonicOptions, QFLOptions):
        def counted(self, validate=option_class.__post_init__):
            made.append(self)
            validate(self)
        monkeypatch.setattr(option_class, "__post_init__", counted)

    model = build_model(config)

    monkeypatch.undo()
    assert len(made) == 1, f"{len(made)} options objects made from one config"
    assert made[0] == harmonic_options(loss, config["model"]["loss_options"])  # the config's values, validated
    holders = [module for module in model.modules() if isinstance(getattr(module, "options", None),
                                                                  (HarmonicOptions, QFLOptions))]
    assert holders and all(module.options is made[0] for module in holders)
