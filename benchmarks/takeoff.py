"""Early training dynamics: the foreground probability the network gives lesion and background voxels, per epoch.

Trains covtransfer's scratch ``Trainer`` on a dataset that ``learning.py`` prepared, with the learning benchmark's
schedule (40 epochs × 25 iterations, 5 validation batches, fp32 CPU), and stops after ``--epochs`` epochs. After
every training step it scores the batch it just trained on in eval mode: the mean softmax foreground probability
on lesion voxels and on background voxels. With ``--init zero`` the heads start at zero bias, as nnU-Net's do;
with ``--init prior`` (covtransfer's default) at the foreground prior. ``--warmup N`` ramps the learning rate
linearly over the first N iterations. This is how the all-background collapse of issue 10 was found.

Usage::

    python benchmarks/learning.py --work lb --tools covtransfer --seeds 0   # prepares lb/preprocessed
    python benchmarks/takeoff.py --work lb --dataset covid --seed 1 --init zero --epochs 6
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch

from covtransfer.config import Roots
from covtransfer.training import api
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import Trainer, TrainingSettings, poly_lr

DATASETS = {"covid": "Dataset801_SyntheticCOVID", "tumor": "Dataset802_SyntheticTumor"}


def probed_trainer(work: Path, dataset: str, seed: int, init: str, warmup: int, output: Path) -> tuple[Trainer, list]:
    """A scratch trainer whose ``train_step`` also records the foreground probabilities of the batch it trained on."""
    roots = Roots(raw=work / "raw", preprocessed=work / "preprocessed", results=output)
    task = api.load_task(roots, DATASETS[dataset], "3d_fullres", "all")
    settings = TrainingSettings(epochs=40, iters_per_epoch=25, val_iters=5, seed=seed, device="cpu", amp="off",
                                num_workers=0, final_validation=False)
    trainer = Trainer([task], "3d_fullres", make_strategy("scratch"), output / f"{dataset}_{init}_{seed}", settings)
    if init == "zero":
        with torch.no_grad():
            for heads in trainer.network.heads.values():
                for head in heads:
                    head.bias.zero_()
    records: list[dict] = []
    train_step = trainer.train_step

    def probed_step(images: torch.Tensor, seg: torch.Tensor, task_name: str) -> float:
        step = len(records)
        if warmup and step <= warmup:  # the epoch's poly rate, ramped; from step `warmup` on, the rate itself
            lr = poly_lr(settings.lr, trainer.state.epoch, settings.epochs, settings.poly_exponent)
            for group in trainer.optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"] * min(1.0, (step + 1) / warmup)
        loss = train_step(images, seg, task_name)
        with torch.no_grad():
            trainer.model.eval()
            logits = trainer.model(images.contiguous(memory_format=trainer.memory_format), task=task_name)[0]
            trainer.model.train()
        foreground = logits.float().softmax(1)[:, 1]
        lesion = seg[:, 0] > 0
        records.append({"loss": loss, "p_lesion": float(foreground[lesion].mean()) if lesion.any() else math.nan,
                        "p_background": float(foreground[~lesion].mean())})
        return loss

    trainer.train_step = probed_step
    return trainer, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="learning.py's working folder")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="covid")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--init", choices=("prior", "zero"), default="prior")
    parser.add_argument("--warmup", type=int, default=0, help="linear learning-rate warm-up iterations")
    parser.add_argument("--epochs", type=int, default=6, help="epochs to run of the 40-epoch schedule")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the per-step records here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trainer, records = probed_trainer(args.work, args.dataset, args.seed, args.init, args.warmup,
                                      args.work / "takeoff")
    settings = trainer.settings
    trainer.output_folder.mkdir(parents=True, exist_ok=True)
    train_batches, val_batches = trainer._batches()
    print("epoch  loss    pseudo Dice  p(fg) lesion  p(fg) background")
    for epoch in range(args.epochs):
        trainer._run_epoch(train_batches, val_batches)
        last = records[-settings.iters_per_epoch:]
        lesion = [r["p_lesion"] for r in last if not math.isnan(r["p_lesion"])]
        record = trainer.state.history[-1]
        print(f"{epoch:>5}  {record['train_loss']:.4f}  {record['val_dice']:>11.4f}  "
              f"{statistics.mean(lesion) if lesion else math.nan:>12.4f}  "
              f"{statistics.mean(r['p_background'] for r in last):>16.5f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "steps": records,
                                         "history": trainer.state.history}, indent=1) + "\n")


if __name__ == "__main__":
    main()
