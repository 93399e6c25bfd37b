"""Final validation of a fold: sliding-window prediction of its validation cases, exported onto the original image
grid (``validation/<case><ending>``) and scored against ``gt_segmentations`` with the evaluation metrics.

A progress bar counts the cases and names each one's sliding windows and passes per window, since on a CPU a
case can take minutes; mirroring follows ``TrainingSettings.validation_tta`` (``--val-mirroring``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from covtransfer.data.dataset_json import load_dataset_json
from covtransfer.evaluation.evaluate import evaluate_case, format_table, summarise, write_summary
from covtransfer.inference.export import save_segmentation, segmentation_to_original
from covtransfer.inference.predictor import predict_preprocessed
from covtransfer.inference.sliding_window import mirror_subsets, window_starts
from covtransfer.network.build import unwrap_network
from covtransfer.preprocessing.storage import load_case
from covtransfer.training.trainer import Trainer, TrainingTask

STEP = 0.5  # the sliding-window step of predict_preprocessed's default


def window_count(shape: Sequence[int], patch_size: Sequence[int], step: float = STEP) -> int:
    """How many sliding windows cover a volume of ``shape`` (spatial axes)."""
    return math.prod(len(window_starts(int(s), int(p), step)) for s, p in zip(shape, patch_size))


def validate_fold(trainer: Trainer, task: TrainingTask, output_folder: Path, tolerance_mm: float = 3.0) -> dict:
    """Predict every validation case of ``task`` with the trained network and write ``summary.json``."""
    network = unwrap_network(trainer.model)
    data_folder = task.preprocessed_folder / trainer.configuration.data_identifier
    ending = load_dataset_json(task.preprocessed_folder).file_ending
    labels = sorted(v for v in task.plans.labels.values() if v > 0)
    mirroring = trainer.validation_mirroring
    passes = len(mirror_subsets((0, 1, 2) if mirroring else ()))
    trainer.log_line(f"final validation of {len(task.val_ids)} {task.name} case(s), mirroring "
                     f"{'on' if mirroring else 'off'} ({passes} pass{'es' if passes > 1 else ''} per window)")
    rows = []
    with tqdm(task.val_ids, desc=f"validating {task.name}", unit="case") as bar:
        for case_id in bar:
            data, _, properties = load_case(data_folder, case_id)
            windows = window_count(data.shape[1:], trainer.configuration.patch_size)
            bar.set_postfix_str(f"{case_id}: {windows} window{'s' if windows > 1 else ''} x {passes}")
            logits = predict_preprocessed(network, data, trainer.configuration, task=task.name,
                                          device=trainer.device, tta=mirroring, step=STEP,
                                          num_classes=task.num_classes)
            seg = segmentation_to_original(logits, properties, task.plans, trainer.configuration_name)
            prediction = output_folder / f"{case_id}{ending}"
            save_segmentation(prediction, seg, properties)
            reference = task.preprocessed_folder / "gt_segmentations" / f"{case_id}{ending}"
            rows += evaluate_case(case_id, reference, prediction, labels, tolerance_mm)[0]
    summary = {"tolerance_mm": tolerance_mm, **summarise(rows, labels), "per_case": rows}
    write_summary(summary, output_folder / "summary.json")
    trainer.log_line("validation of the fold's cases:\n" + format_table(summary))
    return summary
