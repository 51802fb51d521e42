"""Periodic evaluation during training (``eval.every``) and each run's provenance."""

import json
import shutil
import time

import pytest
import torch

from harmonicdet.engine import train as train_module
from harmonicdet.engine.train import train


def _history(out):
    return [json.loads(line) for line in (out / "eval_history.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_periodic_evaluation_writes_every_kth_iteration_and_the_last(scenes, tmp_path, tiny_config):
    config = tiny_config(scenes, tmp_path / "run", **{"train.max_iters": 5, "eval.every": 2, "eval.subset": 3,
                                                       "model.options": "{detector_kwargs: {score_thresh: 0.01}}"})
    out = train(config, show_progress=False)
    history = _history(out)
    assert [r["iteration"] for r in history] == [2, 4, 5]
    assert all(r["images"] == 3 and 0 <= r["AP"] <= 1 and r["seconds"] > 0 for r in history)
    assert all(set(r) >= {"AP", "AP50", "AP75", "spearman"} for r in history)
    assert any(r["spearman"] is not None for r in history), "some detections above 0.01 must exist"
    sittings = json.loads((out / "provenance.json").read_text())["sittings"]
    assert len(sittings) == 1 and sittings[0]["start_iteration"] == 0 and sittings[0]["version"]

    # the forked RNG leaves training itself unchanged: the same weights as a run without evaluation
    plain = train(tiny_config(scenes, tmp_path / "plain", **{"train.max_iters": 5,
                                                              "model.options": "{detector_kwargs: {score_thresh: 0.01}}"}),
                  show_progress=False)
    expected, got = torch.load(plain / "model_final.pt")["model"], torch.load(out / "model_final.pt")["model"]
    assert all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.slow
def test_a_resumed_run_neither_repeats_nor_loses_an_evaluation(scenes, tmp_path, tiny_config, monkeypatch):
    # checkpoints at 2 and 4, evaluations at 1..4; a copy of the checkpoint of iteration 2 stands for a run
    # killed after evaluating 3 but before its next checkpoint
    config = tiny_config(scenes, tmp_path / "run", **{"train.max_iters": 4, "train.checkpoint_every": 2,
                                                       "eval.every": 1, "eval.subset": 2})
    saved = train_module.save_checkpoint

    def keep_iteration_2(path, **kwargs):
        saved(path, **kwargs)
        if kwargs["iteration"] == 2:
            shutil.copy(path, path.with_name("at2.pt"))

    monkeypatch.setattr(train_module, "save_checkpoint", keep_iteration_2)
    out = train(config, show_progress=False)
    first = _history(out)
    assert [r["iteration"] for r in first] == [1, 2, 3, 4]
    # training time carries over from the checkpoint: 1000 s stands for the killed sitting's
    checkpoint = torch.load(out / "at2.pt", weights_only=False)
    assert 0 < checkpoint["train_seconds"] < torch.load(out / "last.pt", weights_only=False)["train_seconds"]
    torch.save({**checkpoint, "train_seconds": 1000.0}, out / "last.pt")
    started = time.perf_counter()
    train(config, resume=True, show_progress=False)
    sitting = time.perf_counter() - started
    assert 1000.0 < torch.load(out / "last.pt", weights_only=False)["train_seconds"] < 1000.0 + sitting
    second = _history(out)
    assert [r["iteration"] for r in second] == [1, 2, 3, 4]
    # the re-evaluated iterations give the same metrics: same weights, same subset
    assert [r["AP"] for r in second] == [r["AP"] for r in first]
    sittings = json.loads((out / "provenance.json").read_text())["sittings"]
    assert [s["start_iteration"] for s in sittings] == [0, 2]
