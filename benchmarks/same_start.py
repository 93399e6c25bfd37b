"""Do covtransfer's trainer and nnU-Net's take the same steps? Both train from the same weights on the same batches.

nnU-Net 2.8.1 (in a separate virtual environment, ``same_start_nnunet.py``) builds its network for the plans that
``benchmarks/learning.py`` wrote, draws ``--batches`` augmented batches from its own training loader, and trains on
them with its own ``train_step``, recording the loss of every step. covtransfer then loads the same initial weights
into its own network (parameter names mapped), and its :class:`~covtransfer.training.trainer.Trainer` trains on the
same batches. With the same start and the same data the two loss curves must agree up to floating-point rounding; a
gap points at the step itself (network, loss, optimiser, schedule), not at sampling or augmentation.

Usage (after ``learning.py`` prepared ``--work``)::

    python benchmarks/same_start.py --work learning_benchmark --nnunet-venv /tmp/nnunet [--dataset covid] [--seed 0]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from covtransfer.plans import Plans
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import Trainer, TrainingSettings, TrainingTask

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from learning import DATASETS, nnunet_env, raw_dataset_folder  # noqa: E402  (a sibling script, not a package)


def covtransfer_name(nnunet_name: str, n_decoder_levels: int, head: str) -> str | None:
    """covtransfer's parameter name for one of nnU-Net's PlainConvUNet (None for its duplicate references)."""
    last = n_decoder_levels - 1
    rules = [(r"encoder\.stages\.(\d+)\.0\.convs\.(\d+)\.(conv|norm)\.(.*)", lambda m: f"encoder.stages.{m[1]}.{m[2]}.{m[3]}.{m[4]}"),
             (r"decoder\.stages\.(\d+)\.convs\.(\d+)\.(conv|norm)\.(.*)",
              lambda m: f"decoder.stages.{last - int(m[1])}.{m[2]}.{m[3]}.{m[4]}"),
             (r"decoder\.transpconvs\.(\d+)\.(.*)", lambda m: f"decoder.upsample.{last - int(m[1])}.{m[2]}"),
             (r"decoder\.seg_layers\.(\d+)\.(.*)", lambda m: f"heads.{head}.{last - int(m[1])}.{m[2]}")]
    for pattern, name in rules:
        match = re.fullmatch(pattern, nnunet_name)
        if match:
            return name(match)
    return None


def run_covtransfer(preprocessed: Path, dataset: str, reference: dict, scratch: Path) -> list[float]:
    """covtransfer's Trainer from nnU-Net's initial weights, one step per recorded batch; the loss per step."""
    plans = Plans.load(preprocessed / dataset / "plans.json")
    task = TrainingTask(dataset, preprocessed / dataset, plans, [], [])
    trainer = Trainer([task], "3d_fullres", make_strategy("scratch"), scratch, TrainingSettings(device="cpu"))
    levels = plans.configuration("3d_fullres").n_stages - 1
    state = {covtransfer_name(k, levels, dataset): v for k, v in reference["initial_weights"].items()}
    trainer.network.load_state_dict({k: v for k, v in state.items() if k is not None})
    for group in trainer.optimizer.param_groups:
        group["lr"] = TrainingSettings().lr * group["lr_scale"]
    trainer.model.train()
    return [trainer.train_step(images, target, dataset) for images, target in reference["batches"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("learning_benchmark"), help="learning.py's working folder")
    parser.add_argument("--nnunet-venv", type=Path, required=True)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="covid")
    parser.add_argument("--seed", type=int, default=0, help="seed of nnU-Net's initial weights")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = args.work.resolve()
    dataset = raw_dataset_folder(work / "raw", args.dataset).name
    recording = work / "same_start" / f"{args.dataset}_{args.seed}.pt"
    recording.parent.mkdir(parents=True, exist_ok=True)
    env = nnunet_env(work, recording.parent / "nnunet_results", args.threads, 0)
    if not recording.is_file():
        subprocess.run([str(args.nnunet_venv / "bin" / "python"), str(HERE / "same_start_nnunet.py"), dataset,
                        str(args.seed), str(args.batches), str(recording)], check=True, env=env)
    reference = torch.load(recording, weights_only=False)
    ours = run_covtransfer(work / "preprocessed", dataset, reference, recording.parent / "covtransfer_run")
    theirs = [loss + 1 for loss in reference["losses"]]  # nnU-Net logs CE − Dice; covtransfer CE + 1 − Dice
    print(f"{'steps':>9} {'nnU-Net':>9} {'covtransfer':>12}")
    for start in range(0, len(ours), 25):
        print(f"{start + 1:>4}-{start + 25:<4} {np.mean(theirs[start:start + 25]):9.4f} "
              f"{np.mean(ours[start:start + 25]):12.4f}")
    gap = np.abs(np.asarray(ours) - np.asarray(theirs))
    print(f"largest per-step difference {gap.max():.2e} (first 10 steps {gap[:10].max():.2e})")


if __name__ == "__main__":
    main()
