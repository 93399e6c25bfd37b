"""The plain 3D U-Net of the plans: encoder, decoder and per-task deep-supervision heads as separate modules.

Parameter names are stable (``encoder.stages.<s>.<c>.conv.weight``, ``decoder.upsample.<l>.weight``,
``decoder.stages.<l>.<c>.norm.bias``, ``heads.<task>.<l>.weight``) because the transfer strategies load, freeze and
duplicate parts of the network by name. Decoder and head index ``l`` is the resolution level: 0 is full resolution.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Sequence

import torch
from torch import nn

from covtransfer.errors import CovtransferError
from covtransfer.plans import Configuration

NEGATIVE_SLOPE = 0.01
# Initial probability of every foreground class (the heads' bias; Lin et al. 2017's prior initialisation). nnU-Net
# starts the heads at zero bias (p = 1/K): with lesions at under 1 % of the voxels, SGD with momentum 0.99 then
# overshoots to p ≈ 1e-4 everywhere and the run can stay all-background for over 1,000 iterations.
FOREGROUND_PRIOR = 0.01
# How the heads' bias starts (--head-init): at FOREGROUND_PRIOR, or at zero bias as nnU-Net's heads do
HEAD_INITS = ("prior", "zero")
DEFAULT_HEAD_INIT = "prior"
NORM_EPS = 1e-5
TASK_NAME = re.compile(r"[A-Za-z0-9_-]+")


def init_weights(module: nn.Module, head_init: str = DEFAULT_HEAD_INIT) -> None:
    """He (kaiming normal, a=0.01) init for every conv and transposed conv, zero bias, except the segmentation heads'
    bias, which starts as ``head_init`` says (:meth:`SegmentationHeads.init_bias`); other layers keep theirs."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, SegmentationHeads):
            m.init_bias(head_init)


class ConvBlock(nn.Module):
    """Conv3d (bias, 'same' padding, optional stride) → InstanceNorm3d (affine) → LeakyReLU(0.01)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int],
                 stride: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, tuple(kernel), tuple(stride),
                              padding=tuple(k // 2 for k in kernel), bias=True)
        self.norm = nn.InstanceNorm3d(out_channels, eps=NORM_EPS, affine=True)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


def conv_stage(in_channels: int, out_channels: int, kernel: Sequence[int], stride: Sequence[int],
               n_convs: int) -> nn.Sequential:
    """``n_convs`` conv blocks; only the first one strides (it does the downsampling)."""
    blocks = [ConvBlock(in_channels, out_channels, kernel, stride)]
    blocks += [ConvBlock(out_channels, out_channels, kernel) for _ in range(n_convs - 1)]
    return nn.Sequential(*blocks)


class Encoder(nn.Module):
    """One conv stage per resolution level; returns every stage's output (skips, the last is the bottleneck)."""

    def __init__(self, num_input_channels: int, features: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                 strides: Sequence[Sequence[int]], n_convs: int) -> None:
        super().__init__()
        in_channels = [num_input_channels, *features[:-1]]
        self.stages = nn.ModuleList(conv_stage(c_in, c_out, k, s, n_convs)
                                    for c_in, c_out, k, s in zip(in_channels, features, kernel_sizes, strides))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class Decoder(nn.Module):
    """Per level below the bottleneck: transposed-conv upsampling, skip concatenation, conv stage.

    ``upsample[i]`` maps level ``i + 1`` features to level ``i`` channels; ``stages[i]`` works at level ``i``.
    """

    def __init__(self, features: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                 strides: Sequence[Sequence[int]], n_convs: int) -> None:
        super().__init__()
        levels = range(len(features) - 1)
        self.upsample = nn.ModuleList(
            nn.ConvTranspose3d(features[i + 1], features[i], tuple(strides[i + 1]), tuple(strides[i + 1]), bias=True)
            for i in levels)
        self.stages = nn.ModuleList(conv_stage(2 * features[i], features[i], kernel_sizes[i], (1, 1, 1), n_convs)
                                    for i in levels)

    def forward(self, skips: Sequence[torch.Tensor], all_levels: bool = True) -> list[torch.Tensor]:
        """Decoder features per level, full resolution first (only the full-resolution one if not ``all_levels``)."""
        x = skips[-1]
        outputs = []
        for level in range(len(self.stages) - 1, -1, -1):
            x = self.stages[level](torch.cat((self.upsample[level](x), skips[level]), dim=1))
            if all_levels or level == 0:
                outputs.append(x)
        outputs.reverse()
        return outputs


class SegmentationHeads(nn.ModuleDict):
    """``{task: ModuleList[1×1×1 conv per decoder level]}``; one head set per task, each with its own classes."""

    def __init__(self, features: Sequence[int], heads: dict[str, int]) -> None:
        check_heads(heads)
        super().__init__()
        for task, n in heads.items():
            try:
                self[task] = nn.ModuleList(nn.Conv3d(f, n, 1, bias=True) for f in features)
            except KeyError:
                raise CovtransferError(f"head set name {task!r} is reserved; choose another") from None

    @torch.no_grad()
    def init_bias(self, head_init: str) -> None:
        """``prior``: biases that give every foreground class softmax probability ``FOREGROUND_PRIOR`` (background the
        rest); ``zero``: zero biases, every class at 1/K."""
        if head_init not in HEAD_INITS:
            raise CovtransferError(f"--head-init {head_init!r}: use {' or '.join(HEAD_INITS)}")
        for heads in self.values():
            for head in heads:
                n_foreground = head.out_channels - 1
                head.bias.zero_()
                if head_init == "prior":
                    head.bias[1:] = math.log(FOREGROUND_PRIOR / (1 - n_foreground * FOREGROUND_PRIOR))

    def resolve_task(self, task: str | None) -> str:
        """The task name to use: ``None`` is the first head set; an unknown name is an error."""
        if task is None:
            return next(iter(self.keys()))
        if task not in self:
            raise CovtransferError(f"network has no head set {task!r} (heads: {', '.join(self.keys())})")
        return task

    def forward(self, features: Sequence[torch.Tensor], task: str | None = None) -> list[torch.Tensor]:
        heads = self[self.resolve_task(task)]
        return [head(f) for head, f in zip(heads, features)]


