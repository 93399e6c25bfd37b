"""The settings of a training run (nnU-Net's defaults): every knob, recorded in each checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from covtransfer.network.unet import DEFAULT_HEAD_INIT

AMP_MODES = ("auto", "on", "off", "bf16", "fp16")  # --amp: auto and on pick the format, bf16 and fp16 name it


@dataclass
class TrainingSettings:
    """Every knob of a run (nnU-Net defaults); recorded in the checkpoint."""

    epochs: int = 1000
    iters_per_epoch: int = 250
    val_iters: int = 50
    lr: float = 1e-2
    momentum: float = 0.99
    weight_decay: float = 3e-5
    grad_clip: float = 12.0
    poly_exponent: float = 0.9
    oversample_foreground: float = 0.33
    save_every: int = 50
    seed: int = 12345
    device: str = "auto"
    compile: bool = False
    compile_scope: str = "network"  # with compile: the whole network, or "blocks" (regional_compile.py)
    amp: str = "auto"
    num_workers: int | None = None
    source_weights: list[float] | None = None
    final_validation: bool = True
    validation_tta: str = "auto"  # mirroring in final validation: auto (on GPUs only), on or off
    head_init: str = DEFAULT_HEAD_INIT  # the heads' initial bias: "prior" or "zero" (network/unet.py)
