"""Training-step time of each loss preset relative to ``standard``, per detector (target <= 1.02x).

    python benchmarks/bench_train_step.py [--archs fcos faster_rcnn] [--backbone resnet18]
        [--fpn-channels 256] [--image-size 128] [--batch 4] [--steps 10] [--device cpu]

For each arch, one model per preset the arch supports, all with the same weights;
steps (forward + backward + SGD with lr 0, so the weights stay equal) are
interleaved preset by preset so clock and cache drift hit all of them alike, and
the median per preset is reported with its ratio to ``standard`` of the same arch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Dict, List

import torch

from harmonicdet.models import PRESETS, build_detector


def _batch(batch: int, size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(4, 2, generator=g) * size * 0.6
        wh = torch.rand(4, 2, generator=g) * size * 0.3 + 12
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, 11, (4,), generator=g).to(device)})
    return images, targets


def bench_arch(arch: str, args: argparse.Namespace, device: torch.device) -> Dict[str, List[float]]:
    """Seconds per step of every preset ``arch`` supports."""
    images, targets = _batch(args.batch, args.image_size, device)
    options = {} if arch == "ssd" else {"fpn_channels": args.fpn_channels}
    models = {}
    for preset in PRESETS:
        torch.manual_seed(0)
        try:
            models[preset] = build_detector(arch, 11, loss=preset, backbone=args.backbone,
                                            image_size=args.image_size, **options).to(device).train()
        except ValueError as err:  # a preset the arch does not have (e.g. qfl on R-CNN)
            print(f"  {arch}: {preset} skipped ({err})")
    for model in models.values():
        model.load_state_dict(models["standard"].state_dict())
    optimizers = {p: torch.optim.SGD(m.parameters(), lr=0.0) for p, m in models.items()}
    times: Dict[str, List[float]] = {p: [] for p in models}
    for step in range(args.steps + 1):
        for preset, model in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            loss = sum(model(images, targets).values())
            optimizers[preset].zero_grad()
            loss.backward()
            optimizers[preset].step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step:  # the first round warms up
                times[preset].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["fcos", "faster_rcnn"])
    parser.add_argument("--backbone", default=None, help="default: resnet18 (ssd: mobilenet_v3_large)")
    parser.add_argument("--fpn-channels", type=int, default=None, help="default: 256 (not for ssd)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"backbone {args.backbone or 'default'}, fpn_channels {args.fpn_channels or 'default'}, "
          f"{args.image_size}px, batch {args.batch}, on {device} ({torch.get_num_threads()} threads), "
          f"median of {args.steps} interleaved steps")
    for arch in args.archs:
        times = bench_arch(arch, args, device)
        base = statistics.median(times["standard"])
        for preset, values in times.items():
            t = statistics.median(values)
            print(f"{arch:<12} {preset:<19} {t * 1e3:8.1f} ms/step  {t / base:6.3f}x")


if __name__ == "__main__":
    main()
