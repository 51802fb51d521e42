"""Time of ``consistency_report`` on COCO-sized results: 500k detections over 5k images (target <= 5 s).

    python benchmarks/bench_consistency.py [--detections 500000] [--images 5000]

The generator draws 5 objects per image over 80 classes and detections that are
jittered copies of them (IoU spread over 0..1) or random boxes, with scores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harmonicdet.analysis.consistency import consistency_report


def synthetic(num_detections: int, num_images: int, objects_per_image: int = 5, num_classes: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    num_gt = num_images * objects_per_image
    gt_xy = rng.uniform(0, 500, (num_gt, 2))
    gt_wh = rng.uniform(10, 150, (num_gt, 2))
    gt_image = np.repeat(np.arange(1, num_images + 1), objects_per_image)
    gt_class = rng.integers(1, num_classes + 1, num_gt)
    gt = {"images": [{"id": i, "width": 650, "height": 650} for i in range(1, num_images + 1)],
          "categories": [{"id": c, "name": f"c{c}"} for c in range(1, num_classes + 1)],
          "annotations": [{"id": i + 1, "image_id": int(gt_image[i]), "category_id": int(gt_class[i]),
                           "bbox": [*gt_xy[i], *gt_wh[i]], "iscrowd": int(i % 50 == 0)} for i in range(num_gt)]}
    source = rng.integers(0, num_gt, num_detections)
    jitter = rng.normal(0, 0.25, (num_detections, 4)) * np.tile(gt_wh[source], 2)
    xy = gt_xy[source] + jitter[:, :2]
    wh = np.clip(gt_wh[source] + jitter[:, 2:], 1, None)
    results = [{"image_id": int(gt_image[s]), "category_id": int(gt_class[s]), "bbox": [*p, *q], "score": float(v)}
               for s, p, q, v in zip(source, xy.tolist(), wh.tolist(), rng.random(num_detections))]
    return gt, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detections", type=int, default=500_000)
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gt, results = synthetic(args.detections, args.images)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        report = consistency_report(gt, results)
        times.append(time.perf_counter() - start)
    print(f"{args.detections} detections, {args.images} images: best {min(times):.2f} s "
          f"(target <= 5 s, ratio {min(times) / 5:.2f}); Spearman {report['overall']['spearman']:.3f}")


if __name__ == "__main__":
    main()