def check_heads(heads: dict[str, int]) -> None:
    """Head sets must be non-empty, named with letters, digits, '_' or '-', and predict at least one class."""
    if not heads:
        raise CovtransferError("network needs at least one head set (heads is empty)")
    for task, n in heads.items():
        if not isinstance(task, str) or not TASK_NAME.fullmatch(task):
            raise CovtransferError(f"head set name {task!r} is not allowed (use letters, digits, '_' and '-')")
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise CovtransferError(f"head set {task!r}: number of classes must be a positive integer, got {n!r}")


def check_topology(configuration: Configuration) -> None:
    """Reject plans whose topology cannot build a U-Net, naming the configuration and the problem."""
    name = f"configuration {configuration.name!r}"
    n = configuration.n_stages
    if n < 2:
        raise CovtransferError(f"{name}: a U-Net needs at least 2 stages, got {n}")
    if len(configuration.kernel_sizes) != n or len(configuration.strides) != n:
        raise CovtransferError(f"{name}: {n} stages but {len(configuration.kernel_sizes)} kernel sizes and "
                               f"{len(configuration.strides)} strides")
    for i, (k, s) in enumerate(zip(configuration.kernel_sizes, configuration.strides)):
        if len(k) != 3 or len(s) != 3:
            raise CovtransferError(f"{name}: stage {i} kernel {k} / stride {s} must have 3 (z, y, x) entries")
        if any(v < 1 or v % 2 == 0 for v in k):
            raise CovtransferError(f"{name}: stage {i} kernel {k} must be odd and positive")
        if any(v < 1 for v in s):
            raise CovtransferError(f"{name}: stage {i} stride {s} must be positive")
    if any(f < 1 for f in configuration.features_per_stage):
        raise CovtransferError(f"{name}: features per stage {configuration.features_per_stage} must be positive")
    if configuration.n_conv_per_stage < 1 or configuration.n_conv_per_stage_decoder < 1:
        raise CovtransferError(f"{name}: convolutions per stage must be at least 1")


class SegmentationNetwork(nn.Module):
    """Shared forward of the U-Net and the hybrid: ``encode`` (defined by subclasses), then decoder and heads.

    Subclasses register their encoder(s), then ``decoder`` (a :class:`Decoder`) and ``heads``
    (:class:`SegmentationHeads`). ``deep_supervision`` may be toggled at any time (the predictor turns it off).
    """

    decoder: Decoder
    heads: SegmentationHeads

    def __init__(self, configuration: Configuration, deep_supervision: bool) -> None:
        super().__init__()
        check_topology(configuration)
        self.deep_supervision = deep_supervision
        self.total_stride = tuple(math.prod(s[axis] for s in configuration.strides) for axis in range(3))

    @property
    def tasks(self) -> list[str]:
        """Head-set names in order; the first is the default task."""
        return list(self.heads.keys())

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def decode(self, skips: Sequence[torch.Tensor], task: str | None = None) -> list[torch.Tensor] | torch.Tensor:
        """Logits from encoder skips: per level (full resolution first) with deep supervision, else one tensor."""
        logits = self.heads(self.decoder(skips, all_levels=self.deep_supervision), task)
        return logits if self.deep_supervision else logits[0]

    def forward(self, x: torch.Tensor, task: str | None = None) -> list[torch.Tensor] | torch.Tensor:
        self.check_input(x)
        return self.decode(self.encode(x), task)

    def check_input(self, x: torch.Tensor) -> None:
        """Inputs are (B, C, Z, Y, X) with every spatial size divisible by the network's total stride."""
        if x.ndim != 5:
            raise CovtransferError(f"network input must be (B, C, Z, Y, X), got shape {tuple(x.shape)}")
        if any(size % stride for size, stride in zip(x.shape[2:], self.total_stride)):
            raise CovtransferError(f"network input of spatial size {tuple(x.shape[2:])} is not divisible by the "
                                   f"total stride {self.total_stride} of the plans (pad the patch)")


class UNet(SegmentationNetwork):
    """Plain 3D U-Net: ``encoder``, ``decoder``, ``heads`` (one head set per task)."""

    def __init__(self, configuration: Configuration, num_input_channels: int, heads: dict[str, int],
                 deep_supervision: bool = True) -> None:
        super().__init__(configuration, deep_supervision)
        c = configuration
        self.encoder = Encoder(num_input_channels, c.features_per_stage, c.kernel_sizes, c.strides, c.n_conv_per_stage)
        self.decoder = Decoder(c.features_per_stage, c.kernel_sizes, c.strides, c.n_conv_per_stage_decoder)
        self.heads = SegmentationHeads(c.features_per_stage[:-1], heads)
        init_weights(self)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)
