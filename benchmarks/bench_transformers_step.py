"""Seconds per training iteration of a transformers RT-DETR / D-FINE: the stock loss against a harmonic preset.

    python benchmarks/bench_transformers_step.py [--arch rt_detr] [--sizes small r18] [--preset harmonicdet]
        [--batch 16] [--reps 6] [--threads 1] [--data data/scenes_study]

One process, ``--threads`` torch threads. Per size, two copies of one random-init model
(:func:`harmonicdet.integrations.transformers.models.build_detr`) train on the same batches
of the scenes (128 px, the first ``batch x reps`` training images), one with the model's own
loss and one with ``harmonic_loss_function(arch, preset)``, their steps interleaved so a shared
machine's load affects both alike; after one warm-up step each, the median wall time of
``--reps`` steps (forward with the loss, backward, AdamW with gradient clipping at 0.1, as
RT-DETR trains) is printed with the ratio, and the loss function's own time (called on the
same model outputs outside training) likewise. JSON on the last line.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from harmonicdet.data import CocoDetectionDataset
from harmonicdet.data.scenes import scenes_paths
from harmonicdet.integrations.transformers import harmonic_loss_function
from harmonicdet.integrations.transformers.evaluation import detr_labels
from harmonicdet.integrations.transformers.models import build_detr


def _step(model, optimizer, images, labels) -> float:
    start = time.perf_counter()
    loss = model(pixel_values=images, labels=labels).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    optimizer.step()
    return time.perf_counter() - start


def bench_size(arch: str, size: str, preset: str, dataset, batch: int, reps: int) -> dict:
    torch.manual_seed(0)
    stock = build_detr(arch, size, len(dataset.classes)).train()
    harmonic = copy.deepcopy(stock)
    loss_function = harmonic_loss_function(arch, preset)
    harmonic.loss_function = loss_function
    models = {"stock": stock, preset: harmonic}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=1e-4) for name, m in models.items()}
    times = {name: [] for name in models}
    loss_times = {name: [] for name in models}
    for rep in range(reps + 1):
        items = [dataset[i] for i in range(rep * batch, (rep + 1) * batch)]
        images = torch.stack([image for image, _ in items])
        labels = detr_labels([t for _, t in items], [tuple(image.shape[-2:]) for image, _ in items])
        for name, model in models.items():
            torch.manual_seed(rep)  # the same denoising queries for both
            seconds = _step(model, optimizers[name], images, labels)
            if rep:
                times[name].append(seconds)
        with torch.no_grad():  # the loss functions alone, on one set of outputs
            torch.manual_seed(rep)
            out = stock.model(images, labels=labels)
            arguments = (out.intermediate_logits[:, -1], labels, stock.device, out.intermediate_reference_points[:, -1],
                         stock.config, out.intermediate_logits, out.intermediate_reference_points)
            extra = dict(enc_topk_logits=out.enc_topk_logits, enc_topk_bboxes=out.enc_topk_bboxes,
                         denoising_meta_values=out.denoising_meta_values,
                         predicted_corners=out.intermediate_predicted_corners,
                         initial_reference_points=out.initial_reference_points)
            for name, model in models.items():
                start = time.perf_counter()
                model.loss_function(*arguments, **extra)
                if rep:
                    loss_times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    loss_medians = {name: statistics.median(t) for name, t in loss_times.items()}
    return {"arch": arch, "size": size, "params_M": sum(p.numel() for p in stock.parameters()) / 1e6,
            "step_s": medians, "ratio": medians[preset] / medians["stock"], "loss_function_s": loss_medians,
            "stats": loss_function.last_stats}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="rt_detr", choices=("rt_detr", "rt_detr_v2", "d_fine"))
    parser.add_argument("--sizes", nargs="+", default=["small", "r18"])
    parser.add_argument("--preset", default="harmonicdet")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default="data/scenes_study", help="scenes folder (harmonicdet data scenes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = scenes_paths(args.data, "train")
    if not Path(paths["ann_file"]).is_file():
        parser.error(f"no scenes in {args.data}: run `harmonicdet data scenes --out {args.data}` first")
    dataset = CocoDetectionDataset(**paths)
    results = []
    for size in args.sizes:
        result = bench_size(args.arch, size, args.preset, dataset, args.batch, args.reps)
        results.append(result)
        step, loss = result["step_s"], result["loss_function_s"]
        print(f"{args.arch} {size} ({result['params_M']:.1f} M params), batch {args.batch}, {args.threads} thread(s): "
              f"stock {step['stock']:.2f} s/it, {args.preset} {step[args.preset]:.2f} s/it "
              f"(x{result['ratio']:.3f}); loss function {loss['stock'] * 1e3:.0f} ms vs "
              f"{loss[args.preset] * 1e3:.0f} ms", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
