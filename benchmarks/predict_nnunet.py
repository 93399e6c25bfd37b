"""nnU-Net v2's side of ``predict.py``: a model folder of the benchmark's topology with random weights, and the
command that runs nnU-Net's prediction on it. Runs under the interpreter that imports nnunetv2 only through
subprocesses, so this module imports nothing of nnU-Net itself."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

# nnU-Net's default resampling entries of a configuration (cubic images, linear labels, z apart when anisotropic)
NNUNET_RESAMPLING = {
    "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
    "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
    "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
    "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
    "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}}

NNUNET_SETUP = r'''
import json, sys, torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
plans, dataset, folder = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
arch = plans["configurations"]["3d_fullres"]["architecture"]
torch.manual_seed(0)
net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 2,
                             deep_supervision=False)
torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 1,
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset}},
           folder + "/fold_0/checkpoint_final.pth")
'''


def nnunet_model_folder(folder: Path, python: Path, topology: str, spec: dict, spacing: list[float], ct: dict,
                        task: str) -> Path:
    """An nnU-Net v2 model folder with topology ``spec`` (patch, features, strides), CT normalisation ``ct`` and
    random weights, built by ``python``, which imports nnunetv2."""
    model = folder / f"nnunet_model_{topology}"
    (model / "fold_0").mkdir(parents=True, exist_ok=True)
    n = len(spec["features"])
    plans = {
        "dataset_name": task, "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
        "original_median_spacing_after_transp": spacing, "original_median_shape_after_transp": [176, 335, 335],
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 2000.0, "mean": ct["mean"], "median": ct["mean"], "min": -1024.0,
            "percentile_00_5": ct["lower"], "percentile_99_5": ct["upper"], "std": ct["std"]}},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": spec["patch"], "median_image_size_in_voxels": [176, 335, 335],
            "spacing": spacing, "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            **NNUNET_RESAMPLING, "batch_dice": False,
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": n, "features_per_stage": spec["features"], "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3]] * n, "strides": spec["strides"], "n_conv_per_stage": [2] * n,
                    "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 1,
               "file_ending": ".nii.gz"}
    (model / "plans.json").write_text(json.dumps(plans, indent=1))
    (model / "dataset.json").write_text(json.dumps(dataset, indent=1))
    script = folder / "nnunet_setup.py"
    script.write_text(NNUNET_SETUP)
    subprocess.run([str(python), str(script), str(model / "plans.json"),
                    str(model / "dataset.json"), str(model)], check=True)
    return model


# nnU-Net's console script, for an interpreter that imports nnunetv2 but has no scripts installed (a .sitepack)
NNUNET_PREDICT = ("import sys; from nnunetv2.inference.predict_from_raw_data import predict_entry_point_modelfolder "
                  "as f; sys.argv[0] = 'nnUNetv2_predict_from_modelfolder'; sys.exit(f())")


def nnunet_predict_command(venv: Path | None, python: Path | None) -> list[str] | None:
    """How to start nnU-Net's prediction: the venv's console script, else ``python -c``; None if neither is there."""
    if python is not None:
        return [str(python), "-c", NNUNET_PREDICT]
    if venv is not None and (venv / "bin" / "nnUNetv2_predict_from_modelfolder").exists():
        return [str(venv / "bin" / "nnUNetv2_predict_from_modelfolder")]
    return None


def nnunet_run(predict: list[str], images: Path, model: Path, output: Path, device: str,
               tta: bool) -> tuple[list[str], dict]:
    """The command line and environment of one nnU-Net prediction of ``images`` into ``output``."""
    command = predict + ["-i", str(images), "-o", str(output),
                         "-m", str(model), "-f", "0", "-device", device] + ([] if tta else ["--disable_tta"])
    env = dict(os.environ, nnUNet_raw=str(output), nnUNet_preprocessed=str(output), nnUNet_results=str(output))
    return command, env
