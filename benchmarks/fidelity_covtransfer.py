"""covtransfer's side of ``benchmarks/fidelity.py``: the same draws, patches, losses and low-resolution volumes that
``fidelity_nnunet.py`` takes from nnU-Net, taken from covtransfer's engine, under the same ``rate/...``,
``value/...``, ``starts/...``, ``loss/...`` and ``lowres`` names."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from covtransfer.network.unet import UNet
from covtransfer.plans import Configuration
from covtransfer.training.augment.base import Draws
from covtransfer.training.augment.blur import GaussianBlur
from covtransfer.training.augment.brightness import MultiplicativeBrightness
from covtransfer.training.augment.contrast import Contrast
from covtransfer.training.augment.deep_supervision import deep_supervision_scales, downsample_seg_for_ds
from covtransfer.training.augment.gamma import Gamma
from covtransfer.training.augment.lowres import SimulateLowResolution
from covtransfer.training.augment.mirror import Mirror
from covtransfer.training.augment.noise import GaussianNoise
from covtransfer.training.augment.pipeline import build_training_pipeline
from covtransfer.training.augment.spatial import SpatialTransform
from covtransfer.training.loss import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights
from covtransfer.training.sampler import PatchSampler

AXES = ("z", "y", "x")
NAMES = {GaussianNoise: "noise", GaussianBlur: "blur", MultiplicativeBrightness: "brightness", Contrast: "contrast",
         SimulateLowResolution: "lowres"}
PATCHES_PER_BATCH = 50


def _channels(out: dict[str, np.ndarray], name: str, mask: torch.Tensor) -> None:
    """(B, C) chosen channels: whether any channel of a sample was chosen, and every channel's choice."""
    out[f"rate/{name}"] = mask.any(1).numpy()
    out[f"rate/{name}_channel"] = mask.flatten().numpy()


def augmentation_draws(patch: Sequence[int], draws: int, channels: int, seed: int) -> dict[str, np.ndarray]:
    """``draws`` samples of every transform's parameters from ``build_training_pipeline(patch).sample``."""
    pipeline = build_training_pipeline(patch)
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, np.ndarray] = {}
    for transform, drawn in zip(pipeline.transforms, pipeline.sample(draws, channels, generator)):
        if isinstance(transform, SpatialTransform):
            out["rate/rotation"], out["rate/scaling"] = drawn.rotate.numpy(), drawn.zoom.numpy()
            for axis, name in enumerate(AXES):
                out[f"value/rotation_{name}"] = drawn.angles[drawn.rotate, axis].numpy()
            out["value/scaling"] = drawn.factors[drawn.zoom].numpy()
        elif isinstance(transform, Mirror):
            for column, axis in enumerate(transform.axes):
                out[f"rate/mirror_{AXES[axis]}"] = drawn[:, column].numpy()
        elif isinstance(transform, GaussianNoise):
            _channels(out, "noise", drawn.apply[:, None].expand(-1, channels))
            out["value/noise"] = drawn.stds[drawn.apply].numpy()
        elif isinstance(transform, (GaussianBlur, SimulateLowResolution)):
            _channels(out, NAMES[type(transform)], drawn.apply)
            out[f"value/{NAMES[type(transform)]}"] = drawn.values[drawn.apply].flatten().numpy()
        elif isinstance(transform, (MultiplicativeBrightness, Contrast, Gamma)):
            name = ("gamma_inverted" if transform.invert else "gamma") if isinstance(transform, Gamma) \
                else NAMES[type(transform)]
            mask = drawn.apply[:, None].expand(-1, channels)
            _channels(out, name, mask)
            out[f"value/{name}"] = drawn.values[mask].numpy()
            if isinstance(transform, Gamma):
                out[f"rate/{name}_invert"] = np.full(int(mask.sum()), transform.invert)
                out[f"rate/{name}_retain_stats"] = np.full(int(mask.sum()), transform.retain_stats)
    return out


