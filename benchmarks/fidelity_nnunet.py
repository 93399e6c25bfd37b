"""nnU-Net's side of ``benchmarks/fidelity.py``; runs inside a separate virtual environment with nnunetv2 2.8.1.

``python fidelity_nnunet.py INPUTS OUT`` reads what ``fidelity.py`` wrote to INPUTS (``.npz``: settings, label
volumes with their class locations, loss batches, a blob and zooms) and writes to OUT (``.npz``) what nnU-Net makes
of them:

- per-sample augmentation draws from the transforms ``nnUNetTrainer.get_training_transforms`` returns (each
  ``RandomTransform``'s coin, then, when it comes up, the inner transform's ``get_parameters``);
- the initial patch size of ``configure_rotation_dummyDA_mirroring_and_inital_patch_size``;
- random and forced patch starts from its data loader's ``get_bbox``;
- the initial deep-supervised DC_and_CE loss (``_build_loss``) of its network, heads at zero bias and at a prior;
- its low-resolution simulation of the blob at every zoom.

nnU-Net's trainer and loader are made with ``object.__new__`` and only the attributes these methods read.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import torch
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

AXES = ("z", "y", "x")
NAMES = {GaussianNoiseTransform: "noise", GaussianBlurTransform: "blur",
         MultiplicativeBrightnessTransform: "brightness", ContrastTransform: "contrast",
         SimulateLowResolutionTransform: "lowres"}


def make_trainer(settings: dict) -> nnUNetTrainer:
    """An nnUNetTrainer holding only what the transform, patch-size and loss methods read."""
    trainer = object.__new__(nnUNetTrainer)
    trainer.configuration_manager = SimpleNamespace(patch_size=list(settings["patch"]), batch_dice=False,
                                                    pool_op_kernel_sizes=settings["network"]["strides"])
    trainer.label_manager = SimpleNamespace(has_regions=False, ignore_label=None)
    trainer.is_ddp = False
    trainer.enable_deep_supervision = True
    trainer._do_i_compile = lambda: False
    trainer.print_to_log_file = lambda *args, **kwargs: None
    return trainer


def euler_angles(affine: np.ndarray) -> tuple[list[float], float]:
    """Angles (about axes 0, 1, 2) and the common scale of ``create_affine_matrix_3d``'s ``Rz Ry Rx S``, or of
    ``create_affine_matrix_2d``'s in-plane ``R S`` (dummy 2D: a rotation about axis 0 alone)."""
    scale = float(np.linalg.norm(affine[:, 0]))
    r = affine / scale
    if r.shape == (2, 2):
        return [math.atan2(r[1, 0], r[0, 0]), 0.0, 0.0], scale
    return [math.atan2(r[2, 1], r[2, 2]), -math.asin(max(-1.0, min(1.0, r[2, 0]))), math.atan2(r[1, 0], r[0, 0])], scale


