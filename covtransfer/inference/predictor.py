"""The predictor: preprocessed volume -> sliding-window logits -> fold-averaged logits -> label map on the input
grid, for whole folders of cases.

Per case: read and preprocess with the model's plans, predict every fold (mirroring TTA over the checkpoint's axes
unless disabled), average the folds' logits, export to the input grid (logits resampled, then argmax, or softmax for
the probabilities: nnU-Net's order), optionally post-process, and write atomically. On a GPU the volume, the windows,
the accumulation and the export resampling stay on the device (bf16 autocast forward), a thread reads and
preprocesses the next case meanwhile and another writes the previous result. On a CPU cases run one after another
and intermediates are freed early so memory stays bounded.

The functions :func:`predict_logits` and :func:`predict_preprocessed` take a live ``nn.Module`` so that the trainer's
final validation can use them without a checkpoint file.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from covtransfer.atomic import atomic_path, remove_leftovers
from covtransfer.devices import resolve_device
from covtransfer.errors import CovtransferError
from covtransfer.evaluation.postprocessing import POSTPROCESSING_FILE, apply_postprocessing, load_postprocessing
from covtransfer.evaluation.quantify import refuse_raw_folder
from covtransfer.inference.case_result import CaseResult, CaseWriter
from covtransfer.inference.cpu_runtime import OpenVinoForward, use_cpu_runtime
from covtransfer.inference.dicom_seg import DicomSegWriter, check_dicom_input
from covtransfer.inference.dicom_sr import write_burden_srs
from covtransfer.inference.export import (labels_from_probabilities, probabilities_to_original, save_segmentation,
                                          segmentation_to_original)
from covtransfer.inference.inputs import InputCase, check_cases, discover_cases, input_folders
from covtransfer.inference.model_loading import LoadedModel, load_models
from covtransfer.inference.overlays import write_overlay
from covtransfer.inference.sliding_window import Forward, predict_sliding_window
from covtransfer.inference.statistics_writer import StatisticsWriter
from covtransfer.network.build import unwrap_network
from covtransfer.plans import Configuration, Plans
from covtransfer.preprocessing.preprocessor import CasePreprocessor

DEFAULT_STEP = 0.5
FAST_STEP = 1.0  # --fast: windows touch instead of overlapping by half, 8x fewer in 3-D
# voxels per forward pass (windows × patch voxels): a few windows on a GPU, about one reference patch on a CPU
_VOXELS_PER_FORWARD = {"cuda": 1 << 23, "cpu": 1 << 21}


def default_windows_per_batch(patch_size: Sequence[int], device: torch.device) -> int:
    """How many windows one forward pass takes: enough to keep the device busy, few enough to bound memory."""
    budget = _VOXELS_PER_FORWARD["cuda" if device.type == "cuda" else "cpu"]
    return int(min(16, max(1, budget // math.prod(int(p) for p in patch_size))))


def _num_classes(model: nn.Module, task: str | None) -> int:
    heads = getattr(unwrap_network(model), "heads", None)
    if heads is None:
        raise ValueError("num_classes must be given for a model without covtransfer segmentation heads")
    head_set = heads[heads.resolve_task(task)] if hasattr(heads, "resolve_task") else heads[task]
    return int(head_set[0].out_channels)


@contextlib.contextmanager
def _inference_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and deep supervision off for the duration, restored afterwards (the trainer's model is live)."""
    base = unwrap_network(model)
    was_training = model.training
    supervision = getattr(base, "deep_supervision", None)
    model.eval()
    if supervision is not None:
        base.deep_supervision = False
    try:
        yield
    finally:
        model.train(was_training)
        if supervision is not None:
            base.deep_supervision = supervision


