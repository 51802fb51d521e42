"""`harmonicdet data tiles`: tile positions, the clip-and-drop rule, edge tiles, the split by source image,
identical reruns and the refusal of an --out it did not make, on crafted VOC images with hand-computed answers."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harmonicdet.cli import main
from harmonicdet.data import VocDetectionDataset
from harmonicdet.data.tiles import MARKER, TileSpec, clip_box, make_tiles, split_sources, tile_starts

CLASSES = ("Tree", "Dead")


def write_voc(root: Path, images: dict) -> Path:
    """A VOC folder: ``images`` maps a stem to ``(width, height, [(class, xmin, ymin, xmax, ymax, difficult)])``
    (VOC's 1-based inclusive pixels); the pixels are seeded noise. Returns ``root``."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for k, (stem, (width, height, objects)) in enumerate(images.items()):
        pixels = np.random.default_rng(k).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{stem}.png")
        body = "".join(f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox><xmin>{x1}</xmin>"
                       f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                       for name, x1, y1, x2, y2, difficult in objects)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.png</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{body}</annotation>")
    (root / "ImageSets/Main/trainval.txt").write_text("".join(f"{stem}\n" for stem in images))
    return root


# continuous boxes (VOC xmin - 1, ymin - 1, xmax, ymax) in a 600x500 photo; tiles of 256 overlapping by 64 start
# at x 0, 192, 344 (the last ends at the border 600) and y 0, 192, 244 (ends at 500)
BIG = (600, 500, [("Tree", 11, 21, 60, 70, 0),     # A [10, 20, 60, 70]: inside tile (0, 0) only
                  ("Tree", 181, 31, 240, 90, 0),   # B [180, 30, 240, 90]: whole in (0, 0), 48/60 in (192, 0)
                  ("Dead", 227, 101, 286, 130, 0),  # E [226, 100, 286, 130]: 30/60 = 0.5 in (0, 0), whole in (192, 0)
                  ("Tree", 241, 301, 300, 340, 1),  # D [240, 300, 300, 340] difficult: 16/60 in x-tile 0 (dropped)
                  ("Tree", 561, 461, 600, 500, 0)])  # C [560, 460, 600, 500]: in the bottom-right edge tile only


def read_split(out: Path, split: str) -> dict:
    return json.loads((out / "annotations" / f"instances_{split}.json").read_text())


def tiles_of(gt: dict) -> dict:
    """``{(source, x, y): [(category_id, [x, y, w, h], iscrowd, visible_fraction), ...]}``."""
    result = {(im["source"], im["x"], im["y"]): [] for im in gt["images"]}
    by_id = {im["id"]: (im["source"], im["x"], im["y"]) for im in gt["images"]}
    for ann in gt["annotations"]:
        result[by_id[ann["image_id"]]].append((ann["category_id"], ann["bbox"], ann["iscrowd"],
                                               ann["visible_fraction"]))
    return result


def files_of(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_tile_starts_end_at_the_border_and_boxes_follow_the_visible_area_rule():
    assert tile_starts(600, 256, 64) == [0, 192, 344]
    assert tile_starts(500, 256, 64) == [0, 192, 244]
    assert tile_starts(2299, 400, 100) == [0, 300, 600, 900, 1200, 1500, 1800, 1899]
    assert tile_starts(256, 256, 0) == [0] and tile_starts(100, 256, 64) == [0] and tile_starts(512, 256, 0) == [0, 256]
    window = (192, 0, 448, 256)
    assert clip_box([180, 30, 240, 90], window, 0.5) == ([0, 30, 48, 90], 0.8)
    assert clip_box([226, 100, 286, 130], (0, 0, 256, 256), 0.5) == ([226, 100, 256, 130], 0.5)  # at the threshold
    assert clip_box([226, 100, 286, 130], (0, 0, 256, 256), 0.51) is None
    assert clip_box([256, 0, 300, 10], (0, 0, 256, 256), 1e-9) is None  # touching the border is not inside
    with pytest.raises(ValueError, match="overlap must be an integer in"):
        TileSpec(size=256, overlap=256)
    with pytest.raises(ValueError, match="min_visible must be a number in"):
        TileSpec(min_visible=0)


def test_a_crafted_photo_s_boxes_survive_tiling_with_the_right_coordinates(tmp_path):
    root = write_voc(tmp_path / "voc", {"big": BIG, "small": (200, 150, [("Tree", 1, 1, 50, 40, 0)])})
    dataset = VocDetectionDataset(root, "trainval", classes=CLASSES)
    result = make_tiles(dataset, tmp_path / "out", TileSpec(size=256, overlap=64), val_images=["small"])
    train = read_split(tmp_path / "out", "train")
    assert tiles_of(train) == {
        ("big.png", 0, 0): [(1, [10.0, 20.0, 50.0, 50.0], 0, 1.0), (1, [180.0, 30.0, 60.0, 60.0], 0, 1.0),
                            (2, [226.0, 100.0, 30.0, 30.0], 0, 0.5)],
        ("big.png", 192, 0): [(1, [0.0, 30.0, 48.0, 60.0], 0, 0.8), (2, [34.0, 100.0, 60.0, 30.0], 0, 1.0)],
        ("big.png", 192, 192): [(1, [48.0, 108.0, 60.0, 40.0], 1, 1.0)],  # D, difficult: kept as iscrowd
        ("big.png", 192, 244): [(1, [48.0, 56.0, 60.0, 40.0], 1, 1.0)],
        ("big.png", 344, 244): [(1, [216.0, 216.0, 40.0, 40.0], 0, 1.0)],  # the edge tile: C whole
    }  # the four tiles without a box are dropped
    assert [im["id"] for im in train["images"]] == [1, 2, 3, 4, 5]
    assert [a["area"] for a in train["annotations"]][:3] == [2500.0, 3600.0, 900.0]
    assert [c["name"] for c in train["categories"]] == list(CLASSES)
    assert result["train_counts"] == {"sources": 1, "tiles": 5, "boxes": 8}
    source = np.asarray(Image.open(root / "JPEGImages/big.png"))
    edge = np.asarray(Image.open(tmp_path / "out/train/big_x344_y244.png"))
    assert edge.shape == (256, 256, 3) and np.array_equal(edge, source[244:500, 344:600])
    small = np.asarray(Image.open(tmp_path / "out/val/small_x0_y0.png"))  # padded with black to 256 x 256
    assert np.array_equal(small[:150, :200], np.asarray(Image.open(root / "JPEGImages/small.png")))
    assert not small[150:].any() and not small[:, 200:].any()
    assert tiles_of(read_split(tmp_path / "out", "val")) == {("small.png", 0, 0): [(1, [0.0, 0.0, 50.0, 40.0], 0, 1.0)]}


def test_keep_empty_and_single_class(tmp_path):
    root = write_voc(tmp_path / "voc", {"big": BIG, "small": (200, 150, [])})
    dataset = VocDetectionDataset(root, "trainval", classes=CLASSES)
    make_tiles(dataset, tmp_path / "out", TileSpec(size=256, overlap=64, keep_empty=True, min_visible=0.51),
               val_images=["small.png"], single_class="tree")
    train = read_split(tmp_path / "out", "train")
    assert len(train["images"]) == 9 and train["categories"] == [{"id": 1, "name": "tree"}]
    assert tiles_of(train)[("big.png", 0, 0)] == [(1, [10.0, 20.0, 50.0, 50.0], 0, 1.0),
                                                  (1, [180.0, 30.0, 60.0, 60.0], 0, 1.0)]  # E (0.5) below 0.51
    assert len(read_split(tmp_path / "out", "val")["images"]) == 1  # an empty source image's tile, kept


def test_the_split_is_by_source_image_and_deterministic(tmp_path):
    stems = [f"photo{k}" for k in range(5)]
    root = write_voc(tmp_path / "voc", {s: (80, 64, [("Tree", 3, 3, 30, 30, 0), ("Tree", 40, 20, 79, 60, 0)])
                                        for s in stems})
    dataset = VocDetectionDataset(root, "trainval", classes=CLASSES)
    make_tiles(dataset, tmp_path / "out", TileSpec(size=32, overlap=8), val_fraction=0.4, seed=3)
    sources = {split: {im["source"] for im in read_split(tmp_path / "out", split)["images"]} for split in ("train", "val")}
    assert len(sources["val"]) == 2 and not sources["train"] & sources["val"]
    assert sources["train"] | sources["val"] == {f"{s}.png" for s in stems}
    expected = split_sources([f"{s}.png" for s in stems], val_fraction=0.4, seed=3)
    assert sorted(sources["val"]) == expected["val"] and read_split(tmp_path / "out", "val")["info"]["val_sources"] \
        == expected["val"]
    assert split_sources(["b.png", "a.png", "c.png"], val_images=["c", "a.png"]) == {"train": ["b.png"],
                                                                                    "val": ["a.png", "c.png"]}
    with pytest.raises(ValueError, match=r"--val-images: \['d'\] are not source images"):
        split_sources(["a.png", "b.png"], val_images=["d"])
    with pytest.raises(ValueError, match="the train split would have no source image"):
        split_sources(["a.png", "b.png"], val_images=["a", "b"])


def test_a_rerun_writes_identical_files_and_an_out_it_did_not_make_is_refused(tmp_path):
    root = write_voc(tmp_path / "voc", {"big": BIG, "small": (200, 150, [("Tree", 1, 1, 50, 40, 0)])})
    dataset = VocDetectionDataset(root, "trainval", classes=CLASSES)
    spec = TileSpec(size=256, overlap=64)
    make_tiles(dataset, tmp_path / "a", spec, val_images=["small"])
    first = files_of(tmp_path / "a")
    assert MARKER in first and "annotations/instances_val.json" in first
    make_tiles(dataset, tmp_path / "a", spec, val_images=["small"])  # replaces its own output
    make_tiles(dataset, tmp_path / "b", spec, val_images=["small"])
    assert files_of(tmp_path / "a") == first == files_of(tmp_path / "b")
    (tmp_path / "a/train/notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt was not made by `harmonicdet data tiles`"):
        make_tiles(dataset, tmp_path / "a", spec, val_images=["small"])
    (tmp_path / "user").mkdir()
    (tmp_path / "user/photo.jpg").write_text("keep me")
    with pytest.raises(ValueError, match="holds files `harmonicdet data tiles` did not make"):
        make_tiles(dataset, tmp_path / "user", spec, val_images=["small"])
    assert files_of(tmp_path / "user") == {"photo.jpg": b"keep me"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "user", "voc"]  # no temporary folder left


def test_the_cli_tiles_a_voc_folder_and_names_bad_flags(tmp_path, capsys):
    root = write_voc(tmp_path / "voc", {"big": BIG, "small": (200, 150, [("Tree", 1, 1, 50, 40, 0)])})
    args = ["data", "tiles", "--voc", str(root), "--classes", "Tree,Dead", "--out", str(tmp_path / "out"),
            "--size", "256", "--overlap", "64", "--val-images", "small"]
    assert main(args) == 0
    assert "train: 5 tiles with 8 boxes from 1 source image(s)" in capsys.readouterr().out
    assert main(args[:-2] + ["--val-fraction", "0.5", "--single-class", "tree"]) == 0
    assert main(args[:-4] + ["--overlap", "256"]) == 2
    assert "overlap must be an integer in [0, size 256), got 256" in capsys.readouterr().err
    assert main(args[:2] + args[4:]) == 2
    assert "give exactly one source: --voc ROOT or --coco IMAGES ANN" in capsys.readouterr().err