class Recorder:
    """Per-sample events (``rate/...``) and drawn values (``value/...``), gathered over draws."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.rates: dict[str, list[bool]] = defaultdict(list)
        self.values: dict[str, list[float]] = defaultdict(list)

    def channels_hit(self, name: str, chosen: list[int]) -> None:
        """A sample's chosen channels: whether any was chosen, and each channel's choice."""
        mask = [c in chosen for c in range(self.channels)]
        self.rates[name].append(any(mask))
        self.rates[f"{name}_channel"].extend(mask)

    def arrays(self) -> dict[str, np.ndarray]:
        return {**{f"rate/{k}": np.asarray(v, bool) for k, v in self.rates.items()},
                **{f"value/{k}": np.asarray(v, np.float64) for k, v in self.values.items()}}


def record_inner(recorder: Recorder, inner, params: dict | None) -> None:
    """One RandomTransform's inner parameters (None: its coin did not come up)."""
    if isinstance(inner, GammaTransform):
        name = "gamma_inverted" if inner.p_invert_image == 1 else "gamma"
    else:
        name = NAMES[type(inner)]
    if params is None:
        recorder.channels_hit(name, [])
        return
    if isinstance(inner, GaussianNoiseTransform):
        recorder.channels_hit(name, params["apply_idx"].tolist())
        if params["num_apply"]:
            recorder.values[name].append(float(params["sigmas"]))
    elif isinstance(inner, GaussianBlurTransform):
        recorder.channels_hit(name, np.flatnonzero(params["apply_to_channel"].numpy()).tolist())
        recorder.values[name].extend(float(s) for sigmas in params["sigmas"] for s in sigmas)
    elif isinstance(inner, (MultiplicativeBrightnessTransform, ContrastTransform)):
        recorder.channels_hit(name, params["apply_to_channel"].tolist())
        if params["multipliers"] is not None:
            recorder.values[name].extend(params["multipliers"].tolist())
    elif isinstance(inner, SimulateLowResolutionTransform):
        recorder.channels_hit(name, params["apply_to_channel"].tolist())
        recorder.values[name].extend(float(s[-1]) for s in params["scales"])  # dummy 2D: z (axis 0) stays 1
    elif isinstance(inner, GammaTransform):
        recorder.channels_hit(name, params["apply_to_channel"].tolist())
        if params["gamma"] is not None:
            recorder.values[name].extend(params["gamma"].tolist())
            recorder.rates[f"{name}_invert"].extend(params["invert_image"].tolist())
            recorder.rates[f"{name}_retain_stats"].extend(params["retain_stats"].tolist())


def record_spatial(recorder: Recorder, params: dict) -> None:
    """Rotation and scaling of one sample, recovered from the affine matrix nnU-Net drew."""
    affine = params["affine"]
    angles, scale = euler_angles(affine) if affine is not None else ([0.0] * 3, 1.0)
    rotated = any(abs(a) > 1e-9 for a in angles)
    recorder.rates["rotation"].append(rotated)
    recorder.rates["scaling"].append(abs(scale - 1) > 1e-9)
    if rotated:
        for axis, angle in zip(AXES, angles):
            recorder.values[f"rotation_{axis}"].append(angle)
    if abs(scale - 1) > 1e-9:
        recorder.values["scaling"].append(scale)


def augmentation_draws(transforms, settings: dict) -> dict[str, np.ndarray]:
    """``settings['draws']`` samples through every random transform of nnU-Net's training pipeline."""
    recorder = Recorder(settings["channels"])
    image = torch.zeros((settings["channels"], *settings["initial_patch"]))
    # dummy 2D: the spatial transform sees the z slices as channels of a 2D image
    spatial_input = image.flatten(0, 1) if any(isinstance(t, Convert3DTo2DTransform) for t in transforms) else image
    for _ in range(settings["draws"]):
        for transform in transforms:
            if isinstance(transform, SpatialTransform):
                record_spatial(recorder, transform.get_parameters(image=spatial_input))
            elif isinstance(transform, RandomTransform):
                applied = transform.get_parameters(image=image)["apply_transform"]
                inner = transform.transform
                record_inner(recorder, inner, inner.get_parameters(image=image) if applied else None)
            elif isinstance(transform, MirrorTransform):
                flipped = transform.get_parameters(image=image)["axes"]
                for axis, name in enumerate(AXES):
                    recorder.rates[f"mirror_{name}"].append(axis in flipped)
    return recorder.arrays()


def patch_starts(inputs, settings: dict, initial: list[int]) -> dict[str, np.ndarray]:
    """Random and forced lower corners from ``nnUNetDataLoader.get_bbox`` for each case."""
    loader = object.__new__(nnUNetDataLoader)
    loader.patch_size = list(initial)
    loader.need_to_pad = (np.asarray(initial) - np.asarray(settings["patch"])).astype(int)
    loader.has_ignore = False
    loader.annotated_classes_key = tuple([-1] + settings["labels"])
    out = {}
    for case in settings["cases"]:
        shape = inputs[f"label/{case}"].shape
        locations = {int(k.rsplit("/", 1)[1]): np.pad(inputs[k], ((0, 0), (1, 0)))
                     for k in inputs.files if k.startswith(f"locations/{case}/")}
        for mode, forced in (("random", False), ("forced", True)):
            np.random.seed(settings["seed"])
            out[f"starts/{case}/{mode}"] = np.asarray([loader.get_bbox(shape, forced, locations)[0]
                                                       for _ in range(settings["patches"])])
    return out


