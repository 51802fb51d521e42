"""The engine: configs, training, evaluation against faster-coco-eval, exact resume, DDP under torchrun."""

import contextlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from harmonicdet.data import scenes_paths
from harmonicdet.engine.from_config import build_datasets, build_model
from harmonicdet.engine.checkpoint import load_checkpoint
from harmonicdet.engine.config import load_config, shipped_config
from harmonicdet.engine.trained_run import evaluate_run
from harmonicdet.engine.schedule import build_optimizer, build_scheduler, lr_factor
from harmonicdet.engine.train import train

ROOT = Path(__file__).resolve().parents[2]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    return env


def test_config_refuses_unknown_fields_and_parses_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 0.5, "max_iter": 3}}))
    with pytest.raises(ValueError, match=r"c.yaml.train: unknown field 'max_iter'"):
        load_config(path)
    path.write_text(yaml.safe_dump({"train": {"lr": 0.5}}))
    config = load_config(path, ["train.max_iters=7", "model.loss=harmonic_iou",
                                "model.loss_options={alpha: 1.0, gamma: 0.5}"])
    assert config["train"]["lr"] == 0.5 and config["train"]["max_iters"] == 7
    assert config["model"]["loss_options"] == {"alpha": 1.0, "gamma": 0.5}
    with pytest.raises(ValueError, match="expected key=value"):
        load_config(None, ["train.lr"])
    # a free-form field is replaced whole, even when the file set it before
    path.write_text(yaml.safe_dump({"model": {"options": {"fpn_channels": 128}}}))
    config = load_config(path, ["model.options={fcos_anchor_sizes: [2, 4, 8, 16, 32]}"])
    assert config["model"]["options"] == {"fcos_anchor_sizes": [2, 4, 8, 16, 32]}


def test_shipped_configs_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        config = load_config(path)
        assert config["model"]["arch"] in ("fcos", "retinanet", "faster_rcnn", "ssd"), path
    assert shipped_config("scenes_fcos_r18.yaml").is_file()


def test_schedules_warm_up_then_decay():
    cfg = load_config(None, ["train.max_iters=100", "train.warmup_iters=10", "train.warmup_factor=0.1"])["train"]
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx((0.1 * 0.5 + 0.5) * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert lr_factor(10, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert lr_factor(50, cfg) == pytest.approx(0.5)  # cosine over the whole run, as detectron2's WarmupCosineLR
    assert lr_factor(100, cfg) == pytest.approx(0.0)
    step = dict(cfg, schedule="step", steps=[20, 50], step_gamma=0.1)
    assert [lr_factor(i, step) for i in (15, 20, 49, 50)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    model = torch.nn.Linear(2, 2)
    for name in ("sgd", "adamw"):
        optimizer = build_optimizer(model, dict(cfg, optimizer=name))
        scheduler = build_scheduler(optimizer, cfg)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg["lr"] * 0.1)
        optimizer.step()  # a training step's order: the optimiser, then the schedule
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg["lr"] * lr_factor(1, cfg))
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(model, dict(cfg, optimizer="rmsprop"))


def test_num_classes_must_match_the_data(scenes, tmp_path, tiny_config):
    with pytest.raises(ValueError, match=r"model.num_classes is 5 .* 10 classes"):
        build_datasets(tiny_config(scenes, tmp_path, **{"model.num_classes": 5}))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["fcos", "faster_rcnn"])
def test_short_training_and_evaluation_equal_faster_coco_eval(scenes, tmp_path, arch, tiny_config):
    from faster_coco_eval import COCO, COCOeval_faster

    # 4 iterations leave scores under the default thresholds (FCOS 0.2, Faster R-CNN 0.05): lower them, so the
    # evaluation has detections to compare
    threshold = "score_thresh" if arch == "fcos" else "box_score_thresh"
    config = tiny_config(scenes, tmp_path / arch, **{"model.arch": arch, "model.loss": "harmonicdet",
                                                     "model.options": f"{{detector_kwargs: {{{threshold}: 0.01}}}}"})
    out = train(config, show_progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert {"beta_c", "beta_r"} <= set(records[-1])
    report = evaluate_run(config, checkpoint=out / "model_final.pt", show_progress=False)

    results = json.loads((out / "results.json").read_text())
    assert json.loads((out / "eval.json").read_text())["metrics"] == report["metrics"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(scenes_paths(scenes, "val")["ann_file"])
    assert results and {r["image_id"] for r in results} <= set(gt.getImgIds())  # detections to compare
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval_faster(gt, gt.loadRes(results), "bbox", print_function=lambda *a, **k: None)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    expected = dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), evaluator.stats[:6]))
    assert report["metrics"] == pytest.approx(expected, abs=1e-12)
    assert "overall" in report["consistency"]


