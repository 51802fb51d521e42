"""Datasets are written atomically and checked: the scenes and the YOLO export go to a staging folder renamed into
place (an interrupted write leaves the earlier dataset or nothing), the export clips boxes to the image (counted),
checks every image's real size and copies images by content."""

import json
import os
from pathlib import Path

import pytest
from PIL import Image

import harmonicdet.data.scenes as scenes_module
import harmonicdet.data.yolo as yolo_module
from harmonicdet.cli import main
from harmonicdet.data import CocoDetectionDataset, make_scenes
from harmonicdet.data.yolo import write_yolo_dataset
from harmonicdet.output_folder import MARKER


def files(folder: Path):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def interrupt_after(monkeypatch, module, name, calls):
    """``module.name`` raising ``KeyboardInterrupt`` (a Ctrl-C) at its ``calls``-th call."""
    real, count = getattr(module, name), [0]

    def interrupted(*args, **kwargs):
        count[0] += 1
        if count[0] == calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)


# ------------------------------------------------------------------------------------------ scenes


def test_an_interrupted_scenes_write_leaves_nothing_a_rerun_would_accept(tmp_path, monkeypatch):
    out = tmp_path / "scenes"
    make_scenes(out, num_train=3, num_val=2, seed=0)
    seed0 = files(out)
    for folder in (out, tmp_path / "new"):
        interrupt_after(monkeypatch, scenes_module, "compose_scene", 4)  # inside the val split of seed 1
        with pytest.raises(KeyboardInterrupt):
            make_scenes(folder, num_train=3, num_val=2, seed=1)
        monkeypatch.undo()
    assert files(out) == seed0 and sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]
    # the earlier settings: reused as they are; the interrupted ones: written whole, as a fresh folder has them
    monkeypatch.setattr(scenes_module, "_write_scenes", lambda *a: pytest.fail("the complete seed-0 scenes rewritten"))
    make_scenes(out, num_train=3, num_val=2, seed=0)
    monkeypatch.undo()
    make_scenes(out, num_train=3, num_val=2, seed=1)
    make_scenes(tmp_path / "fresh", num_train=3, num_val=2, seed=1)
    assert files(out) != seed0
    assert {k: v for k, v in files(out).items() if k != MARKER} == \
        {k: v for k, v in files(tmp_path / "fresh").items() if k != MARKER}


def test_scenes_written_before_markers_are_reused_only_when_no_image_is_newer_than_its_json(tmp_path):
    """An earlier version wrote in place: a run cut short rewrote some images of a folder whose JSONs still name the
    old settings. Such a folder (an image newer than its JSON) is regenerated, not taken as ready."""
    out = tmp_path / "scenes"
    make_scenes(out, num_train=2, num_val=1, seed=0)
    (out / MARKER).unlink()  # as an earlier version left it
    original = (out / "train" / "000001.png").read_bytes()
    assert make_scenes(out, num_train=2, num_val=2 - 1, seed=0) and not (out / MARKER).exists()  # reused as it is
    Image.new("RGB", (128, 128), (255, 0, 0)).save(out / "train" / "000001.png")  # another seed's picture
    written = (out / "annotations" / "instances_train.json").stat().st_mtime
    os.utime(out / "train" / "000001.png", (written + 10, written + 10))
    make_scenes(out, num_train=2, num_val=1, seed=0)
    assert (out / "train" / "000001.png").read_bytes() == original and (out / MARKER).is_file()


# ------------------------------------------------------------------------------------------ YOLO export