def initial_losses(inputs, settings: dict, trainer: nnUNetTrainer) -> dict[str, np.ndarray]:
    """Per seed and head initialisation, ``_build_loss``'s loss + 1 (CE + 1 - Dice) of a fresh network."""
    net = settings["network"]
    stages = len(net["features"])
    kwargs = {"n_stages": stages, "features_per_stage": net["features"],
              "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": net["kernels"], "strides": net["strides"],
              "n_conv_per_stage": [2] * stages, "n_conv_per_stage_decoder": [2] * (stages - 1),
              "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
              "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
              "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    imports = ("conv_op", "norm_op", "dropout_op", "nonlin")
    loss = trainer._build_loss()
    downsample = DownsampleSegForDSTransform(trainer._get_deep_supervision_scales())
    prior_bias = math.log(settings["prior"] / (1 - settings["prior"]))
    out = {}
    for init in ("prior", "zero"):
        losses = []
        for index, seed in enumerate(settings["loss_seeds"]):
            torch.manual_seed(seed)
            network = get_network_from_plans("dynamic_network_architectures.architectures.unet.PlainConvUNet", kwargs,
                                             imports, 1, 2, allow_init=True, deep_supervision=True)
            if init == "prior":
                with torch.no_grad():
                    for layer in network.decoder.seg_layers:
                        layer.bias[1:] = prior_bias
            seg = torch.from_numpy(inputs["loss_seg"][index]).float()
            levels = zip(*(downsample._apply_to_segmentation(sample) for sample in seg))
            with torch.no_grad():
                outputs = network(torch.from_numpy(inputs["loss_images"][index]))
                losses.append(float(loss(outputs, [torch.stack(level) for level in levels])) + 1)
        out[f"loss/{init}"] = np.asarray(losses)
    return out


def lowres_volumes(inputs, transforms) -> np.ndarray:
    """The blob after nnU-Net's SimulateLowResolutionTransform at each zoom (same zoom on every axis)."""
    lowres = next(t.transform for t in transforms
                  if isinstance(t, RandomTransform) and isinstance(t.transform, SimulateLowResolutionTransform))
    blob = torch.from_numpy(inputs["blob"])[None]
    return np.stack([lowres._apply_to_image(blob.clone(), apply_to_channel=[0],
                                            scales=torch.tensor([[float(zoom)] * 3]))[0].numpy()
                     for zoom in inputs["zooms"]])


def main(inputs_path: str, out_path: str) -> None:
    inputs = np.load(inputs_path)
    settings = json.loads(str(inputs["settings"]))
    torch.manual_seed(settings["seed"])
    np.random.seed(settings["seed"])
    trainer = make_trainer(settings)
    rotation, dummy_2d, initial, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    initial = [int(i) for i in initial]
    transforms = nnUNetTrainer.get_training_transforms(
        settings["patch"], rotation, trainer._get_deep_supervision_scales(), mirror_axes, dummy_2d).transforms
    results = {"initial_patch": np.asarray(initial), "dummy_2d": np.asarray(bool(dummy_2d)), **augmentation_draws(transforms, {**settings,
                                                                                      "initial_patch": initial})}
    results.update(patch_starts(inputs, settings, initial))
    results.update(initial_losses(inputs, settings, trainer))
    results["lowres"] = lowres_volumes(inputs, transforms)
    with open(out_path, "wb") as handle:
        np.savez(handle, **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
