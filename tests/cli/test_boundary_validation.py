"""Names and numbers from users are checked where they enter, in one line naming them, before anything is written;
images with more than 8 bits per value are scaled to 8 bits, not saturated."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from harmonicdet.analysis.consistency import consistency_report
from harmonicdet.cli import main
from harmonicdet.data import CocoDetectionDataset
from harmonicdet.images import rgb8
from harmonicdet.models import build_detector


# ------------------------------------------------------------------------------------------ study files


def write_study(tmp_path, **changes):
    spec = {"output_dir": "study_runs", "archs": {"fcos": {"config": "scenes_fcos_r18.yaml"}},
            "runs": [{"variant": "standard", "arch": ["fcos"], "seeds": [0]}]}
    spec.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


STUDY_CASES = {
    "variant ../../x": ({"runs": [{"variant": "../../x", "arch": ["fcos"], "seeds": [0]}]},
                        "{path}: runs[0].variant becomes a folder name and must be letters, digits, '.', '_' and '-' "
                        "(not beginning with '.'), got '../../x'"),
    "arch a/b": ({"archs": {"a/b": {"config": "scenes_fcos_r18.yaml"}},
                  "runs": [{"variant": "standard", "arch": ["a/b"], "seeds": [0]}]},
                 "{path}: archs: the name 'a/b' becomes a folder name and must be letters, digits, '.', '_' and '-' "
                 "(not beginning with '.'), got 'a/b'"),
    "no seeds": ({"runs": [{"variant": "standard", "arch": ["fcos"], "seeds": []}]},
                 "{path}: runs[0].seeds: give at least one seed"),
    "baseline misspelled": ({"baseline": "standrd"},
                            "{path}: baseline 'standrd' is not one of the study's variants ['standard']"),
    "bootstrap samples": ({"bootstrap": {"samples": "many"}},
                          "{path}: bootstrap.samples must be an integer >= 1, got 'many'"),
    "bootstrap seed": ({"bootstrap": {"seed": 1.5}}, "{path}: bootstrap.seed must be an integer >= 0, got 1.5"),
}


@pytest.mark.parametrize("case", sorted(STUDY_CASES))
def test_a_study_file_is_checked_whole_at_load(tmp_path, refused, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    changes, expected = STUDY_CASES[case]
    path = write_study(tmp_path, **changes)
    assert refused("study", path).split(": error: ", 1)[1] == expected.format(path=path)
    assert [p.name for p in tmp_path.iterdir()] == ["study.yaml"]  # nothing trained, nothing written


# ------------------------------------------------------------------------------------------ COCO results

GT = {"images": [{"id": 1, "width": 10, "height": 10}], "categories": [{"id": 1, "name": "a"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}]}
GOOD = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}


@pytest.mark.parametrize("bad,expected", [
    ({"score": True}, "results[1]: score must be a number, got True"),
    ({"image_id": True}, "results[1]: image_id must be an integer, got True"),
    ({"category_id": False}, "results[1]: category_id must be an integer, got False"),
    ({"image_id": 1e20}, "results[1]: image_id must be an integer within the 64-bit range, got 1e+20"),
    ({"image_id": 2 ** 70}, f"results[1]: image_id must be an integer, got {2 ** 70}"),
], ids=["bool score", "bool image_id", "bool category_id", "float id 1e20", "int id 2**70"])
def test_coco_results_refuse_bools_and_ids_beyond_int64_by_entry(bad, expected):
    with pytest.raises(ValueError) as refused:
        consistency_report(GT, [GOOD, {**GOOD, **bad}])
    assert str(refused.value) == expected
    assert consistency_report(GT, [GOOD, {**GOOD, "image_id": 1.0}])["num_detections"] == 2  # 1.0 is the id 1


def test_a_ground_truth_id_beyond_int64_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^ground truth images\[0\]: needs an integer id within the 64-bit range, "
                                         r"got 1e\+20$"):
        consistency_report({**GT, "images": [{"id": 1e20}]}, [])


# ------------------------------------------------------------------------------------------ draw and predict


def grey16(path: Path, value: int, size=(64, 64)) -> Path:
    """A 16-bit grey PNG (PIL mode I;16) of one value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    return path


def grey16_dataset(tmp_path):
    grey16(tmp_path / "img" / "a.png", 32768)
    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}], "categories": [{"id": 1,
                                                                                                 "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text("[]")
    return ["--gt", tmp_path / "gt.json", "--dt", tmp_path / "dt.json", "--images", tmp_path / "img"]


def test_images_with_more_than_8_bits_are_scaled_to_8_bits():
    # v8 = round(v * 255 / 65535): 0 -> 0, 257 -> 1, 32768 -> 128, 65535 -> 255 (PIL's convert saturates to 255)
    row = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    for image in (Image.fromarray(row), Image.fromarray(row.astype(np.int32), "I")):
        assert np.asarray(rgb8(image))[0, :, 0].tolist() == [0, 1, 128, 255]
    assert np.asarray(rgb8(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))))[0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match=r"outside the 16-bit range 0\.\.65535, has no 8-bit reading"):
        rgb8(Image.fromarray(np.array([[70000]], np.int32), "I"))


