"""nnU-Net's side of ``benchmarks/same_start.py``; runs inside a separate virtual environment with nnunetv2.

``python same_start_nnunet.py DATASET SEED BATCHES OUT``: builds nnU-Net's trainer for ``learning.py``'s plans, keeps a
copy of its initial weights, draws BATCHES batches from its own training loader (sampling and augmentation), trains on
them with its own ``train_step`` and saves weights, batches and per-step losses to OUT (``torch.save``).
"""

from __future__ import annotations

import copy
import json
import os
import sys

import torch


def main(dataset: str, seed: int, n_batches: int, out: str) -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class Recorder(nnUNetTrainer):
        """nnU-Net's trainer unchanged; subclassed only so that its init arguments are recorded by name."""

        def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)

    torch.manual_seed(seed)
    folder = os.path.join(os.environ["nnUNet_preprocessed"], dataset)
    plans = json.load(open(os.path.join(folder, "nnUNetPlans.json")))
    plans["continue_training"] = False
    trainer = Recorder(plans, "3d_fullres", "all", json.load(open(os.path.join(folder, "dataset.json"))))
    trainer.initialize()
    initial = copy.deepcopy(trainer.network.state_dict())
    loader, _ = trainer.get_dataloaders()
    batches = []
    for _ in range(n_batches):
        batch = next(loader)
        batches.append((batch["data"].clone(), batch["target"][0].long().clone()))
    trainer.lr_scheduler.step(0)
    trainer.network.train()
    losses = [float(trainer.train_step(next_batch)["loss"]) for next_batch in
              ({"data": data, "target": _targets(target, trainer)} for data, target in batches)]
    torch.save({"initial_weights": initial, "batches": batches, "losses": losses}, out)


def _targets(target: torch.Tensor, trainer) -> list[torch.Tensor]:
    """Deep-supervision targets as nnU-Net's loader makes them (nearest-exact at every output scale)."""
    scales = trainer._get_deep_supervision_scales()
    return [target.float() if all(s == 1 for s in scale) else torch.nn.functional.interpolate(
        target.float(), size=[round(n * s) for n, s in zip(target.shape[2:], scale)], mode="nearest-exact")
        for scale in scales]


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
