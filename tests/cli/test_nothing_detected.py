"""A detector that finds nothing yet: `consistency` says in one line why its statistics are n/a, `draw` why a
picture shows no detection (and the picture says it too)."""

import json

import numpy as np
import pytest
from PIL import Image

from harmonicdet.cli import main
from harmonicdet.visualization import draw

GT = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
      "categories": [{"id": 1, "name": "bag"}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600,
                       "iscrowd": 0}]}
# IoU with the object: 40 x 12 / 1600 = 0.3; score 0.12
WEAK = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 12], "score": 0.12}]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "weak.json").write_text(json.dumps(WEAK))
    (tmp_path / "none.json").write_text("[]")
    return tmp_path


def test_consistency_says_why_rates_are_not_available(files, capsys):
    assert main(["consistency", "--gt", str(files / "gt.json"), "--dt", str(files / "weak.json"), "--dt",
                 str(files / "none.json"), "--out", str(files / "c")]) == 0
    out = capsys.readouterr().out
    assert ("weak: n/a because correlations: 1 detections overlap an object (IoU > 0.1); hiS/loIoU: no detection "
            "scores >= 0.5 (best score 0.120); loS/hiIoU: no detection has IoU >= 0.75 (best IoU 0.300)\n") in out
    assert "none: n/a because no detections (other than on crowd regions)\n" in out
    report = json.loads((files / "c" / "consistency.json").read_text())
    assert report["weak"]["max_score"] == pytest.approx(0.12) and report["weak"]["max_iou"] == pytest.approx(0.3)
    assert report["none"]["max_score"] is None and report["none"]["max_iou"] is None


def test_draw_says_why_a_picture_shows_no_detection(files, capsys):
    argv = ["draw", "--gt", str(files / "gt.json"), "--images", str(files / "images"), "--quiet"]
    assert main(argv + ["--dt", str(files / "weak.json"), "--dt", str(files / "none.json"), "--out",
                        str(files / "d")]) == 0
    out = capsys.readouterr().out
    assert ("weak: nothing drawn on 1 of 1 images: no detection there scores >= 0.3 or is inconsistent "
            "(best score: 0.120)\n") in out
    assert "none: nothing drawn on 1 of 1 images: they have no detections\n" in out
    summary = json.loads((files / "d" / "draw.json").read_text())
    assert summary["images"][0]["best_score"] == {"weak": pytest.approx(0.12), "none": None}
    capsys.readouterr()

    def corner(*extra):  # the top-left pixel of a one-panel picture (no header strip above it)
        out = files / "one"
        assert main(argv + ["--dt", str(files / "weak.json"), "--out", str(out), *extra]) == 0
        png = json.loads((out / "draw.json").read_text())["images"][0]["png"]
        return tuple(np.asarray(Image.open(out / png).convert("RGB"))[0, 0])

    assert corner() == draw.BACKGROUND  # the note's strip
    assert corner("--score-thresh", "0.1") == (90, 90, 90)  # drawn at a lower threshold: no note...
    assert "nothing drawn" not in capsys.readouterr().out.splitlines()[-1]  # ...and no hint
