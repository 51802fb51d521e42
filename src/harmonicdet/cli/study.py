"""``harmonicdet study``: a resumable grid of training runs, in one process or in side-by-side lanes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # the CLI imports nothing heavy at start-up
    from harmonicdet.apps.study import RunProgress


# run_state's states as --status shows them
_STATE_WORDS = {"done": "recorded", "evaluated": "evaluated, not recorded", "trained": "trained, not evaluated",
                "interrupted": "started, resumable", "new": "not started"}


def print_progress(progress: Sequence[RunProgress], unit: str = "iteration") -> None:
    """``--status``'s report of :class:`~harmonicdet.apps.study.RunProgress` rows counted in ``unit``s: each run's
    state and progress, the runs recorded, and per arch the hours left in one lane."""
    from harmonicdet.apps.study import seconds_left
    from harmonicdet.tables import markdown_grid

    print(markdown_grid(("run", "state", f"{unit}s", f"s/{unit}"), [
        (p.name, _STATE_WORDS[p.state], f"{p.iteration}/{p.max_iters}",
         "" if p.seconds_per_iteration is None else f"{p.seconds_per_iteration:.2f}") for p in progress]))
    recorded = sum(p.state == "done" for p in progress)
    print(f"\n{recorded} of {len(progress)} runs recorded")
    for arch, seconds in seconds_left(progress).items():
        runs = [p for p in progress if p.arch == arch and p.state != "done"]
        if runs:
            when = "unknown until one run is recorded" if seconds is None else f"{seconds / 3600:.1f} h in one lane"
            print(f"{arch}: {len(runs)} runs to finish, {sum(p.iterations_left for p in runs)} {unit}s "
                  f"to train: {when}")


def _status(args: argparse.Namespace) -> int:
    from harmonicdet.apps.study import load_study, selected_runs, study_progress

    if args.lanes is not None or args.report_only or args.no_report:
        raise ValueError("--status trains and reports nothing: give it without --lanes, --report-only, --no-report")
    print_progress(study_progress(selected_runs(load_study(args.study), args.only)))
    return 0


def _study(args: argparse.Namespace) -> int:
    from harmonicdet.analysis.study_report import markdown_table
    from harmonicdet.apps.study import run_lanes, run_study

    if args.status:
        return _status(args)
    if args.lanes is not None:
        for name, state in run_lanes(args.study, args.lanes, only=args.only, limit_s=args.limit_s).items():
            print(f"{name} {state}")
        return 0
    summary = run_study(args.study, only=args.only, report_only=args.report_only, report=not args.no_report,
                        show_progress=not args.quiet)
    if summary is not None:
        print(markdown_table(summary))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("study", help="run a resumable grid of training runs and summarise them",
                              description="Train and evaluate every run of a study file (skipping finished runs, "
                              "resuming interrupted ones), then write summary.json, summary.md and plots.")
    p.add_argument("study", help="study YAML (e.g. configs/studies/scenes.yaml)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these runs (names or prefixes, e.g. fcos-)")
    p.add_argument("--report-only", action="store_true", help="train nothing; summarise the finished runs")
    p.add_argument("--no-report", action="store_true",
                   help="train and evaluate only; e.g. several processes with their own --only share a GPU")
    p.add_argument("--lanes", type=int, default=None, metavar="N",
                   help="train the unfinished runs (of --only, if given) in N side-by-side processes (each its "
                   "share of the cores), logs in OUTPUT_DIR/lane_logs; no report (then --report-only)")
    p.add_argument("--limit-s", type=float, default=None, metavar="S",
                   help="with --lanes: stop each lane after S seconds, its run left resumable")
    p.add_argument("--status", action="store_true",
                   help="train and write nothing: each run's state and iterations, and the hours left per arch at "
                   "the recorded runs' seconds per iteration")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_study)
