"""Datasets: COCO/VOC parsing and validation, the Fashion-MNIST scenes, v2 transforms, batching."""

import contextlib
import gzip
import io
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from harmonicdet.cli import main
from harmonicdet.data import (
    FASHION_MNIST_CLASSES,
    CocoDetectionDataset,
    VocDetectionDataset,
    build_transforms,
    collate,
    compose_scene,
    find_fashion_mnist,
    load_split,
    make_scenes,
)
from harmonicdet.data.scenes import MAX_HIDDEN

# --------------------------------------------------------------------------- COCO


def write_coco(tmp_path, annotations, images=None, categories=None):
    (tmp_path / "img").mkdir(exist_ok=True)
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "img" / "a.png")
    gt = {"images": images if images is not None else [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}],
          "annotations": annotations,
          "categories": categories or [{"id": 9, "name": "dog"}, {"id": 3, "name": "cat"}]}
    (tmp_path / "instances.json").write_text(json.dumps(gt))
    return tmp_path / "img", tmp_path / "instances.json"


def ann(i, **kw):
    base = {"id": i, "image_id": 7, "category_id": 9, "bbox": [1, 2, 10, 5], "iscrowd": 0}
    base.update(kw)
    return base


def test_coco_dataset_targets_crowd_and_ground_truth(tmp_path):
    from faster_coco_eval import COCO as FastCOCO
    from pycocotools.coco import COCO

    img_dir, ann_file = write_coco(tmp_path, [ann(1), ann(2, category_id=3, bbox=[5, 5, 20, 20], iscrowd=1),
                                              ann(3, category_id=3, bbox=[0.5, 1.5, 3, 4])])
    ds = CocoDetectionDataset(img_dir, ann_file, transforms=build_transforms(False))
    # categories in id order: cat (3) -> label 1, dog (9) -> label 2
    assert ds.classes == ["cat", "dog"] and ds.label_to_category_id == {1: 3, 2: 9}
    assert len(ds) == 1 and ds.num_skipped == 0
    image, target = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert torch.allclose(image[:, 0, 0], torch.tensor([10, 20, 30]) / 255)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes) and target["boxes"].dtype == torch.float32
    assert target["boxes"].tolist() == [[1, 2, 11, 7], [0.5, 1.5, 3.5, 5.5]]  # the crowd object is left out
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [2, 1]
    assert target["image_id"] == 7
    # without transforms: still a float 0-1 image
    raw, raw_target = CocoDetectionDataset(img_dir, ann_file)[0]
    assert raw.dtype == torch.float32 and float(raw.max()) <= 1 and raw_target["labels"].tolist() == [2, 1]

    gt = ds.coco_ground_truth()
    assert gt["images"] == [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}]
    assert [(a["image_id"], a["category_id"], a["iscrowd"], a["bbox"], a["area"]) for a in gt["annotations"]] == [
        (7, 9, 0, [1, 2, 10, 5], 50), (7, 3, 1, [5, 5, 20, 20], 400), (7, 3, 0, [0.5, 1.5, 3, 4], 12)]
    assert sorted((c["id"], c["name"]) for c in gt["categories"]) == [(3, "cat"), (9, "dog")]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    for api in (COCO, FastCOCO):
        assert len(api(str(tmp_path / "gt.json")).getAnnIds(iscrowd=False)) == 2


