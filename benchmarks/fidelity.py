"""Does covtransfer's training pipeline draw what nnU-Net 2.8.1's draws? The audit against nnU-Net, rerunnable in
minutes on the CPU.

nnU-Net runs in its own virtual environment (``fidelity_nnunet.py``); covtransfer's side is ``fidelity_covtransfer.py``.
Both get the same inputs and the report compares:

1. every augmentation's rate (per sample and per channel; z of the difference of the two rates) and the range of
   every drawn value with the two-sample KS p: noise std, blur sigma, brightness, contrast, low-resolution zoom,
   gamma (inverted and not), rotation angles, scale factor, mirroring per axis; and the enlarged initial patch;
2. the foreground and padding fractions of random and forced patches (covtransfer's ``PatchSampler`` against
   nnU-Net's ``get_bbox`` on the same label volumes and class locations, both boxes cut by the same crop), in the
   cut patch and in its centre crop of the final patch size;
3. the lowest and highest patch start per axis;
4. the initial loss (CE + 1 − Dice, deep-supervised) over 20 seeds, each tool's network freshly initialised, heads at
   covtransfer's foreground prior and at zero bias (nnU-Net's), on the same batches of noise with a small lesion;
5. the low-resolution shift: how far the centre of mass of a smooth blob moves under each tool's low-resolution
   simulation, over zooms in [0.5, 1).

A row passes when |z| < 3 (rates), KS p > 0.01 (distributions), the extremes are equal, or the mean shift is at most
0.25 voxel.

Usage::

    python benchmarks/fidelity.py --nnunet-venv /tmp/nnunet [--draws 20000] [--patch Z Y X] [--json OUT]

``--patch 8 32 32`` (thinner along z than a third of its largest side) audits the dummy-2D path that nnU-Net takes
for thick-slice data: in-plane rotation by up to ±180°, in-plane scaling, no z resampling in the low-resolution
simulation, and the initial patch that keeps the final z extent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy import stats

from covtransfer.atomic import write_json
from covtransfer.network.unet import FOREGROUND_PRIOR
from covtransfer.plans import Configuration
from covtransfer.preprocessing.preprocessor import sample_class_locations
from covtransfer.training.augment.pipeline import build_training_pipeline
from covtransfer.training.augment.spatial import is_dummy_2d
from covtransfer.training.sampler import crop_padded

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import fidelity_covtransfer as ours  # noqa: E402  (a sibling script, not a package)

PATCH = (24, 32, 32)  # 3D augmentation; a patch thinner along z (max / z > 3) takes the dummy-2D path
CHANNELS = 2
LABELS = [1, 2]
# one case larger than the patch, one smaller than it along z and y with odd padding
CASE_SHAPES = {"large": (48, 64, 60), "small": (21, 37, 90)}
NETWORK = Configuration(name="fidelity", spacing=[1.0, 1.0, 1.0], patch_size=[16, 32, 32], batch_size=2,
                        features_per_stage=[4, 8, 16, 32], kernel_sizes=[[3, 3, 3]] * 4,
                        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], median_image_size=[16, 32, 32])
LOSS_SEEDS = list(range(20))
BLOB_SHAPE = (40, 40, 40)
BLOB_CENTRE = (19.3, 20.6, 18.2)
ZOOMS = np.linspace(0.5, 1.0, 50, endpoint=False)
MAX_Z, MIN_P, MAX_SHIFT = 3.0, 0.01, 0.25
VALUE_NAMES = {"noise": "noise std", "blur": "blur sigma", "brightness": "brightness factor",
               "contrast": "contrast factor", "lowres": "low-res zoom", "gamma_inverted": "gamma (inverted image)",
               "gamma": "gamma", "rotation_z": "rotation about z (rad)", "rotation_y": "rotation about y (rad)",
               "rotation_x": "rotation about x (rad)", "scaling": "scale factor"}
RATE_NAMES = {"lowres": "low resolution", "gamma_inverted": "gamma (inverted image)",
              "gamma_invert": "gamma: image inverted, per chosen channel",
              "gamma_retain_stats": "gamma: statistics kept, per chosen channel",
              "gamma_inverted_invert": "gamma (inverted image): image inverted, per chosen channel",
              "gamma_inverted_retain_stats": "gamma (inverted image): statistics kept, per chosen channel"}


def rate_z(a: np.ndarray, b: np.ndarray) -> float:
    """z of the difference of two observed rates (pooled two-proportion test); 0 when both rates are 0 or both 1."""
    p1, p2 = float(np.mean(a)), float(np.mean(b))
    pooled = (np.sum(a) + np.sum(b)) / (len(a) + len(b))
    variance = pooled * (1 - pooled) * (1 / len(a) + 1 / len(b))
    return 0.0 if variance == 0 else (p1 - p2) / float(np.sqrt(variance))


def ks_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov p of two samples (1 for two identical constants)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # many ties: scipy falls back to the asymptotic p, as wanted
        return float(stats.ks_2samp(a, b).pvalue)


def rate_label(key: str) -> str:
    """Table name of a ``rate/...`` key: the augmentation, and per sample or per channel."""
    name = key.removeprefix("rate/")
    if name in RATE_NAMES and ", per chosen channel" in RATE_NAMES[name]:
        return RATE_NAMES[name]
    base, per = (name.removesuffix("_channel"), "per channel") if name.endswith("_channel") else (name, "per sample")
    return f"{RATE_NAMES.get(base, base.replace('_', ' '))}, {per}"


def centre_of_mass(volume: np.ndarray) -> np.ndarray:
    """Intensity-weighted mean voxel coordinate (z, y, x) of a non-negative volume."""
    weights = volume.astype(np.float64)
    return np.array([np.sum(np.arange(n).reshape([-1 if a == axis else 1 for a in range(volume.ndim)]) * weights)
                     for axis, n in enumerate(volume.shape)]) / weights.sum()


def gaussian_blob(shape: Sequence[int], centre: Sequence[float], sigma: float) -> np.ndarray:
    """A smooth float32 blob at ``centre`` (voxels), 1 at its peak."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return np.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre)) / (2 * sigma**2)).astype(np.float32)


