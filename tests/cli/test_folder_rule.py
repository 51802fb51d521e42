"""The folder rule (harmonicdet.output_folder) on every command that writes a folder: a new or empty folder, or one
the command made (its marker), else one line naming the folder and what is in it, and nothing of the user's touched."""

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from harmonicdet.cli import main
from harmonicdet.data import scenes_paths
from harmonicdet.engine.config import shipped_config
from harmonicdet.output_folder import MARKER, OutputFolder


def snapshot(folder: Path):
    """Every file under ``folder`` with its bytes, and the folder's siblings (a staging folder would be one)."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return files, sorted(p.name for p in folder.parent.iterdir())


def user_folder(tmp_path, *names):
    """``tmp_path/out`` holding the user's own files ``names`` (a COCO-like layout)."""
    out = tmp_path / "out"
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"the user's own " + name.encode())
    return out


def voc_root(tmp_path):
    """A one-image VOC folder."""
    root = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    Image.new("RGB", (64, 48), (90, 90, 90)).save(root / "JPEGImages" / "a.jpg")
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><size><width>64</width><height>48</height></size><object><name>Tree</name><difficult>0"
        "</difficult><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object>"
        "</annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("a\n")
    return root


def study_file(tmp_path, out):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(out), "archs": {"fcos": {"config": "scenes_fcos_r18.yaml"}},
                                    "runs": [{"variant": "standard", "arch": ["fcos"], "seeds": [0]}]}))
    return path


def results_file(tmp_path, scenes):
    gt = json.loads(Path(scenes_paths(scenes, "val")["ann_file"]).read_text())
    ann = gt["annotations"][0]
    path = tmp_path / "dt.json"
    path.write_text(json.dumps([{"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
                                 "score": 0.9}]))
    return path


