"""``harmonicdet detr-study`` (harmonicdet.apps.detr_study): the parser's choices are the integration's, the
variants' names and options, and an end-to-end study on the test scenes: interrupted, resumed, recorded, reported,
skipped when finished, reported again from its records alone, refused with other settings."""

import json

import pytest
import yaml

pytest.importorskip("transformers")  # the `transformers` extra; CI installs it (scripts/setup.sh --test)

import torch  # noqa: E402

from harmonicdet.apps import detr_study  # noqa: E402
from harmonicdet.apps.detr_study import variant  # noqa: E402
from harmonicdet.cli import build_parser, main  # noqa: E402
from harmonicdet.integrations.transformers import ARCHS, DETR_PRESETS  # noqa: E402
from harmonicdet.integrations.transformers.models import SIZES  # noqa: E402
from harmonicdet.io import read_jsonl  # noqa: E402
from harmonicdet.losses import DETACH_MODES  # noqa: E402
from harmonicdet.losses.options import BETA_C_MODES  # noqa: E402


def test_the_parsers_choices_are_the_integrations():
    """cli/detr.py writes its choices out (so that --help imports no transformers): they must stay the library's."""
    subcommands = next(a for a in build_parser()._actions if a.dest == "command").choices
    choices = {a.dest: tuple(a.choices) for a in subcommands["detr-study"]._actions if a.choices}
    assert choices == {"arch": tuple(ARCHS), "size": tuple(SIZES), "variants": DETR_PRESETS,
                       "detach_factors": tuple(str(mode) for mode in DETACH_MODES), "beta_c_mode": BETA_C_MODES}


def test_variant_names_and_options():
    assert variant("standard", "beta_c", "prob") == ("standard", None)  # the model's own loss: nothing to detach
    name, options = variant("harmonicdet", "False", "loss")
    assert name == "harmonicdet" and options.detach_factors is False and options.alpha == 1.5
    assert variant("harmonicdet", "True", "loss")[0] == "harmonicdet_detached"
    assert variant("harmonicdet", "True", "loss")[1].detach_factors is True
    name, options = variant("harmonic", "beta_c", "prob")
    assert name == "harmonic_beta_c_prob" and (options.detach_factors, options.beta_c_mode) == ("beta_c", "prob")
    assert variant("harmonic_iou", "beta_r", "loss")[0] == "harmonic_iou_beta_r"


