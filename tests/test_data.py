"""Datasets: COCO/VOC parsing and validation, the Fashion-MNIST scenes, v2 transforms."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from harmonicdet.cli import main
from harmonicdet.data import (
    CocoDetectionDataset,
    VocDetectionDataset,
    build_transforms,
    find_fashion_mnist,
    make_scenes,
)
from harmonicdet.data.scenes import MAX_HIDDEN


def write_coco(tmp_path, annotations, images=None):
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "img" / "a.png")
    gt = {"images": images or [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}],
          "annotations": annotations,
          "categories": [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}]}
    (tmp_path / "instances.json").write_text(json.dumps(gt))
    return tmp_path / "img", tmp_path / "instances.json"


def ann(i, **kw):
    base = {"id": i, "image_id": 7, "category_id": 9, "bbox": [1, 2, 10, 5], "iscrowd": 0}
    base.update(kw)
    return base


def test_coco_dataset_targets_crowd_and_ground_truth(tmp_path):
    img_dir, ann_file = write_coco(tmp_path, [ann(1), ann(2, category_id=3, bbox=[5, 5, 20, 20], iscrowd=1)])
    ds = CocoDetectionDataset(img_dir, ann_file, transforms=build_transforms(False))
    assert ds.classes == ["cat", "dog"] and ds.label_to_category_id == {1: 3, 2: 9}
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert target["boxes"].tolist() == [[1, 2, 11, 7]] and target["labels"].tolist() == [2]  # crowd left out
    assert target["image_id"] == 7
    gt = ds.coco_ground_truth()
    assert [(a["category_id"], a["iscrowd"], a["bbox"]) for a in gt["annotations"]] == [
        (9, 0, [1, 2, 10, 5]), (3, 1, [5, 5, 20, 20])]


@pytest.mark.parametrize("bad,message", [
    ({"bbox": [1, 2, 0, 5]}, r"annotations\[0\] \(id 1\): box .* non-positive width or height"),
    ({"category_id": 4}, r"annotations\[0\] \(id 1\): category_id 4 is not in categories"),
    ({"image_id": 99}, r"annotations\[0\] \(id 1\): image_id 99 is not in images"),
    ({"bbox": None}, r"annotations\[0\] \(id 1\): bbox must be 4 numbers"),
])
def test_coco_invalid_annotations_are_named_or_skipped(tmp_path, bad, message):
    img_dir, ann_file = write_coco(tmp_path, [ann(1, **bad), ann(2)])
    with pytest.raises(ValueError, match="instances.json: " + message):
        CocoDetectionDataset(img_dir, ann_file)
    with pytest.warns(UserWarning, match=message):
        ds = CocoDetectionDataset(img_dir, ann_file, skip_invalid=True)
    assert ds.num_skipped == 1 and len(ds.records[0].boxes) == 1


def test_coco_missing_fields_and_files(tmp_path):
    img_dir, ann_file = write_coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 9}])
    with pytest.raises(ValueError, match=r"annotations\[0\] \(id 1\): missing field\(s\) bbox"):
        CocoDetectionDataset(img_dir, ann_file)
    img_dir, ann_file = write_coco(tmp_path, [], images=[{"id": 1, "file_name": "gone.png", "width": 4, "height": 4}])
    with pytest.raises(FileNotFoundError, match=r"images\[0\] \(id 1\): image file .*gone.png"):
        CocoDetectionDataset(img_dir, ann_file)
    img_dir, ann_file = write_coco(tmp_path, [], images=[{"id": 1, "file_name": "a.png"}])
    with pytest.raises(ValueError, match=r"images\[0\]: missing field\(s\) width, height"):
        CocoDetectionDataset(img_dir, ann_file)
    (img_dir / "a.png").write_bytes(b"not a png")
    img_dir2, ann_file2 = tmp_path / "img", tmp_path / "instances.json"
    ann_file2.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                                     "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(ValueError, match="a.png .*could not be read"):
        CocoDetectionDataset(img_dir2, ann_file2)[0]


def write_voc(root, objects, split="train"):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (50, 40)).save(root / "JPEGImages" / "000001.jpg")
    xml = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, difficult, b in objects)
    (root / "Annotations" / "000001.xml").write_text(
        f"<annotation><filename>000001.jpg</filename><size><width>50</width><height>40</height></size>{xml}"
        "</annotation>")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("000001\n")


def test_voc_dataset_difficult_and_errors(tmp_path):
    write_voc(tmp_path, [("dog", 0, (2, 3, 20, 30)), ("cat", 1, (5, 5, 9, 9))])
    ds = VocDetectionDataset(tmp_path, "train")
    image, target = ds[0]
    assert target["labels"].tolist() == [12] and target["boxes"].tolist() == [[2, 3, 20, 30]]
    crowd = [a["iscrowd"] for a in ds.coco_ground_truth()["annotations"]]
    assert crowd == [0, 1]  # difficult objects are ignored by COCO evaluation
    write_voc(tmp_path, [("unicorn", 0, (2, 3, 20, 30))])
    with pytest.raises(ValueError, match=r"000001.xml: object\[0\]: class 'unicorn'"):
        VocDetectionDataset(tmp_path, "train")
    write_voc(tmp_path, [("dog", 0, (20, 3, 20, 30))])
    with pytest.raises(ValueError, match=r"000001.xml: object\[0\]: box .* non-positive"):
        VocDetectionDataset(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="val.txt"):
        VocDetectionDataset(tmp_path, "val")


def test_hflip_moves_boxes():
    from torchvision import tv_tensors

    image = tv_tensors.Image(torch.zeros(3, 20, 100, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 2.0, 30.0, 12.0]]), format="XYXY", canvas_size=(20, 100))
    transform = build_transforms(True, hflip=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        _, target = transform(image, {"boxes": boxes, "labels": torch.tensor([1])})
        seen.add(tuple(target["boxes"][0].tolist()))
    assert seen == {(10.0, 2.0, 30.0, 12.0), (70.0, 2.0, 90.0, 12.0)}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    make_scenes(out, num_train=20, num_val=10, seed=5)
    return out


def test_scenes_are_valid_coco_with_the_occlusion_bound(scenes):
    from faster_coco_eval import COCO as FastCOCO
    from pycocotools.coco import COCO

    for split, count in (("train", 20), ("val", 10)):
        path = scenes / "annotations" / f"instances_{split}.json"
        gt = json.loads(path.read_text())
        assert len(gt["images"]) == count and len(gt["categories"]) == 10
        assert gt["info"]["fashion_mnist_split"] == ("train" if split == "train" else "test")
        per_image = np.bincount([a["image_id"] for a in gt["annotations"]], minlength=count + 1)[1:]
        assert per_image.min() >= 1 and per_image.max() <= 6
        for a in gt["annotations"]:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
            assert 16 * 0.1 <= max(w, h) <= 56
            assert a["visible_fraction"] >= 1 - MAX_HIDDEN
        assert Image.open(scenes / split / gt["images"][0]["file_name"]).size == (128, 128)
        COCO(str(path))
        FastCOCO(str(path))


def test_scenes_are_deterministic_by_seed(scenes, tmp_path):
    make_scenes(tmp_path / "same", num_train=20, num_val=10, seed=5)
    make_scenes(tmp_path / "other", num_train=20, num_val=10, seed=6)
    ann = "annotations/instances_train.json"
    assert (tmp_path / "same" / ann).read_text() == (scenes / ann).read_text()
    assert (tmp_path / "same/train/000003.png").read_bytes() == (scenes / "train/000003.png").read_bytes()
    assert (tmp_path / "other" / ann).read_text() != (scenes / ann).read_text()


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_a_named_directory_and_clear_errors(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (30, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (30,)))
    assert main(["data", "scenes", "--out", str(tmp_path / "out"), "--train", "3", "--val", "2",
                 "--fashion-mnist", str(tmp_path)]) == 0
    assert len(json.loads((tmp_path / "out/annotations/instances_val.json").read_text())["images"]) == 2
    with pytest.raises(FileNotFoundError, match="missing t10k-images"):
        (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
        find_fashion_mnist(tmp_path)
    monkeypatch.setenv("HARMONICDET_FASHION_MNIST", str(tmp_path / "nowhere"))
    monkeypatch.setattr("harmonicdet.data.fashion_mnist.STANDARD_LOCATIONS", ())
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        find_fashion_mnist()
