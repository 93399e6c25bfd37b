"""Where a model's knowledge comes from: its training datasets (case counts, licences, references from their
``dataset.json``) and the pre-trained model it was transferred from, recorded in ``load_report.json`` at training
and in a package's manifest at export, so that a derived model carries the licences of everything it learnt from."""

from __future__ import annotations

from covtransfer.config import Roots
from covtransfer.data.dataset_json import load_dataset_json
from covtransfer.errors import CovtransferError
from covtransfer.network.checkpoint import Checkpoint

LICENCE_KEYS = ("licence", "license")
UNKNOWN = "unknown"


def dataset_record(roots: Roots, name: str) -> dict:
    """A training dataset's name, training-case count, licence and reference (None where its ``dataset.json``, in
    the preprocessed or else the raw root, does not say)."""
    for root in (roots.preprocessed, roots.raw):
        if (root / name / "dataset.json").is_file():
            try:
                info = load_dataset_json(root / name)
            except CovtransferError:
                continue
            licence = next((str(info.extra[k]) for k in LICENCE_KEYS if info.extra.get(k)), None)
            reference = info.extra.get("reference")
            return {"name": name, "cases": info.num_training, "licence": licence,
                    "reference": str(reference) if reference else None}
    return {"name": name, "cases": None, "licence": None, "reference": None}


def checkpoint_origin(checkpoint: Checkpoint, source: str, roots: Roots) -> dict:
    """The origin of a transfer from a checkpoint file: its strategy and the datasets of its heads."""
    return {"source": source, "kind": "checkpoint", "name": None, "strategy": checkpoint.strategy.get("name"),
            "datasets": [dataset_record(roots, head) for head in checkpoint.heads], "licence": None}


def package_origin(manifest: dict, source: str) -> dict:
    """The origin of a transfer from a model package: its name, strategy, datasets and licence."""
    return {"source": source, "kind": "model package", "name": manifest.get("name"),
            "strategy": manifest.get("strategy", {}).get("name"), "datasets": manifest.get("training_datasets", []),
            "licence": manifest.get("licence")}


def inherited_licences(datasets: list[dict], origin: dict | None) -> list[str | None]:
    """The licences a model inherits: each training dataset's, then the pre-training's (its package licence, or its
    datasets'), in order without repeats; None stands for a dataset that states none."""
    licences = [d.get("licence") for d in datasets]
    if origin:
        licences += [origin["licence"]] if origin.get("licence") else [d.get("licence") for d in origin["datasets"]]
    return list(dict.fromkeys(licences))