@pytest.mark.parametrize("bad,message", [
    ({"bbox": [1, 2, 0, 5]}, r"annotations\[0\] \(id 1\): bbox \[1, 2, 0, 5\] \(x, y, w, h\) has non-positive width"),
    ({"bbox": [1, 2, 3, -1]}, r"annotations\[0\] \(id 1\): bbox .* has non-positive height"),
    ({"category_id": 4}, r"annotations\[0\] \(id 1\): category_id 4 is not in categories"),
    ({"image_id": 99}, r"annotations\[0\] \(id 1\): image_id 99 is not in images"),
    ({"bbox": None}, r"annotations\[0\] \(id 1\): bbox must be 4 numbers"),
    ({"bbox": [1, 2, 3]}, r"annotations\[0\] \(id 1\): bbox must be 4 numbers"),
    ({"bbox": [1, 2, float("nan"), 3]}, r"annotations\[0\] \(id 1\): box .* is not finite"),
    ({"bbox": "drop"}, r"annotations\[0\] \(id 1\): missing field\(s\) bbox"),
    ({"category_id": "drop", "image_id": "drop"}, r"annotations\[0\] \(id 1\): missing field\(s\) image_id, category_id"),
])
def test_coco_invalid_annotations_are_named_or_skipped(tmp_path, bad, message):
    first = ann(1, **bad)
    for key in [k for k, v in bad.items() if v == "drop"]:
        del first[key]
    img_dir, ann_file = write_coco(tmp_path, [first, ann(2)])
    with pytest.raises(ValueError, match="^instances.json: " + message):
        CocoDetectionDataset(img_dir, ann_file)
    with pytest.warns(UserWarning, match=message):
        ds = CocoDetectionDataset(img_dir, ann_file, skip_invalid=True)
    assert ds.num_skipped == 1
    assert ds[0][1]["boxes"].tolist() == [[1, 2, 11, 7]] and len(ds.coco_ground_truth()["annotations"]) == 1


def test_coco_skip_invalid_counts_every_skipped_annotation(tmp_path):
    img_dir, ann_file = write_coco(tmp_path, [ann(1, category_id=5), ann(2), ann(3, image_id=8), ann(4, bbox=[0, 0, 0, 0])])
    with pytest.warns(UserWarning) as caught:
        ds = CocoDetectionDataset(img_dir, ann_file, skip_invalid=True)
    assert ds.num_skipped == 3 and len(caught) == 3
    assert [str(w.message).split(": ")[2].split(" (")[0] for w in caught] == ["annotations[0]", "annotations[2]",
                                                                            "annotations[3]"]


def test_coco_image_entries_and_files(tmp_path):
    img_dir, ann_file = write_coco(tmp_path, [], images=[{"id": 1, "width": 40, "height": 30}])
    with pytest.raises(ValueError, match=r"^instances.json: images\[0\]: missing field\(s\) file_name"):
        CocoDetectionDataset(img_dir, ann_file)
    img_dir, ann_file = write_coco(tmp_path, [], images=[{"id": 1, "file_name": "a.png"}])
    with pytest.raises(ValueError, match=r"images\[0\]: missing field\(s\) width, height"):
        CocoDetectionDataset(img_dir, ann_file, skip_invalid=True)  # image entries are never skipped
    img_dir, ann_file = write_coco(tmp_path, [], images=[{"id": 1, "file_name": "a.png", "width": 0, "height": 30}])
    with pytest.raises(ValueError, match=r"images\[0\] \(id 1\): width and height must be positive"):
        CocoDetectionDataset(img_dir, ann_file)
    img_dir, ann_file = write_coco(tmp_path, [], images=[{"id": 1, "file_name": "gone.png", "width": 4, "height": 4}])
    with pytest.raises(FileNotFoundError, match=r"images\[0\] \(id 1\): image file .*gone.png does not exist"):
        CocoDetectionDataset(img_dir, ann_file)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        CocoDetectionDataset(img_dir, tmp_path / "nothere.json")
    img_dir, ann_file = write_coco(tmp_path, [], categories=[{"id": 1}])
    with pytest.raises(ValueError, match=r"categories\[0\]: missing field\(s\) name"):
        CocoDetectionDataset(img_dir, ann_file)
    # a size that differs from the entry, then an unreadable file: both found in __getitem__, named
    img_dir, ann_file = write_coco(tmp_path, [], images=[{"id": 1, "file_name": "a.png", "width": 4, "height": 4}])
    ds = CocoDetectionDataset(img_dir, ann_file)
    with pytest.raises(ValueError, match=r"a.png is 40x30 but its annotation says 4x4"):
        ds[0]
    (img_dir / "a.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"a.png \(image_id 1\) could not be read"):
        ds[0]


# --------------------------------------------------------------------------- VOC


def write_voc(root, objects, split="train", image=True):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    if image:
        Image.new("RGB", (50, 40), (200, 100, 0)).save(root / "JPEGImages" / "000001.jpg")
    xml = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
        + "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), b) if v is not None)
        + "</bndbox></object>"
        for name, difficult, b in objects)
    (root / "Annotations" / "000001.xml").write_text(
        f"<annotation><filename>000001.jpg</filename><size><width>50</width><height>40</height><depth>3</depth>"
        f"</size>{xml}</annotation>")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("000001\n")


