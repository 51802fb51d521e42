"""Time of ``consistency_report`` on COCO-sized results: 500k detections over 5k images (target <= 5 s).

    python benchmarks/bench_consistency.py [--detections 500000] [--images 5000] [--candidates]

The seeded generator draws 7 objects per image (every 50th a crowd region) over 80
classes, and detections that are jittered copies of them (IoU spread over 0..1),
10% with a wrong class, scored by a noisy function of their jitter (so score and
IoU correlate moderately). Timed: the report from the loaded results list (what the
training engine passes; LaECE, D-ECE and TIDE's breakdown included), the same with the
post-hoc calibration baseline (what the CLI and the study report add), the same from a
JSON file on disk (what the CLI does), the matching alone, and with ``--candidates`` a
report with as many pre-NMS candidates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from harmonicdet.analysis.consistency import GroundTruth, consistency_report, match_detections, results_arrays


def synthetic(num_detections: int, num_images: int, objects_per_image: int = 7, num_classes: int = 80,
              seed: int = 0):
    """``(gt, results)``: a COCO ground-truth dict and a COCO results list."""
    rng = np.random.default_rng(seed)
    num_gt = num_images * objects_per_image
    gt_xy = rng.uniform(0, 500, (num_gt, 2))
    gt_wh = rng.uniform(10, 150, (num_gt, 2))
    gt_image = np.repeat(np.arange(1, num_images + 1), objects_per_image)
    gt_class = rng.integers(1, num_classes + 1, num_gt)
    gt = {"images": [{"id": i, "width": 650, "height": 650} for i in range(1, num_images + 1)],
          "categories": [{"id": c, "name": f"c{c}"} for c in range(1, num_classes + 1)],
          "annotations": [{"id": i + 1, "image_id": int(gt_image[i]), "category_id": int(gt_class[i]),
                           "bbox": [*gt_xy[i].tolist(), *gt_wh[i].tolist()], "iscrowd": int(i % 50 == 0)}
                          for i in range(num_gt)]}
    source = rng.integers(0, num_gt, num_detections)
    spread = rng.uniform(0, 0.4, num_detections)
    jitter = rng.normal(0, 1, (num_detections, 4)) * spread[:, None] * np.tile(gt_wh[source], 2)
    xy = gt_xy[source] + jitter[:, :2]
    wh = np.clip(gt_wh[source] + jitter[:, 2:], 1, None)
    category = np.where(rng.random(num_detections) < 0.9, gt_class[source], rng.integers(1, num_classes + 1,
                                                                                        num_detections))
    scores = np.clip(1 - 2 * spread + rng.normal(0, 0.25, num_detections), 0.01, 1)
    results = [{"image_id": int(gt_image[s]), "category_id": int(c), "bbox": [*p, *q], "score": float(v)}
               for s, c, p, q, v in zip(source, category, xy.tolist(), wh.tolist(), scores)]
    return gt, results


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detections", type=int, default=500_000)
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates", action="store_true", help="also time a report with pre-NMS candidates")
    args = parser.parse_args()
    gt, results = synthetic(args.detections, args.images)
    truth = GroundTruth(gt)
    det = results_arrays(results, truth, "results")

    report = consistency_report(gt, results)
    t_report = best_of(args.repeats, lambda: consistency_report(gt, results))
    t_posthoc = best_of(args.repeats, lambda: consistency_report(gt, results, posthoc=True))
    t_match = best_of(args.repeats, lambda: match_detections(det["boxes"], det["image"], det["category"], truth.boxes,
                                                             truth.image, truth.category, truth.crowd))
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = Path(tmp) / "gt.json", Path(tmp) / "dt.json"
        gt_path.write_text(json.dumps(gt))
        dt_path.write_text(json.dumps(results))
        t_files = best_of(args.repeats, lambda: consistency_report(gt_path, dt_path))
    print(f"{args.detections} detections, {args.images} images, {len(gt['annotations'])} objects "
          f"(Spearman {report['overall']['spearman']:.3f}, {report['num_ignored']} ignored):")
    print(f"  consistency_report(dict, list): {t_report:.2f} s  (target <= 5 s, ratio {t_report / 5:.2f}; LaECE "
          f"{report['laece']['value']:.3f}, D-ECE {report['dece']['value']:.3f}, AP50 {report['tide']['ap']:.3f})")
    print(f"  with posthoc=True:              {t_posthoc:.2f} s")
    print(f"  consistency_report(files):      {t_files:.2f} s  (json parsing included)")
    print(f"  match_detections alone:         {t_match:.2f} s")
    if args.candidates:
        t_cand = best_of(args.repeats, lambda: consistency_report(gt, results, candidates=results))
        print(f"  with {len(results)} candidates:     {t_cand:.2f} s")


if __name__ == "__main__":
    main()