def predict_logits(model: nn.Module, data: np.ndarray | torch.Tensor, patch_size: Sequence[int],
                   num_classes: int | None = None, task: str | None = None,
                   device: torch.device | str | None = None, mirror_axes: Sequence[int] = (),
                   step: float = 0.5, windows_per_batch: int | None = None,
                   forward: Forward | None = None) -> torch.Tensor:
    """Sliding-window logits ``(K, Z, Y, X)`` float32 of a preprocessed ``(C, Z, Y, X)`` volume, on ``device``.

    ``device`` defaults to that of the model's parameters; on CUDA the forward runs under bf16 autocast.
    ``forward`` replaces the model's own forward (e.g. an :class:`OpenVinoForward` of it on the CPU).
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    if num_classes is None:
        num_classes = _num_classes(model, task)
    volume = torch.as_tensor(data).to(device=device, dtype=torch.float32)
    if windows_per_batch is None:
        windows_per_batch = default_windows_per_batch(patch_size, device)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    with _inference_mode(model):
        return predict_sliding_window(forward or model, volume, patch_size, num_classes, step=step,
                                      mirror_axes=mirror_axes, windows_per_batch=windows_per_batch, task=task,
                                      autocast_dtype=autocast)


def _configuration_of(configuration: Configuration | dict) -> tuple[Configuration, tuple[int, ...] | None]:
    """A Configuration from a Configuration, its dict, or a checkpoint-like dict; plus the dict's mirror axes."""
    if isinstance(configuration, Configuration):
        return configuration, None
    axes = configuration.get("mirror_axes")
    axes = tuple(int(a) for a in axes) if axes is not None else None
    if "plans" in configuration and "configuration_name" in configuration:
        plans = configuration["plans"]
        plans = plans if isinstance(plans, Plans) else Plans.from_dict(plans)
        return plans.configuration(configuration["configuration_name"]), axes
    return Configuration.from_dict(configuration), axes


def predict_preprocessed(model: nn.Module, data: np.ndarray | torch.Tensor, configuration: Configuration | dict,
                         task: str | None = None, device: torch.device | str | None = None, tta: bool = True,
                         step: float = 0.5, mirror_axes: Sequence[int] | None = None,
                         num_classes: int | None = None) -> torch.Tensor:
    """Logits ``(K, Z, Y, X)`` float32 of a preprocessed volume, for the trainer's final validation.

    ``configuration`` is the plans' Configuration (its patch size is used), its dict, or a checkpoint-like dict
    (``plans`` + ``configuration_name``, optionally ``mirror_axes``). Mirroring uses ``mirror_axes`` (default: the
    dict's, else all three axes) when ``tta`` is on. Export with :func:`export.segmentation_to_original`.
    """
    config, dict_axes = _configuration_of(configuration)
    if mirror_axes is None:
        mirror_axes = dict_axes if dict_axes is not None else (0, 1, 2)
    return predict_logits(model, data, config.patch_size, num_classes, task, device,
                          tuple(mirror_axes) if tta else (), step)


def compiled_forwards(models: Sequence[LoadedModel], device: torch.device,
                      enabled: bool = True) -> list[Forward | None]:
    """Per model, an OpenVINO forward when :func:`use_cpu_runtime` says so (exported once, reused for every case),
    else None (the PyTorch network)."""
    if not use_cpu_runtime(device, enabled):
        return [None] * len(models)
    forwards: list[Forward | None] = []
    for model in models:
        with _inference_mode(model.network):
            forwards.append(OpenVinoForward(model.network, model.task, model.configuration.patch_size,
                                            model.num_input_channels))
    return forwards


def ensemble_logits(models: Sequence[LoadedModel], data: np.ndarray | torch.Tensor, device: torch.device,
                    tta: bool = True, step: float = 0.5,
                    forwards: Sequence[Forward | None] | None = None) -> torch.Tensor:
    """Mean logits of every model (fold) for one preprocessed volume, as nnU-Net ensembles folds (``forwards``: see
    :func:`compiled_forwards`)."""
    volume = torch.as_tensor(data).to(device=device, dtype=torch.float32)
    total = None
    for model, forward in zip(models, forwards or [None] * len(models)):
        logits = predict_logits(model.network, volume, model.configuration.patch_size, model.num_classes, model.task,
                                device, model.mirror_axes if tta else (), step, forward=forward)
        if total is None:
            total = logits
        else:
            total += logits
            del logits
    if len(models) > 1:
        total /= len(models)
    return total


def find_postprocessing(models: Sequence[LoadedModel]) -> dict:
    """The post-processing rules of the models: ``postprocessing.json`` in the run folder (one model) or above it."""
    folders = [models[0].run_folder] if len(models) == 1 else []
    parents = {m.run_folder.parent for m in models}
    folders += sorted(parents)
    for folder in folders:
        path = folder / POSTPROCESSING_FILE
        if path.is_file():
            return load_postprocessing(path)
    raise CovtransferError(f"{folders[-1] / POSTPROCESSING_FILE}: not found; run covtransfer_determine_postprocessing "
                           "on the validation predictions first (or leave out --postprocess)")




