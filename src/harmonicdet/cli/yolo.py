"""``harmonicdet yolo-study``'s arguments (:mod:`harmonicdet.apps.yolo_study`); imports nothing heavy."""

from __future__ import annotations

import argparse
from typing import Any

from harmonicdet.cli import positive_int


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "yolo-study", help="YOLO on the scenes: Ultralytics' loss vs the Harmonic loss (needs harmonicdet[ultralytics])",
        description="Train YOLO from random init on the Fashion-MNIST scenes with Ultralytics' loss and the Harmonic "
                    "loss, record each finished run under OUT/runs (resumable across sittings) and write the study "
                    "report (summary.json, summary.md, plots) and factors.md to OUT.")
    p.add_argument("--out", default="studies/yolo", help="records and report (default studies/yolo)")
    p.add_argument("--runs", default="runs/yolo_study", help="run folders with weights (default runs/yolo_study)")
    p.add_argument("--data", default="data/yolo_scenes", help="scenes + YOLO layout (default data/yolo_scenes)")
    p.add_argument("--model", default="yolov8n.yaml", help="Ultralytics model yaml (default yolov8n.yaml)")
    p.add_argument("--variants", nargs="+", default=["standard", "harmonic"],
                   help="loss presets: standard (Ultralytics' own loss), harmonic, harmonic_iou, harmonicdet; "
                        "PRESET_beta_r / PRESET_beta_c detaches that factor, PRESET_prob takes beta_c as the "
                        "predicted probability of the assigned class, PRESET_hiou_only (harmonic_iou, harmonicdet) "
                        "drops CIoU, HIoU in its place as on FCOS, PRESET_hiou_only_a1 the same with alpha 1 "
                        "(HIoU with CIoU's gain); one suffix per variant "
                        "(default standard harmonic)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=positive_int, default=100)
    p.add_argument("--eval-every", type=positive_int, default=5, help="epochs between validations (default 5)")
    p.add_argument("--train-images", type=positive_int, default=2000, help="training scenes (default 2000)")
    p.add_argument("--val-images", type=positive_int, default=300, help="validation scenes (default 300)")
    p.add_argument("--imgsz", type=positive_int, default=128)
    p.add_argument("--batch", type=positive_int, default=16)
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bootstrap", type=positive_int, default=300, help="paired bootstrap samples (default 300)")
    p.add_argument("--bench-reps", type=int, default=0,
                   help="also time training steps of each variant, interleaved in one process (default 0: no)")
    p.add_argument("--overlap-images", type=int, default=512,
                   help="training images on which each run's final weights measure the overlap of the Harmonic "
                        "weights with TAL's target (overlap.json, factors.md; default 512, 0: no)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-report", action="store_true",
                      help="train and evaluate only; e.g. one process per variant side by side "
                           "(scripts/yolo_study_lanes.sh), then one call without it writes the report")
    mode.add_argument("--report-only", action="store_true",
                      help="write the report from the runs recorded so far in OUT/runs; trains nothing (runs "
                           "not yet recorded are left out of it)")
    mode.add_argument("--status", action="store_true",
                      help="train and write nothing: each run's state and epochs (those of --variants/--seeds and "
                           "those recorded in OUT), and the hours left at the recorded runs' seconds per epoch")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        import harmonicdet.integrations.ultralytics  # noqa: F401  (before ultralytics: the offline settings)
    except ImportError as err:
        raise ValueError(f"needs the Ultralytics extra: pip install 'harmonicdet[ultralytics]' ({err})") from None
    from harmonicdet.apps.yolo_study import run_yolo_study, yolo_study_progress

    if args.status:
        from harmonicdet.cli.study import print_progress

        print_progress(yolo_study_progress(args), unit="epoch")
        return 0
    run_yolo_study(args)
    return 0
