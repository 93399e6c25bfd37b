"""The package's LICENSE and CITATION texts, written from its manifest so that whoever receives the model sees
the terms it inherits from its training data and what to cite."""

from __future__ import annotations

DERIVED_NOTE = ("A model's weights are derived from its training data, so they are shared under terms that respect "
                "every licence above: data under a NonCommercial (NC) licence allows no commercial use of the model, "
                "data under a ShareAlike (SA) licence asks that the model and models derived from it (fine-tuned or "
                "transferred) be shared under the same licence, and Attribution (BY) asks that the sources be cited "
                "(see CITATION).")


def _dataset_line(dataset: dict) -> str:
    cases = f", {dataset['cases']} training cases" if dataset.get("cases") is not None else ""
    return f"  - {dataset['name']}{cases}: licence {dataset.get('licence') or 'not stated'}"


def licence_text(manifest: dict) -> str:
    """The LICENSE member: the package's licence, then where it comes from."""
    lines = [f"Licence of the model {manifest['name']}: {manifest['licence']}", "",
             "Trained on:", *(_dataset_line(d) for d in manifest["training_datasets"])]
    origin = manifest.get("pretrained_from")
    if origin:
        named = f" ({origin['name']})" if origin.get("name") else ""
        lines += ["", f"Transferred from the pre-trained model {origin['source']}{named}, trained on:",
                  *(_dataset_line(d) for d in origin.get("datasets", []))]
        if origin.get("licence"):
            lines.append(f"  whose package licence is: {origin['licence']}")
    return "\n".join(lines + ["", DERIVED_NOTE, ""])


def citation_text(manifest: dict, given: str | None = None) -> str:
    """The CITATION member: ``given`` (``--citation``), else the model and the references of its datasets."""
    if given:
        return given if given.endswith("\n") else given + "\n"
    datasets = manifest["training_datasets"] + (manifest.get("pretrained_from") or {}).get("datasets", [])
    references = list(dict.fromkeys(d["reference"] for d in datasets if d.get("reference")))
    lines = [f"{manifest['name']}: a covtransfer {manifest['covtransfer_version']} model "
             f"(strategy {manifest['strategy'].get('name')}, folds {', '.join(manifest['folds'])}), "
             f"created {manifest['created'][:10]}."]
    if references:
        lines += ["", "Please cite the data it was trained on:", *(f"  - {r}" for r in references)]
    return "\n".join(lines) + "\n"
