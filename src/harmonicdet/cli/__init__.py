"""The ``harmonicdet`` console command: a thin dispatcher over the package's sub-commands.

Each sub-command lives in the module that owns its work and exposes
``add_parser(subparsers)``; the parser it registers sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# Modules that register a sub-command; imported lazily so `harmonicdet --help` stays fast.
_COMMAND_MODULES = (
    "harmonicdet.cli.train",
    "harmonicdet.cli.demo",
    "harmonicdet.cli.study",
    "harmonicdet.cli.predict",
    "harmonicdet.cli.figures",
    "harmonicdet.cli.consistency",
    "harmonicdet.cli.draw",
    "harmonicdet.cli.data",
    "harmonicdet.cli.yolo",  # imports Ultralytics only when run
    "harmonicdet.cli.detr",  # imports transformers only when run
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harmonicdet",
        description="Harmonic losses for consistent object detection (ICCV 2021).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:  # Ctrl-C: one line (train says where --resume continues), no traceback
        print(f"harmonicdet {args.command}: {str(err) or 'interrupted'}", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        # bad input is the user's to fix: one line naming it, no traceback
        print(f"harmonicdet {args.command}: error: {error_line(err)}", file=sys.stderr)
        return 2


def positive_int(text: str) -> int:
    """An option's integer value, at least 1 (an ``argparse`` ``type``: a bad value exits 2 naming the option)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# harmonicdet.analysis.consistency's SCORE_HI, SCORE_LO, IOU_LOW, IOU_HIGH, written out so that building the parser
# imports no numpy (a test checks they agree)
SCORE_HI, SCORE_LO, IOU_LOW, IOU_HIGH = 0.5, 0.2, 0.5, 0.75


def add_band_arguments(parser: argparse.ArgumentParser) -> None:
    """``--score-hi``, ``--score-lo``, ``--iou-low`` and ``--iou-high``: the bands that make a detection
    inconsistent (a high score on a badly localised box, a low score on a well-localised one)."""
    parser.add_argument("--score-hi", type=float, default=SCORE_HI, help=f"high-score threshold (default {SCORE_HI})")
    parser.add_argument("--score-lo", type=float, default=SCORE_LO, help=f"low-score threshold (default {SCORE_LO})")
    parser.add_argument("--iou-low", type=float, default=IOU_LOW,
                        help=f"IoU below which a box is badly localised (default {IOU_LOW})")
    parser.add_argument("--iou-high", type=float, default=IOU_HIGH,
                        help=f"IoU from which a box is well localised (default {IOU_HIGH})")


def error_line(err: BaseException) -> str:
    """The message of ``err`` on one line; an error re-raised by a DataLoader worker (its message is the
    worker's whole traceback) is unwrapped to the original error's message."""
    text = str(err)
    if "Original Traceback (most recent call last):" in text:
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        prefix, sep, message = last.partition(": ")
        text = message if sep and prefix.replace(".", "").replace("_", "").isalnum() else last
    return " ".join(text.split("\n")).strip()


if __name__ == "__main__":
    sys.exit(main())
