"""Build networks from plans or from a checkpoint's ``network`` spec, and load checkpoint weights strictly.

The spec (``{"kind", "num_input_channels", "heads", "configuration"}``) is what a checkpoint describes (see
:class:`covtransfer.network.checkpoint.Checkpoint`) so that inference rebuilds exactly the trained network without
the trainer.
"""

from __future__ import annotations

import os
import torch
from torch import nn

from covtransfer.errors import CovtransferError
from covtransfer.network.checkpoint import Checkpoint
from covtransfer.network.kinds import network_class
from covtransfer.plans import Configuration

SPEC_KEYS = ("kind", "num_input_channels", "heads", "configuration")


def build_network(configuration: Configuration, num_input_channels: int, heads: dict[str, int], kind: str = "unet",
                  deep_supervision: bool = True) -> nn.Module:
    """A freshly initialised network of ``kind`` for the configuration's topology, one head set per task."""
    return network_class(kind)(configuration, num_input_channels, dict(heads), deep_supervision=deep_supervision)


def network_spec(configuration: Configuration, num_input_channels: int, heads: dict[str, int],
                 kind: str = "unet") -> dict:
    """The checkpoint's ``network`` entry: everything :func:`build_from_spec` needs, as plain JSON types."""
    network_class(kind)
    return {"kind": kind, "num_input_channels": int(num_input_channels),
            "heads": {task: int(n) for task, n in heads.items()}, "configuration": configuration.to_dict()}


def build_from_spec(spec: dict, deep_supervision: bool = True, source: str | os.PathLike = "checkpoint") -> nn.Module:
    """A freshly initialised network from a ``network`` spec; ``source`` names the file in error messages."""
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise CovtransferError(f"{source}: network spec lacks {', '.join(missing)}")
    try:
        configuration = Configuration.from_dict(spec["configuration"])
    except (KeyError, TypeError) as exc:
        raise CovtransferError(f"{source}: network spec has an invalid configuration ({exc})") from None
    return build_network(configuration, spec["num_input_channels"], spec["heads"], spec["kind"], deep_supervision)


def build_from_checkpoint(checkpoint: Checkpoint, deep_supervision: bool = False,
                          source: str | os.PathLike = "checkpoint") -> nn.Module:
    """The checkpoint's network with its weights; any missing, unexpected or misshapen tensor is an error."""
    network = build_from_spec(checkpoint.network_spec, deep_supervision, source)
    load_weights(network, checkpoint.state_dict, source)
    return network


def load_weights(network: nn.Module, state_dict: dict[str, torch.Tensor],
                 source: str | os.PathLike = "checkpoint") -> None:
    """Load ``state_dict`` strictly; any missing, unexpected or misshapen tensor is an error naming ``source``."""
    problems = state_dict_mismatches(network, state_dict)
    if problems:
        raise CovtransferError(f"{source}: weights do not fit the recorded network: {'; '.join(problems)}")
    network.load_state_dict(state_dict, strict=True)


def state_dict_mismatches(network: nn.Module, state_dict: dict[str, torch.Tensor], limit: int = 5) -> list[str]:
    """Readable differences between a network's tensors and a state dict (at most ``limit`` names per kind)."""
    own = network.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    misshapen = [f"{k} {_shape(state_dict[k])} vs {_shape(v)}" for k, v in own.items()
                 if k in state_dict and _shape(state_dict[k]) != _shape(v)]
    problems = []
    kinds = (("missing", missing), ("unexpected", unexpected), ("shape (checkpoint vs network)", misshapen))
    for label, names in kinds:
        if names:
            more = f" and {len(names) - limit} more" if len(names) > limit else ""
            problems.append(f"{len(names)} {label}: {', '.join(names[:limit])}{more}")
    return problems


def _shape(value: object) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def unwrap_network(model: nn.Module) -> nn.Module:
    """The plain network under ``DistributedDataParallel`` (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
