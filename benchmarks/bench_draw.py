"""Time of ``harmonicdet draw`` on 1000 Fashion-MNIST scenes (128 px) with synthetic detections.

    python benchmarks/bench_draw.py [--images 1000] [--per-object 5] [--out DIR] [--scale 1]

The scenes come from :func:`harmonicdet.data.make_scenes` (generated once into ``--out``,
default a temporary folder). Each object gets ``--per-object`` detections: jittered copies
of its box (IoU spread over 0..1), one in ten with a wrong class, scored by a noisy
function of their jitter -- some confident and badly localised, some well localised and
scored low. Timed: the whole command as the CLI runs it (``cli.main``: loading and matching
the results, drawing, writing the PNGs and ``draw.json``), and the same with two ``--dt``
side by side. Prints seconds and images per second.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from harmonicdet.cli import main
from harmonicdet.data import make_scenes


def synthetic_results(gt: dict, per_object: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    anns = gt["annotations"]
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).repeat(per_object, axis=0)
    jitter = rng.uniform(0, 0.5, len(boxes))
    offset = rng.normal(0, 1, (len(boxes), 4)) * jitter[:, None] * boxes[:, 2:].repeat(2, axis=1)
    xywh = boxes + offset
    xywh[:, 2:] = np.maximum(xywh[:, 2:], 1)
    scores = np.clip(1 - 1.5 * jitter + rng.normal(0, 0.25, len(boxes)), 0.01, 0.99)
    categories = np.array([a["category_id"] for a in anns]).repeat(per_object)
    wrong = rng.random(len(boxes)) < 0.1
    categories[wrong] = rng.integers(1, 11, int(wrong.sum()))
    images = np.array([a["image_id"] for a in anns]).repeat(per_object)
    return [{"image_id": int(i), "category_id": int(c), "bbox": [round(float(v), 2) for v in b], "score": float(s)}
            for i, c, b, s in zip(images, categories, xywh, scores)]


def run(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--per-object", type=int, default=5)
    parser.add_argument("--out", default=None, help="folder for the scenes and the pictures (default: temporary)")
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_draw_"))
    t0 = time.perf_counter()
    paths = make_scenes(root / "scenes", num_train=0, num_val=args.images, seed=0)
    print(f"scenes: {args.images} in {time.perf_counter() - t0:.1f} s (not timed below)")
    gt = json.loads(Path(paths["val_annotations"]).read_text())
    for seed, name in ((0, "a.json"), (1, "b.json")):
        (root / name).write_text(json.dumps(synthetic_results(gt, args.per_object, seed)))
    num_dets = len(gt["annotations"]) * args.per_object
    base = ["draw", "--gt", str(paths["val_annotations"]), "--images", str(paths["val_images"]), "--quiet",
            "--scale", str(args.scale)]
    for label, extra in (("one --dt", ["--dt", str(root / "a.json")]),
                         ("two --dt", ["--dt", str(root / "a.json"), "--dt", str(root / "b.json")])):
        out = root / ("one" if label == "one --dt" else "two")
        start = time.perf_counter()
        assert main(base + extra + ["--out", str(out)]) == 0
        seconds = time.perf_counter() - start
        assert len(list(out.glob("*.png"))) == args.images
        print(f"{label}: {args.images} images, {num_dets} detections per --dt: {seconds:.2f} s "
              f"({args.images / seconds:.0f} images/s)")


if __name__ == "__main__":
    run()