def test_voc_dataset_difficult_labels_and_coordinates(tmp_path):
    write_voc(tmp_path, [("dog", 0, (2, 3, 20, 30)), ("cat", 1, (5, 5, 9, 9)), ("person", 0, (1, 1, 50, 40))])
    ds = VocDetectionDataset(tmp_path, "train", transforms=build_transforms(False))
    assert ds.classes[11] == "dog" and ds.label_to_category_id[12] == 12 and len(ds.classes) == 20
    image, target = ds[0]
    assert image.shape == (3, 40, 50) and image.dtype == torch.float32 and target["image_id"] == 1
    # 1-based inclusive pixel indices -> continuous coordinates; the whole-image box is [0, 0, W, H]
    assert target["labels"].tolist() == [12, 15]
    assert target["boxes"].tolist() == [[1, 2, 20, 30], [0, 0, 50, 40]]
    gt = ds.coco_ground_truth()
    assert gt["images"] == [{"id": 1, "file_name": "000001.jpg", "width": 50, "height": 40}]
    assert [(a["category_id"], a["iscrowd"], a["bbox"]) for a in gt["annotations"]] == [
        (12, 0, [1, 2, 19, 28]), (8, 1, [4, 4, 5, 5]), (15, 0, [0, 0, 50, 40])]  # difficult -> iscrowd=1
    assert {c["id"]: c["name"] for c in gt["categories"]}[8] == "cat"

    custom = VocDetectionDataset(tmp_path, "train", classes=("person", "dog", "cat"))
    assert custom.classes == ["person", "dog", "cat"] and custom.label_to_category_id == {1: 1, 2: 2, 3: 3}
    assert custom[0][1]["labels"].tolist() == [2, 1]


def test_voc_errors_name_file_and_object(tmp_path):
    write_voc(tmp_path, [("dog", 0, (2, 3, 20, 30)), ("unicorn", 0, (2, 3, 20, 30))])
    with pytest.raises(ValueError, match=r"^000001.xml: object\[1\]: class 'unicorn' is not in the 20 classes"):
        VocDetectionDataset(tmp_path, "train")
    with pytest.warns(UserWarning, match="unicorn"):
        ds = VocDetectionDataset(tmp_path, "train", skip_invalid=True)
    assert ds.num_skipped == 1 and ds[0][1]["labels"].tolist() == [12]
    write_voc(tmp_path, [("dog", 0, (21, 3, 20, 30))])
    with pytest.raises(ValueError, match=r"000001.xml: object\[0\]: bndbox .*'21', '3', '20', '30'.* non-positive"):
        VocDetectionDataset(tmp_path, "train")
    write_voc(tmp_path, [("dog", 0, (20, 3, 20, 30))])  # xmin == xmax: one pixel wide, valid
    assert VocDetectionDataset(tmp_path, "train")[0][1]["boxes"].tolist() == [[19, 2, 20, 30]]
    write_voc(tmp_path, [("dog", 0, (2, 3, None, 30))])
    with pytest.raises(ValueError, match=r"000001.xml: object\[0\]: missing name or bndbox"):
        VocDetectionDataset(tmp_path, "train")
    write_voc(tmp_path, [("dog", 0, (2, "x", 20, 30))])
    with pytest.raises(ValueError, match=r"000001.xml: object\[0\]: bndbox .* is not numeric"):
        VocDetectionDataset(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="val.txt"):
        VocDetectionDataset(tmp_path, "val")
    (tmp_path / "JPEGImages" / "000001.jpg").unlink()
    write_voc(tmp_path, [("dog", 0, (2, 3, 20, 30))], image=False)
    with pytest.raises(FileNotFoundError, match=r"000001.xml: image file .*000001.jpg does not exist"):
        VocDetectionDataset(tmp_path, "train")


