"""Batch Dice under DDP: two gloo processes on CPU, each with half of a batch, get the loss (averaged over ranks)
and the gradients of one process on the whole batch, because the Dice terms are summed over ranks."""

import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from covtransfer.training.loss import DiceCELoss

WORLD = 2


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


def _rank(rank: int, out: str) -> None:
    # a file store, not a TCP port: no port can be taken by another process between choosing and binding it
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out, 'store')}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=120))
    try:
        torch.set_num_threads(1)
        model = DistributedDataParallel(_network())
        images, labels = _batch()
        share = images.shape[0] // WORLD
        part = slice(rank * share, (rank + 1) * share)
        loss = _loss(model, images[part], labels[part])
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": [p.grad for p in model.module.parameters()]},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_rank_batch_dice_matches_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path),), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    network = _network()
    loss = _loss(network, *_batch())
    loss.backward()
    mean_loss = sum(r["loss"] for r in ranks) / WORLD
    assert abs(float(mean_loss) - float(loss.detach())) < 1e-6
    for rank in ranks:
        for got, expected in zip(rank["grads"], (p.grad for p in network.parameters())):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
