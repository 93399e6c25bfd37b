"""Time the training augmentation pipeline on a batch of 2 patches (default 56 x 160 x 192, one channel).

Reports milliseconds per batch with nnU-Net's probabilities and with every transform forced on, and the mean time
of each transform. Usage: ``python benchmarks/augment.py [--device cuda] [--patch 56 160 192] [--iterations 20]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from covtransfer.training.augment.pipeline import build_training_pipeline  # noqa: E402


def force_all(pipeline) -> None:
    """Set every probability to 1 so each batch pays for every transform."""
    for transform in pipeline.transforms:
        for name in ("p", "p_rotation", "p_scale", "p_per_channel"):
            if hasattr(transform, name):
                setattr(transform, name, 1.0)


def time_pipeline(pipeline, device: torch.device, batch: int, channels: int,
                  iterations: int) -> tuple[list[float], list[float]]:
    """Seconds per call over ``iterations`` calls after one warm-up, and the mean seconds spent in each transform."""
    shape = (batch, channels) + pipeline.initial_patch_size
    images = torch.randn(shape, device=device)
    seg = torch.randint(-1, 3, (batch, 1) + pipeline.initial_patch_size, device=device, dtype=torch.int8)
    generator = torch.Generator().manual_seed(0)
    pipeline(images, seg, generator)
    times, per_transform = [], [0.0] * len(pipeline.transforms)
    for _ in range(iterations):
        out_images, out_seg = images, seg
        batch_time = 0.0
        for position, transform in enumerate(pipeline.transforms):
            start = now(device)
            out_images, out_seg = transform(out_images, out_seg, generator)
            elapsed = now(device) - start
            per_transform[position] += elapsed
            batch_time += elapsed
        times.append(batch_time)
    assert tuple(out_images.shape[2:]) == pipeline.patch_size and tuple(out_seg.shape[2:]) == pipeline.patch_size
    return times, [t / iterations for t in per_transform]


def now(device: torch.device) -> float:
    """Wall-clock seconds once the device has finished the queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--patch", type=int, nargs=3, default=[56, 160, 192])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pipeline = build_training_pipeline(args.patch)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}x{args.channels}, "
          f"patch {tuple(args.patch)}, initial patch {pipeline.initial_patch_size}")
    for label, forced in (("default probabilities", False), ("every transform on", True)):
        if forced:
            force_all(pipeline)
        times, shares = time_pipeline(pipeline, device, args.batch, args.channels, args.iterations)
        mean, median, worst = (1000 * v for v in (statistics.mean(times), statistics.median(times), max(times)))
        print(f"{label:>22}: mean {mean:7.1f} ms, median {median:7.1f} ms, max {worst:7.1f} ms per batch"
              f" ({len(times)} batches)")
        print("    ms: " + ", ".join(f"{type(t).__name__} {1000 * share:.1f}"
                                  for t, share in zip(pipeline.transforms, shares)))


if __name__ == "__main__":
    main()
