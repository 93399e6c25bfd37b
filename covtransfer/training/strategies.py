"""Training strategies: small objects that decide initialisation, frozen parameters and parameter groups.

One trainer runs the loop for all of them:

| strategy  | from the pre-trained model     | trained                                              |
|-----------|--------------------------------|------------------------------------------------------|
| scratch   | nothing                        | everything                                           |
| pretrain  | nothing (one head set/source)  | everything                                           |
| continual | encoder + decoder              | everything                                           |
| finetune  | encoder + decoder              | decoder + heads (encoder or its first K stages frozen)|
| encoder   | encoder                        | everything                                           |
| hybrid    | adapted encoder = its encoder  | everything, the adapted encoder at a reduced lr      |
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from covtransfer.errors import CovtransferError
from covtransfer.network.checkpoint import Checkpoint

PLANS_HINT = ("the pre-trained model was planned differently: preprocess the source datasets with "
              "`covtransfer_plan_and_preprocess -d SRC --plans-from TARGET` and pre-train again")


FIRST_CONV = "encoder.stages.0.0.conv.weight"  # the only tensor whose shape depends on the input channels


@dataclass
class LoadReport:
    """Which tensors a transfer loaded, which checkpoint tensors it skipped, which model tensors stayed new, which of
    those are re-initialised because the target differs (its heads, or the first convolution for other channels),
    and where the pre-trained model came from."""

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)
    origin: dict | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "loaded": self.loaded, "skipped": self.skipped, "missing": self.missing,
                "reinitialised": self.reinitialised, "origin": self.origin}

    def summary(self) -> str:
        reinitialised = "; re-initialised for the target: " + ", ".join(
            f"{name} ({why})" for name, why in self.reinitialised.items()) if self.reinitialised else ""
        return (f"loaded {len(self.loaded)} tensors from {self.source}; skipped {len(self.skipped)} "
                f"(not used by this strategy); {len(self.missing)} newly initialised{reinitialised}")


def _head_reasons(own: dict[str, torch.Tensor], checkpoint: Checkpoint) -> dict[str, str]:
    """Why each of the model's heads starts anew: its classes against those of the pre-trained heads."""
    theirs = ", ".join(f"{head}: {', '.join(labels)}" for head, labels in checkpoint.labels.items())
    reasons = {}
    for name, tensor in own.items():
        match = re.fullmatch(r"(heads\.[^.]+)\.0\.weight", name)
        if match:
            reasons[match.group(1)] = (f"{tensor.shape[0]} classes of the target's labels; the pre-trained heads "
                                       f"({theirs}) are not loaded")
    return reasons


def transfer_weights(model: nn.Module, checkpoint: Checkpoint, source: str, mapping: dict[str, str]) -> LoadReport:
    """Copy checkpoint tensors whose name starts with a key of ``mapping`` into the model under the mapped prefix.

    Every mapped tensor must exist in the model with the same shape; otherwise the transfer would leave part of
    the network random, which is an error naming the tensor and the likely fix. The one exception is the first
    convolution of a model with another number of input channels, which is re-initialised and reported.
    """
    pretrained = checkpoint.state_dict
    own = model.state_dict()
    report = LoadReport(source, reinitialised=_head_reasons(own, checkpoint))
    updates = {}
    for name, tensor in pretrained.items():
        prefix = next((p for p in mapping if name.startswith(p + ".")), None)
        if prefix is None:
            report.skipped.append(name)
            continue
        target = mapping[prefix] + name[len(prefix):]
        if target not in own:
            raise CovtransferError(f"{source}: tensor {name} has no counterpart {target} in this network; "
                                   f"{PLANS_HINT}")
        if name == FIRST_CONV and own[target].shape[1] != tensor.shape[1]:
            report.reinitialised[target] = (f"{own[target].shape[1]} input channel(s), the pre-trained model has "
                                            f"{tensor.shape[1]}")
            report.skipped.append(name)
            continue
        if own[target].shape != tensor.shape:
            raise CovtransferError(f"{source}: {name} has shape {tuple(tensor.shape)} but this network needs "
                                   f"{tuple(own[target].shape)}; {PLANS_HINT}")
        updates[target] = tensor
        report.loaded.append(name)
    for prefix, target_prefix in mapping.items():
        expected = [n for n in own if n.startswith(target_prefix + ".") and n not in report.reinitialised]
        absent = [n for n in expected if n not in updates]
        if absent:
            raise CovtransferError(f"{source}: the checkpoint lacks {absent[0]} (and {len(absent) - 1} more) for "
                                   f"{target_prefix}; {PLANS_HINT}")
    model.load_state_dict(updates, strict=False)
    report.missing = sorted(n for n in own if n not in updates)
    return report


