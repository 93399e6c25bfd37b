"""Where one training step's time goes: ``torch.profiler`` over a step, grouped into what the step does.

Shared by ``train_step.py --profile`` (covtransfer) and ``nnunet_train_step.py --profile`` (nnU-Net 2.8.1), so both
tools' steps are broken down by the same rules; it imports neither tool. The network's forward and the loss run
inside named scopes (their modules are wrapped while profiling), the backward pass is recognised by the autograd
engine's scopes and the optimiser by torch's ``Optimizer.step`` scope. Within a phase each operator is classed by
its name: convolution, normalisation, activation, softmax/cross-entropy, elementwise and reductions, copies and
casts, gradient clipping, optimiser update. Time is the operators' own (self) time: the device's on CUDA, the
CPU's elsewhere. On CUDA the convolution kernels are also counted by the precision their names carry.
"""

from __future__ import annotations

import contextlib
import re
from typing import Callable, Iterator

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

FORWARD, LOSS = "covtransfer_profile::network_forward", "covtransfer_profile::loss"
KINDS = (  # first match wins: the patterns are tried on the operator's name, then on its autograd node's name
    ("convolution", r"conv|cudnn|xmma|dgrad|wgrad|fprop|implicit_gemm"),
    ("gradient clipping", r"foreach_norm|linalg_vector_norm|clip_grad|\bnorm\b"),
    ("normalisation", r"batch_norm|instance_norm|group_norm|layer_norm|welford|native_norm|batchnorm"),
    ("activation", r"leaky|relu|gelu|silu"),
    ("softmax / cross-entropy", r"softmax|nll|cross_entropy|one_hot|scatter|gather"),
    ("optimiser update", r"_foreach_|sgd|multi_tensor|addcmul|lerp"),
    ("copy / cast", r"copy|_to_copy|\bto\b|cast|contiguous|clone|cat|fill|zero_|empty"),
    ("elementwise / reduction", r"mul|add|sub|div|sum|mean|pow|sqrt|exp|log|where|clamp|max|min|abs|ne|eq|gt|lt"),
)
PRECISIONS = (("bf16", r"bf16|bfloat16"), ("fp16", r"f16|fp16|half|h884|h1688|h16816"),
              ("tf32", r"tf32"), ("fp32", r"f32|fp32|sgemm|float"))


def _first_match(name: str, table: tuple[tuple[str, str], ...], default: str) -> str:
    """The label of the first pattern of ``table`` found in ``name`` (case-insensitive), else ``default``."""
    lowered = name.lower()
    return next((label for label, pattern in table if re.search(pattern, lowered)), default)


def classify(name: str) -> str:
    """The kind of work an operator or kernel name stands for (``other`` when no pattern matches)."""
    return _first_match(name, KINDS, "other")


def precision(kernel: str) -> str:
    """The floating-point format a CUDA kernel's name carries (``unknown`` when it names none)."""
    return _first_match(kernel, PRECISIONS, "unknown")


def _phase(event) -> tuple[str, str]:
    """The step phase of a profiled operator and the name it is classed by: in backward its innermost autograd node
    (``LeakyReluBackward1`` rather than the ``CopySlices`` around an in-place op on a view)."""
    parent, node = event.cpu_parent, ""
    while parent is not None:
        name = parent.name
        if name.startswith("autograd::engine::evaluate_function:"):
            return "backward", node or name.rsplit(":", 1)[-1].strip()
        if not node and not name.startswith("aten::"):
            node = name
        if name.startswith("Optimizer.step") or name.startswith("Optimizer.zero_grad"):
            return "optimiser", event.name
        if name == FORWARD:
            return "forward", event.name
        if name == LOSS:
            return "loss", event.name
        parent = parent.cpu_parent
    return "rest of step", event.name


@contextlib.contextmanager
def _scoped(module: nn.Module, scope: str) -> Iterator[None]:
    """Run ``module``'s forward inside a named profiler scope for as long as the context lasts."""
    forward = module.forward

    def scoped_forward(*args, **kwargs):
        with record_function(scope):
            return forward(*args, **kwargs)

    module.forward = scoped_forward
    try:
        yield
    finally:
        del module.forward  # back to the class's forward


def profile_step(step: Callable[[], object], network: nn.Module, loss: nn.Module, device: torch.device,
                 warmup: int = 2) -> dict:
    """Profile one call of ``step`` (after ``warmup`` unprofiled calls) and return the grouped breakdown in ms."""
    for _ in range(warmup):
        step()
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with _scoped(network, FORWARD), _scoped(loss, LOSS):
        if cuda:
            torch.cuda.synchronize(device)
        with profile(activities=activities) as prof:
            step()
            if cuda:
                torch.cuda.synchronize(device)
    return summarise(prof.events(), cuda)


def summarise(events, cuda: bool) -> dict:
    """Sum the operators' self time per (phase, kind), and on CUDA the convolution kernels' time per precision."""
    table: dict[str, dict[str, float]] = {}
    conv_precision: dict[str, float] = {}
    total = 0.0
    for event in events:
        if event.name.startswith(("covtransfer_profile::", "autograd::engine", "Optimizer.", "ProfilerStep")):
            continue
        if cuda:
            us = sum(kernel.duration for kernel in event.kernels)
        else:
            us = event.self_cpu_time_total
        if us <= 0:
            continue
        phase, name = _phase(event)
        kind = classify(name) if phase != "optimiser" else "optimiser update"
        if kind == "other" and phase == "backward":
            kind = classify(event.name)
        table.setdefault(phase, {})
        table[phase][kind] = table[phase].get(kind, 0.0) + us / 1000
        total += us / 1000
        if cuda and kind == "convolution":
            for kernel in event.kernels:
                label = precision(kernel.name)
                conv_precision[label] = conv_precision.get(label, 0.0) + kernel.duration / 1000
    rounded = {phase: {kind: round(ms, 3) for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1])}
               for phase, kinds in table.items()}
    return {"time": "device (CUDA kernels)" if cuda else "CPU (operators' self time)", "total_ms": round(total, 3),
            "phases": rounded, "convolution_ms_by_precision": {k: round(v, 3) for k, v in conv_precision.items()}}


def format_breakdown(tool: str, breakdown: dict) -> str:
    """A small text table: phase, kind, ms and share of the step."""
    total = breakdown["total_ms"] or 1.0
    lines = [f"{tool}: {breakdown['total_ms']:.1f} ms of {breakdown['time']} in one profiled step"]
    for phase, kinds in breakdown["phases"].items():
        for kind, ms in kinds.items():
            lines.append(f"  {phase:<12} {kind:<24} {ms:9.2f} ms  {100 * ms / total:5.1f} %")
    if breakdown["convolution_ms_by_precision"]:
        shares = ", ".join(f"{k} {v:.1f} ms" for k, v in breakdown["convolution_ms_by_precision"].items())
        lines.append(f"  convolution kernels by precision: {shares}")
    return "\n".join(lines)
