"""Final validation of a fold: sliding-window prediction of its validation cases, exported onto the original image
grid (``validation/<case><ending>``) and scored against ``gt_segmentations`` with the evaluation metrics.
"""

from __future__ import annotations

from pathlib import Path

from covtransfer.data.dataset_json import load_dataset_json
from covtransfer.evaluation.evaluate import evaluate_case, format_table, summarise, write_summary
from covtransfer.inference.export import save_segmentation, segmentation_to_original
from covtransfer.inference.predictor import predict_preprocessed
from covtransfer.network.build import unwrap_network
from covtransfer.preprocessing.storage import load_case
from covtransfer.training.trainer import Trainer, TrainingTask


def validate_fold(trainer: Trainer, task: TrainingTask, output_folder: Path, tolerance_mm: float = 3.0) -> dict:
    """Predict every validation case of ``task`` with the trained network and write ``summary.json``."""
    network = unwrap_network(trainer.model)
    data_folder = task.preprocessed_folder / trainer.configuration.data_identifier
    ending = load_dataset_json(task.preprocessed_folder).file_ending
    labels = sorted(v for v in task.plans.labels.values() if v > 0)
    rows = []
    for case_id in task.val_ids:
        data, _, properties = load_case(data_folder, case_id)
        probabilities = predict_preprocessed(network, data, trainer.configuration, task=task.name,
                                             device=trainer.device, tta=trainer.settings.validation_tta,
                                             num_classes=task.num_classes)
        seg = segmentation_to_original(probabilities, properties, task.plans, trainer.configuration_name)
        prediction = output_folder / f"{case_id}{ending}"
        save_segmentation(prediction, seg, properties)
        reference = task.preprocessed_folder / "gt_segmentations" / f"{case_id}{ending}"
        rows += evaluate_case(case_id, reference, prediction, labels, tolerance_mm)[0]
    summary = {"tolerance_mm": tolerance_mm, **summarise(rows, labels), "per_case": rows}
    write_summary(summary, output_folder / "summary.json")
    trainer.log_line("validation of the fold's cases:\n" + format_table(summary))
    return summary
