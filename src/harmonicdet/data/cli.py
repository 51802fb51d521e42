"""``harmonicdet data scenes``: write the Fashion-MNIST scenes as a COCO dataset; ``harmonicdet data yolo``: any
dataset in the YOLO layout."""

from __future__ import annotations

import argparse
import time


def _scenes(args: argparse.Namespace) -> int:
    from .scenes import make_scenes

    for flag, value, least in (("--train", args.train, 0), ("--val", args.val, 0), ("--seed", args.seed, 0),
                               ("--workers", args.workers, 1)):
        if value < least:
            raise ValueError(f"{flag} must be an integer >= {least}, got {value}")
    start = time.perf_counter()
    paths = make_scenes(args.out, num_train=args.train, num_val=args.val, seed=args.seed,
                        fashion_mnist=args.fashion_mnist, workers=args.workers)
    print(f"scenes ready in {time.perf_counter() - start:.1f} s")
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


def _yolo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .coco import CocoDetectionDataset
    from .scenes import scenes_paths
    from .voc import VocDetectionDataset
    from .yolo import write_yolo_dataset

    sources = [args.scenes is not None, bool(args.coco_train or args.coco_val), args.voc is not None]
    if sum(sources) != 1:
        raise ValueError("give exactly one source: --scenes DIR, --coco-train/--coco-val IMAGES ANN, or --voc ROOT")
    splits = {}
    if args.scenes is not None:
        root = Path(args.scenes)
        for split in ("train", "val"):
            layout = scenes_paths(root, split)
            if not Path(layout["ann_file"]).is_file():
                raise FileNotFoundError(f"{layout['ann_file']} does not exist (make the scenes with "
                                        "`harmonicdet data scenes`)")
            splits[split] = CocoDetectionDataset(**layout, skip_invalid=args.skip_invalid)
    elif args.voc is not None:
        for split, name in (("train", args.train_split), ("val", args.val_split)):
            splits[split] = VocDetectionDataset(args.voc, name, skip_invalid=args.skip_invalid)
    else:
        for split, pair in (("train", args.coco_train), ("val", args.coco_val)):
            if pair:
                splits[split] = CocoDetectionDataset(pair[0], pair[1], skip_invalid=args.skip_invalid)
    paths = write_yolo_dataset(args.out, splits)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="make datasets",
                                 description="Make datasets.").add_subparsers(dest="data_command", metavar="WHAT",
                                                                              required=True)
    p = data.add_parser(
        "scenes", help="Fashion-MNIST items composed into occluded 128x128 scenes (COCO format)",
        description="Compose real Fashion-MNIST items (2-6 per image, 16-56 px, tinted, at most half of any "
        "item hidden) into 128x128 scenes and write OUT/{train,val}/*.png and "
        "OUT/annotations/instances_{train,val}.json. Train scenes use Fashion-MNIST's train split, val scenes "
        "its test split; the output is a function of --seed, and an existing OUT made with the same "
        "parameters is reused.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train", type=int, default=2000, help="training scenes (default 2000)")
    p.add_argument("--val", type=int, default=300, help="validation scenes (default 300)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--fashion-mnist", default=None, metavar="DIR",
                   help="folder with the four *-ubyte.gz files (default: $HARMONICDET_FASHION_MNIST, then "
                   "/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist, then "
                   "/usr/local/share/datasets/fashion-mnist)")
    p.add_argument("--workers", type=int, default=4, help="threads writing PNGs (default 4)")
    p.set_defaults(func=_scenes)

    p = data.add_parser(
        "yolo", help="write the scenes, a COCO or a VOC dataset in the YOLO layout (Ultralytics)",
        description="Write OUT/images/{train,val}/<image_id>.<ext>, OUT/labels/{train,val}/<image_id>.txt, "
        "OUT/data.yaml and the COCO ground truth OUT/{train,val}.json. Image files are named by their COCO image id "
        "and YOLO class k is category_id k + 1 in the JSONs, which is what Ultralytics' val(save_json=True) writes to "
        "predictions.json: `harmonicdet consistency --gt OUT/val.json --dt predictions.json` reads it as it is. "
        "Crowd (COCO) and difficult (VOC) objects are left out of the YOLO labels and kept as iscrowd=1 in the JSONs.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scenes", default=None, metavar="DIR", help="a folder made by `harmonicdet data scenes`")
    p.add_argument("--coco-train", nargs=2, default=None, metavar=("IMAGES", "ANN"),
                   help="COCO training split: image folder and instances JSON")
    p.add_argument("--coco-val", nargs=2, default=None, metavar=("IMAGES", "ANN"),
                   help="COCO validation split: image folder and instances JSON")
    p.add_argument("--voc", default=None, metavar="ROOT", help="a VOC folder (Annotations, JPEGImages, ImageSets)")
    p.add_argument("--train-split", default="train", help="VOC split list for training (default train)")
    p.add_argument("--val-split", default="val", help="VOC split list for validation (default val)")
    p.add_argument("--skip-invalid", action="store_true", help="skip invalid annotations with a warning")
    p.set_defaults(func=_yolo)
