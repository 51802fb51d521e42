"""What beta_c is against RT-DETR's IoU-aware (varifocal) target: the factors of the matched queries while training.

    python benchmarks/measure_detr_factors.py [--arch rt_detr] [--size small] [--preset harmonicdet]
        [--detach-factors False|True|beta_c|beta_r] [--beta-c-mode loss|prob] [--iterations 300] [--every 100]
        [--batch 16] [--lr 2e-4] [--threads 1] [--data data/scenes_study]

Trains a random-init model (:func:`harmonicdet.integrations.transformers.models.build_detr`) on the
scenes with ``harmonic_loss_function(arch, preset)`` (AdamW, gradient clipping at 0.1, the
study's warm-up) and pools, over each window of ``--every`` iterations, the final decoder
layer's matched queries (the loss function's ``last_queries``). Per window it prints the
10th/50th/90th percentiles of: ``target`` (VFL's soft target, the detached IoU ``t``),
``prob`` (the sigmoid score of the matched class), ``beta_c_bce`` = exp(-BCE(x, t)),
``beta_c_ceiling`` = exp(-H(t)) (the most ``beta_c_bce`` can reach), ``beta_c_kl`` = exp(-KL(t || p))
(the factor of ``beta_c_mode="loss"``), ``beta_r`` = exp(-L_loc), and the fraction of queries whose
Eq. S-5 factor is negative (``reversed``). JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from harmonicdet.data import CocoDetectionDataset, build_transforms
from harmonicdet.data.scenes import scenes_paths
from harmonicdet.engine.schedule import lr_factor
from harmonicdet.integrations.transformers import harmonic_loss_function
from harmonicdet.integrations.transformers.evaluation import detr_labels
from harmonicdet.integrations.transformers.models import build_detr

KEYS = ("target", "prob", "beta_c_bce", "beta_c_ceiling", "beta_c_kl", "beta_r")


def window_summary(pooled: dict) -> dict:
    """p10/p50/p90 of each of :data:`KEYS` and the reversed fraction of the pooled per-query tensors."""
    summary = {key: [round(float(torch.quantile(pooled[key], q)), 3) for q in (0.1, 0.5, 0.9)] for key in KEYS}
    beta_c = pooled["beta_c"]
    summary["reversed"] = round(float((1 + beta_c + pooled["beta_r"] * beta_c.log() < 0).float().mean()), 4)
    summary["queries"] = int(beta_c.numel())
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="rt_detr", choices=("rt_detr", "rt_detr_v2", "d_fine"))
    parser.add_argument("--size", default="small")
    parser.add_argument("--preset", default="harmonicdet")
    parser.add_argument("--detach-factors", default="False", choices=("False", "True", "beta_c", "beta_r"))
    parser.add_argument("--beta-c-mode", default="loss", choices=("loss", "prob"))
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default="data/scenes_study", help="scenes folder (harmonicdet data scenes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = scenes_paths(args.data, "train")
    if not Path(paths["ann_file"]).is_file():
        parser.error(f"no scenes in {args.data}: run `harmonicdet data scenes --out {args.data}` first")
    dataset = CocoDetectionDataset(**paths, transforms=build_transforms(True))
    torch.manual_seed(0)
    model = build_detr(args.arch, args.size, len(dataset.classes)).train()
    detach = {"False": False, "True": True}.get(args.detach_factors, args.detach_factors)
    loss_function = harmonic_loss_function(args.arch, args.preset, detach_factors=detach, beta_c_mode=args.beta_c_mode)
    model.loss_function = loss_function
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = {"max_iters": args.iterations, "warmup_iters": min(500, args.iterations // 10), "schedule": "cosine",
                "warmup_factor": 0.001}
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist() * (
        args.iterations * args.batch // len(dataset) + 1)
    windows, pooled, start, began = [], {}, 1, time.perf_counter()
    for iteration in range(args.iterations):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(iteration, schedule)
        items = [dataset[i] for i in order[iteration * args.batch:(iteration + 1) * args.batch]]
        images = torch.stack([image for image, _ in items])
        labels = detr_labels([t for _, t in items], [tuple(image.shape[-2:]) for image, _ in items])
        loss = model(pixel_values=images, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        for key, value in loss_function.last_queries.items():
            pooled.setdefault(key, []).append(value)
        if (iteration + 1) % args.every == 0 or iteration == 0:
            summary = {"iterations": f"{start}-{iteration + 1}",
                       "loss": round(float(loss.detach()), 3),
                       **window_summary({k: torch.cat(v) for k, v in pooled.items()})}
            windows.append(summary)
            print(json.dumps(summary), f"({time.perf_counter() - began:.0f} s)", flush=True)
            pooled, start = {}, iteration + 2
    print(json.dumps({"arch": args.arch, "size": args.size, "preset": args.preset, "detach_factors": detach,
                      "beta_c_mode": args.beta_c_mode, "windows": windows}))


if __name__ == "__main__":
    main()
