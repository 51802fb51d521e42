"""``harmonicdet train``, ``eval`` and ``gradients``: the training library's commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from harmonicdet.engine.config import load_config
    from harmonicdet.engine.train import train

    config = load_config(args.config, args.set)
    try:
        out = train(config, resume=args.resume, show_progress=not args.quiet)
    except KeyboardInterrupt:
        from harmonicdet.engine.checkpoint import interruption_message

        raise KeyboardInterrupt(interruption_message(Path(config["output_dir"]))) from None
    print(f"trained: {out / 'model_final.pt'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from harmonicdet.engine.config import load_config
    from harmonicdet.engine.trained_run import evaluate_run

    config = load_config(args.config, args.set)
    report = evaluate_run(config, checkpoint=args.checkpoint, out_dir=args.out, show_progress=not args.quiet)
    if report:
        print(json.dumps(report["summary"], indent=2))
    return 0


def _gradients(args: argparse.Namespace) -> int:
    from harmonicdet.engine.trained_run import run_gradient_norms
    from harmonicdet.io import write_json_atomic

    reports = []
    for run_dir in args.runs:
        report = run_gradient_norms(Path(run_dir), batches=args.batches, batch_size=args.batch_size)
        reports.append(report)
        print(f"{run_dir}")
        widths = {b: len(b) + 2 for b in next(iter(report["norms"].values()))}
        print(f"  {'term':<20}" + "".join(f"{b:>{w}}" for b, w in widths.items()))
        for term, norms in report["norms"].items():
            print(f"  {term:<20}" + "".join(f"{norms[b]:>{w}.4g}" for b, w in widths.items()))
        for pair, cosine in report["backbone_cosine"].items():
            print(f"  backbone cosine {pair}: {cosine:+.3f}")
    if args.out:
        write_json_atomic(reports, Path(args.out))
        print(f"wrote {args.out}")
    return 0


def add_parser(subparsers) -> None:
    overrides = dict(action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set train.lr=0.02 (repeatable)")

    p = subparsers.add_parser("train", help="train a detector from a YAML config",
                              description="Train a detector. Under `torchrun --nproc_per_node N` it runs DDP.")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--set", **overrides)
    p.add_argument("--resume", action="store_true", help="continue from output_dir/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("eval", help="COCO AP and consistency of a trained detector")
    p.add_argument("config", help="YAML config the model was trained with")
    p.add_argument("--checkpoint", required=True, help="model_final.pt or last.pt")
    p.add_argument("--out", default=None, help="folder for results (default: the checkpoint's folder)")
    p.add_argument("--set", **overrides)
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_eval)

    p = subparsers.add_parser("gradients", help="gradient norm of each loss term per branch of trained runs",
                              description="For each run folder (config.yaml + model_final.pt), back-propagate "
                              "every training loss term on its own over the first training batches and print "
                              "the gradient norm per branch (backbone, heads) and the terms' cosine on the backbone.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run folders")
    p.add_argument("--batches", type=int, default=4, help="training batches averaged over (default: 4)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default: 8)")
    p.add_argument("--out", default=None, help="also write the reports to this JSON file")
    p.set_defaults(func=_gradients)
