"""Shared builders of the analysis tests: random COCO scenes whose detections are jittered copies of the objects."""

import numpy as np
import pytest


def _random_coco(seed, num_images=6, num_classes=3, num_gt=25, num_dt=150, *, jitter=6.0, same_image=0.9,
                 same_class=0.7, crowd_every=0):
    """``(ground_truth, results)``: ``num_gt`` random objects (every ``crowd_every``-th a crowd, 0: none) and
    ``num_dt`` detections, each an object's box jittered by ``jitter`` px, kept on its image with probability
    ``same_image`` and its class with ``same_class``, scored uniformly."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 + i, "width": 100, "height": 100} for i in range(num_images)]
    categories = [{"id": 5 + 2 * c, "name": f"c{c}"} for c in range(num_classes)]
    annotations = []
    for k in range(num_gt):
        x, y = rng.uniform(0, 70, 2)
        w, h = rng.uniform(5, 40, 2)
        annotations.append({"id": 100 + k, "image_id": int(rng.integers(10, 10 + num_images)),
                            "category_id": int(5 + 2 * rng.integers(num_classes)), "bbox": [x, y, w, h],
                            "area": w * h, "iscrowd": int(crowd_every > 0 and k % crowd_every == 3)})
    results = []
    for _ in range(num_dt):
        src = annotations[int(rng.integers(num_gt))]
        j = rng.normal(0, jitter, 4)
        box = [src["bbox"][0] + j[0], src["bbox"][1] + j[1], max(1.0, src["bbox"][2] + j[2]),
               max(1.0, src["bbox"][3] + j[3])]
        image_id = src["image_id"] if rng.random() < same_image else int(rng.integers(10, 10 + num_images))
        category_id = src["category_id"] if rng.random() < same_class else int(5 + 2 * rng.integers(num_classes))
        results.append({"image_id": image_id, "category_id": category_id, "bbox": box, "score": float(rng.random())})
    return {"images": images, "categories": categories, "annotations": annotations}, results


@pytest.fixture
def random_coco():
    """``random_coco(seed, num_images=6, num_classes=3, num_gt=25, num_dt=150, *, jitter=6.0, same_image=0.9,
    same_class=0.7, crowd_every=0)`` -> ``(ground_truth, results)``."""
    return _random_coco
