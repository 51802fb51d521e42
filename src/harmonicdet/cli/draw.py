"""``harmonicdet draw``: any detector's COCO results drawn on the images of a COCO ground truth; imports nothing
heavy until it runs."""

from __future__ import annotations

import argparse

from harmonicdet.cli import add_band_arguments


def _run(args: argparse.Namespace) -> int:
    from harmonicdet.visualization.coco import draw_coco_results
    from harmonicdet.visualization.draw import Bands

    if args.label and len(args.label) != len(args.dt):
        raise ValueError(f"{len(args.dt)} --dt files but {len(args.label)} --label values")
    bands = Bands(score_hi=args.score_hi, score_lo=args.score_lo, iou_low=args.iou_low, iou_high=args.iou_high)
    summary = draw_coco_results(args.gt, args.dt, args.out, args.images, labels=args.label, ids=args.ids,
                                worst=args.worst, score_thresh=args.score_thresh, max_per_image=args.max_dets,
                                bands=bands, scale=args.scale, show_progress=not args.quiet)
    inconsistent = {label: sum(i["counts"][label]["high_score_low_iou"] + i["counts"][label]["low_score_high_iou"]
                               for i in summary["images"]) for label in summary["labels"]}
    shown = ", ".join(f"{label} {n}" for label, n in inconsistent.items())
    print(f"wrote {len(summary['images'])} images and draw.json to {args.out} (inconsistent detections: {shown})")
    for label in summary["labels"]:
        empty = [i["best_score"][label] for i in summary["images"] if i["counts"][label]["drawn"] == 0]
        if empty:
            scores = [s for s in empty if s is not None]
            why = (f"no detection there scores >= {args.score_thresh:g} or is inconsistent (best score: "
                   f"{max(scores):.3f})" if scores else "they have no detections")
            print(f"{label}: nothing drawn on {len(empty)} of {len(summary['images'])} images: {why}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "draw", help="draw COCO results on their images, coloured by IoU with the ground truth",
        description="Draw any detector's COCO results on the images of a COCO ground truth. Each detection is "
        "coloured by its IoU with the best-matching object of its class (the matching of `harmonicdet "
        "consistency`): green >= --iou-high, amber between, red < --iou-low; ground truth in white. A magenta "
        "frame and '!' mark a high score on a badly localised box (score >= --score-hi, IoU < --iou-low), a blue "
        "frame and '?' a low score on a well-localised one (score < --score-lo, IoU >= --iou-high). Drawn: "
        "every such inconsistent detection and the others scoring >= --score-thresh, at most --max-dets per "
        "image. With several --dt, each image's panels side by side. Writes ID_NAME.png per image and draw.json "
        "(per image: counts per label) into --out.")
    p.add_argument("--gt", required=True, help="COCO ground-truth JSON (instances file)")
    p.add_argument("--dt", required=True, action="append", help="COCO results JSON (repeat to compare)")
    p.add_argument("--label", action="append", help="a name per --dt (default: file stem)")
    p.add_argument("--images", required=True, help="folder the ground truth's file_name are relative to")
    p.add_argument("--out", required=True, help="output folder: new, empty or made by draw (then replaced as a whole)")
    p.add_argument("--ids", type=int, nargs="+", metavar="ID", help="image ids to draw (default: all)")
    p.add_argument("--worst", type=int, metavar="K",
                   help="only the K images (of --ids) with the most inconsistent detections over all --dt")
    p.add_argument("--score-thresh", type=float, default=0.3,
                   help="draw consistent detections scoring at least this (default 0.3)")
    p.add_argument("--max-dets", type=int, default=30, help="detections drawn per image and --dt (default 30)")
    p.add_argument("--scale", type=int, default=1, help="integer upscaling of the pictures (default 1; at most "
                   "16384 px a side)")
    add_band_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
