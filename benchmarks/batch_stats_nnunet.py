"""nnU-Net's side of ``benchmarks/batch_stats.py``; runs inside a separate virtual environment with nnunetv2.

``python batch_stats_nnunet.py DATASET SEED BATCHES OUT``: builds nnU-Net's trainer for ``learning.py``'s plans, draws
BATCHES training batches (sampling and augmentation) and BATCHES validation batches from its own loaders, and saves
the per-sample statistics of ``batch_stats_common.sample_stats`` to OUT (``.npz``).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from batch_stats_common import STATS, sample_stats  # noqa: E402  (a sibling script, not a package)


def main(dataset: str, seed: int, n_batches: int, out: str) -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    np.random.seed(seed)
    torch.manual_seed(seed)
    folder = os.path.join(os.environ["nnUNet_preprocessed"], dataset)
    plans = json.load(open(os.path.join(folder, "nnUNetPlans.json")))
    plans["continue_training"] = False
    trainer = nnUNetTrainer(plans, "3d_fullres", "all", json.load(open(os.path.join(folder, "dataset.json"))),
                            torch.device("cpu"))
    trainer.initialize()
    loaders = dict(zip(("train", "val"), trainer.get_dataloaders()))
    result = {}
    for split, loader in loaders.items():
        rows = []
        for _ in range(n_batches):
            batch = next(loader)
            rows.append(sample_stats(batch["data"], batch["target"][0]))
        stacked = np.concatenate(rows, axis=0)
        result.update({f"{split}_{name}": stacked[:, i] for i, name in enumerate(STATS)})
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
