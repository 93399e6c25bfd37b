"""Time the training augmentation pipeline on a batch of 2 patches (default 56 x 160 x 192, one channel).

Reports the mean and spread of seconds per batch with nnU-Net's probabilities, and the worst case with every
transform forced on. Usage: ``python benchmarks/augment.py [--device cuda] [--patch 56 160 192] [--iterations 20]``.
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


def time_pipeline(pipeline, device: torch.device, batch: int, channels: int, iterations: int) -> list[float]:
    """Seconds per call over ``iterations`` calls (after one warm-up), fresh random inputs each time."""
    shape = (batch, channels) + pipeline.initial_patch_size
    images = torch.randn(shape, device=device)
    seg = torch.randint(-1, 3, (batch, 1) + pipeline.initial_patch_size, device=device, dtype=torch.int8)
    generator = torch.Generator().manual_seed(0)
    pipeline(images, seg, generator)
    times = []
    for _ in range(iterations):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out_images, out_seg = pipeline(images, seg, generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    assert tuple(out_images.shape[2:]) == pipeline.patch_size and tuple(out_seg.shape[2:]) == pipeline.patch_size
    return times


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
        times = time_pipeline(pipeline, device, args.batch, args.channels, args.iterations)
        print(f"{label:>22}: mean {statistics.mean(times) * 1000:7.1f} ms, median {statistics.median(times) * 1000:7.1f}"
              f" ms, max {max(times) * 1000:7.1f} ms per batch ({len(times)} batches)")


if __name__ == "__main__":
    main()
