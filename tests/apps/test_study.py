"""``harmonicdet study``: expansion, end-to-end tiny study, skipping finished runs, resuming an interrupted one."""

import copy
import gzip
import json
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

from harmonicdet.apps import study as study_module
from harmonicdet.apps.study import load_study, round_figures, run_state, run_study, write_study_report
from harmonicdet.engine.config import dump_config
from harmonicdet.engine.from_config import build_datasets
from harmonicdet.io import read_jsonl

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def arch_config(scenes, tmp_path, tiny_config):
    """The shared tiny config with 64 FPN channels: the study's one arch (the study sets output_dir and max_iters)."""
    return tiny_config(scenes, tmp_path / "unused", **{"model.options": "{fpn_channels: 64}"})


def write_study(tmp_path: Path, config: dict, runs, *, max_iters: int = 2, **extra) -> Path:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    spec = {"name": "tiny", "output_dir": str(tmp_path / "out"), "report_dir": str(tmp_path / "report"),
            "bootstrap": {"samples": 20, "seed": 0}, "set": [f"train.max_iters={max_iters}"],
            "archs": {"fcos": {"config": "tiny.yaml"}}, "runs": runs, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_study_expands_groups_and_names_bad_fields(tmp_path, arch_config):
    path = write_study(tmp_path, arch_config, [
        {"variant": "standard", "arch": "fcos", "seeds": [0, 1]},
        {"variant": "harmonic_iou_g0", "loss": "harmonic_iou", "arch": ["fcos"], "set": ["model.loss_options={gamma: 0}"]},
    ])
    study = load_study(path)
    assert [r.name for r in study.runs] == ["fcos-standard-s0", "fcos-standard-s1", "fcos-harmonic_iou_g0-s0"]
    run = study.runs[2]
    assert run.config["model"]["loss"] == "harmonic_iou" and run.config["model"]["loss_options"] == {"gamma": 0}
    assert run.config["seed"] == 0 and run.config["train"]["max_iters"] == 2
    assert study.runs[1].config["seed"] == 1 and study.runs[1].directory == tmp_path / "out" / "runs" / "fcos-standard-s1"

    for runs, message in [
        ([{"variant": "standard", "arch": "retinanet"}], r"runs\[0\]: arch 'retinanet' is not among archs"),
        ([{"variant": "standard", "arch": "fcos", "sedes": [0]}], r"runs\[0\]: unknown field\(s\) \['sedes'\]"),
        ([{"variant": "standard", "arch": "fcos", "set": ["train.lrr=1"]}], r"runs\[0\] \(fcos, seed 0\).*'lrr'"),
        ([{"variant": "standard", "arch": "fcos"}, {"variant": "standard", "arch": "fcos"}], "more than once"),
        ([{"arch": "fcos"}], "needs 'variant' and 'arch'"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_study(write_study(tmp_path, arch_config, runs))


@pytest.mark.slow
def test_tiny_study_runs_end_to_end_then_skips_finished_runs(tmp_path, arch_config, monkeypatch, capsys):
    # a low score threshold, so the runs have detections and the AP comparison is not of two empty results
    path = write_study(tmp_path, arch_config, [{"variant": "standard", "arch": "fcos"},
                                          {"variant": "harmonicdet", "arch": "fcos"}],
                       max_iters=3, set=["train.max_iters=3", "eval.every=1", "eval.subset=4",
                                         "model.options={fpn_channels: 64, detector_kwargs: {score_thresh: 0.01}}"])
    summary = run_study(path, show_progress=False)

    on_disk = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert set(on_disk) == {"study", "baseline", "bootstrap", "runs", "groups", "plots", "commits"}
    for name in ("fcos-standard-s0", "fcos-harmonicdet-s0"):
        assert json.loads((tmp_path / "out" / "runs" / name / "results.json").read_text()), name
    assert sorted(n for names in on_disk["commits"].values() for n in names) == \
        ["fcos-harmonicdet-s0", "fcos-standard-s0"]
    runs = {r["name"]: r for r in on_disk["runs"]}
    assert set(runs) == {"fcos-standard-s0", "fcos-harmonicdet-s0"}
    for name, record in runs.items():
        evaluated = json.loads((tmp_path / "out" / "runs" / name / "eval.json").read_text())
        assert record["metrics"] == evaluated["metrics"]
        assert record["iterations"] == 3 and record["train_s"] > 0
        assert [h["iteration"] for h in record["history"]] == [1, 2, 3]
    assert {"beta_c", "reversed_frac"} <= set(runs["fcos-harmonicdet-s0"]["late_stats"])
    groups = {g["variant"]: g for g in on_disk["groups"]}
    standard_curve = groups["standard"]["convergence"]
    assert standard_curve["iterations"] == [1, 2, 3]
    assert standard_curve["target"] == runs["fcos-standard-s0"]["history"][-1]["AP"]
    assert groups["standard"]["delta"] is None and groups["standard"]["bootstrap"] is None
    delta = groups["harmonicdet"]["delta"]["AP"]
    expected = runs["fcos-harmonicdet-s0"]["metrics"]["AP"] - runs["fcos-standard-s0"]["metrics"]["AP"]
    assert delta["mean"] == pytest.approx(expected) and delta["std"] is None and delta["seeds"] == [0]
    # the bootstrap's full-set difference is pycocotools' AP difference (faster-coco-eval gives the same AP)
    assert groups["harmonicdet"]["bootstrap"]["AP"]["delta"] == pytest.approx(expected, abs=1e-9)
    assert set(groups["harmonicdet"]["bootstrap"]) == {"AP", "AP50", "AP75"}
    assert all(Path(p).is_file() for p in on_disk["plots"]) and len(on_disk["plots"]) == 4
    markdown = (tmp_path / "report" / "summary.md").read_text()
    assert "| fcos | harmonicdet | 1 |" in markdown and "## Convergence" in markdown

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained or evaluated again")

    monkeypatch.setattr(study_module, "train", refuse)
    monkeypatch.setattr(study_module, "evaluate_run", refuse)
    capsys.readouterr()
    again = run_study(path, show_progress=False)
    assert capsys.readouterr().err.count("finished, skipped") == 2
    assert again["runs"] == summary["runs"]

    # a later sitting on another machine has the records (in git) but not the run folders
    record = tmp_path / "report" / "runs" / "fcos-harmonicdet-s0"
    assert sorted(p.name for p in record.iterdir()) == sorted(
        ["config.yaml", "provenance.json", "study_timing.json", "eval_history.jsonl", "metrics.jsonl.gz",
         "results.json.gz", "eval.json"])
    assert runs["fcos-harmonicdet-s0"]["dir"] == str(record)
    with gzip.open(record / "results.json.gz", "rt") as f:
        assert json.load(f) == json.loads((tmp_path / "out" / "runs" / "fcos-harmonicdet-s0" / "results.json").read_text())
    # the per-batch log is recorded to 5 significant figures; the run folder keeps it whole
    logged = read_jsonl(tmp_path / "out" / "runs" / "fcos-harmonicdet-s0" / "metrics.jsonl")
    recorded = read_jsonl(record / "metrics.jsonl")
    assert len(recorded) == len(logged) > 0 and recorded[-1].keys() == logged[-1].keys()
    assert recorded[-1]["loss"] == float(f"{logged[-1]['loss']:.5g}") != logged[-1]["loss"]
    # a run evaluated without its record (e.g. by an older version) is recorded by the report
    shutil.rmtree(record)
    assert run_state(load_study(path).runs[1]) == "evaluated"
    assert run_study(path, report_only=True, show_progress=False)["runs"] == summary["runs"]
    shutil.rmtree(tmp_path / "out")
    assert [run_state(run) for run in load_study(path).runs] == ["done", "done"]
    capsys.readouterr()
    later = run_study(path, show_progress=False)
    assert capsys.readouterr().err.count("finished, skipped") == 2
    assert later["groups"] == summary["groups"] and later["runs"] == summary["runs"]


def test_round_figures_rounds_every_float_and_keeps_the_rest():
    value = {"loss": 3.0163655281066895, "num_fg": 578.0, "iteration": 25000, "ok": True, "name": "fcos",
             "stats": [0.00012345678, {"beta_r": 0.8873794674873352}], "none": None}
    assert round_figures(value, 4) == {"loss": 3.016, "num_fg": 578.0, "iteration": 25000, "ok": True, "name": "fcos",
                                       "stats": [0.0001235, {"beta_r": 0.8874}], "none": None}


def test_the_shipped_study_expands_to_valid_runs():
    study = load_study(ROOT / "configs" / "studies" / "scenes.yaml")
    names = [run.name for run in study.runs]
    assert len(names) == 28 and "fcos-qfl-s0" in names and "faster_rcnn-qfl-s0" not in names
    control = next(run for run in study.runs if run.name == "faster_rcnn-standard_posweight_c1.2-s0")
    assert control.config["model"]["loss_options"] == {"positive_weight": 1.2}
    assert sum(name.startswith("fcos-harmonicdet-s") for name in names) == 3
    fcos = next(run for run in study.runs if run.arch == "fcos")
    assert fcos.config["model"]["options"]["fcos_anchor_sizes"] == [2, 4, 8, 16, 32]
    assert fcos.config["data"]["scenes"]["val"] == 1000


def test_the_converged_studies_expand_to_valid_runs():
    study = load_study(ROOT / "configs" / "studies" / "scenes_converged.yaml")
    runs = {run.name: run for run in study.runs}
    assert len(runs) == 27 and sum(n.startswith("faster_rcnn-harmonicdet_beta_r-s") for n in runs) == 3
    assert runs["fcos-harmonicdet_beta_r-s2"].config["model"]["loss_options"] == {"detach_factors": "beta_r"}
    assert runs["fcos-standard_posweight-s0"].config["model"]["loss_options"] == {"positive_weight": 1.9}
    assert all(r.config["train"]["max_iters"] == 2000 and r.config["eval"]["every"] == 250 for r in runs.values())
    cpu = {run.name: run for run in load_study(ROOT / "configs" / "studies" / "scenes_converged_cpu.yaml").runs}
    assert len(cpu) == 40 and all(r.config["train"]["device"] == "cpu" for r in cpu.values())
    ablation = {name: run for name, run in cpu.items() if name not in runs}  # the CPU half's ablation runs
    assert sorted(ablation) == sorted(["fcos-harmonic-s0", "fcos-harmonic-s1", "fcos-harmonic-s2",
                                       "fcos-harmonic_iou-s0", "fcos-harmonic_iou-s1", "fcos-harmonic_iou-s2",
                                       "fcos-harmonic_iou_g0-s0", "faster_rcnn-harmonic-s0",
                                       "faster_rcnn-harmonic-s1", "faster_rcnn-harmonic-s2",
                                       "faster_rcnn-harmonic_iou-s0", "faster_rcnn-harmonic_iou-s1",
                                       "faster_rcnn-harmonic_iou-s2"])
    assert ablation["fcos-harmonic_iou_g0-s0"].config["model"]["loss_options"] == {"gamma": 0}
    assert cpu["faster_rcnn-standard_posweight-s2"].config["model"]["loss_options"] == {"positive_weight": 1.72}
    # the CPU half differs from the GPU study only in the device, the loader workers, where it is written and
    # Faster R-CNN's control weight c (measured by the CPU half's own harmonicdet run)
    for name, run in ((name, run) for name, run in cpu.items() if name not in ablation):
        differing = {(section, key) for section in ("model", "data", "train", "eval")
                     for key in run.config[section] if run.config[section][key] != runs[name].config[section][key]}
        own_c = {("model", "loss_options")} if name.startswith("faster_rcnn-standard_posweight") else set()
        assert differing == {("train", "device"), ("data", "num_workers")} | own_c, name


@pytest.mark.parametrize("folder", ["directory", "record"])
def test_a_run_made_with_other_settings_is_refused(tmp_path, arch_config, folder):
    path = write_study(tmp_path, arch_config, [{"variant": "standard", "arch": "fcos"}])
    run = load_study(path).runs[0]
    getattr(run, folder).mkdir(parents=True)
    (getattr(run, folder) / "config.yaml").write_text("seed: 5\n")
    with pytest.raises(ValueError, match="run fcos-standard-s0: .*other settings"):
        run_state(run)


def test_a_run_on_generated_scenes_is_not_refused_for_its_resolved_data_paths(tmp_path, arch_config, scenes):
    """The trainer writes ``config.yaml`` with the splits resolved from ``data.scenes``; the study asks with them
    empty. That is the same run; another scenes folder is not."""
    config = {**arch_config, "data": {**arch_config["data"], "train": {}, "val": {},
                                      "scenes": {"out": str(scenes), "train": 16, "val": 8, "seed": 0}}}
    path = write_study(tmp_path, config, [{"variant": "standard", "arch": "fcos"}])
    run = load_study(path).runs[0]
    resolved = copy.deepcopy(run.config)
    build_datasets(resolved, need_val=False)  # resolves the splits as training does
    assert resolved["data"]["train"] and not run.config["data"]["train"]
    run.directory.mkdir(parents=True)
    (run.directory / "config.yaml").write_text(dump_config(resolved))
    assert run_state(run) == "new"
    resolved["data"]["train"] = {**resolved["data"]["train"], "img_dir": str(tmp_path / "elsewhere")}
    (run.directory / "config.yaml").write_text(dump_config(resolved))
    with pytest.raises(ValueError, match="run fcos-standard-s0: .*other settings"):
        run_state(run)


@pytest.mark.slow
def test_an_interrupted_run_resumes_instead_of_restarting(tmp_path, arch_config):
    path = write_study(tmp_path, arch_config, [{"variant": "standard", "arch": "fcos"}], max_iters=8,
                       set=["train.max_iters=8", "train.checkpoint_every=2"])
    run_dir = tmp_path / "out" / "runs" / "fcos-standard-s0"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    process = subprocess.Popen([sys.executable, "-m", "harmonicdet", "study", str(path), "--quiet"], env=env)
    deadline = time.monotonic() + 120
    while not (run_dir / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run_dir / "last.pt").exists() and not (run_dir / "model_final.pt").exists()
    before = (run_dir / "metrics.jsonl").read_text().splitlines()
    killed_seconds = torch.load(run_dir / "last.pt", weights_only=False)["train_seconds"]
    run = load_study(path).runs[0]
    assert run_state(run) == "interrupted"

    completed = subprocess.run([sys.executable, "-m", "harmonicdet", "study", str(path), "--quiet"], env=env,
                               capture_output=True, text=True, check=True)
    assert "1/1 fcos-standard-s0: resuming" in completed.stderr
    after = (run_dir / "metrics.jsonl").read_text().splitlines()
    iterations = [json.loads(line)["iteration"] for line in after]
    assert iterations == list(range(1, 9))
    kept = [line for line in before if json.loads(line)["iteration"] <= 2]
    assert after[:len(kept)] == kept  # the records before the checkpoint are the first process's, not rewritten
    assert run_state(run) == "done"
    # the killed sitting's training time up to its checkpoint counts
    train_s = json.loads((run.record / "study_timing.json").read_text())["train_s"]
    assert train_s == torch.load(run_dir / "last.pt", weights_only=False)["train_seconds"] > killed_seconds > 0


def test_a_report_without_records_keeps_the_summary_it_finds(tmp_path):
    """A study kept as its summary alone (no run records) is refused, not overwritten by an empty report."""
    study = load_study(ROOT / "configs" / "studies" / "scenes.yaml")
    report = tmp_path / "report"
    report.mkdir()
    (report / "summary.json").write_text('{"runs": ["kept"]}')
    study.report_dir = report
    for run in study.runs:
        run.record = report / "runs" / run.name
    with pytest.raises(ValueError, match="nothing to report"):
        write_study_report(study)
    assert (report / "summary.json").read_text() == '{"runs": ["kept"]}'


def test_lanes_split_only_the_unfinished_runs_of_only_round_robin(tmp_path, arch_config, monkeypatch):
    """`--lanes 2 --only fcos-harmonic`: the lanes' processes get the matching runs not yet done, every other one
    each, with one torch thread per lane on a 2-core machine; a run outside --only is never handed out."""
    path = write_study(tmp_path, arch_config, [{"variant": "standard", "arch": "fcos", "seeds": [0]},
                                               {"variant": "harmonic", "arch": "fcos", "seeds": [0, 1, 2]},
                                               {"variant": "harmonic_iou", "arch": "fcos", "seeds": [0]}])
    launched = []

    class Finished:
        def __init__(self, command, stdout, stderr, env):
            launched.append((command[command.index("--only") + 1:], env["OMP_NUM_THREADS"]))

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(study_module.subprocess, "Popen", Finished)
    monkeypatch.setattr(study_module.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    states = study_module.run_lanes(path, 2, only=["fcos-harmonic-"])
    assert launched == [(["fcos-harmonic-s0", "fcos-harmonic-s2"], "1"), (["fcos-harmonic-s1"], "1")]
    assert set(states) == {"fcos-standard-s0", "fcos-harmonic-s0", "fcos-harmonic-s1", "fcos-harmonic-s2",
                           "fcos-harmonic_iou-s0"} and set(states.values()) == {"new"}
    with pytest.raises(ValueError, match=r"--only \['retinanet-'\] matches none of the runs"):
        study_module.run_lanes(path, 2, only=["retinanet-"])


def test_status_reads_states_iterations_and_the_time_left_without_writing(tmp_path, arch_config, capsys):
    """A recorded run (16 s for 8 iterations), one stopped at its iteration-3 checkpoint and one not started:
    13 iterations left at 2 s each; nothing is written."""
    from harmonicdet.cli import main

    path = write_study(tmp_path, arch_config, [{"variant": "standard", "arch": "fcos", "seeds": [0, 1, 2]}],
                       max_iters=8)
    recorded, stopped, new = load_study(path).runs
    for folder, run in ((recorded.record, recorded), (stopped.directory, stopped)):
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(dump_config(run.config))
    (recorded.record / "eval.json").write_text("{}")
    (recorded.record / "study_timing.json").write_text('{"train_s": 16.0}')
    torch.save({"model": {}, "iteration": 3}, stopped.directory / "last.pt")
    files = sorted(p for p in tmp_path.rglob("*"))

    progress = study_module.study_progress(load_study(path).runs)
    assert [(p.state, p.iteration, p.max_iters, p.seconds_per_iteration) for p in progress] == [
        ("done", 8, 8, 2.0), ("interrupted", 3, 8, None), ("new", 0, 8, None)]
    assert study_module.seconds_left(progress) == {"fcos": 26.0}
    assert study_module.seconds_left(progress[1:]) == {"fcos": None}  # no recorded run to time it by

    assert main(["study", str(path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "| fcos-standard-s1 | started, resumable | 3/8 |  |" in out and "| fcos-standard-s0 | recorded | 8/8 | 2.00 |" in out
    assert "1 of 3 runs recorded" in out and "fcos: 2 runs to finish, 13 iterations to train: 0.0 h in one lane" in out
    assert sorted(p for p in tmp_path.rglob("*")) == files
    assert main(["study", str(path), "--status", "--lanes", "2"]) == 2
    assert "--status trains and reports nothing" in capsys.readouterr().err
