"""Cost of one training step of each transfer strategy compared with ``scratch``: milliseconds per step, peak memory.

The step is the trainer's pure optimisation step (forward, Dice + CE deep-supervision loss, backward, gradient
clipping, SGD nesterov) on random data, with what the strategy changes applied: the network kind (U-Net or hybrid),
frozen parameters (``requires_grad`` off and left out of the optimizer) and parameter groups with their learning-rate
scales (``Strategy.parameter_groups``). Data loading and augmentation are excluded: they cost the same for every
strategy. Each strategy runs in a fresh subprocess so that its memory is measured alone.

Time: on CUDA the wall-clock median per step (bf16 autocast as in the trainer, cuDNN autotuning on). On a CPU the
median process CPU time per step with one torch thread, next to the wall time: on a shared machine wall time mostly
measures the neighbours' load, CPU time measures the work.

Memory, honestly:
- CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps: weights, gradients, momentum buffers and
  activations together (the caching allocator's reserve is not counted).
- CPU: the growth of the process's peak resident set size (``resource.getrusage(...).ru_maxrss``) from just before
  the network is built (after a tiny convolution has initialised the back end) to the end of the timed steps: the
  same quantities plus allocator slack, in MiB. It is coarse (page granularity; freed memory is not returned) but it
  is what the machine actually had to provide.

Networks: on the CPU the ``cpu``-preset network planned for a COVID-19-CT-Seg-like fingerprint (or ``--plans``);
on CUDA the reference network of the transfer study (patch 56 x 160 x 192, batch 2, 32..320 features, 6 stages).

Usage: ``python benchmarks/strategies.py [--device cuda] [--steps 5] [--repeats 2] [--plans plans.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from covtransfer.network.build import build_network  # noqa: E402
from covtransfer.plans import Configuration, Plans  # noqa: E402
from covtransfer.training.augment.deep_supervision import deep_supervision_scales, downsample_seg_for_ds  # noqa: E402
from covtransfer.training.loss import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights  # noqa: E402
from covtransfer.training.strategies import make_strategy  # noqa: E402

# label, strategy name, --freeze, number of head sets (pre-training: one per source dataset)
VARIANTS = [
    ("scratch", "scratch", None, 1),
    ("pretrain (3 sources)", "pretrain", None, 3),
    ("continual", "continual", None, 1),
    ("finetune", "finetune", None, 1),
    ("finetune --freeze encoder:2", "finetune", "encoder:2", 1),
    ("encoder", "encoder", None, 1),
    ("hybrid", "hybrid", None, 1),
    ("hybrid --freeze adapted", "hybrid", "adapted", 1),
]


def reference_configuration() -> Configuration:
    """The transfer study's fixed nnU-Net topology (reference/datasets-and-results.md)."""
    return Configuration(name="reference", spacing=[2.5, 0.8, 0.8], patch_size=[56, 160, 192], batch_size=2,
                         features_per_stage=[32, 64, 128, 256, 320, 320],
                         kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 5,
                         strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                         median_image_size=[100, 420, 420])


def cpu_configuration() -> Configuration:
    """The ``cpu`` preset's plan for 20 chest CTs of COVID-19-CT-Seg-like geometry (about 1 x 0.7 x 0.7 mm)."""
    from covtransfer.data.dataset_json import DatasetInfo
    from covtransfer.planning.planner import plan_experiment

    spacings = [[1.0 + 0.25 * (i % 3), 0.68 + 0.01 * (i % 5), 0.68 + 0.01 * (i % 5)] for i in range(20)]
    shapes = [[240 + 5 * (i % 7), 400 + 4 * (i % 5), 430 + 3 * (i % 4)] for i in range(20)]
    stats = {"mean": -500.0, "median": -550.0, "std": 250.0, "min": -1024.0, "max": 300.0,
             "percentile_00_5": -950.0, "percentile_99_5": 100.0}
    fingerprint = {"spacings": spacings, "shapes_after_crop": shapes,
                   "foreground_intensity_properties_per_channel": {"0": stats},
                   "median_relative_size_after_cropping": 0.9}
    info = DatasetInfo("CovidLike", {0: "CT"}, {"background": 0, "lesion": 1}, 20)
    return plan_experiment(fingerprint, info, "Dataset900_CovidLike", preset="cpu").configuration("3d_fullres")


