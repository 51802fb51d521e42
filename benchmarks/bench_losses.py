"""Forward+backward time and memory of the harmonic losses against their plain counterparts.

Side by side in one run, interleaved, on the same tensors:
  * harmonic objective (per-sample CE + SmoothL1, combined by Eq. S-1) vs plain CE + SmoothL1;
  * ``harmonic_iou_loss`` vs ``torchvision.ops.generalized_box_iou_loss``.
Memory is the CUDA peak on a GPU; on the CPU it is the bytes autograd saves for
backward (the activation memory a loss adds to a training step).

    python benchmarks/bench_losses.py [--device cuda] [--sizes 1000 100000 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from harmonicdet.losses import harmonic_iou_loss, harmonic_loss


def plain_objective(logits, labels, deltas, targets):
    return F.cross_entropy(logits, labels) + F.smooth_l1_loss(deltas, targets, beta=1 / 9, reduction="sum") / len(labels)


def harmonic_objective(logits, labels, deltas, targets):
    ce = F.cross_entropy(logits, labels, reduction="none")
    loc = F.smooth_l1_loss(deltas, targets, beta=1 / 9, reduction="none").sum(dim=1)
    return harmonic_loss(ce, loc, reduction="mean")


def hiou(pred, target):
    return harmonic_iou_loss(pred, target, 0.8, reduction="mean")


def giou(pred, target):
    return generalized_box_iou_loss(pred, target, reduction="mean")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, inputs, device, repeats):
    """Median seconds of forward+backward, and peak/saved bytes."""
    leaves = [x for x in inputs if x.requires_grad]
    times = []
    for _ in range(repeats):
        for leaf in leaves:
            leaf.grad = None
        _sync(device)
        start = time.perf_counter()
        fn(*inputs).backward()
        _sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn(*inputs).backward()
        memory = torch.cuda.max_memory_allocated(device) - base
    else:
        saved = []

        def pack(t):
            saved.append(t.untyped_storage().nbytes() if t.layout == torch.strided else 0)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(*inputs).backward()
        memory = sum(saved)
    return statistics.median(times), memory


def make_inputs(n, num_classes, device, dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, num_classes, generator=g, dtype=dtype).to(device).requires_grad_(True)
    labels = torch.randint(1, num_classes, (n,), generator=g).to(device)
    deltas = torch.randn(n, 4, generator=g, dtype=dtype).to(device).requires_grad_(True)
    targets = torch.randn(n, 4, generator=g, dtype=dtype).to(device)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 500
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * 100 + 1
    target_boxes = torch.cat([xy, xy + wh], dim=1)
    pred_boxes = (target_boxes + torch.randn(n, 4, generator=g, dtype=dtype) * 10).to(device).requires_grad_(True)
    return (logits, labels, deltas, targets), (pred_boxes, target_boxes.to(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--classes", type=int, default=81, help="C+1 classes of the softmax head (COCO: 81)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device={device} classes={args.classes} repeats={args.repeats} torch={torch.__version__}")
    header = f"{'N':>9} | {'pair':<26} | {'ms':>9} {'ms ref':>9} {'time x':>7} | {'MiB':>8} {'MiB ref':>8} {'mem x':>6}"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        repeats = max(3, args.repeats if n < 500_000 else args.repeats // 3)
        det_inputs, box_inputs = make_inputs(n, args.classes, device, torch.float32)
        pairs = [
            ("harmonic vs CE+SmoothL1", harmonic_objective, plain_objective, det_inputs),
            ("HIoU vs torchvision GIoU", hiou, giou, box_inputs),
        ]
        for name, fn, ref, inputs in pairs:
            measure(fn, inputs, device, 2)  # warm-up
            measure(ref, inputs, device, 2)
            # interleave to share drifts in clock and cache state between the two
            t_fn, t_ref = [], []
            for _ in range(3):
                t, mem = measure(fn, inputs, device, repeats)
                t_fn.append(t)
                t, mem_ref = measure(ref, inputs, device, repeats)
                t_ref.append(t)
            a, b = min(t_fn), min(t_ref)
            print(
                f"{n:>9} | {name:<26} | {a * 1e3:>9.3f} {b * 1e3:>9.3f} {a / b:>7.3f} | "
                f"{mem / 2**20:>8.2f} {mem_ref / 2**20:>8.2f} {mem / max(mem_ref, 1):>6.3f}"
            )


if __name__ == "__main__":
    main()