def test_draw_and_the_datasets_read_a_16_bit_png_scaled(tmp_path, capsys):
    sources = grey16_dataset(tmp_path)
    dataset = CocoDetectionDataset(tmp_path / "img", tmp_path / "gt.json")
    assert np.asarray(dataset.load_image(0)).tolist()[32][32] == [128, 128, 128]
    assert main([str(a) for a in ["draw", *sources, "--out", tmp_path / "out", "--quiet"]]) == 0
    drawn = np.asarray(Image.open(tmp_path / "out" / "1_a.png").convert("RGB"))
    assert drawn[40, 48].tolist() == [128, 128, 128]  # a pixel of the picture (no box, label or legend there)


def test_predict_reads_a_16_bit_png_scaled(scenes, tmp_path, tiny_config):
    from harmonicdet.apps.predict import predict
    from harmonicdet.engine.from_config import build_model

    config = tiny_config(scenes, tmp_path / "run", **{"model.image_size": 64,
                                                      "model.options": "{fpn_channels: 64}"})
    torch.save({"model": build_model(config).state_dict(), "config": config}, tmp_path / "model_final.pt")
    image = grey16(tmp_path / "in" / "a.png", 32768)
    predict(config, checkpoint=tmp_path / "model_final.pt", images=[image], out_dir=tmp_path / "out",
            score_thresh=1.0, show_progress=False)  # nothing scores 1: the picture is the image as read
    assert np.unique(np.asarray(Image.open(tmp_path / "out" / "a.png"))).tolist() == [128]


@pytest.mark.parametrize("flags,expected", [
    (["--score-thresh", "nan"], "--score-thresh must be a number in [0, 1], got nan"),
    (["--score-thresh", "1.5"], "--score-thresh must be a number in [0, 1], got 1.5"),
    (["--scale", "100000"], "--scale 100000 would draw image id 1 (64x64) at 6400000x6400000 px; pictures are "
                            "bounded at 16384 px a side, so --scale 256 at most"),
    (["--scale", "0"], "--scale must be an integer >= 1, got 0"),
])
def test_draw_refuses_bad_numbers_before_writing(tmp_path, refused, flags, expected):
    sources = grey16_dataset(tmp_path)
    assert refused("draw", *sources, "--out", tmp_path / "out", *flags).split(": error: ", 1)[1] == expected
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags,expected", [
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--score-thresh", "nan"], "--score-thresh must be a number in [0, 1], got nan"),
])
def test_predict_refuses_bad_numbers_instead_of_replacing_them(scenes, tmp_path, refused, flags, expected):
    from harmonicdet.engine.config import shipped_config

    argv = ["predict", shipped_config("scenes_fcos_r18.yaml"), "--checkpoint", tmp_path / "none.pt", "--images",
            Path(scenes) / "val", "--out", tmp_path / "out", *flags]
    assert refused(*argv).split(": error: ", 1)[1] == expected
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ models and train


def test_a_non_integer_model_option_is_refused_by_name(scenes, tmp_path, refused, tiny_config):
    for keyword, value in (("fpn_channels", "64"), ("fpn_channels", 64.0), ("image_size", "128"),
                           ("trainable_backbone_layers", "2")):
        with pytest.raises(ValueError) as error:
            build_detector("fcos", 11, **{keyword: value})
        assert str(error.value) == f"{keyword} must be an integer, got {value!r}"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(dict(tiny_config(scenes, tmp_path / "run"))))
    line = refused("train", config, "--quiet", "--set", "model.options.fpn_channels=abc").split(": error: ", 1)[1]
    assert line == "fpn_channels must be an integer, got 'abc'"
    assert not (tmp_path / "run").exists()


def test_a_refused_train_writes_nothing(scenes, tmp_path, refused, monkeypatch, tiny_config):
    """An empty config (no data) and a batch larger than the data are refused before config.yaml, provenance.json or
    the marker exist: in the working directory's runs/default, or in output_dir."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yaml").write_text("")
    line = refused("train", "empty.yaml", "--set", "train.device=cpu").split(": error: ", 1)[1]
    assert line == "data.train: no dataset given (e.g. {img_dir: ..., ann_file: ...} or data.scenes)"
    assert [p.name for p in tmp_path.iterdir()] == ["empty.yaml"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(dict(tiny_config(scenes, tmp_path / "run",
                                                                     **{"train.batch_size": 64}))))
    line = refused("train", "c.yaml", "--quiet").split(": error: ", 1)[1]
    assert line == "train.batch_size=64 is larger than the 16 training images per process"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "empty.yaml"]
