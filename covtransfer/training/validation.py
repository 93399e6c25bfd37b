"""Final validation of a fold: sliding-window prediction of its validation cases, exported onto the original image
grid (``validation/<case>.nii.gz``) and scored against ``gt_segmentations`` with the evaluation metrics.
"""

from __future__ import annotations

from pathlib import Path

import torch

from covtransfer.data.dataset_json import load_dataset_json
from covtransfer.data.image_io import Geometry, write_image
from covtransfer.evaluation.evaluate import evaluate_case, format_table, summarise, write_summary
from covtransfer.inference.export import segmentation_to_original
from covtransfer.inference.predictor import predict_logits
from covtransfer.preprocessing.storage import load_case
from covtransfer.training.trainer import Trainer, TrainingTask, unwrap


def validate_fold(trainer: Trainer, task: TrainingTask, output_folder: Path, tolerance_mm: float = 3.0) -> dict:
    """Predict every validation case of ``task`` with the trained network and write ``summary.json``."""
    network = unwrap(trainer.model)
    network.deep_supervision = False
    network.eval()
    configuration = trainer.configuration
    data_folder = task.preprocessed_folder / configuration.data_identifier
    ending = load_dataset_json(task.preprocessed_folder).file_ending
    output_folder.mkdir(parents=True, exist_ok=True)
    labels = sorted(v for v in task.plans.labels.values() if v > 0)
    rows = []
    for case_id in task.val_ids:
        data, _, properties = load_case(data_folder, case_id)
        logits = predict_logits(network, torch.from_numpy(data).to(trainer.device), configuration.patch_size,
                                task.num_classes, task=task.name, mirror_axes=(0, 1, 2) if
                                trainer.settings.validation_tta else ())
        seg = segmentation_to_original(torch.softmax(logits, 0), properties, task.plans, trainer.configuration_name)
        prediction = output_folder / f"{case_id}{ending}"
        write_image(prediction, seg, Geometry.from_dict(properties["geometry"]))
        reference = task.preprocessed_folder / "gt_segmentations" / f"{case_id}{ending}"
        rows += evaluate_case(case_id, reference, prediction, labels, tolerance_mm)[0]
    network.deep_supervision = True
    summary = {"tolerance_mm": tolerance_mm, **summarise(rows, labels), "per_case": rows}
    write_summary(summary, output_folder / "summary.json")
    trainer._log("validation of the fold's cases:\n" + format_table(summary))
    return summary