def test_training_refuses_to_overwrite_a_run(scenes, tmp_path, tiny_config):
    config = tiny_config(scenes, tmp_path, **{"train.max_iters": 1})
    train(config, show_progress=False)
    with pytest.raises(ValueError, match="pass --resume"):
        train(config, show_progress=False)


def _train_command(config_path: Path, *extra: str):
    return [sys.executable, "-m", "harmonicdet", "train", str(config_path), "--quiet", *extra]


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(scenes, tmp_path, tiny_config):
    # 8 iterations, a checkpoint every 2; 16 images / batch 4 = 4 iterations per epoch, so resume crosses an epoch
    # both runs in subprocesses with one thread each, so float reductions happen in the same order
    settings = {"train.max_iters": 8, "train.checkpoint_every": 2, "train.batch_size": 4}
    straight = tiny_config(scenes, tmp_path / "straight", **settings)
    (tmp_path / "straight.yaml").write_text(yaml.safe_dump(straight))
    subprocess.run(_train_command(tmp_path / "straight.yaml"), env=_env(), check=True)

    interrupted = tiny_config(scenes, tmp_path / "killed", **settings)
    config_path = tmp_path / "killed.yaml"
    config_path.write_text(yaml.safe_dump(interrupted))
    process = subprocess.Popen(_train_command(config_path), env=_env())
    last = tmp_path / "killed" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(last)["iteration"]
    assert 0 < killed_at < 8, "the process should have died between checkpoints"

    subprocess.run(_train_command(config_path, "--resume"), env=_env(), check=True)
    expected = torch.load(tmp_path / "straight" / "model_final.pt")["model"]
    resumed = torch.load(tmp_path / "killed" / "model_final.pt")["model"]
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == list(range(1, 9))


@pytest.fixture(scope="module")
def identical_images(scenes, tmp_path_factory):
    """Four copies of one scene: every DDP shard then sees the same number of foreground locations."""
    out = tmp_path_factory.mktemp("identical")
    source = json.loads(Path(scenes_paths(scenes, "train")["ann_file"]).read_text())
    image = source["images"][0]
    annotations = [a for a in source["annotations"] if a["image_id"] == image["id"]]
    (out / "images").mkdir()
    gt = {"images": [], "annotations": [], "categories": source["categories"]}
    for i in range(4):
        name = f"{i}.png"
        shutil.copy(Path(scenes_paths(scenes, "train")["img_dir"]) / image["file_name"], out / "images" / name)
        gt["images"].append(dict(image, id=i + 1, file_name=name))
        for a in annotations:
            gt["annotations"].append(dict(a, id=len(gt["annotations"]) + 1, image_id=i + 1))
    (out / "instances.json").write_text(json.dumps(gt))
    return {"img_dir": str(out / "images"), "ann_file": str(out / "instances.json")}


@pytest.mark.slow
def test_ddp_two_processes_match_a_single_process_step(identical_images, tmp_path, scenes, tiny_config):
    # one plain SGD step: the weights move by lr * gradient, so equal weights mean equal first-step gradients
    settings = {"train.max_iters": 1, "train.momentum": 0.0, "train.weight_decay": 0.0, "train.grad_clip": "null",
                "train.schedule": "constant", "data.hflip": False, "train.lr": 0.05}
    single = tiny_config(scenes, tmp_path / "single", **settings, **{"train.batch_size": 4})
    single["data"]["train"] = single["data"]["val"] = identical_images
    train(single, show_progress=False)

    ddp = tiny_config(scenes, tmp_path / "ddp", **settings, **{"train.batch_size": 2})
    ddp["data"]["train"] = ddp["data"]["val"] = identical_images
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(ddp))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "harmonicdet", "train", str(config_path), "--quiet"], env=_env(), check=True,
                   timeout=300)

    model = build_model(ddp)
    state = torch.load(tmp_path / "ddp" / "model_final.pt")["model"]
    model.load_state_dict(state)  # the rank-0 checkpoint loads into a plain model
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["iteration"] == 1
    reference = torch.load(tmp_path / "single" / "model_final.pt")["model"]
    torch.manual_seed(single["seed"])  # as train() does before building the model
    initial_model = build_model(single)
    initial = initial_model.state_dict()
    parameters = {name for name, _ in initial_model.named_parameters()}  # BN buffers use per-process batches
    moved = 0
    for key, value in reference.items():
        if key in parameters and not torch.equal(value, initial[key]):
            moved += 1
            expected, got = value - initial[key], state[key] - initial[key]
            # the update is lr * gradient; compare it relative to its own scale
            error = float((got - expected).abs().max())
            assert error <= 2e-3 * float(expected.abs().max()) + 1e-7, (key, error, float(expected.abs().max()))
    assert moved > 10
