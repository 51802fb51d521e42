"""Bad input: every user mistake is exit code 2 and one line naming the file, field or index; nothing is lost."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from harmonicdet.cli import main
from harmonicdet.data import scenes_paths
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


# the shared tiny config, smaller still and checkpointed every iteration: these runs are refused or interrupted
SMALL = {"model.image_size": 64, "model.options": "{fpn_channels: 64}", "train.batch_size": 2, "train.max_iters": 2,
         "train.checkpoint_every": 1}


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
    ("model.loss_options={gamma: abc}", "model.loss_options: gamma"),
    ("train=[1,2]", "train"),
    ("train.lr=.inf", "train.lr"),
    ("train.lr=.nan", "train.lr"),
    ("train.max_iters=-5", "train.max_iters"),
    ("train.warmup_iters=-3", "train.warmup_iters"),
    ("train.checkpoint_every=0", "train.checkpoint_every"),
    ("train.checkpoint_every=-2", "train.checkpoint_every"),
    ("train.amp=maybe", "train.amp"),
    ("model.arch=yolo", "model.arch"),
    ("model.loss_options={detach_factors: sometimes}", "model.loss_options: detach_factors"),
    ("data.scenes={out: x, train: 0}", "data.scenes.train"),
    ("model.loss_options=[1]", "model.loss_options"),
    ("train.bogus=1", "bogus"),
]


@pytest.mark.parametrize("override,field", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_train_refuses_a_bad_config_value_naming_the_field(scenes, tmp_path, capsys, override, field, tiny_config):
    config = write_config(tmp_path / "c.yaml",
                          tiny_config(scenes, tmp_path / "run", **SMALL | {"model.loss": "harmonicdet"}))
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


# ------------------------------------------------------------------ a trained run, copied per test


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory, tiny_config):
    """A 2-iteration FCOS run (checkpoint every iteration) and the config file it was trained from."""
    from harmonicdet.engine.train import train

    root = tmp_path_factory.mktemp("trained")
    config_path = write_config(root / "c.yaml", tiny_config(scenes, root / "run", **SMALL))
    train(load_config(config_path), show_progress=False)
    return root


@pytest.fixture
def run_copy(trained, tmp_path):
    import shutil

    shutil.copytree(trained / "run", tmp_path / "run")
    config = yaml.safe_load((trained / "c.yaml").read_text())
    config["output_dir"] = str(tmp_path / "run")
    return tmp_path / "run", write_config(tmp_path / "c.yaml", config)


RESUME_CHANGES = [
    ("model.loss=harmonicdet", "model.loss"),
    ("model.arch=retinanet", "model.arch"),
    ("seed=7", "seed"),
    ("data.hflip=false", "data.hflip"),
    ("train.lr=0.5", "train.lr"),
]


@pytest.mark.parametrize("override,field", RESUME_CHANGES, ids=[c[0] for c in RESUME_CHANGES])
def test_resume_refuses_a_changed_config_and_leaves_config_yaml(run_copy, capsys, override, field):
    run, config = run_copy
    before = (run / "config.yaml").read_text()
    code, err = run_cli(capsys, "train", config, "--quiet", "--resume", "--set", override)
    assert_refused(code, err, field, "last.pt")
    assert (run / "config.yaml").read_text() == before


def test_resume_refuses_changed_data(run_copy, capsys, scenes):
    run, config = run_copy
    before = (run / "config.yaml").read_text()
    code, err = run_cli(capsys, "train", config, "--quiet", "--resume", "--set",
                        f"data.train={json.dumps(scenes_paths(scenes, 'val'))}")
    assert_refused(code, err, "data.train.ann_file", "data.train.img_dir")
    assert (run / "config.yaml").read_text() == before


def test_resume_with_more_iterations_continues_past_a_torn_metrics_line(run_copy, capsys):
    run, config = run_copy
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"iteration": 3, "lo')  # a write cut short by a kill
    code, err = run_cli(capsys, "train", config, "--quiet", "--resume", "--set", "train.max_iters=3",
                        "--set", "train.log_every=5")
    assert code == 0, err
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_iters"] == 3


def test_resume_names_a_corrupt_middle_line_of_the_metrics(run_copy, capsys):
    run, config = run_copy
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(["{oops", *lines[1:]]) + "\n")
    code, err = run_cli(capsys, "train", config, "--quiet", "--resume", "--set", "train.max_iters=3")
    assert_refused(code, err, "metrics.jsonl", "line 1")


# ------------------------------------------------------------------ eval: checkpoints


def _bad_checkpoints(run: Path):
    good = (run / "model_final.pt").read_bytes()
    torch.save([1, 2, 3], run / "list.pt")
    (run / "empty.pt").write_bytes(b"")
    (run / "truncated.pt").write_bytes(good[: len(good) // 2])
    (run / "text.pt").write_text("not a checkpoint\n")
    torch.save({"model": {"w": "not a tensor"}}, run / "strings.pt")
    return ["empty.pt", "truncated.pt", "text.pt", "list.pt", "strings.pt", "missing.pt"]


BAD_CHECKPOINTS = ["empty.pt", "truncated.pt", "text.pt", "list.pt", "strings.pt", "missing.pt"]


@pytest.mark.parametrize("name", BAD_CHECKPOINTS)
def test_eval_names_an_unreadable_checkpoint(run_copy, capsys, name):
    run, config = run_copy
    _bad_checkpoints(run)
    code, err = run_cli(capsys, "eval", config, "--quiet", "--checkpoint", run / name)
    assert_refused(code, err, str(run / name))


def test_eval_refuses_a_model_config_other_than_the_checkpoints(run_copy, capsys):
    run, config = run_copy
    for override, field in (("model.loss=qfl", "model.loss"), ("model.options={fpn_channels: 128}", "model.options")):
        code, err = run_cli(capsys, "eval", config, "--quiet", "--checkpoint", run / "model_final.pt",
                            "--set", override)
        assert_refused(code, err, field, "model_final.pt")
    assert not (run / "eval.json").exists()


def test_model_final_carries_the_config_and_a_bare_state_dict_still_loads(run_copy):
    from harmonicdet.engine.from_config import build_model
    from harmonicdet.engine.checkpoint import load_model_state
    from harmonicdet.engine.trained_run import load_weights

    run, config_path = run_copy
    config = load_config(config_path)
    state, trained_with = load_model_state(run / "model_final.pt")
    assert trained_with["model"] == config["model"]
    torch.save(state, run / "bare.pt")  # a model_final.pt of an older version: no config, no check
    assert load_model_state(run / "bare.pt")[1] is None
    other = load_config(config_path, ["model.loss=harmonic"])
    load_weights(build_model(other), run / "bare.pt", other)
    with pytest.raises(ValueError, match="model.loss"):
        load_weights(build_model(other), run / "model_final.pt", other)


# ------------------------------------------------------------------ Ctrl-C and DataLoader workers


def test_ctrl_c_during_a_checkpoint_save_is_one_line_and_leaves_no_temporary_file(scenes, tmp_path, capsys,
                                                                                  monkeypatch, tiny_config):
    import harmonicdet.engine.checkpoint as checkpoint

    saves = []
    real_save = torch.save

    def interrupted_save(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:  # the second last.pt: half written, then Ctrl-C (torch reports it as RuntimeError)
            f.write(b"partial")
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", interrupted_save)
    config = write_config(tmp_path / "c.yaml", tiny_config(scenes, tmp_path / "run", **SMALL | {"train.max_iters": 3}))
    code, err = run_cli(capsys, "train", config, "--quiet")
    assert code == 130 and "Traceback" not in err and "RuntimeError" not in err
    assert "interrupted at iteration 2; --resume continues from iteration 1" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")) == []


def test_plain_ctrl_c_is_one_line_with_exit_code_130(scenes, tmp_path, capsys, monkeypatch, tiny_config):
    import harmonicdet.engine.train as train_module

    calls = []

    def stats(model):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {}

    monkeypatch.setattr(train_module, "loss_stats", stats)
    config = write_config(tmp_path / "c.yaml", tiny_config(scenes, tmp_path / "run", **SMALL | {"train.max_iters": 3}))
    code, err = run_cli(capsys, "train", config, "--quiet")
    assert code == 130 and "Traceback" not in err
    assert err.strip() == "harmonicdet train: interrupted at iteration 1; --resume continues from iteration 1"


def test_a_dataset_error_in_a_dataloader_worker_arrives_unwrapped(scenes, tmp_path, capsys, tiny_config):
    import shutil

    data = tmp_path / "scenes"
    shutil.copytree(scenes, data)
    ann = json.loads((data / "annotations" / "instances_train.json").read_text())
    for image in ann["images"]:
        (data / "train" / image["file_name"]).write_bytes(b"not a png")
    config = write_config(tmp_path / "c.yaml", tiny_config(data, tmp_path / "run", **SMALL | {"data.num_workers": 1}))
    code, err = run_cli(capsys, "train", config, "--quiet")
    assert_refused(code, err, str(data / "train"), "could not be read")
    assert "worker" not in err


# ------------------------------------------------------------------ demo

DEMO_CASES = [
    (["--budget-minutes", "inf"], "--budget-minutes"),
    (["--budget-minutes", "nan"], "--budget-minutes"),
    (["--budget-minutes", "-1"], "--budget-minutes"),
    (["--budget-minutes", "0.1"], "--budget-minutes"),
    (["--train-images", "0"], "--train-images"),
    (["--val-images", "-3"], "--val-images"),
    (["--train-images", "8"], "--train-images"),  # fewer than one batch of the demo config
    (["--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize("args,named", DEMO_CASES, ids=[" ".join(c[0]) for c in DEMO_CASES])
def test_demo_refuses_bad_arguments_before_writing_anything(tmp_path, capsys, monkeypatch, args, named):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "demo", "--out", "out", *args)
    assert_refused(code, err, named)
    assert list(tmp_path.iterdir()) == []


def test_demo_never_deletes_what_it_did_not_make(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "out" / "standard" / "config.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own run\n")
    code, err = run_cli(capsys, "demo", "--out", "out", "--budget-minutes", "2")
    assert_refused(code, err, "out")
    assert mine.read_text() == "my own run\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["standard"]
    (tmp_path / "file").write_text("x")
    assert_refused(*run_cli(capsys, "demo", "--out", "file"), "file")


def test_demo_config_applies_its_settings_after_the_shipped_config(tmp_path):
    from harmonicdet.apps.demo import demo_config

    config = demo_config(tmp_path / "out", seed=3, num_train=64, num_val=16, fashion_mnist="fm")
    assert config["seed"] == 3
    assert config["data"]["scenes"] == {"out": str(tmp_path / "out" / "scenes"), "train": 64, "val": 16,
                                        "seed": 3, "fashion_mnist": "fm"}
    assert Path(config["output_dir"]).parent == tmp_path / "out"


def test_demo_writes_only_under_out_with_the_given_seed_and_sizes(tmp_path, capsys, monkeypatch, fake_demo_runs):
    import harmonicdet.apps.demo as demo

    monkeypatch.chdir(tmp_path)
    overrides = ["train.batch_size=4", "model.options={fpn_channels: 64}"]
    for _ in range(2):  # a second run reuses the folder the first one made
        demo.run_demo(Path("out"), budget_minutes=1.0, seed=3, num_train=16, num_val=8, overrides=overrides)
        assert [p.name for p in tmp_path.iterdir()] == ["out"]
    out = tmp_path / "out"
    assert {Path(c["output_dir"]).name for c in fake_demo_runs.trained} == {"_probe", "standard", "harmonicdet"}
    for config in fake_demo_runs.trained:
        assert config["seed"] == 3 and Path(config["output_dir"]).resolve().parent == out.resolve()
        assert config["data"]["scenes"]["out"] == str(Path("out") / "scenes")
        assert (config["data"]["scenes"]["train"], config["data"]["scenes"]["val"]) == (16, 8)
    gt = json.loads((out / "scenes" / "annotations" / "instances_train.json").read_text())
    assert len(gt["images"]) == 16 and gt["info"]["seed"] == 3
    assert json.loads((out / ".harmonicdet.json").read_text())["created"]


# ------------------------------------------------------------------ losses: finite where the input is finite


def test_task_contrast_gradient_is_finite_for_a_zero_probability():
    from harmonicdet.losses import task_contrast_loss

    logits = torch.tensor([[30.0, 0.0, -80.0]], requires_grad=True)
    probs = logits.softmax(dim=1)
    assert probs[0, 2] == 0  # underflows in float32
    iou = torch.tensor([0.1], requires_grad=True)
    loss = task_contrast_loss(probs, probs[:, 0], iou, detach_entropy=False, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and torch.isfinite(iou.grad).all()


def test_task_contrast_values_and_gradients_unchanged_for_valid_input():
    from harmonicdet.losses import task_contrast_loss

    torch.manual_seed(0)
    logits = torch.randn(64, 11, requires_grad=True)
    iou = torch.rand(64, requires_grad=True)
    probs = logits.softmax(dim=1)
    loss = task_contrast_loss(probs, probs[:, 1], iou, detach_entropy=False)
    q = probs / probs.sum(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)  # the formula as it was
    entropy = -torch.special.xlogy(q, q).sum(dim=1)
    expected = ((probs[:, 1] - iou).abs() - 0.2).clamp(min=0) / (1 + torch.exp(entropy))
    assert torch.equal(loss, expected)
    grads = torch.autograd.grad(loss.sum(), (logits, iou), retain_graph=True)
    # (equal up to the order autograd accumulates the two uses of probs in)
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-9)
               for a, b in zip(grads, torch.autograd.grad(expected.sum(), (logits, iou))))


def _plain_iou(b1, b2, eps=1e-7):
    x1, y1, x2, y2 = b1.unbind(-1)
    u1, v1, u2, v2 = b2.unbind(-1)
    inter = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0) * \
        (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp(min=0)
    a1 = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    a2 = (u2 - u1).clamp(min=0) * (v2 - v1).clamp(min=0)
    return inter / (a1 + a2 - inter + eps)


def test_box_iou_bit_identical_for_valid_boxes_and_finite_for_huge_or_infinite_ones():
    from harmonicdet.losses import harmonic_iou_loss
    from harmonicdet.losses.box_iou import aligned_box_iou

    torch.manual_seed(0)
    xy = torch.rand(256, 2) * 500
    pred = torch.cat([xy, xy + torch.rand(256, 2) * 200], 1).requires_grad_()
    target = torch.cat([xy + 5, xy + 5 + torch.rand(256, 2) * 200], 1)
    got, want = aligned_box_iou(pred, target), _plain_iou(pred, target)
    assert torch.equal(got, want)
    assert torch.equal(torch.autograd.grad(got.sum(), pred, retain_graph=True)[0],
                       torch.autograd.grad(want.sum(), pred)[0])

    huge = torch.tensor([[2e19, 2e19, 3e19, 3e19], [0.0, 0.0, 3e38, 3e38]], requires_grad=True)
    loss = harmonic_iou_loss(huge, huge.detach().clone(), reduction="none")
    loss.sum().backward()
    assert torch.allclose(loss, torch.zeros(2), atol=1e-5) and torch.isfinite(huge.grad).all()

    inf = torch.tensor([[0.0, 0.0, float("inf"), 10.0]], requires_grad=True)
    loss = harmonic_iou_loss(inf, torch.tensor([[0.0, 0.0, 10.0, 10.0]]), reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(inf.grad).all()


def test_half_precision_mean_with_a_large_avg_factor_is_finite():
    from harmonicdet.losses import harmonic_loss

    n = 20000
    cls = torch.full((n,), 2.0, dtype=torch.float16, requires_grad=True)
    loc = torch.full((n,), 1.0, dtype=torch.float16, requires_grad=True)
    loss = harmonic_loss(cls, loc, reduction="mean", avg_factor=n)
    loss.backward()
    expected = (1 + torch.exp(torch.tensor(-1.0))) * 2 + (1 + torch.exp(torch.tensor(-2.0))) * 1
    assert torch.isfinite(loss) and abs(loss.item() - expected.item()) < 1e-2
    assert torch.isfinite(cls.grad).all() and torch.isfinite(loc.grad).all()


def _tc(**kw):
    from harmonicdet.losses import task_contrast_loss

    args = dict(class_probs=torch.tensor([[0.7, 0.3]]), gt_prob=torch.tensor([0.7]), iou=torch.tensor([0.2]))
    args.update(kw)
    return task_contrast_loss(args.pop("class_probs"), args.pop("gt_prob"), args.pop("iou"), **args)


def _hiou(**kw):
    from harmonicdet.losses import harmonic_iou_loss

    args = dict(pred_boxes=torch.tensor([[0.0, 0, 4, 4]]), target_boxes=torch.tensor([[1.0, 1, 5, 5]]))
    args.update(kw)
    return harmonic_iou_loss(**args)


def _har(**kw):
    from harmonicdet.losses import harmonic_loss

    args = dict(cls_loss=torch.tensor([0.5]), loc_loss=torch.tensor([0.2]))
    args.update(kw)
    return harmonic_loss(args.pop("cls_loss"), args.pop("loc_loss"), **args)


LOSS_CASES = [
    (_tc, {"class_probs": torch.tensor([[2.0, -1.0]]), "gt_prob": torch.tensor([2.0])}, "class_probs"),
    (_tc, {"gt_prob": torch.tensor([-0.5])}, "gt_prob"),
    (_tc, {"iou": torch.tensor([1.5])}, "iou"),
    (_tc, {"margin": float("nan")}, "margin"),
    (_tc, {"margin": "0.2"}, "margin"),
    (_tc, {"class_probs": [[0.7, 0.3]]}, "class_probs must be a floating point torch.Tensor"),
    (_tc, {"gt_prob": torch.tensor([1])}, "gt_prob must be a floating point torch.Tensor"),
    (_hiou, {"pred_boxes": [[0.0, 0, 4, 4]]}, "boxes1 must be a floating point torch.Tensor"),
    (_hiou, {"target_boxes": torch.tensor([[1, 1, 5, 5]])}, "boxes2"),
    (_hiou, {"gamma": "abc"}, "gamma must be a finite number"),
    (_har, {"cls_loss": [0.5]}, "cls_loss must be a floating point torch.Tensor"),
    (_har, {"loc_loss": torch.tensor([1])}, "loc_loss"),
    (_har, {"reduction": "mean", "avg_factor": "n"}, "avg_factor"),
]


@pytest.mark.parametrize("call,kwargs,named", LOSS_CASES, ids=[f"{c[0].__name__}-{c[2]}" for c in LOSS_CASES])
def test_losses_name_what_they_expected(call, kwargs, named):
    with pytest.raises(ValueError, match=named):
        call(**kwargs)


# ------------------------------------------------------------------ data


def _coco_variant(scenes, tmp_path, edit) -> dict:
    """The training scenes' annotation file changed by ``edit(gt)``, as ``data.train`` arguments."""
    paths = scenes_paths(scenes, "train")
    gt = json.loads(Path(paths["ann_file"]).read_text())
    edit(gt)
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(gt))
    return {"img_dir": paths["img_dir"], "ann_file": str(ann)}


