"""``harmonicdet data scenes``: write the Fashion-MNIST scenes as a COCO dataset."""

from __future__ import annotations

import argparse
import time


def _scenes(args: argparse.Namespace) -> int:
    from .scenes import make_scenes

    start = time.perf_counter()
    paths = make_scenes(args.out, num_train=args.train, num_val=args.val, seed=args.seed,
                        fashion_mnist=args.fashion_mnist)
    print(f"scenes in {time.perf_counter() - start:.1f} s: " + ", ".join(f"{k}={v}" for k, v in paths.items()))
    return 0


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="make datasets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("scenes", help="Fashion-MNIST items composed into occluded 128x128 scenes (COCO format)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train", type=int, default=2000, help="training scenes (default 2000)")
    p.add_argument("--val", type=int, default=300, help="validation scenes (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fashion-mnist", default=None, metavar="DIR",
                   help="folder with the four *-ubyte.gz files (default: $HARMONICDET_FASHION_MNIST, then "
                   "Debian's dataset-fashion-mnist)")
    p.set_defaults(func=_scenes)
