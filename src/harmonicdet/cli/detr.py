"""``harmonicdet detr-study``'s arguments (:mod:`harmonicdet.apps.detr_study`); imports nothing heavy.

The choices are written out (importing :mod:`harmonicdet.integrations.transformers` would import torch and
transformers); the tests check them against the integration's ``ARCHS``, ``SIZES`` and ``DETR_PRESETS``.
"""

from __future__ import annotations

import argparse
from typing import Any

from harmonicdet.cli import positive_int


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "detr-study", help="RT-DETR / D-FINE on the scenes: transformers' loss vs the Harmonic loss (needs "
                           "harmonicdet[transformers])",
        description="Train transformers' RT-DETR or D-FINE from random init on the Fashion-MNIST scenes with the "
                    "model's own loss and harmonic presets, record each finished run under OUT/runs (resumable "
                    "across sittings) and write the study report (summary.json, summary.md, plots) to OUT.")
    p.add_argument("--out", required=True, help="records and report (summary.json, summary.md, plots/)")
    p.add_argument("--runs", required=True, help="run folders with weights (last.pt, the save_pretrained model/)")
    p.add_argument("--data", default="data/scenes_study", help="the scenes (default data/scenes_study)")
    p.add_argument("--train-images", type=positive_int, default=2000, help="training scenes (default 2000)")
    p.add_argument("--val-images", type=positive_int, default=1000, help="validation scenes (default 1000)")
    p.add_argument("--arch", default="rt_detr", choices=("rt_detr", "rt_detr_v2", "d_fine"),
                   help="the model (default rt_detr)")
    p.add_argument("--size", default="tiny", choices=("tiny", "small", "r18"),
                   help="build_detr's size: tiny (the CPU study), small (ResNet-18 at half width), r18 "
                        "(RT-DETR-R18) (default tiny)")
    p.add_argument("--variants", nargs="+", default=["standard", "harmonicdet"], metavar="PRESET",
                   choices=("standard", "harmonic", "harmonic_iou", "harmonicdet"),
                   help="loss presets: standard (the model's own loss), harmonic, harmonic_iou, harmonicdet; each "
                        "harmonic one runs once per --detach-factors mode (default standard harmonicdet)")
    p.add_argument("--detach-factors", nargs="+", default=["beta_c"], metavar="MODE",
                   choices=("False", "True", "beta_c", "beta_r"),
                   help="the harmonic presets' detach_factors: False, True, beta_c, beta_r; the variant's name "
                        "ends in _detached, _beta_c or _beta_r (default beta_c: as written, the scores collapse)")
    p.add_argument("--beta-c-mode", default="loss", choices=("loss", "prob"),
                   help="beta_c of the harmonic presets; prob: the predicted probability (name ends in _prob; "
                        "default loss)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="initial weights and batch order "
                                                                             "(default 0 1 2)")
    p.add_argument("--iterations", type=positive_int, default=5000, help="training iterations (default 5000)")
    p.add_argument("--batch", type=positive_int, default=16, help="batch size (default 16)")
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW's peak learning rate (default 2e-4)")
    p.add_argument("--eval-every", type=positive_int, default=500,
                   help="iterations between evaluations of --eval-images and checkpoints (default 500)")
    p.add_argument("--eval-images", type=positive_int, default=300,
                   help="validation scenes of the periodic evaluation (default 300; the last one takes all)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing; report every run recorded under OUT/runs, whichever command trained it")
    p.add_argument("--bootstrap", type=positive_int, default=300, help="paired bootstrap samples (default 300)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise ValueError(f"needs the transformers extra: pip install -e '.[transformers]' in a checkout, or "
                         f"'harmonicdet[transformers]' ({err})") from None
    from harmonicdet.apps.detr_study import run_detr_study

    run_detr_study(args)
    return 0
