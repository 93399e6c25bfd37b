"""Regional compilation: every conv block and fusion unit is compiled in place, the network computes what it did,
and its parameters keep their names (checkpoints do not change)."""

import pytest
import torch

from covtransfer.network.build import build_network
from covtransfer.network.fusion import SelectiveFusion
from covtransfer.network.regional_compile import compile_blocks
from covtransfer.network.unet import ConvBlock
from tiny_models import ANISOTROPIC, patch_input


@pytest.mark.parametrize("kind", ["unet", "hybrid"])
def test_blocks_are_compiled_in_place_and_compute_the_same(kind):
    torch.manual_seed(0)
    network = build_network(ANISOTROPIC, 1, {"a": 2}, kind=kind)
    reference = build_network(ANISOTROPIC, 1, {"a": 2}, kind=kind)
    reference.load_state_dict(network.state_dict())
    keys = list(network.state_dict())
    blocks = sum(isinstance(m, (ConvBlock, SelectiveFusion)) for m in network.modules())
    torch._dynamo.reset()
    assert compile_blocks(network, backend="eager") == blocks
    assert blocks == (19 if kind == "hybrid" else 10)  # hybrid: 2 encoders x 6 blocks, 3 fusion units, 4 decoder blocks
    assert list(network.state_dict()) == keys
    x = patch_input(ANISOTROPIC)
    for got, expected in zip(network(x), reference(x)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.gpu
def test_compiled_blocks_train_the_hybrid_in_bf16_on_gpu():
    network = build_network(ANISOTROPIC, 1, {"a": 2}, kind="hybrid").cuda()
    compile_blocks(network)
    x = patch_input(ANISOTROPIC).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        outputs = network(x)
    sum(o.float().mean() for o in outputs).backward()
    assert all(p.grad is not None for p in network.parameters())