class Predictor:
    """Predicts cases with an ensemble of loaded models; see the module docstring for the per-case steps."""

    def __init__(self, models: Sequence[LoadedModel], device: torch.device | str = "auto", tta: bool = True,
                 step: float = DEFAULT_STEP, save_probabilities: bool = False, postprocessing: dict | None = None,
                 extra_writers: Sequence[CaseWriter] = (), cpu_runtime: bool = True):
        if not models:
            raise CovtransferError("no models to predict with")
        if not 0 < step <= 1:
            raise CovtransferError(f"--step {step}: must lie in (0, 1]")
        self.models = list(models)
        self.device = resolve_device(device)
        for model in self.models:
            model.network.to(self.device)
        self.forwards = compiled_forwards(self.models, self.device, cpu_runtime)
        self.tta = tta
        self.step = step
        self.save_probabilities = save_probabilities
        self.postprocessing = postprocessing
        self.extra_writers = list(extra_writers)
        first = self.models[0]
        self.plans, self.configuration_name = first.plans, first.configuration_name
        self.preprocessor = CasePreprocessor(first.plans, first.configuration_name)

    @property
    def num_input_channels(self) -> int:
        return self.models[0].num_input_channels

    def mirroring_note(self) -> str | None:
        """On a CPU with mirroring on, one line on what it costs and how to skip it (GPUs afford it)."""
        passes = 2 ** len(self.models[0].mirror_axes)
        if not self.tta or self.device.type != "cpu" or passes == 1:
            return None
        return (f"note: mirroring (test-time augmentation) is on: the network sees every window {passes} times, once "
                f"per flip of the {len(self.models[0].mirror_axes)} axes: about {passes}x the network time on this "
                "CPU; --no-tta skips it, --fast skips it and takes 8x fewer windows")

    def preprocess(self, case: InputCase) -> tuple[np.ndarray, dict]:
        """Read and preprocess one case's channel files."""
        data, _, properties = self.preprocessor.run_files(case.images, None, case.case_id)
        return data, properties

    def predict_volume(self, data: np.ndarray, properties: dict) -> CaseResult:
        """Label map (and probabilities when asked) on the input grid of a preprocessed case."""
        logits = ensemble_logits(self.models, data, self.device, self.tta, self.step, self.forwards)
        label_values = self.models[0].label_values
        full = None
        if self.save_probabilities:
            full = probabilities_to_original(logits, properties, self.plans, self.configuration_name)
            seg = labels_from_probabilities(full, label_values)
            full = full.to(device="cpu", dtype=torch.float16).numpy()
        else:
            seg = segmentation_to_original(logits, properties, self.plans, self.configuration_name, label_values)
        del logits
        if self.postprocessing is not None:
            seg = apply_postprocessing(seg, self.postprocessing)
        return CaseResult(seg, full, properties)

    def predict_case(self, case: InputCase) -> CaseResult:
        """Read, preprocess and predict one case."""
        return self.predict_volume(*self.preprocess(case))

    def write(self, result: CaseResult, output_folder: Path, case: InputCase) -> None:
        """Write the label map (and ``<case>.npz`` probabilities, then the extra outputs) atomically; the label map
        last, so that an existing label map means a complete case for ``--continue``."""
        if result.probabilities is not None:
            with atomic_path(output_folder / f"{case.case_id}.npz") as tmp:
                np.savez_compressed(tmp, probabilities=result.probabilities)
        for writer in self.extra_writers:
            writer(result, output_folder, case)
        save_segmentation(output_folder / case.output_name(), result.segmentation, result.properties)

    def _remove_leftovers(self, case: InputCase, output_folder: Path) -> None:
        """Delete the temporary label map and probabilities a killed earlier run left for ``case``."""
        remove_leftovers(output_folder / case.output_name())
        remove_leftovers(output_folder / f"{case.case_id}.npz")

    def _outputs_exist(self, case: InputCase, output_folder: Path) -> bool:
        done = (output_folder / case.output_name()).is_file()
        if self.save_probabilities:
            done = done and (output_folder / f"{case.case_id}.npz").is_file()
        return done

    def predict_cases(self, cases: Sequence[InputCase], output_folder: str | os.PathLike,
                      skip_existing: bool = False, progress: bool = True, allow_spacing: bool = False) -> list[Path]:
        """Predict and write every case (skipping finished ones with ``skip_existing``); returns the files written.

        A case counts as finished when its label map exists: it is renamed into place last, complete, so a killed
        run leaves only finished cases (and temporary files, removed here for the cases still to do). Inputs are
        checked first (channel count, readable headers) so a bad input stops the run before any output.
        """
        output_folder = Path(output_folder)
        if output_folder.resolve() in input_folders(list(cases)):
            raise CovtransferError(f"{output_folder}: the output folder is the input folder; choose another so "
                                   "inputs are never overwritten")
        check_cases(list(cases), self.num_input_channels, allow_spacing)
        todo = [c for c in cases if not (skip_existing and self._outputs_exist(c, output_folder))]
        for case in todo:
            self._remove_leftovers(case, output_folder)
        note = self.mirroring_note() if progress and todo else None
        if note:
            print(note, file=sys.stderr)
        prefetch = self.device.type == "cuda"
        written: list[Path] = []
        with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="write") as writer, \
                tqdm(total=len(todo), unit="case", disable=not progress, desc="predicting") as bar:
            reads: dict[int, Future] = {}
            writes: list[Future] = []
            try:
                for index, case in enumerate(todo):
                    if index not in reads:
                        reads[index] = reader.submit(self.preprocess, case)
                    if prefetch and index + 1 < len(todo):
                        reads[index + 1] = reader.submit(self.preprocess, todo[index + 1])
                    data, properties = reads.pop(index).result()
                    result = self.predict_volume(data, properties)
                    del data
                    if writes:
                        writes[-1].result()
                    writes.append(writer.submit(self.write, result, output_folder, case))
                    written.append(output_folder / case.output_name())
                    bar.update(1)
                for future in writes:
                    future.result()
            except BaseException:
                reader.shutdown(wait=True, cancel_futures=True)
                writer.shutdown(wait=True, cancel_futures=True)
                raise
        return written


