"""Milliseconds per training iteration: the pure step and the full iteration through the Trainer.

* **step**: the Trainer's own ``train_step`` (forward, deep-supervision Dice + CE, backward, gradient clipping,
  SGD nesterov; bf16 autocast on CUDA; ``--compile`` wraps the network in ``torch.compile``) on one random batch
  that stays on the device, so data loading and augmentation cost nothing.
* **iteration**: ``Trainer.fit`` on a synthetic preprocessed dataset (cases 1.5 × the patch, random intensities
  with ellipsoid lesions): patch sampling in background workers, on-device augmentation, the step. Two epochs of
  ``--iters`` iterations; the second is timed, so worker start-up and compilation are excluded. ``epoch_250_s``
  scales it to nnU-Net's 250-iteration epoch. ``--epoch-iters 250`` times a real 250-iteration epoch instead
  (``--iters`` then only sets the step's timed iterations).

Networks: ``reference`` is the study's fixed topology (reference/datasets-and-results.md: patch 56 × 160 × 192,
batch 2, 32 … 320 features over 6 stages, strides (1,1,1) (1,2,2) (2,2,2) (2,2,2) (2,2,2) (1,2,2), first kernels
1 × 3 × 3); ``cpu`` is what ``--preset cpu`` plans for a COVID-19-CT-Seg-like fingerprint (20 cases,
1.5 × 0.75 × 0.75 mm, about 200 × 400 × 400 voxels). ``--strategy hybrid`` builds the hybrid network (a dedicated
and an adapted encoder, both random here: speed does not depend on the weights) on the same topology.

``--parts profile`` adds ``step_profile.py``'s breakdown of one eager step (convolution, normalisation, loss,
optimiser, ... per phase; kernel precision on CUDA); ``--amp bf16|fp16`` chooses the mixed-precision format.

Usage: ``python benchmarks/train_step.py [--device auto] [--iters 20] [--warmup 3] [--compile] [--amp auto]
[--networks reference cpu] [--strategy scratch|hybrid] [--parts step iteration profile] [--epoch-iters N]
[--num-workers N] [--out result.json]``.
On a 2-core CPU the reference step takes about 10 s: use ``--networks cpu``, or ``--iters 2 --parts step``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from covtransfer.atomic import write_json  # noqa: E402
from covtransfer.data.dataset_json import DatasetInfo  # noqa: E402
from covtransfer.network.regional_compile import COMPILE_SCOPES  # noqa: E402
from covtransfer.planning.planner import plan_experiment  # noqa: E402
from covtransfer.plans import ChannelNormalization, Configuration, Plans  # noqa: E402
from covtransfer.training.strategies import Hybrid, Strategy  # noqa: E402
from covtransfer.training.trainer import AMP_MODES, Trainer, TrainingSettings, TrainingTask  # noqa: E402
from ellipsoid_case import ellipsoid_case  # noqa: E402
from step_profile import format_breakdown, profile_step  # noqa: E402

TASK = "Dataset900_Bench"
SPACING = [1.5, 0.75, 0.75]
MEDIAN_SHAPE = [200, 400, 400]
CT = {"mean": -450.0, "std": 420.0, "lower": -1024.0, "upper": 600.0}


def reference_configuration() -> Configuration:
    """The fixed topology of the transfer study and of nnU-Net's published step times."""
    return Configuration(
        name="3d_fullres", spacing=SPACING, patch_size=[56, 160, 192], batch_size=2,
        features_per_stage=[32, 64, 128, 256, 320, 320], kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 5,
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]], median_image_size=MEDIAN_SHAPE,
        normalization=[ChannelNormalization("CT", **CT)], data_identifier="3d_fullres")


