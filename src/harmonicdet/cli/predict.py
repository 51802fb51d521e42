"""``harmonicdet predict``: run a trained detector on image files; PNGs with the detections and COCO results."""

from __future__ import annotations

import argparse


def _predict(args: argparse.Namespace) -> int:
    from harmonicdet.engine.config import load_config
    from harmonicdet.apps.predict import predict

    config = load_config(args.config, args.set)
    summary = predict(config, checkpoint=args.checkpoint, images=args.images, out_dir=args.out,
                      score_thresh=args.score_thresh, gt=args.gt, batch_size=args.batch_size,
                      max_per_image=args.max_dets, show_progress=not args.quiet)
    print(f"{len(summary['images'])} images, {summary['num_detections']} detections on {summary['device']}: "
          f"wrote the PNGs, {summary['predictions']} and images.json to {args.out}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="run a trained detector on images: PNGs with the detections and COCO results",
        description="Build the config's detector, load CHECKPOINT and run it in batches on the images "
        "(train.device; auto: CUDA when available). Writes one PNG per image (of its size) with each detection "
        "scoring >= --score-thresh drawn with its class name and score, predictions.json (COCO results of every "
        "detection the model returns) and images.json (id, file_name, size, png of each image). Image ids: "
        "those of --gt, matched by file_name; without --gt, 1, 2, ... in input order (folders sorted by name).")
    p.add_argument("config", help="YAML config the model was trained with (e.g. RUN/config.yaml)")
    p.add_argument("--checkpoint", required=True, help="model_final.pt or last.pt")
    p.add_argument("--images", required=True, nargs="+", metavar="PATH",
                   help="image files or folders of images (not recursive)")
    p.add_argument("--out", required=True, help="output folder: new, empty or made by predict (then replaced as a "
                   "whole)")
    p.add_argument("--score-thresh", type=float, default=0.3, help="draw detections scoring at least this "
                   "(default 0.3; predictions.json keeps all)")
    p.add_argument("--max-dets", type=int, default=50, help="detections drawn per image (default 50)")
    p.add_argument("--gt", default=None, metavar="ANN.json",
                   help="COCO ground truth: image ids (matched by file_name) and categories from it")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: eval.batch_size)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.device=cpu (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)