@pytest.mark.slow
def test_detr_study_is_interrupted_resumes_records_and_reports(scenes, tmp_path, no_network, monkeypatch, capsys):
    """Stock and harmonicdet with beta_c detached, one seed, three iterations each. Ctrl-C during the stock run's
    second evaluation (exit 130) leaves it at its checkpoint of iteration 1; the next sitting resumes it from there
    (its logs cut back), trains the other, records both and reports; a third sitting skips both; other settings
    are refused in one line naming the run."""
    from transformers import RTDetrForObjectDetection

    out, runs = tmp_path / "report", tmp_path / "runs"

    def argv(iterations=3):
        return ["detr-study", "--out", str(out), "--runs", str(runs), "--data", str(scenes), "--train-images", "16",
                "--val-images", "8", "--size", "tiny", "--seeds", "0", "--iterations", str(iterations), "--batch",
                "4", "--eval-every", "1", "--eval-images", "4", "--bootstrap", "10", "--variants", "standard",
                "harmonicdet", "--detach-factors", "beta_c"]

    evaluate, evaluated = detr_study.evaluate, []

    def interrupted(model, dataset, batch=50):
        evaluated.append(len(dataset))
        if len(evaluated) == 2:
            raise KeyboardInterrupt
        return evaluate(model, dataset, batch)

    monkeypatch.setattr(detr_study, "evaluate", interrupted)
    assert main(argv()) == 130
    standard, harmonic = runs / "rt_detr_tiny-standard-s0", runs / "rt_detr_tiny-harmonicdet_beta_c-s0"
    assert evaluated == [4, 4]
    assert torch.load(standard / "last.pt", weights_only=False)["iteration"] == 1
    assert [r["iteration"] for r in read_jsonl(standard / "metrics.jsonl")] == [1, 2]
    assert not harmonic.exists() and not (out / "runs").exists()

    monkeypatch.setattr(detr_study, "evaluate", evaluate)
    capsys.readouterr()
    assert main(argv()) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[:2] == ["[detr-study] rt_detr_tiny-standard-s0: resuming",
                        "[detr-study] rt_detr_tiny-standard-s0: from iteration 1"]
    assert [r["iteration"] for r in read_jsonl(standard / "metrics.jsonl")] == [1, 2, 3]
    assert [r["iteration"] for r in read_jsonl(standard / "eval_history.jsonl")] == [1, 2, 3]
    sittings = json.loads((standard / "provenance.json").read_text())["sittings"]
    assert [s["start_iteration"] for s in sittings] == [0, 1]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"] == "report"
    assert sorted(r["variant"] for r in summary["runs"]) == ["harmonicdet_beta_c", "standard"]
    assert {r["arch"] for r in summary["runs"]} == {"rt_detr_tiny"}
    run = next(r for r in summary["runs"] if r["variant"] == "harmonicdet_beta_c")
    assert run["iterations"] == 3 and 0 < run["late_stats"]["beta_c"] <= 1
    assert [h["iteration"] for h in run["history"]] == [1, 2, 3]
    group = next(g for g in summary["groups"] if g["variant"] == "harmonicdet_beta_c")
    assert group["delta"]["AP"]["seeds"] == [0] and group["bootstrap"] is not None

    record = out / "runs" / harmonic.name  # the evidence without weights, what the report read
    assert sorted(p.name for p in record.iterdir()) == ["config.yaml", "eval.json", "eval_history.jsonl",
                                                         "metrics.jsonl.gz", "provenance.json", "results.json.gz",
                                                         "study_timing.json"]
    assert run["dir"] == str(record)
    assert yaml.safe_load((record / "config.yaml").read_text()) == {
        "arch": "rt_detr", "size": "tiny", "variant": "harmonicdet_beta_c", "seed": 0, "iterations": 3, "batch": 4,
        "lr": 2e-4, "eval_every": 1, "eval_images": 4, "train_images": 16, "val_images": 8, "device": "cpu"}
    assert json.loads((record / "eval.json").read_text())["checkpoint"] == str(harmonic / "model")
    assert isinstance(RTDetrForObjectDetection.from_pretrained(harmonic / "model"), RTDetrForObjectDetection)

    assert main(argv()) == 0  # everything recorded: nothing trains
    assert capsys.readouterr().out.splitlines()[:2] == [f"[detr-study] {name}: finished, skipped"
                                                        for name in (standard.name, harmonic.name)]
    # --report-only reads the records alone: other (default) settings, no weights folder, the same report
    (out / "summary.json").unlink()
    assert main(["detr-study", "--out", str(out), "--runs", str(tmp_path / "elsewhere"), "--data", str(scenes),
                 "--bootstrap", "10", "--report-only"]) == 0
    assert json.loads((out / "summary.json").read_text()) == summary
    assert not (tmp_path / "elsewhere").exists()
    assert main(["detr-study", "--out", str(tmp_path / "empty"), "--runs", str(runs), "--report-only"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--out {tmp_path / 'empty'} holds no recorded run to report")
    assert main(argv(iterations=4)) == 2  # a longer schedule is another run, not this one continued
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("harmonicdet")]
    assert err == [(f"harmonicdet detr-study: error: run rt_detr_tiny-standard-s0: {out / 'runs' / standard.name}/"
                    f"config.yaml was written with other settings than asked for now; remove "
                    f"{out / 'runs' / standard.name} to rerun it, or ask for the settings it was made with")]
    assert no_network == []