def cpu_preset_configuration() -> Configuration:
    """``3d_fullres`` as the cpu preset plans it for a COVID-19-CT-Seg-like fingerprint."""
    stats = {"mean": CT["mean"], "std": CT["std"], "median": -500.0, "min": -1024.0, "max": 1500.0,
             "percentile_00_5": CT["lower"], "percentile_99_5": CT["upper"]}
    fingerprint = {"spacings": [SPACING] * 20, "shapes_after_crop": [MEDIAN_SHAPE] * 20,
                   "foreground_intensity_properties_per_channel": {"0": stats}}
    info = DatasetInfo("Bench", {0: "CT"}, {"background": 0, "lesion": 1}, 20)
    return plan_experiment(fingerprint, info, TASK, preset="cpu").configuration("3d_fullres")


NETWORKS = {"reference": reference_configuration, "cpu": cpu_preset_configuration}


class RandomHybrid(Hybrid):
    """The hybrid strategy with nothing loaded: both encoders stay random (the step costs the same)."""

    def initialise(self, model, pretrained, source=""):
        return None


STRATEGIES = {"scratch": Strategy, "hybrid": RandomHybrid}


def make_plans(configuration: Configuration) -> Plans:
    return Plans(dataset_name=TASK, channel_names={"0": "CT"}, labels={"background": 0, "lesion": 1},
                 transpose_forward=[0, 1, 2], transpose_backward=[0, 1, 2], original_median_spacing=SPACING,
                 original_median_shape=MEDIAN_SHAPE, configurations={"3d_fullres": configuration})


def write_cases(folder: Path, patch: list[int], n_cases: int = 4, seed: int = 0) -> list[str]:
    """Preprocessed cases in the training layout (``<case>.npz`` + ``<case>.json`` with class locations)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = [int(1.5 * p) for p in patch]
    case_ids = []
    for i in range(n_cases):
        data, seg = ellipsoid_case(shape, rng, np.int8)
        case_id = f"bench_{i:03d}"
        np.savez(folder / f"{case_id}.npz", data=data, seg=seg)
        locations = np.argwhere(seg[0] == 1)
        locations = locations[rng.choice(len(locations), min(len(locations), 10_000), replace=False)]
        (folder / f"{case_id}.json").write_text(json.dumps({"case_id": case_id,
                                                            "class_locations": {"1": locations.tolist()}}))
        case_ids.append(case_id)
    return case_ids


def make_trainer(configuration: Configuration, work: Path, args: argparse.Namespace) -> Trainer:
    plans = make_plans(configuration)
    case_ids = write_cases(work / TASK / configuration.data_identifier, configuration.patch_size)
    task = TrainingTask(TASK, work / TASK, plans, case_ids, case_ids)
    settings = TrainingSettings(epochs=2, iters_per_epoch=args.epoch_iters or args.iters, val_iters=0,
                                save_every=10 ** 6,
                                device=args.device, compile=args.compile, num_workers=args.num_workers,
                                compile_scope=args.compile_scope, amp=args.amp, final_validation=False)
    return Trainer([task], "3d_fullres", STRATEGIES[args.strategy](), work / "run", settings)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fixed_batch(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """One random batch of the trainer's patch and batch size, on its device."""
    configuration, device = trainer.configuration, trainer.device
    shape = (configuration.batch_size, trainer.plans.num_input_channels, *configuration.patch_size)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(shape, generator=generator).to(device)
    seg = (torch.rand((shape[0], 1, *shape[2:]), generator=generator) > 0.9).long().to(device)
    return images, seg


def time_step(trainer: Trainer, iters: int, warmup: int) -> dict:
    """Milliseconds per ``train_step`` on one random batch kept on the device."""
    device = trainer.device
    images, seg = fixed_batch(trainer)
    trainer.model.train()
    start = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step(images, seg, TASK)  # with --compile the first one compiles
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(iters):
        synchronize(device)
        start = time.perf_counter()
        trainer.train_step(images, seg, TASK)  # returns the loss as a float: the step has finished
        times.append(1000 * (time.perf_counter() - start))
    return {"mean": statistics.mean(times), "median": statistics.median(times), "min": min(times), "iters": iters,
            "warmup": warmup, "warmup_s": round(warmup_s, 2)}


