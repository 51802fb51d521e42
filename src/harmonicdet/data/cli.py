"""``harmonicdet data scenes``: write the Fashion-MNIST scenes as a COCO dataset."""

from __future__ import annotations

import argparse
import time


def _scenes(args: argparse.Namespace) -> int:
    from .scenes import make_scenes

    start = time.perf_counter()
    paths = make_scenes(args.out, num_train=args.train, num_val=args.val, seed=args.seed,
                        fashion_mnist=args.fashion_mnist, workers=args.workers)
    print(f"scenes ready in {time.perf_counter() - start:.1f} s")
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