# every command that writes a folder, pointed at a folder holding the user's files
COMMANDS = {
    "data scenes": lambda t, s, out: ["data", "scenes", "--out", out, "--train", 2, "--val", 1],
    "data yolo": lambda t, s, out: ["data", "yolo", "--out", out, "--scenes", s],
    "data tiles": lambda t, s, out: ["data", "tiles", "--voc", voc_root(t), "--classes", "Tree", "--size", 32,
                                     "--overlap", 0, "--val-fraction", 0.5, "--out", out],
    "predict": lambda t, s, out: ["predict", shipped_config("scenes_fcos_r18.yaml"), "--checkpoint", t / "none.pt",
                                  "--images", Path(scenes_paths(s, "val")["img_dir"]) / "000001.png", "--out", out],
    "train": lambda t, s, out: ["train", shipped_config("scenes_fcos_r18.yaml"), "--set",
                                f"output_dir={json.dumps(str(out))}", "--set", "train.device=cpu"],
    "eval": lambda t, s, out: ["eval", shipped_config("scenes_fcos_r18.yaml"), "--checkpoint", t / "run" / "m.pt",
                               "--out", out],
    "study": lambda t, s, out: ["study", study_file(t, out)],
    "demo": lambda t, s, out: ["demo", "--out", out, "--budget-minutes", 2],
    "draw": lambda t, s, out: ["draw", "--gt", scenes_paths(s, "val")["ann_file"], "--dt", results_file(t, s),
                               "--images", scenes_paths(s, "val")["img_dir"], "--out", out],
    "consistency": lambda t, s, out: ["consistency", "--gt", scenes_paths(s, "val")["ann_file"], "--dt",
                                      results_file(t, s), "--out", out],
    "figures": lambda t, s, out: ["figures", "--out", out],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_writing_command_refuses_a_folder_it_did_not_make(scenes, tmp_path, refused, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    out = user_folder(tmp_path, "annotations/instances_train.json", "train/000001.png")
    argv = COMMANDS[command](tmp_path, scenes, out)
    before = snapshot(out)
    line = refused(*argv)
    assert str(out) in line and "did not make (annotations/, train/)" in line, line
    assert snapshot(out) == before  # not a byte of the user's changed, no folder written beside


def test_yolo_study_refuses_foreign_out_and_runs_before_writing_data(tmp_path, refused):
    pytest.importorskip("harmonicdet.integrations.ultralytics")  # first: it sets Ultralytics' offline variables
    for flag in ("--out", "--runs"):
        out = user_folder(tmp_path / flag.strip("-"), "notes.txt")
        argv = ["yolo-study", "--out", tmp_path / "report", "--runs", tmp_path / "runs", "--data", tmp_path / "data"]
        argv[argv.index(flag) + 1] = out
        line = refused(*argv)
        assert f"{flag} {out} holds files `harmonicdet yolo-study` did not make (notes.txt)" in line
        assert not (tmp_path / "data").exists()


def test_detr_study_refuses_foreign_out_and_runs_before_writing_data(tmp_path, refused):
    pytest.importorskip("transformers")
    for flag in ("--out", "--runs"):
        out = user_folder(tmp_path / flag.strip("-"), "notes.txt")
        argv = ["detr-study", "--out", tmp_path / "report", "--runs", tmp_path / "runs", "--data", tmp_path / "data"]
        argv[argv.index(flag) + 1] = out
        line = refused(*argv)
        assert line == (f"harmonicdet detr-study: error: {flag} {out} holds files `harmonicdet detr-study` did not "
                        "make (notes.txt); choose a new or empty folder")
        other = argv[argv.index("--runs" if flag == "--out" else "--out") + 1]
        assert snapshot(out)[0] == {"notes.txt": b"the user's own notes.txt"}
        assert not other.exists() and not (tmp_path / "data").exists()


def test_yolo_study_folders_made_before_markers_are_its_own(tmp_path):
    """The record layout (OUT/runs/<run>/...) and Ultralytics' run folders (RUNS/<run>, RUNS/<run>-val) of a study
    made before markers are accepted as the study's (a later sitting resumes them), a foreign one is not."""
    from harmonicdet.apps.yolo_study import study_folders

    out, runs = tmp_path / "studies" / "yolo", tmp_path / "runs" / "yolo"
    for folder in (out / "runs" / "yolov8n-standard-s0", out / "runs" / "yolov8n-harmonicdet_beta_r-s2",
                   runs / "yolov8n-harmonicdet-s0" / "weights", runs / "yolov8n-harmonicdet-s0-val"):
        folder.mkdir(parents=True)
    (out / "runs" / "yolov8n-standard-s0" / "factors.json").write_text("{}")  # a record cut short before config.yaml
    (out / "first_measurements").mkdir()  # a folder of the user's: left alone
    report, runs_folder = study_folders(out, runs)
    assert report.made_before and report.created == {"runs"}
    assert runs_folder.created == {"yolov8n-harmonicdet-s0", "yolov8n-harmonicdet-s0-val"}
    (runs / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"--runs .* holds files `harmonicdet yolo-study` did not make \(notes.txt, "):
        study_folders(out, runs)


def test_train_refuses_a_finished_run_without_last_pt_and_keeps_it(scenes, tmp_path, refused, tiny_config):
    run = tmp_path / "run"
    run.mkdir()
    for name, content in (("config.yaml", b"seed: 0\n"), ("metrics.jsonl", b'{"iteration": 1}\n'),
                          ("model_final.pt", b"weights")):
        (run / name).write_bytes(content)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(dict(tiny_config(scenes, run))))
    before = snapshot(run)
    line = refused("train", config, "--quiet")
    assert line == (f"harmonicdet train: error: {run} already holds a finished run (model_final.pt); choose another "
                    "output_dir (or move that run away to train it again)")
    assert snapshot(run) == before


def test_a_refused_command_leaves_a_folder_of_another_command(tmp_path, refused):
    """A folder one command made is not another's: `figures` into a `consistency` folder is refused by name."""
    out = tmp_path / "out"
    OutputFolder(out, "harmonicdet consistency").mark()
    line = refused("figures", "--out", out)
    assert line == (f"harmonicdet figures: error: --out {out} was made by `harmonicdet consistency`, not "
                    "`harmonicdet figures`; choose another --out")


def test_data_scenes_reuses_same_settings_and_replaces_its_own_folder_on_others(tmp_path, refused):
    out = tmp_path / "scenes"
    assert main(["data", "scenes", "--out", str(out), "--train", "2", "--val", "1", "--seed", "0"]) == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["command"] == "harmonicdet data scenes" and marker["settings"]["seed"] == 0
    assert set(marker["created"]) == {"annotations/instances_train.json", "annotations/instances_val.json",
                                      "train/000001.png", "train/000002.png", "val/000001.png"}
    stamp = (out / "train" / "000001.png").stat().st_mtime_ns
    assert main(["data", "scenes", "--out", str(out), "--train", "2", "--val", "1", "--seed", "0"]) == 0
    assert (out / "train" / "000001.png").stat().st_mtime_ns == stamp  # same settings: reused as it is
    assert main(["data", "scenes", "--out", str(out), "--train", "1", "--val", "1", "--seed", "1"]) == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == ["000001.png"]  # replaced as a whole
    assert json.loads((out / MARKER).read_text())["settings"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]
    (out / "train" / "notes.txt").write_text("mine")  # inside a folder the command made: still refused
    line = refused("data", "scenes", "--out", out, "--train", "2", "--val", "1")
    assert line.endswith(f"{out / 'train' / 'notes.txt'} was not made by `harmonicdet data scenes`; move it away or "
                         "choose another folder")


def test_output_folder_replace_interrupted_keeps_the_old_folder_and_claim_removes_only_its_own(tmp_path):
    out = tmp_path / "out"
    with OutputFolder(out, "harmonicdet test", {"n": 1}).replace() as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(KeyboardInterrupt):
        with OutputFolder(out, "harmonicdet test", {"n": 2}).replace() as staging:
            (staging / "a.txt").write_text("second")
            raise KeyboardInterrupt
    assert (out / "a.txt").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    again = OutputFolder(out, "harmonicdet test", {"n": 1})
    assert again.same_settings and again.complete() and not OutputFolder(out, "harmonicdet test", (2,)).same_settings
    (out / "mine.txt").write_text("user")
    again.check("a.txt")  # made by the command
    with pytest.raises(ValueError, match="mine.txt was not made by `harmonicdet test`"):
        again.claim("mine.txt")
    assert again.claim("a.txt") == out / "a.txt" and not (out / "a.txt").exists()
    assert (out / "mine.txt").read_text() == "user"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        OutputFolder(tmp_path / "file", "harmonicdet test")
    assert OutputFolder(tmp_path / "new", "harmonicdet test").made_before is False and not (tmp_path / "new").exists()


def test_every_writing_command_is_covered():
    """A command added later must join :data:`COMMANDS` (or say why it writes no folder)."""
    from harmonicdet.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command").choices
    writes_no_folder = {"gradients"}  # gradients --out is one JSON file; the studies have their own tests above
    top = {name.split()[0] for name in COMMANDS} | writes_no_folder | {"yolo-study", "detr-study"}
    assert set(subparsers) == top
    data = next(a for a in subparsers["data"]._actions if a.dest == "data_command").choices
    assert {f"data {name}" for name in data} <= set(COMMANDS)


def test_an_output_an_earlier_version_wrote_flat_is_replaced_but_not_with_a_users_file_in_it(scenes, tmp_path, refused):
    """`consistency --out` rerun into the folder an earlier version wrote (no marker): accepted and replaced whole;
    with a file of the user's beside its output, refused."""
    out = tmp_path / "cons"
    out.mkdir()
    (out / "consistency.json").write_text("{}")
    (out / "consistency_old.png").write_bytes(b"an earlier plot")
    dt = results_file(tmp_path, scenes)
    argv = ["consistency", "--gt", scenes_paths(scenes, "val")["ann_file"], "--dt", dt, "--out", out]
    assert main([str(a) for a in argv]) == 0
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "consistency.json", "consistency_dt.png"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "consistency.json").write_text("{}")
    (tmp_path / "old" / "notes.txt").write_text("mine")
    line = refused(*argv[:-1], tmp_path / "old")
    assert "did not make (consistency.json, notes.txt)" in line
