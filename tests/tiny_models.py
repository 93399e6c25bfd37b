"""Tiny configurations, plans, checkpoints and input cases for the network, inference and command tests:
two-stage networks on 8×16×16 patches, random bodies with a zero border, and a pointwise threshold model whose
output is known exactly."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from covtransfer.data.image_io import Geometry, write_image
from covtransfer.inference.model_loading import LoadedModel
from covtransfer.network.build import build_network
from covtransfer.network.checkpoint import Checkpoint
from covtransfer.network.checkpoint_io import save_checkpoint as write_checkpoint
from covtransfer.plans import ChannelNormalization, Configuration, Plans


def make_configuration(features=(4, 8, 16), kernels=None, strides=None, patch=(16, 32, 32), n_conv=2,
                       n_conv_decoder=2) -> Configuration:
    """A one-channel configuration at 1 mm of the given stage features, kernels, strides and patch."""
    n = len(features)
    kernels = kernels or [[3, 3, 3]] * n
    strides = strides or [[1, 1, 1]] + [[2, 2, 2]] * (n - 1)
    return Configuration(name="tiny", spacing=[1.0, 1.0, 1.0], patch_size=list(patch), batch_size=2,
                         features_per_stage=list(features), kernel_sizes=[list(k) for k in kernels],
                         strides=[list(s) for s in strides], median_image_size=list(patch), n_conv_per_stage=n_conv,
                         n_conv_per_stage_decoder=n_conv_decoder)


ISOTROPIC = make_configuration()
ANISOTROPIC = make_configuration(kernels=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])


def patch_input(configuration: Configuration, batch: int = 2, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal batch of the configuration's patch size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *configuration.patch_size, generator=generator)


FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def make_plans(spacing=(2.0, 1.0, 1.0), transpose=(0, 1, 2), channels=1, patch=(8, 16, 16),
               features=(4, 8)) -> Plans:
    n = len(features)
    configuration = Configuration(
        name="3d_fullres", spacing=list(spacing), patch_size=list(patch), batch_size=2,
        features_per_stage=list(features), kernel_sizes=[[3, 3, 3]] * n, strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        median_image_size=list(patch), normalization=[ChannelNormalization("none")] * channels,
        data_identifier="3d_fullres")
    backward = [int(a) for a in np.argsort(transpose)]
    return Plans(dataset_name="Dataset001_Test", channel_names={str(c): "CT" for c in range(channels)},
                 labels={"background": 0, "lesion": 1}, transpose_forward=list(transpose),
                 transpose_backward=backward, original_median_spacing=list(spacing),
                 original_median_shape=[16, 24, 24], configurations={"3d_fullres": configuration})


def make_checkpoint(plans: Plans, seed: int = 0, mirror_axes=(0, 1, 2)) -> Checkpoint:
    torch.manual_seed(seed)
    heads = {"Dataset001_Test": 2}
    network = build_network(plans.configuration("3d_fullres"), plans.num_input_channels, heads,
                            deep_supervision=False)
    return Checkpoint("unet", heads, plans, "3d_fullres", network.state_dict(), {"Dataset001_Test": dict(plans.labels)},
                      "Dataset001_Test", tuple(mirror_axes), {"name": "scratch"}, epoch=1)


def save_checkpoint(folder: Path, plans: Plans, seed: int = 0, name: str = "checkpoint_final.pt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_checkpoint(folder / name, make_checkpoint(plans, seed))
    return folder / name


def body_image(shape=(10, 20, 18), seed: int = 0) -> np.ndarray:
    """A random 'body' with a zero border so cropping removes a margin on every axis."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, dtype=np.float32)
    image[2:-1, 3:-2, 1:-4] = rng.normal(0, 1, (shape[0] - 3, shape[1] - 5, shape[2] - 5)) + 0.1
    return image


class Threshold(nn.Module):
    """Pointwise model: class 1 wherever the first channel exceeds 0 (mirror-equivariant, window-independent)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x, task=None):
        return torch.cat([torch.zeros_like(x[:, :1]), self.scale * x[:, :1]], dim=1)


def pointwise_model(plans: Plans, source: Path = Path("none/checkpoint_final.pt")) -> LoadedModel:
    checkpoint = Checkpoint("unet", {"t": 2}, plans, "3d_fullres", {}, {"t": {"background": 0, "lesion": 1}}, "t",
                            (0, 1, 2))
    return LoadedModel(Threshold(), checkpoint, source)


def write_case(folder: Path, case: str, channels: int = 1, ending: str = ".nii.gz", shape=(10, 20, 18),
               geometry: Geometry | None = None) -> list[Path]:
    geometry = geometry or Geometry((1.5, 0.8, 0.9))
    paths = []
    for channel in range(channels):
        path = folder / f"{case}_{channel:04d}{ending}"
        write_image(path, body_image(shape, seed=channel), geometry)
        paths.append(path)
    return paths