def test_coco_evaluation_ignores_difficult_objects(tmp_path):
    """A confident detection on a difficult object is neither a true nor a false positive."""
    from faster_coco_eval import COCO as FastCOCO
    from faster_coco_eval import COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    write_voc(tmp_path, [("dog", 0, (2, 3, 20, 30)), ("dog", 1, (30, 5, 45, 35))])
    gt = VocDetectionDataset(tmp_path, "train").coco_ground_truth()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    detections = [{"image_id": 1, "category_id": 12, "bbox": [30, 5, 15, 30], "score": 0.9},  # the difficult one
                  {"image_id": 1, "category_id": 12, "bbox": [1, 2, 19, 28], "score": 0.5}]
    for api, evaluator in ((COCO, COCOeval), (FastCOCO, COCOeval_faster)):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = api(str(tmp_path / "gt.json"))
            run = evaluator(coco_gt, coco_gt.loadRes(detections), "bbox")
            run.evaluate()
            run.accumulate()
            run.summarize()
        assert run.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]: the 0.9 detection did not count as a miss


# --------------------------------------------------------------------------- transforms, collate


def test_hflip_moves_boxes():
    image = tv_tensors.Image(torch.zeros(3, 20, 100, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 2.0, 30.0, 12.0]]), format="XYXY", canvas_size=(20, 100))
    transform = build_transforms(True, hflip=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        out, target = transform(image, {"boxes": boxes, "labels": torch.tensor([1]), "image_id": 3})
        assert out.dtype == torch.float32 and target["image_id"] == 3
        seen.add(tuple(target["boxes"][0].tolist()))
    assert seen == {(10.0, 2.0, 30.0, 12.0), (70.0, 2.0, 90.0, 12.0)}  # x -> 100 - x
    for train in (False, True):
        no_flip = build_transforms(train, hflip=False)
        assert all(no_flip(image, {"boxes": boxes, "labels": torch.tensor([1])})[1]["boxes"].tolist()
                   == [[10.0, 2.0, 30.0, 12.0]] for _ in range(5))


def test_flip_of_a_dataset_sample_matches_the_flipped_image(tmp_path):
    write_voc(tmp_path, [("dog", 0, (2, 3, 20, 30))])
    pixels = np.zeros((40, 50, 3), dtype=np.uint8)
    pixels[2:30, 1:20] = 255  # the box's pixels, continuous [1, 2, 20, 30]
    Image.fromarray(pixels).save(tmp_path / "JPEGImages" / "000001.jpg", quality=100)
    ds = VocDetectionDataset(tmp_path, "train", transforms=build_transforms(True))
    torch.manual_seed(1)
    for _ in range(6):
        image, target = ds[0]
        x1, y1, x2, y2 = (int(v) for v in target["boxes"][0].tolist())
        assert (x1, x2) in {(1, 20), (30, 49)}
        bright = image[0] > 0.5
        inside = bright[y1:y2, x1:x2]
        assert inside.float().mean() > 0.95 and bright.sum() - inside.sum() < 0.05 * inside.numel()


def test_collate_keeps_lists():
    batch = [(torch.zeros(3, 4, 5), {"labels": torch.tensor([1])}), (torch.ones(3, 6, 2), {"labels": torch.tensor([])})]
    images, targets = collate(batch)
    assert isinstance(images, list) and [i.shape for i in images] == [(3, 4, 5), (3, 6, 2)]
    assert targets == [batch[0][1], batch[1][1]]
    assert collate([]) == ([], [])


# --------------------------------------------------------------------------- scenes


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
        assert len(gt["images"]) == count
        assert [c["name"] for c in gt["categories"]] == list(FASHION_MNIST_CLASSES)
        assert FASHION_MNIST_CLASSES[0] == "T-shirt/top" and FASHION_MNIST_CLASSES[9] == "Ankle boot"
        per_image = np.bincount([a["image_id"] for a in gt["annotations"]], minlength=count + 1)[1:]
        assert per_image.min() >= 2 and per_image.max() <= 6
        for a in gt["annotations"]:
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
            assert max(w, h) <= 56 and 0 < a["area"] <= w * h
            assert 1 - MAX_HIDDEN <= a["visible_fraction"] <= 1
        # the last item pasted in a scene is never covered
        last = {}
        for a in gt["annotations"]:
            last[a["image_id"]] = a
        assert all(a["visible_fraction"] == 1 for a in last.values())
        for image in gt["images"][:3]:
            with Image.open(scenes / split / image["file_name"]) as im:
                assert im.size == (128, 128) and im.mode == "RGB"
        with contextlib.redirect_stdout(io.StringIO()):
            assert len(COCO(str(path)).getAnnIds()) == len(gt["annotations"])
            assert len(FastCOCO(str(path)).getAnnIds()) == len(gt["annotations"])


def test_scene_items_come_from_the_right_split(scenes):
    for split, source in (("train", "train"), ("val", "test")):
        gt = json.loads((scenes / "annotations" / f"instances_{split}.json").read_text())
        assert gt["info"]["fashion_mnist_split"] == source and gt["info"]["seed"] == 5
        _, labels = load_split(source)
        assert all(a["category_id"] == labels[a["source_index"]] + 1 for a in gt["annotations"])


def test_scenes_load_as_a_detection_dataset(scenes):
    ds = CocoDetectionDataset(scenes / "val", scenes / "annotations/instances_val.json",
                              transforms=build_transforms(False))
    assert len(ds) == 10 and ds.classes == list(FASHION_MNIST_CLASSES)
    image, target = ds[0]
    assert image.shape == (3, 128, 128) and 2 <= len(target["labels"]) <= 6
    assert ds.label_to_category_id == {i: i for i in range(1, 11)}


def test_scenes_are_deterministic_by_seed(scenes, tmp_path):
    make_scenes(tmp_path / "same", num_train=20, num_val=10, seed=5)
    make_scenes(tmp_path / "other", num_train=20, num_val=10, seed=6)
    make_scenes(tmp_path / "fewer_val", num_train=20, num_val=3, seed=5)
    for split in ("train", "val"):
        ann_file = f"annotations/instances_{split}.json"
        assert (tmp_path / "same" / ann_file).read_text() == (scenes / ann_file).read_text()
        assert (tmp_path / "other" / ann_file).read_text() != (scenes / ann_file).read_text()
        for i in (1, 7):
            png = f"{split}/{i:06d}.png"
            assert (tmp_path / "same" / png).read_bytes() == (scenes / png).read_bytes()
            assert (tmp_path / "other" / png).read_bytes() != (scenes / png).read_bytes()
    # each split has its own stream: the train scenes do not depend on num_val
    train = "annotations/instances_train.json"
    assert json.loads((tmp_path / "fewer_val" / train).read_text())["annotations"] == \
        json.loads((scenes / train).read_text())["annotations"]


def test_make_scenes_reuses_matching_output(tmp_path):
    paths = make_scenes(tmp_path, num_train=3, num_val=2, seed=1)
    stamp = paths["train_annotations"].stat().st_mtime_ns
    assert make_scenes(tmp_path, num_train=3, num_val=2, seed=1) == paths
    assert paths["train_annotations"].stat().st_mtime_ns == stamp  # same parameters: reused
    (paths["val_images"] / "000002.png").unlink()
    make_scenes(tmp_path, num_train=3, num_val=2, seed=1)  # an image is missing: regenerated
    assert (paths["val_images"] / "000002.png").is_file()
    make_scenes(tmp_path, num_train=4, num_val=2, seed=1)
    assert len(json.loads(paths["train_annotations"].read_text())["images"]) == 4


def test_compose_scene_boxes_and_visible_fractions_match_the_masks():
    """With solid square items the masks are the boxes, so visibility can be recomputed from the boxes alone."""
    images = np.full((5, 28, 28), 255, dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(30):
        pixels, objects = compose_scene(rng, images, labels)
        assert pixels.shape == (128, 128, 3) and pixels.dtype == np.uint8 and 2 <= len(objects) <= 6
        covered = np.zeros((128, 128), dtype=bool)
        for obj in reversed(objects):  # paint order reversed: what lies above each item
            x1, y1, x2, y2 = obj["box"]
            assert x2 - x1 == y2 - y1 and 16 <= x2 - x1 <= 56 and obj["area"] == (x2 - x1) ** 2
            visible = 1 - covered[y1:y2, x1:x2].mean()
            assert obj["visible_fraction"] == pytest.approx(visible, abs=1e-4) and visible >= 1 - MAX_HIDDEN
            covered[y1:y2, x1:x2] = True
            checked += visible < 1
    assert checked > 5  # occlusion does happen


# --------------------------------------------------------------------------- Fashion-MNIST files


@pytest.fixture
def tiny_fashion_mnist(tmp_path, write_idx):
    """Synthetic IDX files: train items are classes 0-4, test items classes 5-9."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, low in (("train", 0), ("t10k", 5)):
        items = rng.integers(0, 255, (12, 28, 28))
        items[:, :4] = 0
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", items)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(low, low + 5, (12,)))
    return folder


def test_cli_scenes_from_a_named_directory(tiny_fashion_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "scenes", "--out", str(out), "--train", "3", "--val", "2", "--seed", "4",
                 "--fashion-mnist", str(tiny_fashion_mnist)]) == 0
    assert "instances_val.json" in capsys.readouterr().out
    train = json.loads((out / "annotations/instances_train.json").read_text())
    val = json.loads((out / "annotations/instances_val.json").read_text())
    assert len(train["images"]) == 3 and len(val["images"]) == 2 and train["info"]["seed"] == 4
    assert {a["category_id"] for a in train["annotations"]} <= {1, 2, 3, 4, 5}  # Fashion-MNIST train split
    assert {a["category_id"] for a in val["annotations"]} <= {6, 7, 8, 9, 10}  # its test split
    assert sorted(p.name for p in (out / "val").iterdir()) == ["000001.png", "000002.png"]


def test_fashion_mnist_lookup_order_and_clear_errors(tiny_fashion_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("harmonicdet.data.fashion_mnist.STANDARD_LOCATIONS", (tmp_path / "std",))
    monkeypatch.delenv("HARMONICDET_FASHION_MNIST", raising=False)
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist.*--fashion-mnist DIR"):
        find_fashion_mnist()
    assert main(["data", "scenes", "--out", str(tmp_path / "o"), "--train", "1", "--val", "1"]) == 2
    assert capsys.readouterr().err.startswith("harmonicdet data: error: Fashion-MNIST not found")
    monkeypatch.setenv("HARMONICDET_FASHION_MNIST", str(tiny_fashion_mnist))
    assert find_fashion_mnist() == tiny_fashion_mnist
    assert load_split("test")[0].shape == (12, 28, 28)
    monkeypatch.setenv("HARMONICDET_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"\$HARMONICDET_FASHION_MNIST .*nowhere: missing train-images"):
        find_fashion_mnist()
    (tiny_fashion_mnist / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="--fashion-mnist .*: missing t10k-images-idx3-ubyte.gz"):
        find_fashion_mnist(tiny_fashion_mnist)


def test_idx_files_are_validated(tiny_fashion_mnist, write_idx):
    labels = tiny_fashion_mnist / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(12), magic=struct.pack(">BBBB", 0, 0, 8, 3))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz: bad IDX magic number 0x00000803"):
        load_split("train", tiny_fashion_mnist)
    write_idx(labels, np.zeros(11))
    with pytest.raises(ValueError, match="12 train images but 11 labels"):
        load_split("train", tiny_fashion_mnist)
    write_idx(labels, np.full(12, 10))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz: label 10 outside 0..9"):
        load_split("train", tiny_fashion_mnist)
    images = tiny_fashion_mnist / "t10k-images-idx3-ubyte.gz"
    with gzip.open(images, "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 12, 28, 28) + b"\0" * 100)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: 100 data bytes, the header promises"):
        load_split("test", tiny_fashion_mnist)
    images.write_bytes(b"plain bytes")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: not a readable gzip file"):
        load_split("test", tiny_fashion_mnist)
