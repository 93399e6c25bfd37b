"""Do the batches covtransfer trains and validates on look like nnU-Net 2.8.1's, on the learning benchmark's data?

``fidelity.py`` audits each augmentation and the patch sampler on their own, on synthetic inputs; this script checks
what comes out of the whole chain (case choice, patch sampling, every augmentation) on a dataset ``learning.py``
prepared, with that dataset's plans. Each tool draws ``--batches`` training batches and as many validation batches
from its own loaders; per sample, both record the label's foreground fraction, whether it has foreground, the
image mean and std, the fraction of exact zeros (padding) and the distance of the foreground's centre of mass from
the patch centre (``batch_stats_common.py``). The report gives each statistic's mean per tool, the z of the
difference of the means and the two-sample KS p.

Usage (after ``learning.py`` prepared ``--work``)::

    python benchmarks/batch_stats.py --work learning_benchmark --nnunet-venv /tmp/nnunet --dataset covid-thick
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from covtransfer.atomic import write_json
from covtransfer.config import Roots
from covtransfer.training import api
from covtransfer.training.settings import TrainingSettings
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import Trainer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from batch_stats_common import STATS, sample_stats  # noqa: E402  (sibling scripts, not a package)
from fidelity import ks_p  # noqa: E402
from learning import DATASETS, nnunet_env, raw_dataset_folder  # noqa: E402


def covtransfer_stats(work: Path, dataset: str, seed: int, n_batches: int, scratch: Path) -> dict[str, np.ndarray]:
    """Per-sample statistics of covtransfer's training batches (augmented as the trainer does) and validation
    batches (labels below 0 set to background, as in validation)."""
    roots = Roots(raw=work / "raw", preprocessed=work / "preprocessed", results=scratch)
    task = api.load_task(roots, dataset, "3d_fullres", "all")
    settings = TrainingSettings(epochs=1, iters_per_epoch=n_batches, val_iters=n_batches, seed=seed, device="cpu",
                                amp="off", num_workers=0)
    trainer = Trainer([task], "3d_fullres", make_strategy("scratch"), scratch / "run", settings)
    train, val = trainer._batches()
    rows: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for batch in train:
        images, seg, _ = trainer._to_device(batch)
        images, seg = trainer.augment(images, seg, trainer._generator(0, int(batch["index"])))
        rows["train"].append(sample_stats(images, seg))
    for batch in val:
        images, seg, _ = trainer._to_device(batch)
        rows["val"].append(sample_stats(images, torch.clamp(seg, min=0)))
    return {f"{split}_{name}": np.concatenate(r)[:, i] for split, r in rows.items() for i, name in enumerate(STATS)}


def nnunet_stats(work: Path, venv: Path, dataset: str, seed: int, n_batches: int, threads: int) -> dict:
    """nnU-Net's per-sample statistics, drawn in its own environment by ``batch_stats_nnunet.py``."""
    env = nnunet_env(work, work / "batch_stats_nnunet_results", threads, 0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stats.npz"
        subprocess.run([str(venv / "bin" / "python"), str(HERE / "batch_stats_nnunet.py"), dataset, str(seed),
                        str(n_batches), str(out)], check=True, env=env)
        with np.load(out) as data:
            return {k: data[k] for k in data.files}


def compare(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> list[dict]:
    """One row per split and statistic: both means, the z of their difference and the KS p (NaNs left out)."""
    rows = []
    for key in ours:
        a, b = ours[key][~np.isnan(ours[key])], theirs[key][~np.isnan(theirs[key])]
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        z = (a.mean() - b.mean()) / se if se > 0 else 0.0
        split, name = key.split("_", 1)
        rows.append({"split": split, "statistic": name, "covtransfer": float(a.mean()), "nnunet": float(b.mean()),
                     "n": [len(a), len(b)], "z": float(z), "ks_p": ks_p(a, b)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="learning.py's working folder")
    parser.add_argument("--nnunet-venv", type=Path, required=True)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="covid-thick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", type=int, default=1000, help="training and validation batches per tool")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = args.work.resolve()
    dataset = raw_dataset_folder(work / "raw", args.dataset).name
    theirs = nnunet_stats(work, args.nnunet_venv, dataset, args.seed, args.batches, args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        ours = covtransfer_stats(work, dataset, args.seed, args.batches, Path(scratch))
    rows = compare(ours, theirs)
    print(f"{dataset}, {args.batches} batches per split and tool")
    print(f"{'split':6} {'statistic':20} {'covtransfer':>12} {'nnU-Net':>12} {'z':>7} {'KS p':>7}")
    for r in rows:
        print(f"{r['split']:6} {r['statistic']:20} {r['covtransfer']:12.4f} {r['nnunet']:12.4f} {r['z']:7.2f} "
              f"{r['ks_p']:7.3f}")
    if args.json:
        write_json(args.json, {"dataset": dataset, "batches": args.batches, "seed": args.seed, "rows": rows})


if __name__ == "__main__":
    main()
