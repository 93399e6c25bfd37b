"""The hybrid encoder network: dedicated and adapted encoders fused per level, one shared decoder.

The ``hybrid`` strategy loads a pre-trained ``encoder.*`` into ``adapted_encoder.*`` and trains ``dedicated_encoder``
from scratch; the fused map of each level is that level's skip connection, and at the bottleneck the decoder input.
"""

from __future__ import annotations

import torch
from torch import nn

from covtransfer.network.fusion import SelectiveFusion
from covtransfer.network.unet import Decoder, Encoder, SegmentationHeads, SegmentationNetwork, init_weights
from covtransfer.plans import Configuration


class HybridUNet(SegmentationNetwork):
    """``dedicated_encoder``, ``adapted_encoder`` (same topology), ``fusion`` (one unit per level), ``decoder``,
    ``heads``; ``last_attention`` gives α per level after a forward pass."""

    def __init__(self, configuration: Configuration, num_input_channels: int, heads: dict[str, int],
                 deep_supervision: bool = True) -> None:
        super().__init__(configuration, deep_supervision)
        c = configuration
        self.dedicated_encoder = Encoder(num_input_channels, c.features_per_stage, c.kernel_sizes, c.strides,
                                         c.n_conv_per_stage)
        self.adapted_encoder = Encoder(num_input_channels, c.features_per_stage, c.kernel_sizes, c.strides,
                                       c.n_conv_per_stage)
        self.fusion = nn.ModuleList(SelectiveFusion(f) for f in c.features_per_stage)
        self.decoder = Decoder(c.features_per_stage, c.kernel_sizes, c.strides, c.n_conv_per_stage_decoder)
        self.heads = SegmentationHeads(c.features_per_stage[:-1], heads)
        init_weights(self)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        dedicated = self.dedicated_encoder(x)
        adapted = self.adapted_encoder(x)
        return [fuse(d, a) for fuse, d, a in zip(self.fusion, dedicated, adapted)]

    @property
    def last_attention(self) -> list[torch.Tensor]:
        """α (B, C) of every level, full resolution first, from the latest forward pass."""
        alphas = [f.last_alpha for f in self.fusion]
        if any(a is None for a in alphas):
            raise RuntimeError("last_attention is only available after a forward pass")
        return alphas