class MemoryStore:
    """The two things :class:`PatchSampler` asks of a case store, for volumes held in memory."""

    def __init__(self, cases: dict[str, tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]]) -> None:
        self.cases = cases

    def arrays(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        return self.cases[case_id][0], self.cases[case_id][1]

    def class_locations(self, case_id: str) -> dict[int, np.ndarray]:
        return self.cases[case_id][2]


def voxel_numbers(shape: Sequence[int]) -> np.ndarray:
    """(1, Z, Y, X) float32 image whose voxel ``v`` holds ``1 + flat index of v``: a patch cut from it tells where
    it was cut (padding is 0)."""
    return (np.arange(int(np.prod(shape)), dtype=np.float32) + 1).reshape(1, *shape)


def decode_starts(patches: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(B, 3) lower corners of (B, 1, *patch) patches cut from ``voxel_numbers(shape)``."""
    flat = patches.reshape(len(patches), -1)
    first = (flat != 0).argmax(1)
    voxel = np.stack(np.unravel_index(flat[np.arange(len(flat)), first].astype(np.int64) - 1, tuple(shape)), 1)
    return voxel - np.stack(np.unravel_index(first, patches.shape[2:]), 1)


def patch_starts(cases: dict[str, tuple[np.ndarray, dict[int, np.ndarray]]], patch: Sequence[int],
                 initial: Sequence[int], count: int, seed: int) -> dict[str, np.ndarray]:
    """Random and forced lower corners of ``count`` patches per case, read back from :meth:`PatchSampler.sample`."""
    out = {}
    for case, (label, locations) in cases.items():
        store = MemoryStore({case: (voxel_numbers(label.shape), label[None], locations)})
        for mode, oversample in (("random", 0.0), ("forced", 1.0)):
            sampler = PatchSampler(store, [case], initial, patch, PATCHES_PER_BATCH, oversample)
            rng = np.random.default_rng(seed)
            starts = [decode_starts(sampler.sample(rng)[0], label.shape)
                      for _ in range(-(-count // PATCHES_PER_BATCH))]
            out[f"starts/{case}/{mode}"] = np.concatenate(starts)[:count]
    return out


def initial_losses(configuration: Configuration, images: np.ndarray, segs: np.ndarray,
                   seeds: Sequence[int]) -> dict[str, np.ndarray]:
    """Per seed, the trainer's loss (CE + 1 - Dice, deep-supervised) of a fresh network on batch ``images[i]``,
    heads at the foreground prior (the default) and at zero bias (nnU-Net's)."""
    scales = deep_supervision_scales(configuration.strides)
    out = {}
    for init in ("prior", "zero"):
        losses = []
        for index, seed in enumerate(seeds):
            torch.manual_seed(seed)
            network = UNet(configuration, 1, {"lesion": 2})
            if init == "zero":
                with torch.no_grad():
                    for heads in network.heads.values():
                        for head in heads:
                            head.bias.zero_()
            loss = DeepSupervisionLoss(DiceCELoss(batch_dice=configuration.batch_dice),
                                       deep_supervision_weights(len(scales)))
            with torch.no_grad():
                outputs = network(torch.from_numpy(images[index]))
                targets = downsample_seg_for_ds(torch.from_numpy(segs[index]).long(), scales)
                losses.append(float(loss(outputs, targets)))
        out[f"loss/{init}"] = np.asarray(losses)
    return out


def lowres_volumes(blob: np.ndarray, zooms: Sequence[float]) -> np.ndarray:
    """The blob after covtransfer's SimulateLowResolution at each zoom."""
    transform = SimulateLowResolution()
    image = torch.from_numpy(blob)[None, None]
    return np.stack([transform.apply(image, image, Draws(torch.tensor([[True]]),
                                                         torch.tensor([[float(z)]], dtype=torch.float64)))[0][0, 0]
                     .numpy() for z in zooms])