def _empty(gt):
    gt["annotations"] = []


def _outside(gt):
    image = gt["images"][0]
    first = next(i for i, a in enumerate(gt["annotations"]) if a["image_id"] == image["id"])
    gt["annotations"][first]["bbox"] = [image["width"] + 172, image["height"] + 172, 20, 20]
    gt["outside_index"] = first


DATA_CASES = [(_empty, ["instances.json", "no annotated objects"]), (_outside, ["instances.json", "outside"])]


@pytest.mark.parametrize("edit,named", DATA_CASES, ids=["empty-annotations", "box-outside-image"])
def test_train_refuses_data_that_would_train_on_nothing_or_on_boxes_off_the_image(scenes, tmp_path, capsys,
                                                                                   edit, named, tiny_config):
    train_data = _coco_variant(scenes, tmp_path, edit)
    config = tiny_config(scenes, tmp_path / "run", **SMALL)
    config["data"]["train"] = train_data
    config = write_config(tmp_path / "c.yaml", config)
    code, err = run_cli(capsys, "train", config, "--quiet")
    gt = json.loads(Path(train_data["ann_file"]).read_text())
    assert_refused(code, err, *named, *([f"annotations[{gt['outside_index']}]"] if "outside_index" in gt else []))


def test_skip_invalid_drops_a_box_outside_its_image_with_a_warning(scenes, tmp_path):
    from harmonicdet.data import CocoDetectionDataset

    train_data = _coco_variant(scenes, tmp_path, _outside)
    index = json.loads(Path(train_data["ann_file"]).read_text())["outside_index"]
    with pytest.warns(UserWarning, match=rf"annotations\[{index}\].*outside"):
        dataset = CocoDetectionDataset(**train_data, skip_invalid=True)
    assert dataset.num_skipped == 1


