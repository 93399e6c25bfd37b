"""nnU-Net 2.8.1's side of ``benchmarks/learning.py``; runs inside a separate virtual environment with nnunetv2.

Never imported by covtransfer. Subcommands (all paths absolute; nnU-Net's three environment variables must be set):

- ``plan ID PLANS_JSON``: fingerprint and plan the raw dataset with nnU-Net, then replace its ``3d_fullres``
  configuration by covtransfer's (spacing, transpose, patch, batch, topology, batch Dice) and preprocess it.
- ``train ID SEED EPOCHS ITERS VAL_ITERS OUT``: train fold ``all`` with nnU-Net's own trainer, only the schedule
  shortened, on the CPU; writes the model folder under OUT and ``OUT/curve.json`` (EMA pseudo Dice per epoch).
- ``predict OUT IMAGES PREDICTIONS``: sliding-window prediction without mirroring from ``checkpoint_final.pth``.
- ``surface REFERENCES PREDICTIONS TOLERANCE JSON``: DSC and NSD of every case by DeepMind's ``surface-distance``,
  the reference covtransfer's evaluator is checked against.

The trainer class is imported directly: nnU-Net's trainer lookup imports every trainer module, and the Primus ones
need timm and torchvision, which have no CPU wheel here.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch


def _dataset_name(dataset_id: int) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name
    return convert_id_to_dataset_name(dataset_id)


def _nnunet(entry: str, *args: str) -> None:
    """Run one of nnU-Net's console entry points in a child process (its scripts read ``sys.argv``)."""
    module, function = entry.rsplit(":", 1)
    code = f"import sys; from {module} import {function} as f; sys.argv[0] = 'nnunet'; f()"
    subprocess.run([sys.executable, "-c", code, *args], check=True)


def plan(dataset_id: int, covtransfer_plans: Path) -> None:
    """nnU-Net's fingerprint and plans, with covtransfer's fullres configuration, then nnU-Net's preprocessing."""
    _nnunet("nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:extract_fingerprint_entry",
            "-d", str(dataset_id), "-np", "2")
    _nnunet("nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:plan_experiment_entry",
            "-d", str(dataset_id))
    ours = json.loads(covtransfer_plans.read_text())
    mine = ours["configurations"]["3d_fullres"]
    path = Path(os.environ["nnUNet_preprocessed"]) / _dataset_name(dataset_id) / "nnUNetPlans.json"
    plans = json.loads(path.read_text())
    plans["transpose_forward"], plans["transpose_backward"] = ours["transpose_forward"], ours["transpose_backward"]
    config = plans["configurations"]["3d_fullres"]
    n = len(mine["features_per_stage"])
    config.update(spacing=mine["spacing"], patch_size=mine["patch_size"], batch_size=mine["batch_size"],
                  batch_dice=mine.get("batch_dice", False))
    config["architecture"]["arch_kwargs"].update(
        n_stages=n, features_per_stage=mine["features_per_stage"], kernel_sizes=mine["kernel_sizes"],
        strides=mine["strides"], n_conv_per_stage=[mine["n_conv_per_stage"]] * n,
        n_conv_per_stage_decoder=[mine["n_conv_per_stage_decoder"]] * (n - 1))
    plans["configurations"] = {"3d_fullres": config}
    path.write_text(json.dumps(plans, indent=1))
    _nnunet("nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:preprocess_entry",
            "-d", str(dataset_id), "-c", "3d_fullres", "-np", "2")


def train(dataset_id: int, seed: int, epochs: int, iters: int, val_iters: int, out: Path) -> None:
    """nnU-Net's trainer on fold ``all`` with a shortened schedule; the model folder is copied to ``out``."""
    os.environ["nnUNet_results"] = str(out.parent / "nnunet_results")  # per run: seeds may train side by side
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class ShortSchedule(nnUNetTrainer):
        """nnU-Net's trainer, only the number of epochs and iterations changed."""

        def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):  # nnU-Net records its init arguments by name
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs, self.num_iterations_per_epoch = epochs, iters
            self.num_val_iterations_per_epoch = val_iters

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    name = _dataset_name(dataset_id)
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / name
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # nnU-Net's entry point passes this inside the plans
    dataset = json.loads((preprocessed / "dataset.json").read_text())
    trainer = ShortSchedule(plans, "3d_fullres", "all", dataset, device=torch.device("cpu"))
    trainer.run_training()
    out.mkdir(parents=True, exist_ok=True)
    model = Path(trainer.output_folder_base)
    for item in ("plans.json", "dataset.json"):
        shutil.copy(model / item, out / item)
    (out / "fold_all").mkdir(exist_ok=True)
    shutil.copy(Path(trainer.output_folder) / "checkpoint_final.pth", out / "fold_all" / "checkpoint_final.pth")
    logging = trainer.logger.get_checkpoint()
    curve = {"ema_dice": [float(v) for v in logging["ema_fg_dice"]],
             "val_dice": [float(v) for v in logging["mean_fg_dice"]]}
    (out / "curve.json").write_text(json.dumps(curve))


def predict(model: Path, images: Path, predictions: Path) -> None:
    """Predict a folder without mirroring (step 0.5, Gaussian weighting), as the benchmark's protocol says."""
    import nnunetv2.inference.predict_from_raw_data as inference
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    inference.recursive_find_trainer_class_by_name = lambda name: nnUNetTrainer  # the lookup needs torchvision
    nnUNetPredictor = inference.nnUNetPredictor
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), verbose=False, verbose_preprocessing=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=("all",),
                                                   checkpoint_name="checkpoint_final.pth")
    predictor.predict_from_files(str(images), str(predictions), save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)


def surface(references: Path, predictions: Path, tolerance: float, out: Path) -> None:
    """DSC and NSD per case by ``surface-distance`` (foreground label 1 against everything else)."""
    import SimpleITK as sitk
    import surface_distance
    scores = {}
    for reference in sorted(references.glob("*.nii.gz")):
        ref_image = sitk.ReadImage(str(reference))
        ref = sitk.GetArrayFromImage(ref_image) == 1
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / reference.name))) == 1
        spacing = ref_image.GetSpacing()[::-1]
        if ref.any() and pred.any():
            distances = surface_distance.compute_surface_distances(ref, pred, spacing)
            nsd = float(surface_distance.compute_surface_dice_at_tolerance(distances, tolerance))
        else:  # one mask empty: no surface to match (surface-distance itself fails here under numpy 2)
            nsd = float(ref.any() == pred.any())
        scores[reference.name[:-len(".nii.gz")]] = {
            "dice": float(surface_distance.compute_dice_coefficient(ref, pred)), "nsd": nsd}
    out.write_text(json.dumps(scores, indent=1))


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "plan":
        plan(int(args[0]), Path(args[1]))
    elif command == "train":
        train(int(args[0]), int(args[1]), int(args[2]), int(args[3]), int(args[4]), Path(args[5]))
    elif command == "predict":
        predict(Path(args[0]), Path(args[1]), Path(args[2]))
    elif command == "surface":
        surface(Path(args[0]), Path(args[1]), float(args[2]), Path(args[3]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
