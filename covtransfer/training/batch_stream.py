"""A deterministic stream of training batches, produced by background workers.

Batch number ``k`` is drawn from a generator seeded by ``(seed, stream, k, rank)`` alone, so the stream is the same
whatever the number of workers, and a resumed run that starts at batch ``k`` sees exactly the batches an
uninterrupted run would. With several sources (multi-lesion pre-training) batch ``k`` comes from one source chosen
by ``(seed, stream, k)`` without the rank, so every process of a distributed run trains the same head in a step.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from covtransfer.training.sampler import PatchSampler


def seed_for(*parts: int) -> int:
    """A 63-bit seed mixed from integers."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class BatchStream(Dataset):
    """Map-style dataset whose item ``k`` is the whole batch number ``k`` (source index, images, seg)."""

    def __init__(self, samplers: Sequence[PatchSampler], weights: Sequence[float], seed: int, stream: int,
                 rank: int = 0, length: int = 2 ** 62):
        total = float(sum(weights))
        self.samplers = list(samplers)
        self.cumulative = np.cumsum([w / total for w in weights])
        self.seed, self.stream, self.rank, self.length = seed, stream, rank, length

    def __len__(self) -> int:
        return self.length

    def source_of(self, index: int) -> int:
        """Which source batch ``index`` comes from (identical on every rank)."""
        if len(self.samplers) == 1:
            return 0
        u = np.random.default_rng(seed_for(self.seed, self.stream, index)).random()
        return int(min(np.searchsorted(self.cumulative, u, side="right"), len(self.samplers) - 1))

    def __getitem__(self, index: int) -> dict:
        source = self.source_of(index)
        rng = np.random.default_rng(seed_for(self.seed, self.stream, index, self.rank, 1))
        images, seg = self.samplers[source].sample(rng)
        return {"images": torch.from_numpy(images), "seg": torch.from_numpy(seg), "source": source, "index": index}


def batch_loader(stream: BatchStream, start: int, stop: int, num_workers: int, pin_memory: bool) -> DataLoader:
    """A loader yielding batches ``start .. stop - 1`` of ``stream`` in order, prepared by ``num_workers`` workers."""
    return DataLoader(stream, batch_size=None, sampler=range(start, stop), num_workers=num_workers,
                      pin_memory=pin_memory, prefetch_factor=4 if num_workers > 0 else None,
                      persistent_workers=False)
