"""Preprocessing a whole raw dataset in parallel: one case per worker at a time, resumable, atomic per case.

Besides the per-configuration case folders, the preprocessed dataset gets a copy of ``dataset.json``, the raw
``splits.json`` when there is one, and ``gt_segmentations/`` (the training labels, for evaluation).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from covtransfer.atomic import atomic_path
from covtransfer.data.dataset_json import Case, load_dataset_json, list_cases
from covtransfer.errors import CovtransferError
from covtransfer.plans import Plans
from covtransfer.preprocessing.preprocessor import CasePreprocessor
from covtransfer.preprocessing.storage import is_finished, save_case


@dataclass(frozen=True)
class _Job:
    """One case of one configuration: what a worker needs, all picklable."""

    configuration_name: str
    folder: Path
    case: Case


def _copy_file(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _copy_dataset_files(raw_folder: Path, preprocessed_folder: Path, cases: list[Case], file_ending: str,
                        overwrite: bool) -> None:
    """``dataset.json`` and the raw ``splits.json`` (if any) always; label files when missing or overwriting."""
    _copy_file(raw_folder / "dataset.json", preprocessed_folder / "dataset.json")
    if (raw_folder / "splits.json").is_file():
        _copy_file(raw_folder / "splits.json", preprocessed_folder / "splits.json")
    gt_folder = preprocessed_folder / "gt_segmentations"
    for case in cases:
        target = gt_folder / f"{case.case_id}{file_ending}"
        if overwrite or not target.is_file():
            _copy_file(case.label, target)


def _run_job(plans: Plans, job: _Job) -> str:
    """Preprocess and save one case; any failure becomes a one-line error naming the case's first image file."""
    first = job.case.images[0]
    try:
        preprocessor = CasePreprocessor(plans, job.configuration_name)
        data, seg, properties = preprocessor.run_files(job.case.images, job.case.label, job.case.case_id)
        save_case(job.folder, job.case.case_id, data, seg, properties)
    except CovtransferError as exc:  # already names a file: an input, or an output that could not be written
        if any(str(path) in str(exc) for path in (first, job.case.label, job.folder) if path is not None):
            raise
        raise CovtransferError(f"{first}: preprocessing failed ({exc})") from None
    except MemoryError:
        raise CovtransferError(f"{first}: out of memory while preprocessing (use fewer processes, -np)") from None
    except Exception as exc:  # a worker's traceback would not name the case, so say which one failed
        raise CovtransferError(f"{first}: preprocessing failed ({type(exc).__name__}: {exc})") from None
    return job.case.case_id


def _limit_threads(threads: int) -> None:
    threadpool_limits(threads)


def _run_parallel(plans: Plans, jobs: list[_Job], num_processes: int, progress: tqdm) -> None:
    threads = max(1, (os.cpu_count() or 1) // num_processes)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(num_processes, mp_context=context, initializer=_limit_threads,
                             initargs=(threads,)) as pool:
        futures: dict[Future, _Job] = {pool.submit(_run_job, plans, job): job for job in jobs}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    try:
                        future.result()
                    except BrokenProcessPool:
                        raise CovtransferError(f"{futures[future].case.images[0]}: a preprocessing worker died "
                                               "(out of memory? use fewer processes, -np)") from None
                    progress.update(1)
        finally:
            for future in pending:
                future.cancel()


def preprocess_dataset(raw_folder: str | os.PathLike, preprocessed_folder: str | os.PathLike, plans: Plans,
                       configuration_names: Sequence[str], num_processes: int, overwrite: bool = False) -> list[str]:
    """Preprocess every training case of ``raw_folder`` for each named configuration; returns the cases written.

    Cases whose ``.npz`` and ``.json`` both exist are skipped unless ``overwrite``. ``num_processes`` workers each
    hold one case at a time, so memory grows with the worker count, not the dataset.
    """
    raw_folder, preprocessed_folder = Path(raw_folder), Path(preprocessed_folder)
    info = load_dataset_json(raw_folder)
    cases = list_cases(raw_folder, info, "Tr")
    if not cases:
        raise CovtransferError(f"{raw_folder / 'imagesTr'}: no training cases found")
    unlabelled = [case for case in cases if case.label is None]
    if unlabelled:
        missing = raw_folder / "labelsTr" / f"{unlabelled[0].case_id}{info.file_ending}"
        raise CovtransferError(f"{missing}: label file missing ({len(unlabelled)} training case(s) without labels)")
    preprocessed_folder.mkdir(parents=True, exist_ok=True)
    _copy_dataset_files(raw_folder, preprocessed_folder, cases, info.file_ending, overwrite)

    jobs, folders = [], set()
    for name in configuration_names:
        configuration = plans.configuration(name)
        folder = preprocessed_folder / (configuration.data_identifier or name)
        if folder in folders:
            continue
        folders.add(folder)
        folder.mkdir(parents=True, exist_ok=True)
        jobs += [_Job(name, folder, case) for case in cases if overwrite or not is_finished(folder, case.case_id)]

    workers = max(1, min(int(num_processes), len(jobs)))
    # nothing to do (all cases preprocessed before): no empty progress bar
    with tqdm(total=len(jobs), desc=f"preprocessing {preprocessed_folder.name}", unit="case",
              disable=not jobs) as progress:
        if workers == 1:
            for job in jobs:
                _run_job(plans, job)
                progress.update(1)
        else:
            _run_parallel(plans, jobs, workers, progress)
    return list(dict.fromkeys(job.case.case_id for job in jobs))
