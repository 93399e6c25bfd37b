"""Time and peak memory of planning and preprocessing, side by side with nnU-Net when it is installed.

Two workloads: (a) a synthetic ``small`` COVID-like dataset of 20 cases, planned by each tool on its own; (b) one
clinical-size CT phantom (512 x 512 x 200 at 0.7 x 0.7 x 1.25 mm) preprocessed at 1 x 1 x 1.5 mm. Every stage runs
in a fresh process tree; its peak memory is the largest resident set of any one process in it (the main process
or one worker). A one-core micro-benchmark compares our resampling of the clinical case with the calls nnU-Net
makes (skimage ``resize`` order 3 for the image; every label's mask at order 1 for the label map).

Usage::

    python benchmarks/preprocess.py [-np 2] [--cases 20] [--nnunet-venv /path/to/venv] [--work DIR] [--json out.json]

With ``--nnunet-venv`` (a virtual environment where ``nnunetv2`` is installed) nnU-Net's
``nnUNetv2_extract_fingerprint`` + ``nnUNetv2_plan_experiment`` and ``nnUNetv2_preprocess`` run on the same data in
the same run, and the ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from covtransfer.data.image_io import Geometry, write_image  # noqa: E402

SMALL_ID, CLINICAL_ID = 901, 902
CLINICAL_SHAPE, CLINICAL_SPACING, CLINICAL_TARGET = (200, 512, 512), (1.25, 0.7, 0.7), (1.5, 1.0, 1.0)

# Runs a command and reports its wall time and the largest resident set of any process in its tree (Linux: KiB).
_MEASURE = textwrap.dedent("""
    import json, resource, subprocess, sys, time
    start = time.perf_counter()
    code = subprocess.run(sys.argv[1:]).returncode
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("@@MEASURE@@" + json.dumps({"returncode": code, "seconds": wall, "peak_mb": peak}))
""")


def measure(command: list[str], env: dict | None = None) -> dict:
    """Wall seconds and peak MB of ``command`` (run in a fresh process tree); raises when it fails."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, *command], env=env, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("@@MEASURE@@")]
    if not lines:
        raise RuntimeError(f"measurement failed: {result.stderr[-2000:]}")
    figures = json.loads(lines[-1][len("@@MEASURE@@"):])
    if figures["returncode"] != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return figures


