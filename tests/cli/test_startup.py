"""The ``harmonicdet`` command starts without importing heavy modules (the time is measured in
benchmarks/bench_cli_startup.py), and a refused command leaves the working directory as it was."""

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "numpy", "matplotlib", "pydantic", "ultralytics", "transformers", "PIL", "scipy",
         "yaml")


def test_building_the_parser_imports_nothing_heavy():
    code = ("import sys, json\nfrom harmonicdet.cli import build_parser\nbuild_parser()\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "harmonicdet", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "demo", "study", "predict", "figures", "consistency", "draw", "data", "yolo-study",
                    "detr-study"):
        assert f"    {command}" in done.stdout, command


def _defaults(*argv):
    from harmonicdet.cli import build_parser

    return vars(build_parser().parse_args(list(argv)))


def test_parser_defaults_are_the_library_constants():
    """The defaults written out in the CLI modules (so that --help imports no numpy or torch) are the library's."""
    from harmonicdet.analysis import consistency
    from harmonicdet.analysis.figures import DEFAULT_GAMMAS

    assert _defaults("figures")["gammas"] == list(DEFAULT_GAMMAS)
    expected = {"score_hi": consistency.SCORE_HI, "score_lo": consistency.SCORE_LO, "iou_low": consistency.IOU_LOW,
                "iou_high": consistency.IOU_HIGH}
    for argv in (("draw", "--gt", "g", "--dt", "d", "--images", "i", "--out", "o"), ("consistency", "--gt", "g",
                                                                                       "--dt", "d")):
        defaults = _defaults(*argv)
        assert {k: defaults[k] for k in expected} == expected, argv[0]


def test_a_refused_yolo_study_writes_nothing(tmp_path):
    """A misspelled variant is refused in one line before anything exists: no run folder, no data, no settings
    folder in the working directory."""
    pytest.importorskip("ultralytics")
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_") and k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)  # Ultralytics' settings go to its per-user folder, here under this test's home
    done = subprocess.run([sys.executable, "-m", "harmonicdet", "yolo-study", "--variants", "harmonik"], cwd=work,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "harmonik" in done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if line.startswith("harmonicdet")] == lines[-1:]
    assert list(work.iterdir()) == []


def test_without_transformers_the_command_starts_and_detr_study_says_to_install_the_extra(tmp_path):
    """With transformers unimportable, `--help` lists every command and another command's help works; `detr-study`
    exits 2 with one line naming the extra, and writes nothing."""
    code = ("import sys\nsys.modules['transformers'] = None  # `import transformers` raises ImportError\n"
            "from harmonicdet.cli import main\nsys.exit(main(sys.argv[1:]))\n")

    def harmonicdet(*argv):
        return subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True)

    listed = harmonicdet("--help")
    assert listed.returncode == 0 and "    detr-study" in listed.stdout and "    yolo-study" in listed.stdout
    assert harmonicdet("consistency", "--help").returncode == 0
    done = harmonicdet("detr-study", "--out", "out", "--runs", "runs", "--data", "data")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        ("harmonicdet detr-study: error: needs the transformers extra: pip install -e '.[transformers]' in a "
         "checkout, or 'harmonicdet[transformers]' (import of transformers halted; None in sys.modules)")]
    assert list(tmp_path.iterdir()) == []
