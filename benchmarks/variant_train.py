"""``covtransfer_train`` with one engine difference switched on, for the ablations of ``learning.py``.

Each variant changes one thing the default engine does differently from nnU-Net 2.8.1, so that the learning benchmark
can measure that one thing on its own over many seeds (``learning.py --tools covtransfer-zero-bias ...``).

Usage::

    python benchmarks/variant_train.py zero-bias -d 801 -t scratch -f all ...   # any covtransfer_train arguments
"""

from __future__ import annotations

import sys
from typing import Callable

import torch

from covtransfer.cli.train import main as train_main
from covtransfer.network import unet


def zero_bias_heads() -> None:
    """nnU-Net's segmentation heads: zero bias, every class at 1/K, instead of the foreground prior."""
    @torch.no_grad()
    def init_zero(heads: unet.SegmentationHeads, prior: float) -> None:
        for level_heads in heads.values():
            for head in level_heads:
                head.bias.zero_()
    unet.SegmentationHeads.init_prior = init_zero


VARIANTS: dict[str, Callable[[], None]] = {"zero-bias": zero_bias_heads}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in VARIANTS:
        raise SystemExit(f"usage: variant_train.py {{{','.join(VARIANTS)}}} [covtransfer_train arguments]")
    VARIANTS[argv[0]]()
    return train_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