def clinical_phantom(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 512 x 512 x 200 chest-CT-like volume in HU (int16) with noise and a lesion label: body, lungs, a nodule."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = CLINICAL_SHAPE
    z, y, x = np.ogrid[:nz, :ny, :nx]
    body = ((y - ny / 2) / (0.43 * ny)) ** 2 + ((x - nx / 2) / (0.47 * nx)) ** 2 < 1
    lungs = (((y - ny / 2) / (0.3 * ny)) ** 2 + ((np.abs(x - nx / 2) - 0.21 * nx) / (0.15 * nx)) ** 2 < 1) \
        & (z > 0.1 * nz) & (z < 0.9 * nz)
    lesion = ((z - nz / 2) / 18) ** 2 + ((y - 0.45 * ny) / 30) ** 2 + ((x - 0.35 * nx) / 35) ** 2 < 1
    image = np.where(body, 40.0, -1000.0)
    image = np.where(lungs, -850.0, image)
    image = np.where(lesion, -350.0, image) + rng.normal(0, 25, CLINICAL_SHAPE)
    return np.round(image).astype(np.int16), lesion.astype(np.uint8)


def write_dataset_json(folder: Path, name: str, n_cases: int) -> None:
    (folder / "dataset.json").write_text(json.dumps({
        "name": name, "channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": n_cases, "file_ending": ".nii.gz"}, indent=2))


def make_small_dataset(raw: Path, cases: int) -> Path:
    """The project's synthetic COVID-like dataset (size ``small``), or stand-in phantoms when it is unavailable."""
    try:
        from covtransfer.datasets.synthetic import make_synthetic_dataset
    except ImportError:
        make_synthetic_dataset = None
    if make_synthetic_dataset is not None:
        return make_synthetic_dataset("covid", SMALL_ID, cases, size="small", seed=0, name="BenchSmall",
                                      raw_root=raw)
    folder = raw / f"Dataset{SMALL_ID}_BenchSmall"
    rng = np.random.default_rng(0)
    for index in range(cases):
        shape = (int(rng.integers(40, 56)), int(rng.integers(96, 120)), int(rng.integers(104, 128)))
        z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
        body = ((y - shape[1] / 2) / (0.45 * shape[1])) ** 2 + ((x - shape[2] / 2) / (0.48 * shape[2])) ** 2 < 1
        image = np.where(body, 40.0, -1000.0) + rng.normal(0, 20, shape)
        lesion = ((z - shape[0] / 2) / 6) ** 2 + ((y - shape[1] / 2) / 12) ** 2 + ((x - shape[2] / 3) / 12) ** 2 < 1
        image[lesion] -= 500
        geometry = Geometry((float(rng.uniform(2.5, 3.2)), 4.0, 4.0))
        write_image(folder / "imagesTr" / f"case_{index:03d}_0000.nii.gz", image.astype(np.int16), geometry)
        write_image(folder / "labelsTr" / f"case_{index:03d}.nii.gz", lesion.astype(np.uint8), geometry)
    write_dataset_json(folder, "BenchSmall", cases)
    return folder


def make_clinical_dataset(raw: Path) -> Path:
    folder = raw / f"Dataset{CLINICAL_ID}_BenchClinical"
    image, label = clinical_phantom()
    geometry = Geometry(CLINICAL_SPACING)
    write_image(folder / "imagesTr" / "clinical_000_0000.nii.gz", image, geometry)
    write_image(folder / "labelsTr" / "clinical_000.nii.gz", label, geometry)
    write_dataset_json(folder, "BenchClinical", 1)
    return folder


def set_spacing(plans_path: Path, spacing_zyx, transpose_key: str, configurations_key: str = "configurations"):
    """Force the 3d_fullres target spacing (given in z, y, x) into a plans file, in its transposed axis order."""
    plans = json.loads(plans_path.read_text())
    forward = plans[transpose_key]
    plans[configurations_key]["3d_fullres"]["spacing"] = [spacing_zyx[a] for a in forward]
    plans_path.write_text(json.dumps(plans, indent=2))


def run_ours(raw_folder: Path, preprocessed: Path, processes: int, target_spacing=None) -> dict:
    """Stage 1: verify + fingerprint + plan (the CLI, --plan-only); stage 2: preprocess 3d_fullres (the API)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    plan_cmd = [sys.executable, "-c", "from covtransfer.cli.plan_and_preprocess import entry; entry()",
                "-d", raw_folder.name, "--plan-only", "-np", str(processes), "--raw", str(raw_folder.parent),
                "--preprocessed", str(preprocessed)]
    plan = measure(plan_cmd, env)
    out = preprocessed / raw_folder.name
    if target_spacing is not None:
        set_spacing(out / "plans.json", target_spacing, "transpose_forward")
    code = ("import sys; from covtransfer.plans import Plans; from covtransfer.preprocessing.run import "
            "preprocess_dataset; preprocess_dataset(sys.argv[1], sys.argv[2], Plans.load(sys.argv[2] + "
            "'/plans.json'), ['3d_fullres'], int(sys.argv[3]))")
    pre = measure([sys.executable, "-c", code, str(raw_folder), str(out), str(processes)], env)
    return {"plan": plan, "preprocess": pre}


def run_nnunet(venv: Path, raw_folder: Path, work: Path, processes: int, target_spacing=None) -> dict:
    """nnU-Net's fingerprint + plan (with its dataset check) and its 3d_fullres preprocessing, same data."""
    env = dict(os.environ, nnUNet_raw=str(raw_folder.parent), nnUNet_preprocessed=str(work / "nnunet_preprocessed"),
               nnUNet_results=str(work / "nnunet_results"))
    bin_dir = venv / "bin"
    dataset_id = raw_folder.name[7:10]
    fingerprint = measure([str(bin_dir / "nnUNetv2_extract_fingerprint"), "-d", dataset_id, "-np", str(processes),
                           "--verify_dataset_integrity"], env)
    plan = measure([str(bin_dir / "nnUNetv2_plan_experiment"), "-d", dataset_id], env)
    plans_path = work / "nnunet_preprocessed" / raw_folder.name / "nnUNetPlans.json"
    if target_spacing is not None:
        set_spacing(plans_path, target_spacing, "transpose_forward")
    pre = measure([str(bin_dir / "nnUNetv2_preprocess"), "-d", dataset_id, "-c", "3d_fullres", "-np",
                   str(processes)], env)
    combined = {"seconds": fingerprint["seconds"] + plan["seconds"],
                "peak_mb": max(fingerprint["peak_mb"], plan["peak_mb"])}
    return {"plan": combined, "preprocess": pre}


def compare_outputs(ours_folder: Path, nnunet_folder: Path) -> dict:
    """Largest data difference and label disagreements between our cases and nnU-Net's (blosc2) cases."""
    import blosc2

    worst, disagreements, voxels, cases = 0.0, 0, 0, 0
    for npz in sorted(ours_folder.glob("*.npz")):
        theirs = nnunet_folder / f"{npz.stem}.b2nd"
        if not theirs.is_file():
            continue
        with np.load(npz) as archive:
            data, seg = archive["data"], archive["seg"]
        their_data = blosc2.open(str(theirs))[:]
        their_seg = blosc2.open(str(theirs.with_name(f"{npz.stem}_seg.b2nd")))[:]
        if data.shape != their_data.shape:
            return {"cases": cases, "shape_mismatch": [npz.stem, list(data.shape), list(their_data.shape)]}
        worst = max(worst, float(np.abs(data - their_data).max()))
        disagreements += int((seg != their_seg).sum())
        voxels += seg.size
        cases += 1
    return {"cases": cases, "max_abs_data_difference": worst, "label_disagreements": disagreements,
            "voxels": voxels}


def resampling_micro_benchmark() -> dict:
    """One core: our resampling of the clinical phantom vs the skimage calls nnU-Net's resampling makes."""
    from skimage.transform import resize
    from threadpoolctl import threadpool_limits

    from covtransfer.preprocessing.resampling import compute_new_shape, resample_image, resample_labels

    image, label = clinical_phantom()
    data = image[None].astype(np.float32)
    new_shape = compute_new_shape(CLINICAL_SHAPE, CLINICAL_SPACING, CLINICAL_TARGET)
    figures = {"new_shape": new_shape}

    def timed(name, fn):
        tracemalloc.start()
        start = time.perf_counter()
        result = fn()
        figures[name] = {"seconds": time.perf_counter() - start,
                         "peak_mb": tracemalloc.get_traced_memory()[1] / 2 ** 20}
        tracemalloc.stop()
        return result

    with threadpool_limits(1):
        ours = timed("ours_image", lambda: resample_image(data, CLINICAL_SPACING, CLINICAL_TARGET, new_shape))
        timed("ours_labels", lambda: resample_labels(label, CLINICAL_SPACING, CLINICAL_TARGET, new_shape))
        reference = timed("skimage_image", lambda: resize(data[0], new_shape, order=3, mode="edge",
                                                          anti_aliasing=False))

        def skimage_labels():
            out = np.zeros(new_shape, dtype=label.dtype)
            for value in np.unique(label):
                mask = resize((label == value).astype(float), new_shape, order=1, mode="edge", anti_aliasing=False)
                out[mask >= 0.5] = value
            return out

        timed("skimage_labels", skimage_labels)
    figures["max_abs_difference_hu"] = float(np.abs(ours[0] - reference).max())
    return figures


def nnunet_available(venv: Path | None) -> bool:
    return venv is not None and (venv / "bin" / "nnUNetv2_preprocess").is_file()


def ratio(theirs: float, ours: float) -> str:
    return f"{theirs / ours:.2f}x" if ours > 0 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-np", "--num-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cases", type=int, default=20, help="cases in the small dataset (default 20)")
    parser.add_argument("--nnunet-venv", type=Path, help="virtual environment with nnunetv2 installed")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary folder, removed after)")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--skip-clinical", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.nnunet_venv is not None and not nnunet_available(args.nnunet_venv):
        print(f"note: {args.nnunet_venv} has no nnUNetv2_preprocess; running covtransfer only", file=sys.stderr)
    with_nnunet = nnunet_available(args.nnunet_venv)
    work = args.work or Path(tempfile.mkdtemp(prefix="covtransfer_bench_"))
    results: dict = {"num_processes": args.num_processes, "cpu_count": os.cpu_count()}
    try:
        raw = work / "raw"
        workloads = []
        if not args.skip_small:
            workloads.append(("small", make_small_dataset(raw, args.cases), None))
        if not args.skip_clinical:
            workloads.append(("clinical", make_clinical_dataset(raw), CLINICAL_TARGET))
        for name, folder, spacing in workloads:
            entry = {"ours": run_ours(folder, work / "preprocessed", args.num_processes, spacing)}
            if with_nnunet:
                entry["nnunet"] = run_nnunet(args.nnunet_venv, folder, work, args.num_processes, spacing)
                entry["agreement"] = compare_outputs(work / "preprocessed" / folder.name / "3d_fullres",
                                                     work / "nnunet_preprocessed" / folder.name /
                                                     "nnUNetPlans_3d_fullres")
            results[name] = entry
        if not args.skip_clinical:
            results["resampling_one_core"] = resampling_micro_benchmark()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\npreprocessing benchmark ({args.num_processes} processes, {os.cpu_count()} cores)")
    for name in ("small", "clinical"):
        if name not in results:
            continue
        for stage in ("plan", "preprocess"):
            ours = results[name]["ours"][stage]
            line = f"  {name:8s} {stage:10s} covtransfer {ours['seconds']:7.1f} s {ours['peak_mb']:7.0f} MB"
            if "nnunet" in results[name]:
                theirs = results[name]["nnunet"][stage]
                line += (f" | nnU-Net {theirs['seconds']:7.1f} s {theirs['peak_mb']:7.0f} MB"
                         f" | speed-up {ratio(theirs['seconds'], ours['seconds'])}")
            print(line)
        if "agreement" in results[name]:
            agree = results[name]["agreement"]
            if "shape_mismatch" in agree:
                print(f"  {name:8s} outputs differ in shape: {agree['shape_mismatch']}")
            else:
                print(f"  {name:8s} same output as nnU-Net over {agree['cases']} case(s): largest data difference "
                      f"{agree['max_abs_data_difference']:.2e}, {agree['label_disagreements']} of "
                      f"{agree['voxels']} label voxels differ")
    if "resampling_one_core" in results:
        micro = results["resampling_one_core"]
        print(f"  clinical resampling on one core to {micro['new_shape']}:")
        for ours_key, theirs_key in (("ours_image", "skimage_image"), ("ours_labels", "skimage_labels")):
            ours, theirs = micro[ours_key], micro[theirs_key]
            print(f"    {ours_key[5:]:7s} covtransfer {ours['seconds']:6.2f} s {ours['peak_mb']:6.0f} MB | "
                  f"skimage (nnU-Net's calls) {theirs['seconds']:6.2f} s {theirs['peak_mb']:6.0f} MB | "
                  f"speed-up {ratio(theirs['seconds'], ours['seconds'])}")
        print(f"    largest image difference to skimage: {micro['max_abs_difference_hu']:.4f} HU")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