DATA_VERB_CASES = [(["--train", "-1"], "--train"), (["--val", "-2"], "--val"), (["--seed", "-1"], "--seed"),
                   (["--workers", "0"], "--workers"), (["--fashion-mnist", "/nonexistent"], "/nonexistent")]


@pytest.mark.parametrize("args,named", DATA_VERB_CASES, ids=[" ".join(c[0]) for c in DATA_VERB_CASES])
def test_data_scenes_refuses_bad_arguments(tmp_path, capsys, args, named):
    code, err = run_cli(capsys, "data", "scenes", "--out", tmp_path / "s", *args)
    assert_refused(code, err, named)


# ------------------------------------------------------------------ consistency


def _consistency_files(scenes, tmp_path):
    gt_path = Path(scenes_paths(scenes, "val")["ann_file"])
    gt = json.loads(gt_path.read_text())
    a = gt["annotations"][0]
    good = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}]
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "high.json").write_text(json.dumps(good + [dict(good[0], score=1.5)]))
    (tmp_path / "negative.json").write_text(json.dumps([dict(good[0], score=-0.1)]))
    (tmp_path / "text.json").write_text("{not json")
    (tmp_path / "bad_image.json").write_text(json.dumps([dict(good[0], image_id=10 ** 6)]))
    gt["annotations"][2]["id"] = "abc"
    (tmp_path / "gt_string_id.json").write_text(json.dumps(gt))
    return gt_path


