"""The checkpoint type: what a trained model is (network, plans, heads, labels, mirror axes, weights) and the state
that resumes its run (settings, optimizer, scaler, epoch, RNG, metrics history).

It lives beside the network builder because training writes checkpoints and inference reads them, and inference
must not import training. ``to_dict`` gives plain tensors, numbers, strings, lists and dicts only, so a file loads
with ``torch.load(weights_only=True)``. Version 1 (written before this type existed) is converted on reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from covtransfer.errors import CovtransferError
from covtransfer.network.kinds import NETWORKS
from covtransfer.plans import Configuration, Plans

FORMAT = "covtransfer-checkpoint"
VERSION = 2
REQUIRED = ("network", "state_dict", "plans", "configuration_name")


@dataclass
class Checkpoint:
    """A trained network and its run. ``heads`` maps each head (task) to its number of classes, ``labels`` each head
    to its label names and values; the network's topology is the plans' configuration, stored once."""

    kind: str
    heads: dict[str, int]
    plans: Plans
    configuration_name: str
    state_dict: dict[str, torch.Tensor]
    labels: dict[str, dict[str, int]]
    predict_head: str
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    strategy: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    ema: float | None = None
    best_ema: float = -1.0
    optimizer: dict | None = None
    grad_scaler: dict | None = None
    rng: dict | None = None

    def __post_init__(self) -> None:
        self.validate()

    @property
    def configuration(self) -> Configuration:
        return self.plans.configuration(self.configuration_name)

    @property
    def num_input_channels(self) -> int:
        return self.plans.num_input_channels

    @property
    def network_spec(self) -> dict:
        """What :func:`covtransfer.network.build.build_from_spec` needs to rebuild the network."""
        return {"kind": self.kind, "num_input_channels": self.num_input_channels, "heads": dict(self.heads),
                "configuration": self.configuration.to_dict()}

    def label_values(self, head: str | None = None) -> list[int]:
        """Label value of each class index of ``head`` (default: the predict head): its sorted label values, or
        0..K-1 when they do not number K (the head's classes)."""
        head = head or self.predict_head
        values = sorted(set(int(v) for v in self.labels[head].values()))
        return values if len(values) == self.heads[head] else list(range(self.heads[head]))

    def validate(self) -> None:
        """Raise :class:`CovtransferError` (without a file name) for anything inconsistent."""
        if self.kind not in NETWORKS:
            raise CovtransferError(f"unknown network kind {self.kind!r} (known: {', '.join(NETWORKS)})")
        if not self.heads or any(not isinstance(n, int) or n < 2 for n in self.heads.values()):
            raise CovtransferError(f"heads {self.heads} must name at least one head with 2 or more classes")
        if self.predict_head not in self.heads:
            raise CovtransferError(f"predict head {self.predict_head!r} is not one of the network's heads "
                                   f"({', '.join(self.heads)})")
        self.configuration  # raises for a configuration the plans lack
        if self.predict_head not in self.labels:
            raise CovtransferError(f"no labels for the predict head {self.predict_head!r}")
        if any(a not in (0, 1, 2) for a in self.mirror_axes):
            raise CovtransferError(f"mirror axes {list(self.mirror_axes)} must be among 0, 1, 2")
        if not all(isinstance(v, torch.Tensor) for v in self.state_dict.values()):
            raise CovtransferError("state_dict holds something other than tensors")

    def to_dict(self) -> dict:
        """The file's content: plain containers and tensors only."""
        return {"format": FORMAT, "version": VERSION,
                "network": {"kind": self.kind, "heads": dict(self.heads)},
                "plans": self.plans.to_dict(), "configuration_name": self.configuration_name,
                "labels": {head: dict(labels) for head, labels in self.labels.items()},
                "predict_head": self.predict_head, "mirror_axes": list(self.mirror_axes),
                "strategy": dict(self.strategy), "settings": dict(self.settings), "state_dict": self.state_dict,
                "epoch": self.epoch, "history": self.history, "ema": self.ema, "best_ema": self.best_ema,
                "optimizer": self.optimizer, "grad_scaler": self.grad_scaler, "rng": self.rng}

    @classmethod
    def from_dict(cls, data: object) -> "Checkpoint":
        """Read a file's content (version 2, or version 1 converted); a one-line error for anything else."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CovtransferError("not a covtransfer checkpoint")
        version = data.get("version")
        if version == 1:
            data = upgrade_v1(data)
        elif version != VERSION:
            raise CovtransferError(f"checkpoint format version {version!r} is not readable by this covtransfer "
                                   f"(it reads versions 1 and {VERSION}); update covtransfer")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise CovtransferError(f"checkpoint lacks {', '.join(missing)}")
        try:
            plans = Plans.from_dict(data["plans"])
            network = data["network"]
            return cls(kind=str(network["kind"]), heads={str(k): int(v) for k, v in network["heads"].items()},
                       plans=plans, configuration_name=str(data["configuration_name"]),
                       state_dict=dict(data["state_dict"]),
                       labels={str(h): {str(k): int(v) for k, v in labels.items()}
                               for h, labels in data["labels"].items()},
                       predict_head=str(data["predict_head"]),
                       mirror_axes=tuple(int(a) for a in data.get("mirror_axes", ())),
                       strategy=dict(data.get("strategy") or {}), settings=dict(data.get("settings") or {}),
                       epoch=int(data.get("epoch", 0)), history=list(data.get("history") or []),
                       ema=data.get("ema"), best_ema=float(data.get("best_ema", -1.0)),
                       optimizer=data.get("optimizer"), grad_scaler=data.get("grad_scaler"), rng=data.get("rng"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CovtransferError(f"checkpoint has an invalid entry ({type(exc).__name__}: {exc})") from None


def upgrade_v1(data: dict) -> dict:
    """Version 1's layout in version 2's: the network spec loses its copy of the plans' configuration (refused when
    the two differ), labels are keyed by head, ``dataset_name``/``tasks``/``label_names`` go."""
    try:
        plans = Plans.from_dict(data["plans"])
        name, network = data["configuration_name"], data["network"]
        configuration = plans.configuration(name).to_dict()
    except (KeyError, TypeError, AttributeError) as exc:
        raise CovtransferError(f"version-1 checkpoint lacks or has invalid {exc} and cannot be converted") from None
    if network.get("configuration") != configuration or network.get("num_input_channels") != plans.num_input_channels:
        raise CovtransferError("version-1 checkpoint's network differs from its own plans and cannot be converted")
    head = data.get("predict_head") or next(iter(network["heads"]))
    labels = data.get("label_names") or {head: data.get("labels") or plans.labels}
    strategy = data.get("strategy")
    upgraded = {k: v for k, v in data.items() if k not in ("dataset_name", "tasks", "label_names")}
    upgraded.update(version=VERSION, network={"kind": network["kind"], "heads": network["heads"]}, labels=labels,
                    predict_head=head, strategy={"name": strategy} if isinstance(strategy, str) else strategy)
    return upgraded
