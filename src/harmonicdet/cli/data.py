"""``harmonicdet data scenes``: write the Fashion-MNIST scenes as a COCO dataset; ``harmonicdet data yolo``: any
dataset in the YOLO layout; ``harmonicdet data tiles``: large photographs cut into fixed-size COCO tiles."""

from __future__ import annotations

import argparse
import time


def _scenes(args: argparse.Namespace) -> int:
    from harmonicdet.data.scenes import make_scenes

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

    from harmonicdet.data.coco import CocoDetectionDataset
    from harmonicdet.data.scenes import scenes_paths
    from harmonicdet.data.voc import VocDetectionDataset
    from harmonicdet.data.yolo import write_yolo_dataset

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
    written = write_yolo_dataset(args.out, splits)
    for split in splits:
        boxes = written[f"{split}_boxes"]
        print(f"{split}: {len(splits[split].records)} images, {boxes['boxes']} boxes ({boxes['clipped']} clipped to "
              f"their image, {boxes['dropped']} dropped with nothing left inside); {written[f'{split}_images']}, "
              f"{written[f'{split}_labels']}, {written[f'{split}_json']}")
    print(f"data_yaml: {written['data_yaml']}")
    return 0


def _tiles(args: argparse.Namespace) -> int:
    from harmonicdet.data.coco import CocoDetectionDataset
    from harmonicdet.data.tiles import TileSpec, make_tiles
    from harmonicdet.data.voc import VOC_CLASSES, VocDetectionDataset

    if (args.voc is None) == (args.coco is None):
        raise ValueError("give exactly one source: --voc ROOT or --coco IMAGES ANN")
    spec = TileSpec(size=args.size, overlap=args.overlap, min_visible=args.min_visible, keep_empty=args.keep_empty)
    if args.voc is not None:
        classes = VOC_CLASSES if args.classes is None else [c.strip() for c in args.classes.split(",")]
        if not all(classes):
            raise ValueError(f"--classes must be comma-separated class names, got {args.classes!r}")
        source = VocDetectionDataset(args.voc, args.split, classes=classes, skip_invalid=args.skip_invalid)
    else:
        if args.classes is not None:
            raise ValueError("--classes is for --voc; a COCO file names its categories")
        source = CocoDetectionDataset(args.coco[0], args.coco[1], skip_invalid=args.skip_invalid)
    result = make_tiles(source, args.out, spec, val_images=args.val_images, val_fraction=args.val_fraction,
                        seed=args.seed, single_class=args.single_class)
    for split in ("train", "val"):
        counts = result[f"{split}_counts"]
        print(f"{split}: {counts['tiles']} tiles with {counts['boxes']} boxes from {counts['sources']} source "
              f"image(s); {result[f'{split}_images']}, {result[f'{split}_annotations']}")
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
        "its test split; the output is a function of --seed. OUT must be new, empty or made by this command: "
        "made with the same parameters it is reused, otherwise replaced as a whole (written beside it and renamed "
        "into place).")
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
        "Crowd (COCO) and difficult (VOC) objects are left out of the YOLO labels and kept as iscrowd=1 in the JSONs. "
        "An image whose file is not the size its annotation says is refused; boxes past the image are clipped to it "
        "(counted in the output). OUT must be new, empty or made by this command (then replaced as a whole).")
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

    p = data.add_parser(
        "tiles", help="cut large annotated photographs (VOC or COCO) into fixed-size COCO tiles, split by source image",
        description="Cut every source image into SIZE x SIZE tiles overlapping by OVERLAP pixels; the last tile of a "
        "row or column is shifted to end at the image border (an image smaller than a tile is padded with black). "
        "A box is kept in a tile, clipped to it, when at least MIN_VISIBLE of its area lies inside (ignored objects "
        "too, kept as iscrowd=1); tiles without a kept box are dropped unless --keep-empty. All tiles of a source "
        "image go to one split. Writes OUT/{train,val}/<stem>_x<X>_y<Y>.png and "
        "OUT/annotations/instances_{train,val}.json; the same inputs give the same files. OUT must be new, empty "
        "or made by this command before (then it is replaced as a whole).")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--voc", default=None, metavar="ROOT", help="a VOC folder (Annotations, JPEGImages, ImageSets)")
    p.add_argument("--split", default="trainval", help="with --voc: the ImageSets/Main list to tile (default trainval)")
    p.add_argument("--classes", default=None, metavar="A,B,...",
                   help="with --voc: the class names, comma-separated (default: the 20 VOC classes)")
    p.add_argument("--coco", nargs=2, default=None, metavar=("IMAGES", "ANN"), help="image folder and instances JSON")
    p.add_argument("--single-class", default=None, metavar="NAME", help="every object becomes the one class NAME")
    p.add_argument("--size", type=int, default=400, help="tile side in pixels (default 400)")
    p.add_argument("--overlap", type=int, default=100, help="overlap of neighbouring tiles in pixels (default 100)")
    p.add_argument("--min-visible", type=float, default=0.5,
                   help="keep a box in a tile when at least this fraction of its area lies inside (default 0.5)")
    p.add_argument("--keep-empty", action="store_true", help="keep tiles without a box")
    p.add_argument("--val-images", nargs="+", default=None, metavar="NAME",
                   help="the source images (file names or stems) whose tiles form the val split")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="instead of --val-images: this fraction of the source images, drawn with --seed")
    p.add_argument("--seed", type=int, default=0, help="seed of --val-fraction's draw (default 0)")
    p.add_argument("--skip-invalid", action="store_true", help="skip invalid annotations with a warning")
    p.set_defaults(func=_tiles)
