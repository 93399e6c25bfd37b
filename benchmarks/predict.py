"""Time ``covtransfer_predict`` end to end (process start to file written) on one clinical-size synthetic CT.

The case is a ``clinical`` synthetic chest CT (512 × 512 × ~240 voxels, int16, .nii.gz). The model is the reference
topology (patch 56 × 160 × 192, features 32 … 320, 6 stages, spacing 1.5 × 1 × 1 mm) with random weights: this
measures speed, not accuracy. Each run is a fresh ``python -m covtransfer.cli.predict`` process, with and without
mirroring; CPU time and peak resident memory are that process's own (``os.wait4``), the GPU memory the peak
that ``nvidia-smi`` saw. ``--breakdown`` also times the stages in-process (read + preprocess, network, export, write).

On a CPU the reference network with mirroring takes very long; ``--cpu-topology small`` (the default on a CPU)
uses patch 48 × 128 × 128 and features 16 … 128 (5 stages) instead, and says so in the output.

``--case tiny --cpu-topology tiny`` (a 30 × 55 × 60 case, a 3-stage network at 6 mm) checks the plumbing in seconds.
``--tools`` picks whose prediction runs (both by default), so that one ``--work`` folder serves two invocations;
``--prepare-only`` writes the case and checkpoints there and stops. ``--nnunet-python`` names an interpreter that
imports nnunetv2 (e.g. ``python3`` with an unpacked ``.sitepack`` on ``PYTHONPATH``) instead of ``--nnunet-venv``.

Usage: ``python benchmarks/predict.py [--devices cpu cuda] [--work DIR] [--breakdown] [--nnunet-venv PATH]
[--nnunet-python PATH] [--tools covtransfer nnunetv2] [--case clinical|small|tiny] [--case-index N]
[--prepare-only]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from covtransfer.data.image_io import Geometry, read_geometry, read_image, write_image  # noqa: E402
from covtransfer.network.build import build_network  # noqa: E402
from covtransfer.network.checkpoint import Checkpoint  # noqa: E402
from covtransfer.network.checkpoint_io import save_checkpoint  # noqa: E402
from covtransfer.plans import ChannelNormalization, Configuration, Plans  # noqa: E402
from predict_nnunet import nnunet_model_folder, nnunet_predict_command, nnunet_run  # noqa: E402

TOPOLOGIES = {
    "reference": {"patch": [56, 160, 192], "features": [32, 64, 128, 256, 320, 320],
                  "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]]},
    "small": {"patch": [48, 128, 128], "features": [16, 32, 64, 128, 128],
              "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]},
    # plumbing checks only: a coarse grid so that a ``--case tiny`` volume is a handful of windows
    "tiny": {"patch": [16, 32, 32], "features": [8, 16, 32], "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
             "spacing": [6.0, 6.0, 6.0]},
}
SPACING = [1.5, 1.0, 1.0]
CT = {"mean": -450.0, "std": 420.0, "lower": -1024.0, "upper": 600.0}
TASK = "Dataset900_Bench"


def make_case(folder: Path, size: str = "clinical", index: int = 0) -> Path:
    """A clinical-size synthetic CT (or a stand-in volume if the generator is unavailable) as case_0000.nii.gz."""
    path = folder / "images" / "case_0000.nii.gz"
    if path.is_file():
        return path
    try:
        from covtransfer.datasets.phantom import generate_case
        from covtransfer.datasets.synthetic import case_rng
        image, _, spacing = generate_case("covid", size, case_rng(0, "covid", index))
    except ImportError:
        rng = np.random.default_rng(0)
        image = (rng.normal(-700, 200, (200, 512, 512))).astype(np.int16)
        spacing = (1.25, 0.7, 0.7)
    write_image(path, image, Geometry(tuple(spacing), (-180.0, -200.0, -150.0)))
    return path


def make_plans(topology: str) -> Plans:
    spec = TOPOLOGIES[topology]
    n = len(spec["features"])
    spacing = spec.get("spacing", SPACING)
    configuration = Configuration(
        name="3d_fullres", spacing=spacing, patch_size=spec["patch"], batch_size=2,
        features_per_stage=spec["features"], kernel_sizes=[[3, 3, 3]] * n, strides=spec["strides"],
        median_image_size=[176, 335, 335], normalization=[ChannelNormalization("CT", **CT)],
        data_identifier="3d_fullres")
    return Plans(dataset_name=TASK, channel_names={"0": "CT"}, labels={"background": 0, "lesion": 1},
                 transpose_forward=[0, 1, 2], transpose_backward=[0, 1, 2], original_median_spacing=spacing,
                 original_median_shape=[176, 335, 335], configurations={"3d_fullres": configuration})


def make_checkpoint(folder: Path, topology: str) -> Path:
    """A checkpoint of the topology with random weights (seeded) in ``folder/<topology>/fold_0``."""
    path = folder / "models" / topology / "fold_0" / "checkpoint_final.pt"
    if path.is_file():
        return path
    torch.manual_seed(0)
    plans = make_plans(topology)
    heads = {TASK: 2}
    network = build_network(plans.configuration("3d_fullres"), 1, heads, deep_supervision=False)
    state = network.state_dict()
    for name in [n for n in state if n.startswith("heads.") and n.endswith("bias")]:
        state[name].zero_()  # no foreground prior: random weights then label a good part of the volume, so that
        # the Dice of two prediction paths (--compare-plain, --fast) compares real label maps
    checkpoint = Checkpoint("unet", heads, plans, "3d_fullres", state, {TASK: dict(plans.labels)}, TASK,
                            strategy={"name": "benchmark"})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, checkpoint)
    return path


class GpuMemoryPoller:
    """Peak GPU memory in use (MiB) as reported by nvidia-smi, polled every 50 ms in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.peak = max([self.peak] + [int(v) for v in out.split() if v.isdigit()])
            except (OSError, subprocess.SubprocessError):
                return
            self._stop.wait(0.05)

    def __enter__(self) -> "GpuMemoryPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def timed_process(command: list[str], gpu: bool, env: dict | None = None) -> dict:
    """Run ``command``: wall seconds, CPU seconds (user + system, the process and the children it waited for: on a
    shared machine less noisy than wall time), peak RSS (MiB) of the largest of those processes, peak GPU MiB."""
    poller = GpuMemoryPoller() if gpu and shutil.which("nvidia-smi") else None
    start = time.perf_counter()
    if poller:
        poller.__enter__()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if poller:
        poller.__exit__()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output[-3000:]}")
    return {"seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "peak_gpu_mib": poller.peak if poller else None}


def run_covtransfer(case: Path, checkpoint: Path, output: Path, device: str, tta: bool,
                    extra: Sequence[str] = ()) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "covtransfer.cli.predict", "-i", str(case), "-o", str(output),
               "-m", str(checkpoint), "--device", device, "--quiet"] + ([] if tta else ["--no-tta"]) + list(extra)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    result = timed_process(command, device == "cuda", dict(os.environ, PYTHONPATH=path))
    shape, _ = read_geometry(output / "case.nii.gz")
    if shape != read_geometry(case)[0]:
        raise RuntimeError(f"output shape {shape} differs from the input's")
    return result


