"""nnU-Net 2.8.1's own training step and 250-iteration epoch, on the network and data of ``train_step.py``.

The comparison figures for ``train_step.py``, taken with nnU-Net's code rather than quoted:

* **step**: ``nnUNetTrainer.train_step`` (forward, deep-supervision Dice + CE, backward, gradient clipping, SGD
  nesterov; fp16 autocast with a grad scaler on CUDA, as nnU-Net does) on one batch from its own data loader that is
  moved to the device once, so loading and augmentation cost nothing.
* **epoch**: ``--epoch-iters`` (default 250) iterations of nnU-Net's training loop exactly as ``run_training`` runs
  them (``train_step(next(dataloader_train))``): its multi-process CPU augmentation (``nnUNet_n_proc_DA`` workers,
  nnU-Net's default for the machine unless ``--n-proc-da``) and the step. ``--epoch-warmup`` iterations run first,
  untimed (compilation, cuDNN autotuning, filling the loader's queue). The time spent waiting in
  ``next(dataloader_train)`` is reported separately (``data_wait_s``): on CUDA the step returns the loss to the CPU,
  so the two parts do not overlap in the timing. nnU-Net's 50 validation iterations and its end-of-epoch
  bookkeeping are not timed (``train_step.py`` times no validation either).

``eager`` and ``compile`` are nnU-Net's own switch (``nnUNet_compile``; nnU-Net compiles by default on CUDA and never
on a CPU).

Same network and data as ``train_step.py --networks reference``: patch 56 x 160 x 192, batch 2, features 32 ... 320
over 6 stages, strides (1,1,1) (1,2,2) (2,2,2) (2,2,2) (2,2,2) (1,2,2), first kernels 1 x 3 x 3, spacing
1.5 x 0.75 x 0.75 mm; 4 preprocessed cases of 1.5 x the patch (standard-normal intensities, 3 ellipsoid lesions each,
seed 0), written with nnU-Net's own Blosc2 storage and foreground-location sampling, with hand-written plans
(``nnUNetPlans``, ``3d_fullres``, ``PlainConvUNet``) and a fold-0 split. ``--network tiny`` is a 3-stage network on a
16 x 32 x 32 patch for plumbing checks on a CPU.

Run it with an interpreter that imports nnunetv2 (nnU-Net's venv, or ``python3`` with an unpacked ``.sitepack`` on
``PYTHONPATH``); it does not import covtransfer. ``nnUNetTrainer`` is imported directly: nnU-Net's trainer lookup
would import every trainer module (and with them timm).

Usage: ``python benchmarks/nnunet_train_step.py [--device cuda] [--network reference] [--modes eager compile]
[--epoch-modes compile] [--iters 20] [--warmup 3] [--epoch-iters 250] [--epoch-warmup 20] [--n-proc-da N]
[--profile] [--work DIR] [--out result.json]``. ``--profile`` adds ``step_profile.py``'s breakdown of one eager step,
grouped by the same rules as ``train_step.py --parts profile``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ellipsoid_case import ellipsoid_case
from predict_nnunet import NNUNET_RESAMPLING

DATASET = "Dataset900_Bench"
NETWORKS = {
    "reference": {"patch": [56, 160, 192], "batch": 2, "features": [32, 64, 128, 256, 320, 320],
                  "kernels": [[1, 3, 3]] + [[3, 3, 3]] * 5,
                  "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                  "spacing": [1.5, 0.75, 0.75], "median_shape": [200, 400, 400]},
    "tiny": {"patch": [16, 32, 32], "batch": 2, "features": [8, 16, 32], "kernels": [[3, 3, 3]] * 3,
             "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "spacing": [6.0, 6.0, 6.0], "median_shape": [30, 60, 60]},
}


def plans_for(spec: dict) -> dict:
    """nnU-Net v2 plans with one ``3d_fullres`` configuration of exactly this topology."""
    n = len(spec["features"])
    return {
        "dataset_name": DATASET, "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
        "original_median_spacing_after_transp": spec["spacing"],
        "original_median_shape_after_transp": spec["median_shape"],
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1500.0, "mean": -450.0, "median": -500.0, "min": -1024.0, "percentile_00_5": -1024.0,
            "percentile_99_5": 600.0, "std": 420.0}},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": spec["batch"], "patch_size": spec["patch"],
            "median_image_size_in_voxels": spec["median_shape"],
            "spacing": spec["spacing"], "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            **NNUNET_RESAMPLING, "batch_dice": False,
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": n, "features_per_stage": spec["features"], "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": spec["kernels"], "strides": spec["strides"], "n_conv_per_stage": [2] * n,
                    "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}


def write_dataset(roots: dict[str, Path], spec: dict, plans: dict, n_cases: int, seed: int = 0) -> list[str]:
    """Preprocessed cases as nnU-Net's DefaultPreprocessor stores them (Blosc2 + a .pkl with class locations),
    plus dataset.json, plans, a fingerprint and a fold-0 split, under ``nnUNet_preprocessed``."""
    from batchgenerators.utilities.file_and_folder_operations import save_json
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2, comp_blosc2_params

    base = roots["nnUNet_preprocessed"] / DATASET
    folder = base / plans["configurations"]["3d_fullres"]["data_identifier"]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = [int(1.5 * p) for p in spec["patch"]]
    case_ids = []
    for i in range(n_cases):
        case_id = f"bench_{i:03d}"
        data, seg = ellipsoid_case(shape, rng)
        properties = {"spacing": spec["spacing"], "shape_before_cropping": shape,
                      "bbox_used_for_cropping": [[0, s] for s in shape],
                      "shape_after_cropping_and_before_resampling": shape,
                      "class_locations": DefaultPreprocessor._sample_foreground_locations(seg, [1], seed=1234 + i)}
        blocks, chunks = comp_blosc2_params(data.shape, tuple(spec["patch"]), data.itemsize)
        blocks_seg, chunks_seg = comp_blosc2_params(seg.shape, tuple(spec["patch"]), seg.itemsize)
        nnUNetDatasetBlosc2.save_case(data, seg, properties, str(folder / case_id), chunks=chunks, blocks=blocks,
                                      chunks_seg=chunks_seg, blocks_seg=blocks_seg)
        case_ids.append(case_id)
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1},
                    "numTraining": n_cases, "file_ending": ".nii.gz"}
    save_json(dataset_json, str(base / "dataset.json"), sort_keys=False)
    save_json(plans, str(base / "nnUNetPlans.json"), sort_keys=False)
    save_json({"spacings": [spec["spacing"]] * n_cases, "shapes_after_crop": [shape] * n_cases},
              str(base / "dataset_fingerprint.json"))
    save_json([{"train": case_ids, "val": case_ids[:1]}], str(base / "splits_final.json"))
    return case_ids


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ms_stats(times: list[float]) -> dict:
    return {"mean": round(statistics.mean(times), 2), "median": round(statistics.median(times), 2),
            "min": round(min(times), 2), "iters": len(times)}


def measure(mode: str, plans: dict, dataset_json: dict, device_name: str, args: argparse.Namespace,
            epoch: bool) -> dict:
    """Build nnU-Net's trainer in ``mode`` (eager or compile), time the pure step and optionally the epoch."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    os.environ["nnUNet_compile"] = "true" if mode == "compile" else "false"
    plans = copy.deepcopy(plans)
    plans["continue_training"] = False  # 2.8.1's trainer pops this key (run_training puts it there)
    torch.manual_seed(0)
    trainer = nnUNetTrainer(plans, "3d_fullres", 0, dataset_json, device=torch.device(device_name))
    trainer.num_iterations_per_epoch = args.epoch_iters
    trainer.save_every = 10 ** 9
    start = time.perf_counter()
    trainer.on_train_start()  # initialize (network, torch.compile, optimizer, loss) and start the data loaders
    result = {"mode": mode, "compiled": bool(trainer._do_i_compile()), "setup_s": round(time.perf_counter() - start, 2),
              "n_proc_DA": int(getattr(trainer.dataloader_train, "num_processes", 0) or 0),
              "amp": "fp16 autocast + GradScaler" if trainer.device.type == "cuda" else "off"}
    device = trainer.device
    try:
        trainer.on_epoch_start()
        trainer.on_train_epoch_start()
        batch = next(trainer.dataloader_train)
        fixed = {"data": batch["data"].to(device),
                 "target": [t.to(device) for t in batch["target"]] if isinstance(batch["target"], list)
                 else batch["target"].to(device)}
        result["batch_shape"] = list(fixed["data"].shape)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(args.warmup):
            trainer.train_step(fixed)
        synchronize(device)
        result["step_warmup_s"] = round(time.perf_counter() - start, 2)
        times = []
        for _ in range(args.iters):
            synchronize(device)
            start = time.perf_counter()
            trainer.train_step(fixed)  # returns the loss on the CPU: the step has finished
            times.append(1000 * (time.perf_counter() - start))
        result["step_ms"] = ms_stats(times)
        if device.type == "cuda":
            result["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20)
        print(f"nnunetv2 {mode}: step {result['step_ms']['mean']:.1f} ms (median {result['step_ms']['median']:.1f}, "
              f"min {result['step_ms']['min']:.1f}) over {args.iters}", flush=True)
        if args.profile and mode == "eager":
            from step_profile import format_breakdown, profile_step

            result["profile"] = profile_step(lambda: trainer.train_step(fixed), trainer.network, trainer.loss, device)
            print(format_breakdown(f"nnunetv2 {mode}", result["profile"]), flush=True)
        del fixed, batch
        if epoch:
            loader = trainer.dataloader_train
            for _ in range(args.epoch_warmup):
                trainer.train_step(next(loader))
            synchronize(device)
            wait = step = 0.0
            start = time.perf_counter()
            for _ in range(args.epoch_iters):
                t0 = time.perf_counter()
                batch = next(loader)
                t1 = time.perf_counter()
                trainer.train_step(batch)
                wait, step = wait + t1 - t0, step + time.perf_counter() - t1
            synchronize(device)
            total = time.perf_counter() - start
            result["epoch"] = {"iters": args.epoch_iters, "warmup_iters": args.epoch_warmup,
                               "seconds": round(total, 2), "ms_per_iter": round(1000 * total / args.epoch_iters, 2),
                               "epoch_250_s": round(250 * total / args.epoch_iters, 2),
                               "data_wait_s": round(wait, 2), "step_s": round(step, 2)}
            e = result["epoch"]
            print(f"nnunetv2 {mode}: {args.epoch_iters}-iteration epoch {e['seconds']:.1f} s "
                  f"({e['ms_per_iter']:.1f} ms/iteration, {e['data_wait_s']:.1f} s waiting for data, "
                  f"{result['n_proc_DA']} augmentation processes; 250 iterations {e['epoch_250_s']:.1f} s)", flush=True)
    finally:
        for loader in (trainer.dataloader_train, trainer.dataloader_val):
            if hasattr(loader, "_finish"):
                loader._finish()
        del trainer
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        torch._dynamo.reset()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    parser.add_argument("--network", choices=sorted(NETWORKS), default="reference")
    parser.add_argument("--modes", nargs="+", choices=("eager", "compile"), default=["eager", "compile"],
                        help="nnU-Net's nnUNet_compile off / on (default both; a CPU never compiles)")
    parser.add_argument("--epoch-modes", nargs="*", choices=("eager", "compile"), default=["compile"],
                        help="modes that also time the epoch (default compile, nnU-Net's default on a GPU)")
    parser.add_argument("--iters", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--epoch-iters", type=int, default=250, help="iterations in the timed epoch (default 250)")
    parser.add_argument("--epoch-warmup", type=int, default=20, help="untimed loader iterations first (default 20)")
    parser.add_argument("--profile", action="store_true",
                        help="also step_profile.py's breakdown of one eager step (the same rules as train_step.py's)")
    parser.add_argument("--cases", type=int, default=4, help="synthetic preprocessed cases (default 4)")
    parser.add_argument("--n-proc-da", type=int, default=None,
                        help="augmentation processes (sets nnUNet_n_proc_DA; default: nnU-Net's choice)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="nnunet_train_bench_"))
    roots = {name: work / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, path in roots.items():
        path.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(path)  # before nnunetv2 is imported: nnunetv2.paths reads them once
    if args.n_proc_da is not None:
        os.environ["nnUNet_n_proc_DA"] = str(args.n_proc_da)

    import torch
    import nnunetv2
    from importlib.metadata import version

    if args.threads:
        torch.set_num_threads(args.threads)
    # nnUNetv2_train sets these in run_training() before it builds the trainer; importing the trainer directly skips
    # them. Without the autotuner nnU-Net's step measured 289 ms instead of 64 ms on an H200 (2026-11-27).
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = True
    device_name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    spec = NETWORKS[args.network]
    plans = plans_for(spec)
    report = {"tool": "nnunetv2", "nnunetv2": version("nnunetv2"), "torch": torch.__version__,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": device_name, "device_name": (torch.cuda.get_device_name(0) if device_name == "cuda"
                                                     else f"CPU, {os.cpu_count()} cores"),
              "network": args.network, "patch_size": spec["patch"], "batch_size": spec["batch"],
              "features_per_stage": spec["features"], "strides": spec["strides"], "kernel_sizes": spec["kernels"],
              "nnunetv2_path": str(Path(nnunetv2.__file__).parent), "modes": {}}
    try:
        start = time.perf_counter()
        write_dataset(roots, spec, plans, args.cases)
        report["write_dataset_s"] = round(time.perf_counter() - start, 2)
        from batchgenerators.utilities.file_and_folder_operations import load_json
        dataset_json = load_json(str(roots["nnUNet_preprocessed"] / DATASET / "dataset.json"))
        for mode in args.modes:
            try:
                report["modes"][mode] = measure(mode, plans, dataset_json, device_name, args,
                                                epoch=mode in (args.epoch_modes or []))
            except Exception as error:  # keep the other mode's figures
                report["modes"][mode] = {"error": f"{type(error).__name__}: {error}"}
                print(f"nnunetv2 {mode}: failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            if args.out:  # as it goes: a later failure or timeout keeps what was measured
                args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if any("error" in r for r in report["modes"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