def predict_folder(input_path: str | os.PathLike, output_folder: str | os.PathLike,
                   checkpoints: Sequence[str | os.PathLike], device: torch.device | str = "auto", tta: bool = True,
                   step: float = DEFAULT_STEP, save_probabilities: bool = False, postprocess: bool = False,
                   skip_existing: bool = False, progress: bool = True, dicom_seg: bool = False,
                   overlays: bool = False, cpu_runtime: bool = True,
                   allow_spacing: bool = False, statistics: bool = False) -> list[Path]:
    """Predict every case under ``input_path`` with the ensemble of ``checkpoints`` into ``output_folder``
    (with ``dicom_seg`` also a DICOM SEG per DICOM series, with ``overlays`` a QC picture per case;
    ``cpu_runtime``: OpenVINO on the CPU when installed, see :mod:`covtransfer.inference.cpu_runtime`;
    ``allow_spacing``: an implausible spacing or extent warns instead of refusing; ``statistics``: then the burden
    statistics of every case, see :mod:`covtransfer.evaluation.quantify`)."""
    cases = discover_cases(input_path)
    if dicom_seg:
        check_dicom_input(cases)
    if statistics:
        refuse_raw_folder(output_folder)
    device = resolve_device(device)
    models = load_models(checkpoints, device)
    rules = find_postprocessing(models) if postprocess else None
    # with statistics the overlays are drawn by the statistics writer, to show PO and PHO
    burden = StatisticsWriter(dict(models[0].plans.labels), overlays) if statistics else None
    writers = ([DicomSegWriter(models[0])] if dicom_seg else []) + \
        ([write_overlay] if overlays and not statistics else []) + ([burden] if burden else [])
    predictor = Predictor(models, device, tta, step, save_probabilities, rules, writers, cpu_runtime)
    written = predictor.predict_cases(cases, output_folder, skip_existing, progress, allow_spacing)
    if burden:
        rows = burden.finish(cases, Path(output_folder))
        if dicom_seg:
            write_burden_srs(cases, Path(output_folder), rows, dict(models[0].plans.labels))
    return written