def dice(a: Path, b: Path) -> dict:
    """Foreground Dice of two label maps (1.0 when both are empty) and their foreground voxel counts."""
    x, y = read_image(a)[0] > 0, read_image(b)[0] > 0
    total = int(x.sum()) + int(y.sum())
    return {"dice_vs_default": 1.0 if total == 0 else round(2 * int((x & y).sum()) / total, 5),
            "foreground_voxels": [int(x.sum()), int(y.sum())]}


def breakdown(case: Path, checkpoint: Path, device: str, tta: bool, output: Path) -> dict:
    """Seconds per stage, in this process (after a warm-up forward so CUDA start-up is not counted)."""
    from covtransfer.inference.export import save_segmentation, segmentation_to_original
    from covtransfer.inference.inputs import discover_cases
    from covtransfer.inference.model_loading import load_models
    from covtransfer.inference.predictor import Predictor, ensemble_logits

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    models = load_models([checkpoint], device)
    predictor = Predictor(models, device, tta=tta)
    [input_case] = discover_cases(case)
    patch = models[0].configuration.patch_size
    models[0].network(torch.zeros(1, 1, *patch, device=device))
    times = {}
    start = time.perf_counter()
    data, properties = predictor.preprocess(input_case)
    times["read_preprocess"] = time.perf_counter() - start
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # autotuned once, then timed: what a long run of cases would see
        ensemble_logits(models, data, predictor.device, tta)
        sync()
        start = time.perf_counter()
        ensemble_logits(models, data, predictor.device, tta)
        sync()
        times["network_cudnn_benchmark"] = time.perf_counter() - start
        torch.backends.cudnn.benchmark = False
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    logits = ensemble_logits(models, data, predictor.device, tta)
    sync()
    times["network"] = time.perf_counter() - start
    start = time.perf_counter()
    seg = segmentation_to_original(logits, properties, predictor.plans, predictor.configuration_name)
    sync()
    times["export"] = time.perf_counter() - start
    start = time.perf_counter()
    save_segmentation(output / "breakdown.nii.gz", seg, properties)
    times["write"] = time.perf_counter() - start
    times["preprocessed_shape"] = list(data.shape[1:])
    if device == "cuda":
        times["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in times.items()}


def run_nnunet(predict: list[str], images: Path, model: Path, output: Path, device: str, tta: bool) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    command, env = nnunet_run(predict, images, model, output, device, tta)
    return timed_process(command, device == "cuda", env)


def variants(device: str, args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """Further covtransfer runs beside the default one: the plain PyTorch path (``--compare-plain``, CPU),
    ``--fast`` and ``--statistics``; each row also gives its Dice against the default run's label map."""
    runs = [("plain_pytorch", ["--no-cpu-runtime"])] if args.compare_plain and device == "cpu" else []
    return runs + ([("fast", ["--fast"])] if args.fast else []) + \
        ([("statistics", ["--statistics"])] if args.statistics else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    parser.add_argument("--devices", nargs="+", default=default_devices, choices=("cpu", "cuda"))
    parser.add_argument("--cpu-topology", choices=tuple(TOPOLOGIES), default="small",
                        help="network on the CPU (default small: the reference network takes very long there)")
    parser.add_argument("--cpu-tta", action="store_true", help="also time mirroring on the CPU (8x the network time)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--breakdown", action="store_true", help="also time the stages in-process")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting (the fastest is reported)")
    parser.add_argument("--nnunet-venv", type=Path, help="a virtual environment with nnunetv2: time it too")
    parser.add_argument("--nnunet-python", type=Path,
                        help="instead of --nnunet-venv: an interpreter that imports nnunetv2 (e.g. python3 with a "
                             "sitepack on PYTHONPATH)")
    parser.add_argument("--tools", nargs="+", choices=("covtransfer", "nnunetv2"), default=["covtransfer", "nnunetv2"],
                        help="whose prediction to time (default both; nnunetv2 only with --nnunet-venv/-python)")
    parser.add_argument("--case", choices=("clinical", "small", "tiny"), default="clinical",
                        help="synthetic case size (default clinical, 512 x 512 x ~240; tiny for plumbing checks)")
    parser.add_argument("--case-index", type=int, default=0,
                        help="which synthetic case (default 0: 244 x 512 x 512; 11: 210 x 512 x 512 at 1.29 mm)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="write the case and the checkpoints into --work, then stop")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--compare-plain", action="store_true",
                        help="also time the plain PyTorch path (--no-cpu-runtime) on the CPU, with its Dice against "
                             "the default path")
    parser.add_argument("--fast", action="store_true", help="also time covtransfer_predict --fast")
    parser.add_argument("--statistics", action="store_true",
                        help="also time covtransfer_predict --statistics (the burden statistics after predicting)")
    parser.add_argument("--levers", type=int, metavar="WINDOWS",
                        help="time each CPU lever alone on WINDOWS windows (rounded up to a multiple of 4) of the "
                             "--cpu-topology network in this process (benchmarks/cpu_levers.py), then stop")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="covtransfer_predict_bench_"))
    results = []
    nnunet_predict = nnunet_predict_command(args.nnunet_venv, args.nnunet_python)
    nnunet_python = args.nnunet_python or (args.nnunet_venv / "bin" / "python" if args.nnunet_venv else None)
    if args.levers:
        from cpu_levers import time_levers
        print(json.dumps(time_levers(make_plans(args.cpu_topology), args.levers), indent=1))
        return
    if args.prepare_only:
        make_case(work, args.case, args.case_index)
        for device in args.devices:
            make_checkpoint(work, "reference" if device == "cuda" else args.cpu_topology)
        print(f"prepared {work}")
        return
    try:
        case = make_case(work, args.case, args.case_index)
        shape, geometry = read_geometry(case)
        topologies = ["reference" if device == "cuda" else args.cpu_topology for device in args.devices]
        print(f"case: {shape} voxels (z, y, x) at {tuple(round(s, 3) for s in geometry.spacing)} mm; model spacing "
              f"{', '.join(str(TOPOLOGIES[t].get('spacing', SPACING)) for t in dict.fromkeys(topologies))} mm")
        for device in args.devices:
            topology = "reference" if device == "cuda" else args.cpu_topology
            checkpoint = make_checkpoint(work, topology)
            spec = TOPOLOGIES[topology]
            tta_settings = (True, False) if device == "cuda" or args.cpu_tta else (False,)
            for tta in tta_settings if "covtransfer" in args.tools else ():
                runs = [run_covtransfer(case, checkpoint, work / "out", device, tta) for _ in range(args.repeats)]
                best = min(runs, key=lambda r: r["seconds"])
                row = {"tool": "covtransfer", "device": device, "topology": topology, "patch": spec["patch"],
                       "features": spec["features"], "mirroring": tta, **best}
                if args.breakdown:
                    row["breakdown"] = breakdown(case, checkpoint, device, tta, work)
                rows = [row]
                for name, extra in variants(device, args):
                    runs = [run_covtransfer(case, checkpoint, work / name, device, tta, extra)
                            for _ in range(args.repeats)]
                    rows.append({**row, "variant": name, **min(runs, key=lambda r: r["seconds"]),
                                 **dice(work / "out" / "case.nii.gz", work / name / "case.nii.gz")})
                for row in rows:
                    results.append(row)
                    print(json.dumps(row), flush=True)
                if args.json:  # as it goes: a run cut short keeps its rows
                    args.json.write_text(json.dumps(results, indent=2) + "\n")
            if "nnunetv2" in args.tools and nnunet_predict is None and (args.nnunet_venv or args.nnunet_python):
                print(f"nnunetv2: no nnUNetv2_predict_from_modelfolder in {args.nnunet_venv}; skipped", flush=True)
            if nnunet_predict and "nnunetv2" in args.tools:
                model = nnunet_model_folder(work, nnunet_python, topology, TOPOLOGIES[topology],
                                            TOPOLOGIES[topology].get("spacing", SPACING), CT, TASK)
                for tta in tta_settings:
                    row = {"tool": "nnunetv2", "device": device, "topology": topology, "mirroring": tta,
                           **run_nnunet(nnunet_predict, case.parent, model, work / "nnunet_out", device, tta)}
                    results.append(row)
                    print(json.dumps(row), flush=True)
                    if args.json:
                        args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
