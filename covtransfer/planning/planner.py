"""The experiment planner: from a fingerprint to typed :class:`~covtransfer.plans.Plans`.

``3d_fullres`` follows nnU-Net's default planner: target spacing and transpose, an initial patch of 256^3 voxels
shaped like ``1 / spacing`` and clipped to the median image, then the patch shrinks along the axis that most
exceeds the median image until the activation estimate fits the memory budget, the topology being re-derived at
every step. ``3d_lowres`` is added when the fullres patch covers under 25 % of the median image. The ``cpu``
preset runs the same rules with small constants, for a network that trains on two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from covtransfer.data.dataset_json import DatasetInfo
from covtransfer.errors import CovtransferError
from covtransfer.planning.memory import feature_map_units
from covtransfer.planning.spacing import median_resampled_shape, target_spacing, transpose_axes
from covtransfer.planning.topology import Topology, features_per_stage, initial_patch_size, pool_and_conv_props
from covtransfer.plans import ChannelNormalization, Configuration, Plans, ResamplingSettings

LOWRES_CREATION_THRESHOLD = 0.25
LOWRES_SPACING_STEP = 1.03
LOWRES_MIN_REDUCTION = 2.0


@dataclass(frozen=True)
class PlannerSettings:
    """The constants of one planning preset.

    ``reference_units`` feature-map units (see :mod:`covtransfer.planning.memory`) fit ``reference_batch`` samples
    in ``reference_gb`` of GPU memory; the budget scales with ``gpu_memory_gb / reference_gb``, or is fixed when
    ``reference_gb`` is None.
    """

    base_features: int = 32
    max_features: int = 320
    max_stages: int | None = None
    min_edge: int = 4
    initial_patch_edge: int = 256
    reference_units: float = 560e6
    reference_batch: int = 2
    reference_gb: float | None = 8.0
    min_batch: int = 2
    max_batch: int | None = None
    max_dataset_covered: float = 0.05
    n_conv_encoder: int = 2
    n_conv_decoder: int = 2
    plan_lowres: bool = True

    def budget(self, gpu_memory_gb: float) -> float:
        """Feature-map units available for ``reference_batch`` samples."""
        if self.reference_gb is None:
            return self.reference_units
        return self.reference_units * gpu_memory_gb / self.reference_gb


PRESETS = {
    "default": PlannerSettings(),
    # 4.5e6 units (the 8 GB reference is 560e6), 8 to 64 features, at most 5 stages and batch 2: patches of 50-80k
    # voxels whose training step takes about 0.2-0.3 s on two CPU cores. The GPU memory budget does not apply.
    "cpu": PlannerSettings(base_features=8, max_features=64, max_stages=5, reference_units=4.5e6, reference_gb=None,
                           max_batch=2, plan_lowres=False),
    # the cpu preset at 2.5e6 units: patches of about 25-40k voxels, a step of about 0.1 s on two CPU cores (the
    # CPU demo's preset: 2.5 times cheaper than ``cpu`` on its synthetic target, 20 x 40 x 48 against 24 x 56 x 56)
    "cpu-small": PlannerSettings(base_features=8, max_features=64, max_stages=5, reference_units=2.5e6,
                                 reference_gb=None, max_batch=2, plan_lowres=False),
}


def preset_settings(preset: str | None) -> PlannerSettings:
    """The settings of a named preset (None means ``default``)."""
    name = preset or "default"
    if name not in PRESETS:
        raise CovtransferError(f"unknown planning preset {name!r} (known: {', '.join(PRESETS)})")
    return PRESETS[name]


def channel_normalizations(info: DatasetInfo, intensity_properties: dict) -> list[ChannelNormalization]:
    """One scheme per channel from its name: ``CT`` (dataset foreground statistics), ``noNorm`` or z-score."""
    schemes = []
    for channel in range(info.num_channels):
        name = info.channel_names[channel].strip().lower()
        if channel in info.ct_channels:
            props = intensity_properties.get(str(channel))
            if props is None:
                raise CovtransferError(f"dataset {info.name}: fingerprint has no intensity statistics for channel "
                                       f"{channel}")
            schemes.append(ChannelNormalization("CT", mean=float(props["mean"]), std=float(props["std"]),
                                                lower=float(props["percentile_00_5"]),
                                                upper=float(props["percentile_99_5"])))
        elif name == "nonorm":
            schemes.append(ChannelNormalization("none"))
        else:
            schemes.append(ChannelNormalization("zscore"))
    return schemes


def _estimate(topology: Topology, num_classes: int, settings: PlannerSettings) -> int:
    features = features_per_stage(topology.n_stages, settings.base_features, settings.max_features)
    return feature_map_units(topology.patch_size, topology.strides, features, num_classes,
                             settings.n_conv_encoder, settings.n_conv_decoder)


def _topology(spacing: Sequence[float], patch: Sequence[float], settings: PlannerSettings) -> Topology:
    return pool_and_conv_props(spacing, patch, settings.min_edge, settings.max_stages)


def fit_patch(spacing: Sequence[float], median_shape: Sequence[float], num_classes: int,
              settings: PlannerSettings, budget: float) -> tuple[Topology, int]:
    """The largest patch (and its topology and estimate) whose activation estimate fits ``budget``.

    Starts from :func:`initial_patch_size` and shrinks the axis with the largest ``patch / median_shape`` ratio
    (ties: the later axis) by its divisibility step, taken after a tentative reduction so that valid sizes such as
    224 are not skipped.
    """
    topology = _topology(spacing, initial_patch_size(spacing, median_shape, settings.initial_patch_edge), settings)
    estimate = _estimate(topology, num_classes, settings)
    while estimate / settings.reference_batch * 2 > budget:
        patch = list(topology.patch_size)
        reducible = [axis for axis in range(len(patch)) if patch[axis] > settings.min_edge]
        if not reducible:
            raise CovtransferError(f"memory budget of {budget:.3g} feature-map units is too small for even a "
                                   f"{patch} patch; raise --gpu-memory-gb")
        axis = max(reducible, key=lambda a: (patch[a] / median_shape[a], a))
        tentative = list(patch)
        tentative[axis] -= topology.divisors[axis]
        patch[axis] -= _topology(spacing, tentative, settings).divisors[axis]
        topology = _topology(spacing, patch, settings)
        estimate = _estimate(topology, num_classes, settings)
    return topology, estimate


def plan_configuration(name: str, spacing: Sequence[float], median_shape: Sequence[float],
                       approximate_dataset_voxels: float, num_classes: int, settings: PlannerSettings,
                       budget: float, normalization: list[ChannelNormalization]) -> Configuration:
    """Plan one configuration at ``spacing`` (transposed) for images of ``median_shape`` (transposed, resampled)."""
    topology, estimate = fit_patch(spacing, median_shape, num_classes, settings, budget)
    batch = round(budget / estimate * settings.reference_batch)
    covered = round(approximate_dataset_voxels * settings.max_dataset_covered
                    / np.prod(topology.patch_size, dtype=np.float64))
    batch = max(min(batch, covered), settings.min_batch)
    if settings.max_batch is not None:
        batch = min(batch, settings.max_batch)
    return Configuration(
        name=name, spacing=[float(s) for s in spacing], patch_size=[int(p) for p in topology.patch_size],
        batch_size=int(batch),
        features_per_stage=features_per_stage(topology.n_stages, settings.base_features, settings.max_features),
        kernel_sizes=topology.kernel_sizes, strides=topology.strides,
        median_image_size=[int(round(m)) for m in median_shape], n_conv_per_stage=settings.n_conv_encoder,
        n_conv_per_stage_decoder=settings.n_conv_decoder, normalization=[replace(n) for n in normalization],
        resampling=ResamplingSettings(), data_identifier=name)


def plan_lowres(fullres: Configuration, median_shape: Sequence[float], num_training: int, num_classes: int,
                settings: PlannerSettings, budget: float,
                normalization: list[ChannelNormalization]) -> Configuration | None:
    """``3d_lowres`` when the fullres patch covers under 25 % of the median image, else None.

    Spacing rises in steps of 3 %, first on axes more than 2x finer than the coarsest, until the patch covers
    25 % of the (shrinking) median image; the result is dropped unless its median image has at least 2x fewer
    voxels than fullres's.
    """
    fullres_spacing = np.asarray(fullres.spacing, dtype=np.float64)
    median_shape = np.asarray(median_shape, dtype=np.float64)
    fullres_voxels = float(np.prod(median_shape))
    median_voxels = fullres_voxels
    patch_voxels = float(np.prod(fullres.patch_size, dtype=np.float64))
    spacing = fullres_spacing.copy()
    lowres = None
    while patch_voxels / median_voxels < LOWRES_CREATION_THRESHOLD:
        too_fine = spacing.max() / spacing > 2
        if too_fine.any():
            spacing[too_fine] *= LOWRES_SPACING_STEP
        else:
            spacing *= LOWRES_SPACING_STEP
        scaled = fullres_spacing / spacing * median_shape
        median_voxels = float(np.prod(scaled))
        lowres = plan_configuration("3d_lowres", spacing, [round(v) for v in scaled], median_voxels * num_training,
                                    num_classes, settings, budget, normalization)
        patch_voxels = float(np.prod(lowres.patch_size, dtype=np.float64))
    if lowres is not None and fullres_voxels / median_voxels < LOWRES_MIN_REDUCTION:
        return None
    return lowres


def plan_experiment(fingerprint: dict, info: DatasetInfo, dataset_name: str, gpu_memory_gb: float = 8.0,
                    preset: str | None = None) -> Plans:
    """Plans for ``dataset_name``: ``3d_fullres`` (and ``3d_lowres`` where nnU-Net would make one).

    ``gpu_memory_gb`` scales the activation budget of the default preset; ``preset="cpu"`` plans ``3d_fullres``
    with the small CPU constants instead (see :data:`PRESETS`).
    """
    settings = preset_settings(preset)
    if gpu_memory_gb <= 0:
        raise CovtransferError(f"GPU memory must be positive, got {gpu_memory_gb} GB")
    properties = {str(k): v for k, v in fingerprint["foreground_intensity_properties_per_channel"].items()}
    if len(properties) != info.num_channels:
        raise CovtransferError(f"dataset {dataset_name}: fingerprint has {len(properties)} channels, dataset.json "
                               f"declares {info.num_channels}; recompute the fingerprint")
    spacings, shapes = fingerprint["spacings"], fingerprint["shapes_after_crop"]
    fullres_spacing = target_spacing(spacings, shapes)
    forward, backward = transpose_axes(fullres_spacing)
    median_shape = median_resampled_shape(spacings, shapes, fullres_spacing)
    spacing_t = [fullres_spacing[a] for a in forward]
    median_t = [median_shape[a] for a in forward]
    num_training = info.num_training or len(spacings)
    num_classes = len(info.labels)
    budget = settings.budget(gpu_memory_gb)
    normalization = channel_normalizations(info, properties)

    fullres = plan_configuration("3d_fullres", spacing_t, median_t, float(np.prod(median_t)) * num_training,
                                 num_classes, settings, budget, normalization)
    configurations = {"3d_fullres": fullres}
    if settings.plan_lowres:
        lowres = plan_lowres(fullres, median_t, num_training, num_classes, settings, budget, normalization)
        if lowres is not None:
            configurations["3d_lowres"] = lowres
    # nnU-Net's rule: Dice over the whole batch for fullres when a lowres stage exists (large images, where a patch
    # is a small part of the case), per sample otherwise; lowres itself always per sample
    fullres.batch_dice = "3d_lowres" in configurations

    original_spacing = np.median(np.asarray(spacings, dtype=np.float64), axis=0)
    original_shape = np.median(np.asarray(shapes, dtype=np.float64), axis=0)
    return Plans(
        dataset_name=dataset_name,
        channel_names={str(k): v for k, v in sorted(info.channel_names.items())},
        labels=dict(info.labels), transpose_forward=forward, transpose_backward=backward,
        original_median_spacing=[float(original_spacing[a]) for a in forward],
        original_median_shape=[int(round(original_shape[a])) for a in forward],
        configurations=configurations, foreground_intensity_properties_per_channel=properties)


def plans_from(target: Plans, source_dataset_name: str, source_info: DatasetInfo) -> Plans:
    """The target's plans for a source dataset: same spacing, patch, topology, transpose and normalisation.

    Only ``dataset_name``, ``labels`` and ``plans_from`` (the target's name) change, so that a network trained on
    the source fits the target exactly. The channel counts must agree.
    """
    if source_info.num_channels != target.num_input_channels:
        raise CovtransferError(f"dataset {source_dataset_name} has {source_info.num_channels} input channel(s) but "
                               f"the plans of {target.dataset_name} expect {target.num_input_channels}; "
                               "--plans-from needs datasets with the same channels")
    copied = Plans.from_dict(target.to_dict())
    copied.dataset_name = source_dataset_name
    copied.labels = dict(source_info.labels)
    copied.plans_from = target.dataset_name
    return copied
