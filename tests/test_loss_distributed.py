"""Batch Dice under DDP: two gloo processes on CPU, each with half of a batch, get the loss (averaged over ranks)
and the gradients of one process on the whole batch, because the Dice terms are summed over ranks.

Run as a script, this module is the torchrun worker: ``python -m torch.distributed.run ... test_loss_distributed.py
OUT``. torchrun (``--standalone`` binds a free port itself) and a hard timeout keep the suite from ever waiting on a
stuck process; a worker that hangs prints its stack before it exits.
"""

import faulthandler
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from covtransfer.training.distributed import init_distributed, shutdown
from covtransfer.training.loss import DiceCELoss

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
WORKER_DEADLINE_S = 90


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv3d(2, 3, 3, padding=1).double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 2, 6, 6, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (4, 1, 6, 6, 6), generator=generator)
    labels[0] = 0  # one sample without foreground: its per-rank Dice would differ from the batch Dice
    labels[1::2, :, :3] = 255  # ignored voxels count in neither Dice term (as many on each rank, so that the mean of
    # the ranks' cross-entropies is the whole batch's)
    return images, labels


def _loss(network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return DiceCELoss(batch_dice=True, ignore_index=255)(network(images), labels)


def _half_batch_step(rank: int, out: Path) -> None:
    """This rank's half of the batch through a DDP network; its loss and gradients saved."""
    model = DistributedDataParallel(_network())
    images, labels = _batch()
    share = images.shape[0] // WORLD
    part = slice(rank * share, (rank + 1) * share)
    loss = _loss(model, images[part], labels[part])
    loss.backward()
    torch.save({"loss": loss.detach(), "grads": [p.grad for p in model.module.parameters()]}, out / f"rank{rank}.pt")


def _worker(out: Path) -> None:
    """One torchrun process. The DDP wrapper is gone before the group is left, as in the trainer's close."""
    faulthandler.dump_traceback_later(WORKER_DEADLINE_S, exit=True)
    context = init_distributed("cpu")
    try:
        _half_batch_step(context.rank, out)
    finally:
        shutdown(context)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_rank_batch_dice_matches_one_process_on_the_whole_batch(tmp_path):
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
              "--max-restarts", "0", __file__, str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    finished = subprocess.run(launch, env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=2 * WORKER_DEADLINE_S)
    assert finished.returncode == 0, (finished.stdout + finished.stderr)[-4000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    network = _network()
    loss = _loss(network, *_batch())
    loss.backward()
    mean_loss = sum(r["loss"] for r in ranks) / WORLD
    assert abs(float(mean_loss) - float(loss.detach())) < 1e-6
    for rank in ranks:
        for got, expected in zip(rank["grads"], (p.grad for p in network.parameters())):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