class Strategy:
    """Scratch training: nothing loaded, nothing frozen, one parameter group. Subclasses override the hooks."""

    name = "scratch"
    network_kind = "unet"
    needs_pretrained = False
    relative_cost = 1.0  # time per iteration against scratch's, for scheduling study jobs

    def describe(self) -> dict:
        """Settings recorded in checkpoints and logs."""
        return {"name": self.name}

    def initialise(self, model: nn.Module, pretrained: Checkpoint | None, source: str = "") -> LoadReport | None:
        """Load pre-trained tensors into ``model``; return what was loaded (None when nothing is)."""
        return None

    def frozen(self, name: str) -> bool:
        """True for parameters that stay fixed (excluded from the optimizer)."""
        return False

    def lr_scale(self, name: str) -> float:
        """Learning-rate multiplier of a trainable parameter."""
        return 1.0

    def parameter_groups(self, model: nn.Module) -> list[dict]:
        """Trainable parameters grouped by learning-rate scale; frozen ones get ``requires_grad = False``."""
        groups: dict[float, list[nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if self.frozen(name):
                param.requires_grad_(False)
                continue
            groups.setdefault(self.lr_scale(name), []).append(param)
        return [{"params": params, "lr_scale": scale} for scale, params in sorted(groups.items(), reverse=True)]


class Pretrain(Strategy):
    """Multi-lesion pre-training: shared encoder and decoder, one head set per source dataset."""

    name = "pretrain"


class Continual(Strategy):
    """Continual learning: start from the pre-trained encoder and decoder, train everything."""

    name = "continual"
    needs_pretrained = True
    loads = ("encoder", "decoder")

    def initialise(self, model: nn.Module, pretrained: Checkpoint | None, source: str = "") -> LoadReport | None:
        return transfer_weights(model, pretrained, source, {part: part for part in self.loads})


class PretrainedEncoder(Continual):
    """Pre-trained encoder: only the encoder is loaded; decoder and heads start random."""

    name = "encoder"
    loads = ("encoder",)


class Finetune(Continual):
    """Body fine-tuning: encoder and decoder loaded, the encoder (or its first K stages) frozen."""

    name = "finetune"
    relative_cost = 0.8  # no encoder weight gradients: 7.0 against 8.6 min for scratch, CPU demo at 2,000

    def __init__(self, freeze_stages: int | None = None):
        self.freeze_stages = freeze_stages

    def describe(self) -> dict:
        return {"name": self.name, "freeze": "encoder" if self.freeze_stages is None
                else f"encoder:{self.freeze_stages}"}

    def frozen(self, name: str) -> bool:
        if not name.startswith("encoder."):
            return False
        if self.freeze_stages is None:
            return True
        match = re.match(r"encoder\.stages\.(\d+)\.", name)
        return bool(match) and int(match.group(1)) < self.freeze_stages


class Hybrid(Strategy):
    """Hybrid encoder: a random dedicated encoder and the pre-trained encoder adapted at a reduced learning rate."""

    name = "hybrid"
    network_kind = "hybrid"
    needs_pretrained = True
    relative_cost = 1.4  # two encoders and the fusion units: 12.0 against 8.6 min for scratch, same run

    def __init__(self, adapted_lr_scale: float = 0.1, freeze_adapted: bool = False):
        self.adapted_lr_scale = adapted_lr_scale
        self.freeze_adapted = freeze_adapted

    def describe(self) -> dict:
        return {"name": self.name, "adapted_lr_scale": self.adapted_lr_scale, "freeze_adapted": self.freeze_adapted}

    def initialise(self, model: nn.Module, pretrained: Checkpoint | None, source: str = "") -> LoadReport | None:
        return transfer_weights(model, pretrained, source, {"encoder": "adapted_encoder"})

    def frozen(self, name: str) -> bool:
        return self.freeze_adapted and name.startswith("adapted_encoder.")

    def lr_scale(self, name: str) -> float:
        return self.adapted_lr_scale if name.startswith("adapted_encoder.") else 1.0


STRATEGY_NAMES = ("scratch", "pretrain", "continual", "finetune", "encoder", "hybrid")


def make_strategy(name: str, freeze: str | None = None, adapted_lr_scale: float = 0.1) -> Strategy:
    """The strategy object for a command-line name and its options (``--freeze``, ``--adapted-lr-scale``)."""
    if name not in STRATEGY_NAMES:
        raise CovtransferError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGY_NAMES)}")
    if freeze is not None and name not in ("finetune", "hybrid"):
        raise CovtransferError(f"--freeze applies to finetune (encoder, encoder:K) and hybrid (adapted), not {name}")
    if name == "finetune":
        if freeze in (None, "encoder"):
            return Finetune()
        match = re.fullmatch(r"encoder:(\d+)", freeze)
        if not match or int(match.group(1)) < 1:
            raise CovtransferError(f"--freeze {freeze!r}: finetune takes 'encoder' or 'encoder:K' with K >= 1")
        return Finetune(int(match.group(1)))
    if name == "hybrid":
        if freeze not in (None, "adapted"):
            raise CovtransferError(f"--freeze {freeze!r}: hybrid takes only 'adapted'")
        if adapted_lr_scale < 0:
            raise CovtransferError("--adapted-lr-scale must be >= 0")
        return Hybrid(adapted_lr_scale, freeze_adapted=freeze == "adapted")
    return {"scratch": Strategy, "pretrain": Pretrain, "continual": Continual, "encoder": PretrainedEncoder}[name]()