CONSISTENCY_CASES = [
    (["--dt", "good.json", "--dt", "high.json"], ["high.json", "[1]", "score"]),
    (["--dt", "negative.json"], ["negative.json", "[0]", "score"]),
    (["--dt", "good.json", "--dt", "bad_image.json"], ["bad_image.json", "[0]", "image_id"]),
    (["--dt", "good.json", "--dt", "text.json"], ["text.json"]),
    (["--dt", "missing.json"], ["missing.json"]),
    (["--gt", "gt_string_id.json", "--dt", "good.json"], ["gt_string_id.json", "annotations[2]", "id"]),
]


@pytest.mark.parametrize("args,named", CONSISTENCY_CASES, ids=[a[-1] for a, _ in CONSISTENCY_CASES])
def test_consistency_names_the_file_and_entry(scenes, tmp_path, capsys, monkeypatch, args, named):
    gt = _consistency_files(scenes, tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["consistency", *(["--gt", str(gt)] if "--gt" not in args else []), *args, "--out", "cons"]
    code, err = run_cli(capsys, *argv)
    assert_refused(code, err, *named)
    assert not (tmp_path / "cons").exists()


# ------------------------------------------------------------------ detr-study

DETR_PARSER_CASES = [
    (["--iterations", "0"], "argument --iterations: must be at least 1, got 0"),
    (["--batch", "-4"], "argument --batch: must be at least 1, got -4"),
    (["--eval-every", "x"], "argument --eval-every: invalid positive_int value: 'x'"),
    (["--arch", "detr"], "argument --arch: invalid choice: 'detr' (choose from 'rt_detr', 'rt_detr_v2', 'd_fine')"),
    (["--detach-factors", "beta"], ("argument --detach-factors: invalid choice: 'beta' (choose from 'False', "
                                    "'True', 'beta_c', 'beta_r')")),
]


@pytest.mark.parametrize("args,line", DETR_PARSER_CASES, ids=[" ".join(c[0]) for c in DETR_PARSER_CASES])
def test_detr_study_refuses_a_bad_option_value_in_one_line_naming_it(tmp_path, capsys, args, line):
    """Refused by the parser (which needs no transformers): exit code 2, one line naming the option, nothing written."""
    with pytest.raises(SystemExit) as stopped:
        main(["detr-study", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), "--data",
              str(tmp_path / "data"), *args])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [e for e in err.splitlines() if e.startswith("harmonicdet")] == [f"harmonicdet detr-study: error: {line}"]
    assert list(tmp_path.iterdir()) == []


DETR_STUDY_CASES = [
    (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--batch", "32", "--train-images", "16"], "--batch 32 is larger than --train-images 16"),
]


@pytest.mark.parametrize("args,line", DETR_STUDY_CASES, ids=[" ".join(c[0]) for c in DETR_STUDY_CASES])
def test_detr_study_refuses_bad_settings_before_writing_anything(tmp_path, capsys, args, line):
    pytest.importorskip("transformers")
    code, err = run_cli(capsys, "detr-study", "--out", tmp_path / "out", "--runs", tmp_path / "runs", "--data",
                        tmp_path / "data", *args)
    assert_refused(code, err)
    assert [e for e in err.splitlines() if e.startswith("harmonicdet")] == [f"harmonicdet detr-study: error: {line}"]
    assert list(tmp_path.iterdir()) == []
