"""benchmarks/step_profile.py: one profiled step is split into phases and kinds by rules that hold for any tool."""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from step_profile import classify, format_breakdown, precision, profile_step  # noqa: E402


def test_names_are_classed_by_what_they_compute():
    assert classify("aten::mkldnn_convolution") == "convolution"
    assert classify("ConvolutionBackward0") == "convolution"
    assert classify("aten::native_batch_norm") == "normalisation"
    assert classify("NativeBatchNormBackward0") == "normalisation"
    assert classify("LeakyReluBackward1") == "activation"
    assert classify("aten::_log_softmax") == "softmax / cross-entropy"
    assert classify("aten::_foreach_norm") == "gradient clipping"
    assert classify("aten::copy_") == "copy / cast"
    assert classify("aten::mul") == "elementwise / reduction"
    assert precision("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc") == "bf16"
    assert precision("cudnn::winograd_nonfused::winogradForwardFilter4x4<__half, float>") == "fp16"
    assert precision("volta_scudnn_128x64_relu_interior_nn_v1") == "unknown"


def test_a_step_splits_into_forward_loss_backward_and_optimiser():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True),
                            nn.LeakyReLU(0.01, inplace=True), nn.Conv3d(4, 2, 1))
    loss = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(2, 1, 6, 8, 8), torch.randint(0, 2, (2, 6, 8, 8))

    def step():
        optimizer.zero_grad()
        value = loss(network(images), labels)
        value.backward()
        optimizer.step()

    breakdown = profile_step(step, network, loss, torch.device("cpu"), warmup=1)
    phases = breakdown["phases"]
    assert {"forward", "loss", "backward", "optimiser"} <= set(phases)
    assert {"convolution", "normalisation", "activation"} <= set(phases["forward"])
    assert "convolution" in phases["backward"] and "softmax / cross-entropy" in phases["loss"]
    assert abs(sum(ms for kinds in phases.values() for ms in kinds.values()) - breakdown["total_ms"]) < 0.01
    assert network.forward.__func__ is nn.Sequential.forward  # the scopes are removed afterwards
    assert format_breakdown("tiny", breakdown).splitlines()[0].startswith("tiny: ")
