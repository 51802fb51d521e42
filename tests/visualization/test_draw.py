"""`harmonicdet predict` and `harmonicdet draw`: pictures of detections coloured by how well they are localised."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harmonicdet.cli import main
from harmonicdet.visualization import draw

SIZE = 96


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _colour(pixels: np.ndarray, x: int, y: int) -> tuple:
    return tuple(int(v) for v in pixels[y, x])


# ------------------------------------------------------------------------------------------ draw

# Three grey 96x96 images. Ground truth: one object [10, 10, 50, 50] (xyxy) of class "a" in each;
# image 3 has a second object of class "b". Results:
#   image 1: the object's own box, score 0.8                              -> good, consistent
#   image 2: [10, 10, 50, 22] inside it, IoU 480 / 1600 = 0.3, score 0.9  -> poor, high score / low IoU
#   image 3: two confident boxes on nothing (IoU 0) and the "b" object's own box at score 0.1
#            -> three inconsistent detections: the worst image
GT_BOX = [10, 10, 40, 40]  # xywh
CRAFTED_GT = {
    "images": [{"id": i, "file_name": f"img{i}.png", "width": SIZE, "height": SIZE} for i in (1, 2, 3)],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": GT_BOX, "area": 1600, "iscrowd": 0}
                    for i in (1, 2, 3)]
    + [{"id": 4, "image_id": 3, "category_id": 2, "bbox": [60, 60, 30, 30], "area": 900, "iscrowd": 0}],
}
CRAFTED_DT = [
    {"image_id": 1, "category_id": 1, "bbox": GT_BOX, "score": 0.8},
    {"image_id": 2, "category_id": 1, "bbox": [10, 10, 40, 12], "score": 0.9},
    {"image_id": 3, "category_id": 1, "bbox": [55, 5, 30, 20], "score": 0.95},
    {"image_id": 3, "category_id": 2, "bbox": [5, 60, 30, 30], "score": 0.7},
    {"image_id": 3, "category_id": 2, "bbox": [60, 60, 30, 30], "score": 0.1},
]


@pytest.fixture
def crafted(tmp_path):
    images = tmp_path / "images"
    for i in (1, 2, 3):
        _write_png(images / f"img{i}.png", np.full((SIZE, SIZE, 3), 90, np.uint8))
    (tmp_path / "gt.json").write_text(json.dumps(CRAFTED_GT))
    (tmp_path / "dt.json").write_text(json.dumps(CRAFTED_DT))
    return tmp_path


def _draw(root: Path, *extra: str, dts=("dt.json",)) -> int:
    argv = ["draw", "--gt", str(root / "gt.json"), "--images", str(root / "images"), "--out", str(root / "out"),
            "--quiet"]
    for dt in dts:
        argv += ["--dt", str(root / dt)]
    return main(argv + list(extra))


def test_draw_colours_follow_the_iou_bands_and_mark_inconsistency(crafted):
    assert _draw(crafted) == 0
    out = crafted / "out"
    summary = json.loads((out / "draw.json").read_text())
    assert [i["image_id"] for i in summary["images"]] == [1, 2, 3]
    assert sorted(p.name for p in out.iterdir()) == sorted([".harmonicdet.json", "draw.json"]
                                                           + [i["png"] for i in summary["images"]])
    counts = {i["image_id"]: i["counts"]["dt"] for i in summary["images"]}
    assert counts[1] == {"detections": 1, "drawn": 1, "high_score_low_iou": 0, "low_score_high_iou": 0}
    assert counts[2] == {"detections": 1, "drawn": 1, "high_score_low_iou": 1, "low_score_high_iou": 0}
    # image 3: the 0.1-score box is drawn below --score-thresh because it is inconsistent
    assert counts[3] == {"detections": 3, "drawn": 3, "high_score_low_iou": 2, "low_score_high_iou": 1}

    one = _pixels(out / summary["images"][0]["png"])
    assert one.shape[1] == SIZE and one.shape[0] > SIZE  # the legend below
    assert _colour(one, 30, 50) == draw.GOOD  # bottom edge of the box that equals its object
    assert _colour(one, 50, 30) == draw.GOOD  # right edge
    assert _colour(one, 30, 52) == (90, 90, 90)  # nothing just outside it: no inconsistency frame
    assert _colour(one, 70, 70) == (90, 90, 90)

    two = _pixels(out / summary["images"][1]["png"])
    assert _colour(two, 30, 22) == draw.POOR  # bottom edge of the IoU-0.3 box
    assert _colour(two, 30, 23) == _colour(two, 30, 24) == draw.OVERCONFIDENT  # its frame just outside
    assert _colour(two, 30, 50) == draw.GROUND_TRUTH  # the object's own edge, in ground-truth white
    assert _colour(two, 11, 30) == (90, 90, 90)

    three = _pixels(out / summary["images"][2]["png"])
    assert _colour(three, 75, 90) == draw.GOOD  # the well-localised "b" box scored 0.1...
    assert _colour(three, 75, 92) == draw.UNDERCONFIDENT  # ...framed as under-confident
    assert _colour(three, 20, 90) == draw.POOR  # the confident "b" box on nothing
    assert _colour(three, 20, 92) == draw.OVERCONFIDENT


def test_draw_hides_consistent_low_scores_and_caps_detections(crafted):
    dts = CRAFTED_DT + [{"image_id": 1, "category_id": 1, "bbox": [12, 12, 40, 40], "score": 0.25},
                        {"image_id": 1, "category_id": 2, "bbox": [60, 60, 20, 20], "score": 0.05}]
    (crafted / "dt2.json").write_text(json.dumps(dts))
    assert _draw(crafted, "--ids", "1", "3", "--max-dets", "2", dts=("dt2.json",)) == 0
    images = json.loads((crafted / "out" / "draw.json").read_text())["images"]
    assert [i["image_id"] for i in images] == [1, 3]
    assert images[0]["counts"]["dt2"]["detections"] == 3 and images[0]["counts"]["dt2"]["drawn"] == 1
    assert images[1]["counts"]["dt2"]["drawn"] == 2  # three inconsistent, capped at two
    assert len(list((crafted / "out").glob("*.png"))) == 2


def test_draw_worst_picks_the_image_with_most_inconsistent_detections(crafted):
    assert _draw(crafted, "--worst", "1") == 0
    images = json.loads((crafted / "out" / "draw.json").read_text())["images"]
    assert [i["image_id"] for i in images] == [3]
    assert [p.name for p in (crafted / "out").glob("*.png")] == [images[0]["png"]]
    assert _draw(crafted, "--worst", "2") == 0
    assert [i["image_id"] for i in json.loads((crafted / "out" / "draw.json").read_text())["images"]] == [3, 2]


def test_two_results_files_side_by_side(crafted):
    shifted = [dict(d, bbox=[d["bbox"][0] + 20, *d["bbox"][1:]]) if d["image_id"] == 1 else d for d in CRAFTED_DT]
    (crafted / "shifted.json").write_text(json.dumps(shifted))
    assert _draw(crafted, "--label", "A", "--label", "B", "--ids", "1", dts=("dt.json", "shifted.json")) == 0
    summary = json.loads((crafted / "out" / "draw.json").read_text())
    assert summary["labels"] == ["A", "B"] and set(summary["images"][0]["counts"]) == {"A", "B"}
    pixels = _pixels(crafted / "out" / summary["images"][0]["png"])
    assert pixels.shape[1] == 2 * SIZE + draw.GAP
    # the left panel (A) has the exact box in green; at the same place the right panel (B) has the
    # object's white edge, its own box (IoU 20*40/(2*1600-800) = 0.33) is red 20 px to the right
    rows = [y for y in range(SIZE + 40) if _colour(pixels, 30, y) == draw.GOOD]
    assert rows, "no green edge in the left panel"
    header = rows[-1] - 50  # the box's bottom edge is at y = 50 of the image
    assert header > 0
    right = SIZE + draw.GAP
    assert _colour(pixels, 20, header + 50) == draw.GOOD
    assert _colour(pixels, right + 20, header + 50) == draw.GROUND_TRUTH
    assert _colour(pixels, right + 50, header + 50) == draw.POOR
    assert _colour(pixels, right + 50, header + 52) == draw.OVERCONFIDENT  # score 0.8, IoU 0.33


@pytest.mark.parametrize("case, expected", [
    ("missing_image", "img2.png"),
    ("unknown_id", "image id 99"),
    ("bad_json", "dt.json"),
    ("label_count", "2 --dt files but 1 --label"),
    ("unknown_image_in_results", "image_id 7"),
])
def test_draw_errors_exit_2_naming_the_culprit(crafted, capsys, case, expected):
    extra, dts = [], ("dt.json",)
    if case == "missing_image":
        (crafted / "images" / "img2.png").unlink()
    elif case == "unknown_id":
        extra = ["--ids", "1", "99"]
    elif case == "bad_json":
        (crafted / "dt.json").write_text("[{")
    elif case == "label_count":
        extra, dts = ["--label", "A"], ("dt.json", "dt.json")
    elif case == "unknown_image_in_results":
        (crafted / "dt.json").write_text(json.dumps(CRAFTED_DT + [dict(CRAFTED_DT[0], image_id=7)]))
    capsys.readouterr()
    assert _draw(crafted, *extra, dts=dts) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harmonicdet draw: error:") and expected in err and "\n" not in err
    assert not (crafted / "out" / "draw.json").exists()


def test_render_and_legend_on_arrays():
    image = np.zeros((40, 60, 3), np.uint8)
    out = draw.render(image, det_boxes=[[5, 5, 30, 30]], det_scores=[0.5], det_names=["x"],
                      det_colours=[draw.FAIR], scale=2)
    assert out.size == (120, 80)
    assert _colour(np.asarray(out), 35, 60) == draw.FAIR  # bottom edge at y = 30 * 2
    grey = np.full((40, 60, 3), 90, np.uint8)
    named = np.asarray(draw.render(grey, det_boxes=np.zeros((0, 4)), det_scores=[], det_names=[], det_colours=[],
                                   gt_boxes=[[5, 5, 55, 35]], gt_names=["coat"]))
    assert _colour(named, 30, 35) == draw.GROUND_TRUTH  # the object's edge
    inside = named[20:34, 6:30].reshape(-1, 3)  # its class name, light on the strip colour, bottom left
    assert list(draw.BACKGROUND) in inside.tolist() and (inside.min(axis=1) > 150).sum() >= 5
    assert draw.iou_colours([0.9, 0.75, 0.6, 0.5, 0.49, 0.0], [0, 0, 0, 0, 0, 1]) == [
        draw.GOOD, draw.GOOD, draw.FAIR, draw.FAIR, draw.POOR, draw.IGNORED]
    strip = draw.legend(200)
    colours = {tuple(c) for c in np.asarray(strip).reshape(-1, 3).tolist()}
    assert {draw.GOOD, draw.FAIR, draw.POOR, draw.OVERCONFIDENT, draw.UNDERCONFIDENT} <= colours
    with pytest.raises(ValueError, match="1 boxes but 2 scores"):
        draw.render(image, det_boxes=[[1, 1, 2, 2]], det_scores=[0.1, 0.2], det_names=["x"], det_colours=[draw.GOOD])


# ------------------------------------------------------------------------------------------ predict


@pytest.fixture(scope="module")
def tiny_run(scenes, tmp_path_factory, tiny_config):
    """An FCOS trained for two iterations on the test scenes (CPU), with a low score threshold
    so that even this untrained model returns detections."""
    from harmonicdet.engine.train import train

    config = tiny_config(scenes, tmp_path_factory.mktemp("run"), **{
        "model.options": "{fpn_channels: 64, detector_kwargs: {score_thresh: 0.01, detections_per_img: 20}}",
        "train.batch_size": 2, "train.max_iters": 2, "eval.batch_size": 4})
    run = train(config, show_progress=False)
    return run


@pytest.mark.slow
def test_predict_writes_pngs_of_the_input_size_and_results_consistency_accepts(tiny_run, scenes, tmp_path):
    val = Path(scenes) / "val"
    ann = Path(scenes) / "annotations" / "instances_val.json"
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_run / "config.yaml"), "--checkpoint", str(tiny_run / "model_final.pt"),
                 "--images", str(val), "--out", str(out), "--gt", str(ann), "--score-thresh", "0",
                 "--quiet"]) == 0
    inputs = sorted(val.glob("*.png"))
    assert len(inputs) == 8
    gt = json.loads(ann.read_text())
    id_of = {im["file_name"]: im["id"] for im in gt["images"]}
    for path in inputs:
        drawn = _pixels(out / path.name)
        original = _pixels(path)
        assert drawn.shape == original.shape
        assert (drawn != original).any(axis=2).sum() > 50  # boxes and labels were drawn
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["image_id"] for r in results} <= set(id_of.values())
    assert len({r["image_id"] for r in results}) == 8
    assert {r["category_id"] for r in results} <= {c["id"] for c in gt["categories"]}
    assert all(len(r["bbox"]) == 4 and 0 <= r["score"] <= 1 for r in results)
    images = json.loads((out / "images.json").read_text())["images"]
    assert [(i["file_name"], i["id"]) for i in images] == [(p.name, id_of[p.name]) for p in inputs]

    assert main(["consistency", "--gt", str(ann), "--dt", str(out / "predictions.json"),
                 "--out", str(tmp_path / "cons")]) == 0
    report = json.loads((tmp_path / "cons" / "consistency.json").read_text())["predictions"]
    assert report["num_detections"] == len(results) > 0

    assert main(["draw", "--gt", str(ann), "--dt", str(out / "predictions.json"), "--images", str(val),
                 "--out", str(tmp_path / "drawn"), "--worst", "2", "--quiet"]) == 0
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 2


@pytest.mark.slow
def test_predict_without_ground_truth_numbers_images_and_keeps_odd_sizes(tiny_run, scenes, tmp_path):
    source = _pixels(Path(scenes) / "val" / "000001.png")
    folder = tmp_path / "in"
    _write_png(folder / "b_wide.png", source[:72, :100])
    _write_png(folder / "a_tall.jpg", np.ascontiguousarray(source[:, :80]))
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_run / "config.yaml"), "--checkpoint", str(tiny_run / "model_final.pt"),
                 "--images", str(folder), "--out", str(out), "--batch-size", "2", "--quiet"]) == 0
    assert _pixels(out / "a_tall.png").shape == (128, 80, 3)
    assert _pixels(out / "b_wide.png").shape == (72, 100, 3)
    images = json.loads((out / "images.json").read_text())["images"]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in images] == [
        (1, "a_tall.jpg", 80, 128), (2, "b_wide.png", 100, 72)]
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["image_id"] for r in results} == {1, 2}


def test_predict_errors_exit_2(scenes, tmp_path, capsys):
    # bad input is refused before the model is built: no trained run needed
    from harmonicdet.engine.config import shipped_config

    base = ["predict", str(shipped_config("scenes_fcos_r18.yaml")), "--checkpoint", str(tmp_path / "none.pt"),
            "--out", str(tmp_path / "out"), "--quiet"]
    capsys.readouterr()
    assert main(base + ["--images", str(tmp_path / "nope.png")]) == 2
    assert "nope.png" in capsys.readouterr().err
    stray = tmp_path / "stray.png"
    _write_png(stray, np.zeros((8, 8, 3), np.uint8))
    assert main(base + ["--images", str(stray), "--gt", str(Path(scenes) / "annotations" / "instances_val.json")]) == 2
    assert "stray.png" in capsys.readouterr().err
    assert main(base[:4] + ["--out", str(tmp_path), "--images", str(stray)]) == 2  # would overwrite its input
    assert "overwrite" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ demo


def test_demo_writes_a_side_by_side_panel_of_validation_scenes(tmp_path, monkeypatch, fake_demo_runs):
    import harmonicdet.apps.demo as demo

    monkeypatch.chdir(tmp_path)

    def results(config):
        # "standard" finds every object exactly, "harmonicdet" every object 8 px to the right
        gt = json.loads(Path(config["data"]["scenes"]["out"], "annotations", "instances_val.json").read_text())
        shift = 8 if config["model"]["loss"] == "harmonicdet" else 0
        return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
                 "bbox": [a["bbox"][0] + shift, *a["bbox"][1:]]} for a in gt["annotations"]]

    fake_demo_runs.results = results
    summary = demo.run_demo(Path("out"), budget_minutes=1.0, num_train=16, num_val=8,
                            overrides=["train.batch_size=2", "model.options={fpn_channels: 64}"])
    panel = tmp_path / "out" / "panel.png"
    assert str(Path("out") / "panel.png") in summary["plots"]
    pixels = _pixels(panel)
    assert pixels.shape[1] == 2 * 128 * 2 + draw.GAP  # two 128 px scenes at scale 2, side by side
    left, right = pixels[:, :256].reshape(-1, 3), pixels[:, 256 + draw.GAP:].reshape(-1, 3)
    good = (left == draw.GOOD).all(axis=1).sum()
    assert good > 500  # exact boxes, green
    assert (right == draw.GOOD).all(axis=1).sum() < good / 2  # shifted boxes are mostly not green
