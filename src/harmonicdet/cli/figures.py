"""``harmonicdet figures``: the supplementary figures as PNGs; imports nothing heavy until it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

# harmonicdet.analysis.figures.DEFAULT_GAMMAS, written out so that building the parser imports no torch (a test
# checks they agree)
DEFAULT_GAMMAS = (0.0, 0.25, 0.5, 0.8, 1.0)


def _run(args: argparse.Namespace) -> int:
    from harmonicdet.analysis.figures import plot_loss_curves, write_figures

    from harmonicdet.output_folder import OutputFolder, flat_layout

    labels = (args.label or [Path(p).parent.name for p in args.log]) if args.log else []
    if args.log and len(labels) != len(args.log):
        raise ValueError(f"{len(args.log)} --log files but {len(labels)} --label values")
    out = Path(args.out)
    folder = OutputFolder(out, "harmonicdet figures", {k: v for k, v in vars(args).items() if k != "func"},
                          name="--out", recognise=flat_layout("figure_data.npz", "fig*.png"))
    with folder.replace() as staging:
        names = [path.name for path in write_figures(staging, args.gammas)]
        if args.log:
            names.append(plot_loss_curves(zip(labels, args.log), staging / "fig3_training_loss.png",
                                          key=args.loss_key).name)
    for name in names:
        print(out / name)
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "figures",
        help="write the supplementary figures (Fig. 1, 2, 4; Fig. 3 with --log)",
        description="Write PNGs of supplementary Fig. 1 (|dL/dt|), Fig. 2 (dL/dp) and Fig. 4 (HIoU vs IoU), "
        "computed by autograd through harmonicdet's losses; with --log, Fig. 3 from training runs.",
    )
    parser.add_argument("--out", default="figures", help="output folder (default: figures): new, empty or made by "
                        "figures (then replaced as a whole)")
    parser.add_argument("--gammas", type=float, nargs="+", default=list(DEFAULT_GAMMAS),
                        help=f"HIoU gammas of Fig. 4, each <= 1 (default: {' '.join(map(str, DEFAULT_GAMMAS))})")
    parser.add_argument("--log", nargs="+", metavar="METRICS_JSONL", help="metrics.jsonl of runs for Fig. 3")
    parser.add_argument("--label", nargs="+", help="legend labels of the --log runs (default: run folder names)")
    parser.add_argument("--loss-key", default="loss", help="metrics field plotted in Fig. 3 (default: loss)")
    parser.set_defaults(func=_run)