def now(device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds once the device has finished the queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def warm_up_runtime(device: torch.device) -> None:
    """Initialise the convolution back end and autograd once, so that their fixed memory is not charged to a
    strategy."""
    x = torch.randn(1, 1, 8, 8, 8, device=device, requires_grad=True)
    torch.nn.functional.conv3d(x, torch.randn(2, 1, 3, 3, 3, device=device)).sum().backward()


def measure(configuration: Configuration, strategy_name: str, freeze: str | None, n_heads: int,
            device: torch.device, steps: int, warmup: int, lr: float = 1e-2) -> dict:
    """Time ``steps`` optimisation steps after ``warmup`` ones; return ms/step, peak memory and parameter counts."""
    torch.manual_seed(0)
    warm_up_runtime(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    strategy = make_strategy(strategy_name, freeze)
    heads = {f"task{i}": 2 for i in range(n_heads)}
    network = build_network(configuration, 1, heads, kind=strategy.network_kind, deep_supervision=True)
    groups = strategy.parameter_groups(network)
    network.to(device).train()
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.99, nesterov=True, weight_decay=3e-5)
    trainable = [p for g in groups for p in g["params"]]
    loss_fn = DeepSupervisionLoss(DiceCELoss(), deep_supervision_weights(configuration.n_stages - 1))
    scales = deep_supervision_scales(configuration.strides)
    amp = torch.bfloat16 if device.type == "cuda" else None
    shape = (configuration.batch_size, 1, *configuration.patch_size)
    generator = torch.Generator(device=device).manual_seed(1)
    images = torch.randn(shape, device=device, generator=generator)
    targets = downsample_seg_for_ds((images > 1.0).to(torch.int64), scales)
    task = next(iter(heads))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = loss_fn(network(images, task=task), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 12.0)
        optimizer.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    wall, cpu = [], []
    for _ in range(steps):
        start = now(device)
        step()
        stop = now(device)
        wall.append(stop[0] - start[0])
        cpu.append(stop[1] - start[1])
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024  # KiB on Linux
    n_params = sum(p.numel() for p in network.parameters())
    return {"ms_per_step": 1000 * statistics.median(wall), "cpu_ms_per_step": 1000 * statistics.median(cpu),
            "peak_mib": peak_mib, "parameters": n_params,
            "trainable": sum(p.numel() for p in trainable), "groups": sorted(g["lr_scale"] for g in groups)}


def worker(args: argparse.Namespace) -> None:
    """One variant in this (fresh) process; prints its result as one JSON line."""
    label, name, freeze, n_heads = VARIANTS[args.worker]
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    configuration = load_configuration(args)
    result = measure(configuration, name, freeze, n_heads, device, args.steps, args.warmup)
    print(json.dumps({"label": label, **result}))


def load_configuration(args: argparse.Namespace) -> Configuration:
    if args.plans:
        return Plans.load(args.plans).configuration(args.configuration)
    return reference_configuration() if args.device.startswith("cuda") else cpu_configuration()


def run_variant(index: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", str(index), "--device", args.device, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads or 0)]
    if args.plans:
        command += ["--plans", args.plans, "--configuration", args.configuration]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(results: dict[str, list[dict]], time_key: str) -> str:
    """Markdown table of medians over repeats, relative to scratch; ``time_key`` is the time that is compared."""
    def median(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    on_cpu = time_key == "cpu_ms_per_step"
    base_ms, base_mem = median("scratch", time_key), median("scratch", "peak_mib")
    header = ["strategy", "CPU ms/step" if on_cpu else "ms/step", "× scratch", *(["wall ms/step"] if on_cpu else []),
              "peak MiB", "× scratch", "trainable / all parameters", "lr scales"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in results:
        ms, mem = median(label, time_key), median(label, "peak_mib")
        first = results[label][0]
        wall = [f"{median(label, 'ms_per_step'):.1f}"] if on_cpu else []
        cells = [label, f"{ms:.1f}", f"{ms / base_ms:.2f}", *wall,
                 f"{mem:.0f}", f"{mem / base_mem if base_mem > 0 else math.nan:.2f}",
                 f"{first['trainable'] / 1e6:.3f} M / {first['parameters'] / 1e6:.3f} M",
                 ", ".join(f"{s:g}" for s in first["groups"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over all variants (median over rounds)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, so that CPU time measures work on a shared machine; "
                             "0: torch's default)")
    parser.add_argument("--plans", help="benchmark this plans.json's configuration instead of the default network")
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args)
        return
    configuration = load_configuration(args)
    print(f"network: patch {configuration.patch_size}, batch {configuration.batch_size}, features "
          f"{configuration.features_per_stage}, strides {configuration.strides}")
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"device: {args.device} ({device_name}), torch {torch.__version__}, threads "
          f"{args.threads or torch.get_num_threads()}, {args.steps} timed steps x {args.repeats} rounds")
    results: dict[str, list[dict]] = {label: [] for label, *_ in VARIANTS}
    for _ in range(args.repeats):
        for index, (label, *_) in enumerate(VARIANTS):
            results[label].append(run_variant(index, args))
    print(table(results, "ms_per_step" if args.device.startswith("cuda") else "cpu_ms_per_step"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
