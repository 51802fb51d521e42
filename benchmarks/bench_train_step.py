"""Training-step time of each loss preset against ``standard`` on the same detector (target <= 1.02x).

    python benchmarks/bench_detectors.py [--arch fcos] [--backbone resnet18] [--fpn-channels 256]
                                         [--batch 4] [--steps 10] [--device cpu]

Models share weights; steps (forward + backward + SGD) are interleaved preset by
preset so clock and cache drift hit all of them alike; the median per preset is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from harmonicdet.models import PRESETS, build_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="fcos")
    parser.add_argument("--backbone", default=None, help="default: resnet18 (ssd: mobilenet_v3_large)")
    parser.add_argument("--fpn-channels", type=int, default=None, help="default: 256 (not for ssd)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, args.image_size, args.image_size, generator=g).to(device) for _ in range(args.batch)]
    targets = []
    for _ in range(args.batch):
        xy = torch.rand(4, 2, generator=g) * args.image_size * 0.6
        wh = torch.rand(4, 2, generator=g) * args.image_size * 0.3 + 12
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, 11, (4,), generator=g).to(device)})
    torch.manual_seed(0)
    models = {p: build_detector(args.arch, 11, loss=p, backbone=args.backbone, image_size=args.image_size,
                                fpn_channels=args.fpn_channels).to(device)
              for p in PRESETS}
    for model in models.values():
        model.load_state_dict(models["standard"].state_dict())
        model.train()
    optimizers = {p: torch.optim.SGD(m.parameters(), lr=0.0) for p, m in models.items()}  # lr 0: same weights
    times = {p: [] for p in PRESETS}
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
    base = statistics.median(times["standard"])
    print(f"{args.arch} {args.backbone or 'default backbone'} fpn_channels={args.fpn_channels or 'default'} "
          f"{args.image_size}px batch {args.batch} on {device} ({torch.get_num_threads()} threads), "
          f"median of {args.steps} interleaved steps")
    for preset in PRESETS:
        t = statistics.median(times[preset])
        print(f"{preset:<13} {t * 1e3:8.1f} ms/step  {t / base:6.3f}x")


if __name__ == "__main__":
    main()
