"""``harmonicdet consistency``: score-IoU consistency of COCO detection results."""

from __future__ import annotations

import argparse
from pathlib import Path

from harmonicdet.cli import add_band_arguments
from harmonicdet.io import safe_file_part, write_json_atomic
from harmonicdet.output_folder import OutputFolder, flat_layout


def why_not_available(report: dict) -> str:
    """Why the summary line of a report shows ``n/a`` (``""`` when it shows none): one clause per statistic."""
    settings, overall, rates = report["settings"], report["overall"], report["inconsistency"]
    if overall["num_detections"] == 0:
        return "no detections (other than on crowd regions)"
    reasons = []
    if overall["spearman"] is None or overall["pearson"] is None:
        floor = settings["iou_floor"]
        reasons.append(f"correlations: {overall['count']} detections overlap an object (IoU > {floor:g})"
                       if overall["count"] < 2 else "correlations: the scores or the IoUs are all equal")
    if rates["high_score_low_iou"] is None:
        reasons.append(f"hiS/loIoU: no detection scores >= {settings['score_hi']:g} "
                       f"(best score {report['max_score']:.3f})")
    if rates["low_score_high_iou"] is None:
        reasons.append(f"loS/hiIoU: no detection has IoU >= {settings['iou_high']:g} "
                       f"(best IoU {report['max_iou']:.3f})")
    return "; ".join(reasons)