def profile_one_step(trainer: Trainer) -> dict:
    """``step_profile``'s breakdown of one eager ``train_step`` on the fixed batch."""
    images, seg = fixed_batch(trainer)
    trainer.model.train()
    return profile_step(lambda: trainer.train_step(images, seg, TASK), trainer.network, trainer.loss, trainer.device)


def time_iteration(trainer: Trainer, iters: int) -> dict:
    """Milliseconds per full iteration (sampling, augmentation, step) in the second of two epochs."""
    trainer.fit()
    first, second = (record["epoch_time"] for record in trainer.state.history[-2:])
    ms = 1000 * second / iters
    return {"mean": ms, "iters": iters, "first_epoch_s": first, "epoch_250_s": 250 * ms / 1000,
            "num_workers": trainer._num_workers(),
            "initial_patch_size": list(trainer.augment.initial_patch_size)}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per measurement (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3; compile needs them)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--compile-scope", choices=COMPILE_SCOPES, default="network",
                        help="with --compile: the whole network (default) or each repeated block (regional)")
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=["reference", "cpu"])
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="scratch",
                        help="network kind: scratch (U-Net, default) or hybrid (two encoders, both random)")
    parser.add_argument("--parts", nargs="+", choices=["step", "iteration", "profile"], default=["step", "iteration"],
                        help="step, iteration (default both); profile: step_profile.py's breakdown of one step")
    parser.add_argument("--amp", choices=AMP_MODES, default="auto",
                        help="the trainer's --amp (default auto: bf16 on CUDA, fp32 on the CPU; fp16 for nnU-Net's)")
    parser.add_argument("--epoch-iters", type=int, default=None,
                        help="iterations per epoch for the iteration part (default: --iters)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="patch-sampling workers (default: the trainer's, 0 on CPU, up to 8 on GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    report = {"torch": torch.__version__, "compile": args.compile, "compile_scope": args.compile_scope,
              "strategy": args.strategy, "amp_mode": args.amp, "networks": {}}
    with tempfile.TemporaryDirectory(prefix="covtransfer_bench_") as tmp:
        for name in args.networks:
            configuration = NETWORKS[name]()
            trainer = make_trainer(configuration, Path(tmp) / name, args)
            report["device"] = str(trainer.device)
            report["device_name"] = describe_device(trainer.device)
            result = {"patch_size": configuration.patch_size, "batch_size": configuration.batch_size,
                      "features_per_stage": configuration.features_per_stage, "strides": configuration.strides,
                      "kernel_sizes": configuration.kernel_sizes,
                      "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "off"}
            report["networks"][name] = result  # written after each part: a run cut short keeps what it measured
            if "step" in args.parts:
                result["step_ms"] = time_step(trainer, args.iters, args.warmup)
                print(f"{name}: step {result['step_ms']['mean']:.1f} ms (median {result['step_ms']['median']:.1f}, "
                      f"min {result['step_ms']['min']:.1f}) over {args.iters}, {report['device_name']}", flush=True)
                if args.out:
                    write_json(args.out, report)
            if "profile" in args.parts:
                result["profile"] = profile_one_step(trainer)
                print(format_breakdown(f"covtransfer {name}", result["profile"]), flush=True)
            if "iteration" in args.parts:
                result["iteration_ms"] = time_iteration(trainer, args.epoch_iters or args.iters)
                it = result["iteration_ms"]
                print(f"{name}: full iteration {it['mean']:.1f} ms ({it['num_workers']} workers; 250 iterations "
                      f"{it['epoch_250_s']:.1f} s)", flush=True)
            if args.out:
                write_json(args.out, report)
            trainer.close()
            del trainer
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    print(json.dumps(report, indent=2))
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
