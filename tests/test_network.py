"""Networks: U-Net shapes and names, multi-task heads, Selective Fusion maths, the hybrid, checkpoint round trips."""

import math
import re

import pytest
import torch

from covtransfer.errors import CovtransferError
from covtransfer.network.build import (build_from_spec, build_network, load_weights, network_spec,
                                       state_dict_mismatches)
from covtransfer.network.fusion import SelectiveFusion, hidden_size
from covtransfer.network.hybrid import HybridUNet
from covtransfer.network.unet import DEFAULT_HEAD_INIT, FOREGROUND_PRIOR, UNet
from covtransfer.plans import Configuration
from tiny_models import ANISOTROPIC, ISOTROPIC, make_configuration, patch_input


PLANS = {
    "isotropic": ISOTROPIC,
    "anisotropic": ANISOTROPIC,
    "four_stages_one_conv": make_configuration(features=(2, 4, 6, 8), kernels=[[1, 3, 3], [1, 3, 3], [3, 3, 3],
                                                                                [3, 3, 3]],
                                               strides=[[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]],
                                               patch=(8, 32, 32), n_conv=1, n_conv_decoder=1),
}


def level_sizes(configuration: Configuration) -> list[tuple[int, ...]]:
    """Spatial size of every resolution level for the configuration's patch."""
    sizes, size = [], list(configuration.patch_size)
    for stride in configuration.strides:
        size = [s // t for s, t in zip(size, stride)]
        sizes.append(tuple(size))
    return sizes


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", sorted(PLANS))
@pytest.mark.parametrize("kind", ["unet", "hybrid"])
def test_deep_supervision_outputs_have_one_logit_map_per_decoder_level(name, kind):
    configuration = PLANS[name]
    network = build_network(configuration, 2, {"lesion": 3}, kind=kind)
    outputs = network(patch_input(configuration, channels=2))
    sizes = level_sizes(configuration)
    assert len(outputs) == configuration.n_stages - 1
    assert [tuple(o.shape) for o in outputs] == [(2, 3, *sizes[level]) for level in range(len(outputs))]


@pytest.mark.parametrize("kind", ["unet", "hybrid"])
def test_deep_supervision_can_be_switched_off_after_construction(kind):
    network = build_network(ANISOTROPIC, 1, {"lesion": 2}, kind=kind)
    x = patch_input(ANISOTROPIC)
    with torch.no_grad():
        full = network(x)[0]
        network.deep_supervision = False
        single = network(x)
    assert isinstance(single, torch.Tensor)
    assert single.shape == (2, 2, 16, 32, 32)
    torch.testing.assert_close(single, full)


def test_encoder_convs_follow_plans_kernels_strides_and_padding():
    network = UNet(ANISOTROPIC, 1, {"lesion": 2})
    first_convs = [stage[0].conv for stage in network.encoder.stages]
    assert [list(c.kernel_size) for c in first_convs] == ANISOTROPIC.kernel_sizes
    assert [list(c.stride) for c in first_convs] == ANISOTROPIC.strides
    assert [list(c.padding) for c in first_convs] == [[0, 1, 1], [1, 1, 1], [1, 1, 1]]
    assert [c.out_channels for c in first_convs] == [4, 8, 16]
    assert all(stage[1].conv.stride == (1, 1, 1) for stage in network.encoder.stages)
    upsample = network.decoder.upsample
    assert [(u.in_channels, u.out_channels, list(u.kernel_size), list(u.stride)) for u in upsample] == [
        (8, 4, [1, 2, 2], [1, 2, 2]), (16, 8, [2, 2, 2], [2, 2, 2])]
    assert [stage[0].conv.in_channels for stage in network.decoder.stages] == [8, 16]
    assert [list(stage[0].conv.kernel_size) for stage in network.decoder.stages] == [[1, 3, 3], [3, 3, 3]]
    norm = network.encoder.stages[0][0].norm
    assert isinstance(norm, torch.nn.InstanceNorm3d) and norm.affine and norm.eps == 1e-5
    assert network.encoder.stages[0][0].act.negative_slope == 0.01


def test_parameter_names_have_stable_prefixes():
    network = UNet(ISOTROPIC, 1, {"lung_tumour": 2, "effusion-2": 2})
    names = [name for name, _ in network.named_parameters()]
    assert {name.split(".")[0] for name in names} == {"encoder", "decoder", "heads"}
    head_names = sorted(name for name in names if name.startswith("heads."))
    assert head_names == sorted(f"heads.{task}.{level}.{p}" for task in ("lung_tumour", "effusion-2")
                                for level in (0, 1) for p in ("weight", "bias"))
    assert "encoder.stages.0.0.conv.weight" in names and "encoder.stages.2.1.norm.bias" in names
    assert "decoder.upsample.1.weight" in names and "decoder.stages.0.1.conv.weight" in names
    assert network.tasks == ["lung_tumour", "effusion-2"]


def test_he_initialisation_and_zero_bias():
    network = UNet(make_configuration(features=(16, 32)), 4, {"lesion": 2})
    conv = network.encoder.stages[1][1].conv
    fan_in = conv.in_channels * math.prod(conv.kernel_size)
    expected_std = math.sqrt(2.0 / (1 + 0.01 ** 2) / fan_in)
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    heads = set(network.heads.modules())
    convs = [m for m in network.modules()
             if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and m not in heads]
    assert all(torch.count_nonzero(m.bias) == 0 for m in convs)


@pytest.mark.parametrize("kind", ["unet", "hybrid"])
def test_heads_start_every_foreground_class_at_the_prior(kind):
    network = build_network(make_configuration(features=(16, 32, 64)), 1, {"covid": 2, "organs": 4}, kind=kind)
    network.heads.init_bias("prior")
    for task, n_classes in (("covid", 2), ("organs", 4)):
        for head in network.heads[task]:
            probabilities = torch.softmax(head.bias.double(), 0)
            expected = [1 - (n_classes - 1) * FOREGROUND_PRIOR] + [FOREGROUND_PRIOR] * (n_classes - 1)
            assert probabilities.tolist() == pytest.approx(expected, abs=1e-7)
    # on a random input the full-resolution output starts near the prior, not at 1/K
    output = network.eval()(torch.randn(1, 1, 16, 32, 32), task="covid")
    assert torch.softmax(output[0], 1)[:, 1].mean().item() == pytest.approx(FOREGROUND_PRIOR, rel=0.5)


@pytest.mark.parametrize("kind", ["unet", "hybrid"])
def test_zero_head_init_starts_every_class_at_one_over_k_and_the_default_is_applied_when_built(kind):
    configuration = make_configuration(features=(16, 32, 64))
    torch.manual_seed(0)
    network = build_network(configuration, 1, {"covid": 2, "organs": 4}, kind=kind)
    torch.manual_seed(0)
    again = build_network(configuration, 1, {"covid": 2, "organs": 4}, kind=kind)
    again.heads.init_bias(DEFAULT_HEAD_INIT)
    assert all(torch.equal(a, b) for a, b in zip(network.state_dict().values(), again.state_dict().values()))
    network.heads.init_bias("zero")
    for task, n_classes in (("covid", 2), ("organs", 4)):
        for head in network.heads[task]:
            assert torch.softmax(head.bias.double(), 0).tolist() == pytest.approx([1 / n_classes] * n_classes)
    with pytest.raises(CovtransferError, match="--head-init 'focal': use prior or zero"):
        network.heads.init_bias("focal")


def test_multi_task_heads_have_own_classes_and_gradients_only_flow_through_the_chosen_task():
    network = UNet(ANISOTROPIC, 1, {"tumour": 2, "effusion": 4})
    x = patch_input(ANISOTROPIC)
    default = network(x)
    effusion = network(x, task="effusion")
    assert [o.shape[1] for o in default] == [2, 2]
    assert [o.shape[1] for o in effusion] == [4, 4]
    network.zero_grad(set_to_none=True)
    sum(o.square().mean() for o in network(x, task="tumour")).backward()
    for name, p in network.named_parameters():
        if name.startswith("heads.effusion."):
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
        else:
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


@pytest.mark.parametrize("heads", [{}, {"a.b": 2}, {"": 2}, {"has space": 2}, {"tail\n": 2}, {"ok": 0}, {"ok": 2.0},
                                   {"forward": 2}, {"resolve_task": 2}])
def test_bad_head_sets_are_rejected(heads):
    with pytest.raises(CovtransferError):
        UNet(ISOTROPIC, 1, heads)


def test_unknown_task_and_indivisible_input_are_clear_errors():
    network = UNet(ANISOTROPIC, 1, {"tumour": 2})
    with pytest.raises(CovtransferError, match="no head set 'covid'"):
        network(patch_input(ANISOTROPIC), task="covid")
    with pytest.raises(CovtransferError, match=re.escape("total stride (2, 4, 4)")):
        network(torch.zeros(1, 1, 16, 30, 32))


def test_invalid_topology_is_rejected():
    with pytest.raises(CovtransferError, match="odd"):
        UNet(make_configuration(kernels=[[3, 3, 3], [2, 2, 2], [3, 3, 3]]), 1, {"a": 2})
    with pytest.raises(CovtransferError, match="2 stages"):
        UNet(make_configuration(features=(4,)), 1, {"a": 2})


def test_channels_last_and_contiguous_give_the_same_logits():
    network = UNet(ANISOTROPIC, 1, {"tumour": 2}, deep_supervision=False)
    x = patch_input(ANISOTROPIC)
    with torch.no_grad():
        reference = network(x)
        network = network.to(memory_format=torch.channels_last_3d)
        channels_last = network(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(channels_last, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels, hidden", [(4, 32), (320, 32), (512, 32), (1024, 64), (640, 40)])
def test_fusion_hidden_width_is_max_of_c_over_16_and_32(channels, hidden):
    fusion = SelectiveFusion(channels)
    assert hidden_size(channels) == hidden
    assert fusion.squeeze.weight.shape == (hidden, channels) and fusion.squeeze.bias.shape == (hidden,)
    assert fusion.dedicated.weight.shape == fusion.adapted.weight.shape == (channels, hidden)


def test_fusion_follows_the_design_equations():
    fusion = SelectiveFusion(6)
    generator = torch.Generator().manual_seed(1)
    f_d, f_a = (torch.randn(3, 6, 2, 4, 5, generator=generator) for _ in range(2))
    v = fusion(f_d, f_a)
    with torch.no_grad():
        s = (f_d + f_a).mean(dim=(2, 3, 4))
        z = torch.relu(s @ fusion.squeeze.weight.T + fusion.squeeze.bias)
        a_d, a_a = z @ fusion.dedicated.weight.T, z @ fusion.adapted.weight.T
        alpha = torch.exp(a_d) / (torch.exp(a_d) + torch.exp(a_a))
    torch.testing.assert_close(fusion.last_alpha, alpha)
    assert fusion.last_alpha.shape == (3, 6) and not fusion.last_alpha.requires_grad
    assert bool(((alpha > 0) & (alpha < 1)).all())
    a = alpha[:, :, None, None, None]
    torch.testing.assert_close(v, a * f_d + (1 - a) * f_a)
    beta = fusion.attention(f_d, f_a)[1]
    torch.testing.assert_close(fusion.last_alpha + beta.detach(), torch.ones(3, 6))


def test_fusion_attention_uses_no_batch_statistics():
    fusion = SelectiveFusion(8)
    f_d, f_a = torch.randn(4, 8, 2, 3, 3), torch.randn(4, 8, 2, 3, 3)
    together = fusion(f_d, f_a)
    alone = fusion(f_d[2:3], f_a[2:3])
    torch.testing.assert_close(alone, together[2:3])


def test_fusion_keeps_the_feature_dtype_under_autocast():
    fusion = SelectiveFusion(8)
    f_d, f_a = torch.randn(2, 8, 2, 4, 4).bfloat16(), torch.randn(2, 8, 2, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fusion(f_d, f_a).dtype == torch.bfloat16


def test_hybrid_forward_backward_names_and_attention_shapes():
    network = HybridUNet(ANISOTROPIC, 1, {"covid": 2})
    with pytest.raises(RuntimeError, match="after a forward pass"):
        network.last_attention
    outputs = network(patch_input(ANISOTROPIC))
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 16, 32, 32), (2, 2, 16, 16, 16)]
    assert [tuple(a.shape) for a in network.last_attention] == [(2, 4), (2, 8), (2, 16)]
    sum(o.mean() for o in outputs).backward()
    prefixes = {name.split(".")[0] for name, _ in network.named_parameters()}
    assert prefixes == {"dedicated_encoder", "adapted_encoder", "fusion", "decoder", "heads"}
    for prefix in prefixes:
        grads = [p.grad for name, p in network.named_parameters() if name.startswith(prefix + ".")]
        assert all(g is not None for g in grads) and any(torch.count_nonzero(g) > 0 for g in grads), prefix
    dedicated = {n.removeprefix("dedicated_encoder.") for n, _ in network.named_parameters() if n.startswith("ded")}
    adapted = {n.removeprefix("adapted_encoder.") for n, _ in network.named_parameters() if n.startswith("ada")}
    assert dedicated == adapted


def test_hybrid_with_two_identical_encoders_equals_the_unet():
    """With F_D = F_A the fused map is F_D whatever α is, so the hybrid must reproduce the U-Net exactly."""
    unet = UNet(ANISOTROPIC, 1, {"covid": 2}, deep_supervision=False)
    hybrid = HybridUNet(ANISOTROPIC, 1, {"covid": 2}, deep_supervision=False)
    state = {}
    for name, tensor in unet.state_dict().items():
        if name.startswith("encoder."):
            state["dedicated_" + name] = state["adapted_" + name] = tensor
        else:
            state[name] = tensor
    state.update({k: v for k, v in hybrid.state_dict().items() if k.startswith("fusion.")})
    hybrid.load_state_dict(state, strict=True)
    x = patch_input(ANISOTROPIC)
    with torch.no_grad():
        torch.testing.assert_close(hybrid(x), unet(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["unet", "hybrid"])
def test_spec_and_weights_round_trip_give_the_same_outputs(kind, tmp_path):
    network = build_network(ANISOTROPIC, 1, {"tumour": 2, "covid": 3}, kind=kind)
    spec = network_spec(ANISOTROPIC, 1, {"tumour": 2, "covid": 3}, kind=kind)
    assert spec == {"kind": kind, "num_input_channels": 1, "heads": {"tumour": 2, "covid": 3},
                    "configuration": ANISOTROPIC.to_dict()}
    path = tmp_path / "weights.pt"
    torch.save(network.state_dict(), path)
    loaded = build_from_spec(spec, deep_supervision=False)
    load_weights(loaded, torch.load(path, weights_only=True))
    assert type(loaded) is type(network) and loaded.deep_supervision is False
    x = patch_input(ANISOTROPIC)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, "covid"), network(x, "covid")[0])


def test_weight_mismatches_are_named():
    network = build_network(ISOTROPIC, 1, {"tumour": 2})
    spec = network_spec(ISOTROPIC, 1, {"tumour": 2})
    state = dict(network.state_dict())
    del state["decoder.upsample.0.bias"]
    state["encoder.extra"] = torch.zeros(1)
    with pytest.raises(CovtransferError, match=r"ck\.pt: .*missing: decoder\.upsample\.0\.bias.*unexpected: "
                                               r"encoder\.extra"):
        load_weights(build_from_spec(spec), state, source="ck.pt")
    wider = network_spec(ISOTROPIC, 1, {"tumour": 3})
    with pytest.raises(CovtransferError, match=re.escape("heads.tumour.0.weight (2, 4, 1, 1, 1) vs (3, 4, 1, 1, 1)")):
        load_weights(build_from_spec(wider), network.state_dict())
    with pytest.raises(CovtransferError, match="lacks heads"):
        build_from_spec({k: v for k, v in spec.items() if k != "heads"})


def test_mismatch_report_is_bounded():
    network = build_network(ISOTROPIC, 1, {"tumour": 2})
    problems = state_dict_mismatches(network, {}, limit=3)
    count = len(network.state_dict())
    assert problems == [f"{count} missing: encoder.stages.0.0.conv.weight, encoder.stages.0.0.conv.bias, "
                        f"encoder.stages.0.0.norm.weight and {count - 3} more"]


def test_unknown_kind_is_an_error():
    with pytest.raises(CovtransferError, match="unknown network kind 'transformer'"):
        build_network(ISOTROPIC, 1, {"a": 2}, kind="transformer")
    with pytest.raises(CovtransferError, match="unknown network kind"):
        network_spec(ISOTROPIC, 1, {"a": 2}, kind="transformer")
    spec = network_spec(ISOTROPIC, 1, {"a": 2})
    with pytest.raises(CovtransferError, match="unknown network kind"):
        build_from_spec({**spec, "kind": "transformer"})


@pytest.mark.parametrize("kind", ["unet", "hybrid"])
def test_compiles_without_graph_breaks(kind):
    import torch._dynamo

    network = build_network(ANISOTROPIC, 1, {"a": 2, "b": 3}, kind=kind)
    explanation = torch._dynamo.explain(network)(patch_input(ANISOTROPIC), "b")
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


@pytest.fixture
def no_tf32():
    """Exact fp32 convolutions, so compiled and eager logits agree to float rounding (TF32 differs by ~5e-3)."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["unet", "hybrid"])
def test_compiled_bf16_training_step_on_gpu(kind, no_tf32):
    network = build_network(ANISOTROPIC, 1, {"a": 2}, kind=kind).cuda().to(memory_format=torch.channels_last_3d)
    compiled = torch.compile(network)
    x = patch_input(ANISOTROPIC).cuda().contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        outputs = compiled(x)
    assert [o.dtype for o in outputs] == [torch.bfloat16] * 2
    sum(o.float().mean() for o in outputs).backward()
    assert all(p.grad is not None for p in network.parameters())
    network.deep_supervision = False
    with torch.no_grad():
        eager = network(x)
        eager_attention = [a.clone() for a in network.last_attention] if kind == "hybrid" else []
        for fusion in getattr(network, "fusion", []):
            fusion.last_alpha = None
        torch.testing.assert_close(compiled(x), eager, rtol=1e-4, atol=1e-4)
    if kind == "hybrid":
        assert [tuple(a.shape) for a in network.last_attention] == [(2, 4), (2, 8), (2, 16)]
        for compiled_alpha, eager_alpha in zip(network.last_attention, eager_attention):
            torch.testing.assert_close(compiled_alpha, eager_alpha, rtol=1e-4, atol=1e-4)