def coco_source(root: Path, images, annotations):
    """A COCO split under ``root``: ``images`` are ``(id, file name, (file w, h), (JSON w, h))``."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    entries = []
    for image_id, name, size, declared in images:
        Image.new("RGB", size, (image_id * 40, 60, 90)).save(root / "img" / name)
        entries.append({"id": image_id, "file_name": name, "width": declared[0], "height": declared[1]})
    anns = [{"id": i + 1, "image_id": image_id, "category_id": 1, "bbox": bbox, "area": bbox[2] * bbox[3],
             "iscrowd": 0} for i, (image_id, bbox) in enumerate(annotations)]
    (root / "ann.json").write_text(json.dumps({"images": entries, "annotations": anns,
                                               "categories": [{"id": 1, "name": "thing"}]}))
    return CocoDetectionDataset(root / "img", root / "ann.json")


def test_yolo_export_clips_boxes_to_the_image_and_counts_them(tmp_path, capsys):
    dataset = coco_source(tmp_path / "src", [(1, "a.png", (40, 30), (40, 30))],
                          [(1, [2, 3, 10, 6]),  # inside
                           (1, [30, 10, 20, 10]),  # 10 px past the right edge: clipped to x 30-40
                           (1, [39.9999999, 0, 5, 5])])  # 1e-7 px inside: nothing left at 6 digits, dropped
    written = write_yolo_dataset(tmp_path / "yolo", {"train": dataset})
    assert written["train_boxes"] == {"boxes": 2, "clipped": 1, "dropped": 1}
    labels = (tmp_path / "yolo" / "labels" / "train" / "1.txt").read_text().splitlines()
    assert labels == ["0 0.175000 0.200000 0.250000 0.200000",  # (2+12)/2/40, (3+9)/2/30, 10/40, 6/30
                      "0 0.875000 0.500000 0.250000 0.333333"]  # (30+40)/2/40, 15/30, 10/40, 10/30
    gt = json.loads((tmp_path / "yolo" / "train.json").read_text())
    assert [a["bbox"] for a in gt["annotations"]] == [[2.0, 3.0, 10.0, 6.0], [30.0, 10.0, 10.0, 10.0]]
    assert [a["area"] for a in gt["annotations"]] == [60, 100.0]  # the clipped box's area where that is smaller
    assert main(["data", "yolo", "--out", str(tmp_path / "cli"), "--coco-train", str(tmp_path / "src" / "img"),
                 str(tmp_path / "src" / "ann.json")]) == 0
    assert "train: 1 images, 2 boxes (1 clipped to their image, 1 dropped with nothing left inside)" \
        in capsys.readouterr().out


def test_yolo_export_checks_each_images_real_size(tmp_path):
    dataset = coco_source(tmp_path / "src", [(1, "a.png", (40, 30), (40, 30)), (2, "b.png", (64, 48), (40, 30))],
                          [(1, [2, 3, 10, 6]), (2, [2, 3, 10, 6])])
    with pytest.raises(ValueError) as refused:
        write_yolo_dataset(tmp_path / "yolo", {"train": dataset})
    assert str(refused.value) == (f"image {tmp_path / 'src' / 'img' / 'b.png'} (image_id 2) is 64x48 but its "
                                  "annotation says 40x30; correct the annotation's width and height")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # nothing written


def test_yolo_export_replaces_an_earlier_one_whole_and_copies_by_content(tmp_path, monkeypatch):
    three = coco_source(tmp_path / "three", [(i, f"{i}.bmp", (40, 30), (40, 30)) for i in (1, 2, 3)],
                        [(i, [2, 3, 10, 6]) for i in (1, 2, 3)])
    out = tmp_path / "yolo"
    write_yolo_dataset(out, {"train": three, "val": three})
    one = coco_source(tmp_path / "one", [(1, "1.bmp", (40, 30), (40, 30))], [(1, [2, 3, 10, 6])])
    write_yolo_dataset(out, {"train": one, "val": one})
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["1.bmp"]  # no stale image or label
    assert sorted(p.name for p in (out / "labels" / "val").iterdir()) == ["1.txt"]
    # a BMP of the same size has the same number of bytes whatever its pixels: copied by content all the same
    Image.new("RGB", (40, 30), (1, 2, 3)).save(tmp_path / "one" / "img" / "1.bmp")
    assert (tmp_path / "one" / "img" / "1.bmp").stat().st_size == (out / "images" / "train" / "1.bmp").stat().st_size
    write_yolo_dataset(out, {"train": one, "val": one})
    assert (out / "images" / "train" / "1.bmp").read_bytes() == (tmp_path / "one" / "img" / "1.bmp").read_bytes()
    before = files(out)
    interrupt_after(monkeypatch, yolo_module.shutil, "copyfile", 2)  # Ctrl-C while copying
    with pytest.raises(KeyboardInterrupt):
        write_yolo_dataset(out, {"train": three, "val": three})
    assert files(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["one", "three", "yolo"]