def print_field_metrics(reports: dict, per_class: bool = False) -> None:
    """The field's metrics of each report (docs/consistency.md): LaECE, D-ECE, their values after the post-hoc
    isotonic map when computed, TIDE's AP50 and dAP50 per error type; with ``per_class``, a line per class too."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    types = ("cls", "loc", "both", "dupe", "bkg", "miss")
    print(f"{'label':<16} {'class':<12} {'LaECE':>6} {'D-ECE':>6} {'iso.La':>6} {'iso.D':>6} {'AP50':>6} "
          + " ".join(f"{'d' + k:>6}" for k in types))
    for label, r in reports.items():
        posthoc = r.get("posthoc", {})
        rows = [("all", r["laece"]["value"], r["dece"]["value"], posthoc.get("laece", {}).get("isotonic"),
                 posthoc.get("dece", {}).get("isotonic"), r["tide"]["ap"], r["tide"]["dap"])]
        if per_class:
            rows += [(name, c["laece"], c["dece"], None, None, (c["tide"] or {}).get("ap"),
                      (c["tide"] or {}).get("dap", {})) for name, c in r["per_class"].items()]
        for name, la, de, iso_la, iso_de, ap, dap in rows:
            print(f"{label:<16} {name[:12]:<12} {fmt(la):>6} {fmt(de):>6} {fmt(iso_la):>6} {fmt(iso_de):>6} "
                  f"{fmt(ap):>6} " + " ".join(f"{fmt(dap.get(k)):>6}" for k in types))


def _run(args: argparse.Namespace) -> int:
    from harmonicdet.analysis.consistency import GroundTruth, consistency_report
    from harmonicdet.analysis.consistency_plots import plot_consistency, plot_consistency_comparison

    labels = args.label or [Path(p).stem for p in args.dt]
    if len(labels) != len(args.dt):
        raise ValueError(f"{len(args.dt)} --dt files but {len(labels)} --label values")
    if args.candidates and len(args.candidates) != len(args.dt):
        raise ValueError(f"give one --candidates file per --dt ({len(args.dt)}), got {len(args.candidates)}")
    if len(set(labels)) != len(labels) or len({safe_file_part(x, "dt") for x in labels}) != len(labels):
        raise ValueError(f"labels must be distinct (also as file names), got {labels}")
    folder = OutputFolder(args.out, "harmonicdet consistency", {k: v for k, v in vars(args).items() if k != "func"},
                          name="--out", recognise=flat_layout("consistency.json", "consistency_*.png"))
    truth = GroundTruth(args.gt)
    reports = {}
    for i, (label, dt) in enumerate(zip(labels, args.dt)):
        reports[label] = consistency_report(
            truth, dt, candidates=args.candidates[i] if args.candidates else None, score_hi=args.score_hi,
            score_lo=args.score_lo, iou_floor=args.iou_floor, num_bins=args.bins, iou_low=args.iou_low,
            iou_high=args.iou_high, laece_bins=args.laece_bins, dece_bins=args.dece_bins, dece_iou=args.dece_iou,
            dece_box_bins=args.dece_box_bins, posthoc=not args.no_posthoc)
    out = Path(args.out)
    with folder.replace() as staging:
        write_json_atomic(reports, staging / "consistency.json")
        for label, report in reports.items():
            plot_consistency(report, staging / f"consistency_{safe_file_part(label, 'dt')}.png", label)
        if len(reports) > 1:
            plot_consistency_comparison(list(reports.values()), labels, staging)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"{'label':<16} {'dets':>8} {'Spearman':>9} {'Pearson':>8} {'hiS/loIoU':>10} {'loS/hiIoU':>10} "
          f"{'cal.gap':>8} {'NMS rank':>9}")
    for label, r in reports.items():
        nms = r.get("nms_ranking", {}).get("ranking_loss")
        print(f"{label:<16} {r['num_detections']:>8} {fmt(r['overall']['spearman']):>9} "
              f"{fmt(r['overall']['pearson']):>8} {fmt(r['inconsistency']['high_score_low_iou']):>10} "
              f"{fmt(r['inconsistency']['low_score_high_iou']):>10} "
              f"{fmt(r['calibration']['expected_calibration_gap']):>8} {fmt(nms):>9}")
    print_field_metrics(reports, per_class=args.per_class)
    for label, r in reports.items():
        why = why_not_available(r)
        if why:
            print(f"{label}: n/a because {why}")
    print(f"wrote {out / 'consistency.json'} and plots")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("consistency", help="score-IoU consistency of COCO detection results",
                              description="Pair every detection's score with its IoU to the best-matching "
                              "object and report correlations, inconsistency rates, calibration and (with "
                              "pre-NMS candidates) the NMS ranking loss; and the field's metrics on COCO's one-to-one "
                              "matching: LaECE, D-ECE, TIDE's error breakdown and a post-hoc calibration baseline "
                              "(docs/consistency.md). Writes consistency.json (one report per --dt, keyed "
                              "by label), consistency_LABEL.png per --dt and, with two or more, "
                              "consistency_comparison.png into --out; prints a summary table.")
    p.add_argument("--gt", required=True, help="COCO ground-truth JSON (instances file)")
    p.add_argument("--dt", required=True, action="append", help="COCO results JSON (repeat to compare)")
    p.add_argument("--label", action="append", help="a name per --dt (default: file stem)")
    p.add_argument("--candidates", action="append", help="pre-NMS candidates JSON, one per --dt")
    p.add_argument("--out", default="consistency", help="output folder (default: consistency): new, empty or made by "
                   "consistency (then replaced as a whole)")
    add_band_arguments(p)
    p.add_argument("--iou-floor", type=float, default=0.1, help="IoU above which a detection overlaps an object")
    p.add_argument("--bins", type=int, default=10, help="score bins of the calibration curve")
    p.add_argument("--laece-bins", type=int, default=25, help="score bins of LaECE (default 25)")
    p.add_argument("--dece-bins", type=int, default=10, help="score bins of D-ECE (default 10)")
    p.add_argument("--dece-iou", type=float, default=0.5, help="IoU of a D-ECE true positive (default 0.5)")
    p.add_argument("--dece-box-bins", type=int, default=None,
                   help="also bin D-ECE over box centre and size relative to the image, N bins each (default: off)")
    p.add_argument("--no-posthoc", action="store_true",
                   help="skip the post-hoc calibration baseline (isotonic, Platt, temperature on half the images)")
    p.add_argument("--per-class", action="store_true", help="also print LaECE, D-ECE and TIDE per class")
    p.set_defaults(func=_run)
