"""``harmonicdet demo``: standard vs harmonicdet on the Fashion-MNIST scenes, one table."""

from __future__ import annotations

import argparse
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from harmonicdet.apps.demo import run_demo

    run_demo(Path(args.out), budget_minutes=args.budget_minutes, fashion_mnist=args.fashion_mnist,
             seed=args.seed, num_train=args.train_images, num_val=args.val_images)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="train standard vs harmonic on Fashion-MNIST scenes and compare",
                              description="Make the Fashion-MNIST scenes, train the same small FCOS twice "
                              "(standard and harmonicdet presets, same seed and budget), evaluate both, print a table.")
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--budget-minutes", type=float, default=9.0,
                   help="wall-clock budget of the whole demo; sets the iteration count (default: 9)")
    p.add_argument("--fashion-mnist", default=None, metavar="DIR",
                   help="folder with the four Fashion-MNIST *-ubyte.gz files (default: Debian's dataset-fashion-mnist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=300)
    p.set_defaults(func=_demo)