def label_volumes() -> dict[str, np.ndarray]:
    """Per case, a label volume with a large class-1 ellipsoid and a small class-2 blob near a corner."""
    volumes = {}
    for case, shape in CASE_SHAPES.items():
        grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
        label = np.zeros(shape, np.int8)
        middle = sum(((g - 0.55 * n) / (0.2 * n)) ** 2 for g, n in zip(grids, shape)) < 1
        corner = sum((g - 2.5) ** 2 for g in grids) < 6
        label[middle], label[corner] = 1, 2
        volumes[case] = label
    return volumes


def loss_batches(seeds: Sequence[int], batch: int, patch: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, a batch of unit noise images with one small bright lesion each and its label."""
    images = np.zeros((len(seeds), batch, 1, *patch), np.float32)
    segs = np.zeros((len(seeds), batch, 1, *patch), np.int16)
    grids = np.meshgrid(*[np.arange(n) for n in patch], indexing="ij")
    for index, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        for sample in range(batch):
            centre = [rng.uniform(3, n - 3) for n in patch]
            lesion = sum((g - c) ** 2 for g, c in zip(grids, centre)) < 2.5 ** 2
            images[index, sample, 0] = rng.standard_normal(patch) + 2 * lesion
            segs[index, sample, 0] = lesion
    return images, segs


def patch_fractions(label: np.ndarray, starts: np.ndarray, initial: Sequence[int],
                    final: Sequence[int]) -> dict[str, np.ndarray]:
    """Per start: foreground and padding fractions of the cut patch and of its centre crop of size ``final``."""
    centre = tuple(slice((i - f) // 2, (i - f) // 2 + f) for i, f in zip(initial, final))
    out: dict[str, list[float]] = {"foreground, cut patch": [], "padding, cut patch": [],
                                   "foreground, final crop": [], "padding, final crop": []}
    for start in starts:
        cut = crop_padded(label[None], start, initial, -1)[0]
        for where, part in (("cut patch", cut), ("final crop", cut[centre])):
            out[f"foreground, {where}"].append(float(np.mean(part > 0)))
            out[f"padding, {where}"].append(float(np.mean(part == -1)))
    return {k: np.asarray(v) for k, v in out.items()}


def row(part: str, quantity: str, covtransfer: str, nnunet: str, statistic: str, passed: bool,
        value: float | None = None) -> dict:
    return {"part": part, "quantity": quantity, "covtransfer": covtransfer, "nnunet": nnunet, "statistic": statistic,
            "value": value, "pass": bool(passed)}


def augmentation_rows(mine: dict, theirs: dict, initial: Sequence[int]) -> list[dict]:
    """Part 1: every rate (z) and every value distribution (range, KS p), and the initial patch."""
    theirs_initial = theirs["initial_patch"].tolist()
    rows = [row("augmentation", "initial patch size", "×".join(map(str, initial)), "×".join(map(str, theirs_initial)),
                "equal", list(initial) == theirs_initial),
            row("augmentation", "dummy 2D (in-plane spatial augmentation)", str(bool(mine["dummy_2d"])),
                str(bool(theirs["dummy_2d"])), "equal", bool(mine["dummy_2d"]) == bool(theirs["dummy_2d"]))]
    for key in [k for k in mine if k.startswith("rate/")]:
        a, b = mine[key], theirs[key]
        z = rate_z(a, b)
        rows.append(row("augmentation", f"rate: {rate_label(key)}", f"{np.mean(a):.4f} (n={len(a)})",
                        f"{np.mean(b):.4f} (n={len(b)})", f"z = {z:+.2f}", abs(z) < MAX_Z, z))
    for key in [k for k in mine if k.startswith("value/")]:
        a, b = mine[key], theirs[key]
        p = ks_p(a, b)
        rows.append(row("augmentation", VALUE_NAMES[key[6:]], f"{a.min():.3f} – {a.max():.3f} (n={len(a)})",
                        f"{b.min():.3f} – {b.max():.3f} (n={len(b)})", f"KS p = {p:.3f}", p > MIN_P, p))
    return rows


def patch_rows(labels: dict[str, np.ndarray], mine: dict, theirs: dict, initial: Sequence[int],
               patch: Sequence[int]) -> list[dict]:
    """Parts 2 and 3: patch fractions (KS p) and the extremes of the starts per axis (equal)."""
    fractions, extremes = [], []
    for case, label in labels.items():
        for mode in ("random", "forced"):
            a_starts, b_starts = mine[f"starts/{case}/{mode}"], theirs[f"starts/{case}/{mode}"]
            a = patch_fractions(label, a_starts, initial, patch)
            b = patch_fractions(label, b_starts, theirs["initial_patch"], patch)
            for measure in a:
                p = ks_p(a[measure], b[measure])
                fractions.append(row("patches", f"{case} {list(label.shape)}, {mode}: {measure}",
                                     f"{a[measure].mean():.4f}", f"{b[measure].mean():.4f}", f"KS p = {p:.3f}",
                                     p > MIN_P, p))
            for axis, name in enumerate(ours.AXES):
                lo_hi = [(int(s[:, axis].min()), int(s[:, axis].max())) for s in (a_starts, b_starts)]
                extremes.append(row("extremes", f"{case}, {mode}: start {name}", f"{lo_hi[0][0]} … {lo_hi[0][1]}",
                                    f"{lo_hi[1][0]} … {lo_hi[1][1]}", "equal", lo_hi[0] == lo_hi[1]))
    return fractions + extremes


def loss_rows(mine: dict, theirs: dict) -> list[dict]:
    """Part 4: initial loss mean ± sd per tool and head initialisation (KS p, Welch t p)."""
    rows = []
    for init, name in (("prior", f"heads at the foreground prior {FOREGROUND_PRIOR}"), ("zero", "heads at zero bias")):
        a, b = mine[f"loss/{init}"], theirs[f"loss/{init}"]
        p = ks_p(a, b)
        t = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        rows.append(row("loss", f"{name} ({len(a)} seeds)", f"{a.mean():.4f} ± {a.std(ddof=1):.4f}",
                        f"{b.mean():.4f} ± {b.std(ddof=1):.4f}", f"KS p = {p:.3f}, Welch p = {t:.3f}", p > MIN_P, p))
    return rows


def lowres_rows(blob: np.ndarray, mine: np.ndarray, theirs: np.ndarray) -> list[dict]:
    """Part 5: |shift| of the blob's centre of mass per axis, mean and max over the zooms."""
    before = centre_of_mass(blob)
    shifts = [np.abs(np.stack([centre_of_mass(v) for v in volumes]) - before) for volumes in (mine, theirs)]
    rows = []
    for axis, name in enumerate(ours.AXES):
        a, b = shifts[0][:, axis], shifts[1][:, axis]
        rows.append(row("lowres", f"shift along {name}, absolute ({len(ZOOMS)} zooms)",
                        f"mean {a.mean():.3f}, max {a.max():.3f}", f"mean {b.mean():.3f}, max {b.max():.3f}",
                        f"mean ≤ {MAX_SHIFT}", a.mean() <= MAX_SHIFT, float(a.mean())))
    return rows


TITLES = {"augmentation": "Augmentation rates and values", "patches": "Foreground and padding fractions of patches",
          "extremes": "Extremes of the patch starts", "loss": "Initial loss (CE + 1 − Dice)",
          "lowres": "Low-resolution shift of a blob's centre of mass (voxels)"}


def markdown(rows: list[dict]) -> str:
    """One Markdown table per part, then the count of passing rows."""
    lines = []
    for part, title in TITLES.items():
        lines += [f"**{title}**", "", "| quantity | covtransfer | nnU-Net 2.8.1 | statistic | pass |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['quantity']} | {r['covtransfer']} | {r['nnunet']} | {r['statistic']} | "
                  f"{'yes' if r['pass'] else '**no**'} |" for r in rows if r["part"] == part]
        lines.append("")
    failed = [r["quantity"] for r in rows if not r["pass"]]
    lines.append(f"{len(rows) - len(failed)} of {len(rows)} rows pass" + (f"; failing: {', '.join(failed)}"
                                                                          if failed else "."))
    return "\n".join(lines)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").is_file() else \
        platform.machine()
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


def run_nnunet(venv: Path, inputs: dict, threads: int) -> dict:
    """``fidelity_nnunet.py`` in nnU-Net's environment on ``inputs``; its results."""
    python = venv / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"{python}: no Python interpreter there (--nnunet-venv must be a virtual environment "
                         f"with nnunetv2 2.8.1)")
    with tempfile.TemporaryDirectory() as scratch:
        given, results = Path(scratch) / "inputs.npz", Path(scratch) / "nnunet.npz"
        np.savez(given, **inputs)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), nnUNet_raw=scratch, nnUNet_preprocessed=scratch,
                   nnUNet_results=scratch)
        done = subprocess.run([str(python), str(HERE / "fidelity_nnunet.py"), str(given), str(results)], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"{HERE / 'fidelity_nnunet.py'}: failed in {venv} ({last})")
        with np.load(results) as archive:
            return {k: archive[k] for k in archive.files}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nnunet-venv", type=Path, required=True, help="virtual environment with nnunetv2 2.8.1")
    parser.add_argument("--draws", type=int, default=20_000, help="augmented samples drawn per tool")
    parser.add_argument("--patches", type=int, default=2_000, help="patch starts per case, mode and tool")
    parser.add_argument("--patch", type=int, nargs=3, default=PATCH, metavar=("Z", "Y", "X"),
                        help=f"final patch size (default {' '.join(map(str, PATCH))}); one thinner along z than a third "
                             "of its largest side (e.g. 8 32 32) audits the dummy-2D augmentation of thick-slice data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows and settings here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    labels = label_volumes()
    locations = {case: {int(k): np.asarray(v, np.int64).reshape(-1, 3)
                        for k, v in sample_class_locations(label, LABELS).items()} for case, label in labels.items()}
    patch = tuple(args.patch)
    initial = build_training_pipeline(patch).initial_patch_size
    images, segs = loss_batches(LOSS_SEEDS, NETWORK.batch_size, NETWORK.patch_size)
    blob = gaussian_blob(BLOB_SHAPE, BLOB_CENTRE, 4.0)
    settings = {"draws": args.draws, "channels": CHANNELS, "patch": list(patch), "dummy_2d": is_dummy_2d(patch),
                "labels": LABELS,
                "cases": list(labels), "seed": args.seed, "patches": args.patches, "prior": FOREGROUND_PRIOR,
                "loss_seeds": LOSS_SEEDS, "network": {"features": NETWORK.features_per_stage,
                                                      "kernels": NETWORK.kernel_sizes, "strides": NETWORK.strides}}
    inputs = {"settings": json.dumps(settings), "loss_images": images, "loss_seg": segs, "blob": blob, "zooms": ZOOMS,
              **{f"label/{case}": label for case, label in labels.items()},
              **{f"locations/{case}/{k}": v for case, per_label in locations.items() for k, v in per_label.items()}}
    theirs = run_nnunet(args.nnunet_venv, inputs, args.threads)
    mine = {"dummy_2d": np.asarray(is_dummy_2d(patch)), **ours.augmentation_draws(patch, args.draws, CHANNELS,
                                                                                    args.seed)}
    mine.update(ours.patch_starts({c: (labels[c], locations[c]) for c in labels}, patch, initial, args.patches,
                                  args.seed))
    mine.update(ours.initial_losses(NETWORK, images, segs, LOSS_SEEDS))
    rows = augmentation_rows(mine, theirs, initial) + patch_rows(labels, mine, theirs, initial, patch) + \
        loss_rows(mine, theirs) + lowres_rows(blob, ours.lowres_volumes(blob, ZOOMS), theirs["lowres"])
    header = f"{time.strftime('%Y-%m-%d', time.gmtime())}, {machine()}, {time.time() - started:.0f} s"
    print(header + "\n\n" + markdown(rows))
    if args.json:
        write_json(args.json, {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                               "settings": settings, "rows": rows})


if __name__ == "__main__":
    main()
