"""Regional compilation: ``torch.compile`` each repeated block of a network in place instead of the whole graph.

A whole-network compile of the hybrid (two encoders, fusion units, decoder) traces and optimises one large graph
and took over 66 s on an H200. Compiling the repeated blocks (conv → norm → activation, and each Selective Fusion
unit) traces one small graph per distinct block shape; blocks of one shape share the compiled code, so the cost
grows with the number of distinct shapes, not with the depth. The parameters' names do not change, so checkpoints
are the same as without compilation.
"""

from __future__ import annotations

import torch
from torch import nn

from covtransfer.network.fusion import SelectiveFusion
from covtransfer.network.unet import ConvBlock

REGIONS = (ConvBlock, SelectiveFusion)
COMPILE_SCOPES = ("network", "blocks")  # --compile-scope: the whole network, or each repeated block in place


def compile_blocks(network: nn.Module, **options) -> int:
    """Compile every conv block and fusion unit of ``network`` in place (``options`` go to ``torch.compile``);
    return how many were compiled.

    Shapes stay static (``dynamic=False``): inductor's symbolic shapes failed on the strided blocks (torch 2.13,
    "ValueRangeError: Invalid ranges"). Blocks of one class share dynamo's cache, so its recompile limit is raised to
    the number of blocks: one compilation per distinct shape, never a silent fall-back to eager.
    """
    blocks = [module for module in network.modules() if isinstance(module, REGIONS)]
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, len(blocks))
    for module in blocks:
        module.compile(**{"dynamic": False, **options})
    return len(blocks)
