"""The study's pictures: convergence curves and the per-case DSC box plot (both in %, the tables' unit), and test
cases drawn on the axial slice that shows their lesion, with the reference and the predictions as outlines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from covtransfer.atomic import atomic_path
from covtransfer.config import Roots, find_dataset
from covtransfer.data.image_io import read_image
from covtransfer.experiments.verdict import run_label
from covtransfer.training.plot_axes import epoch_axis


def save_png(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def convergence_figure(rows: list[dict]):
    """The first fold's moving-average validation pseudo Dice of every run, in %, over whole-number epochs."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    epochs: list[int] = []
    for row in rows:
        history = row["histories"][0] if row["histories"] else []
        epochs += [r["epoch"] for r in history]
        ax.plot([r["epoch"] for r in history], [_percent(r["ema_dice"]) for r in history], marker=".",
                label=run_label(row))
    epoch_axis(ax, epochs)
    ax.set_ylim(0, 100)
    ax.set_ylabel("validation pseudo Dice, moving average (%)")
    ax.set_title("Convergence (first fold)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def dice_boxplot(rows: list[dict]):
    """The DSC of every test case per run, in % like the tables."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 5))
    ax.boxplot([[100 * c["dice"] for c in row["per_case"] if c["dice"] is not None and math.isfinite(c["dice"])]
                or [np.nan] for row in rows])
    ax.set_xticks(range(1, len(rows) + 1), [run_label(r) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(-2, 102)
    ax.set_ylabel("DSC per test case (%)")
    fig.tight_layout()
    return fig


def _percent(value) -> float:
    return float("nan") if value is None else 100 * float(value)


def lesion_slice(reference: np.ndarray, prediction: np.ndarray | None = None) -> int:
    """The axial slice (first axis) with most reference voxels, so that the lesion is in view; without a reference
    lesion the slice with most predicted voxels (what the model got wrong); with neither the middle slice."""
    for mask in (reference, prediction):
        if mask is not None and mask.any():
            return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))
    return reference.shape[0] // 2


def write_overlays(folder: Path, rows: list[dict], target: str, roots: Roots, n_cases: int = 3) -> list[Path]:
    """For a few test cases of the first fold: the slice of :func:`lesion_slice`, with the reference and each
    strategy's prediction drawn as outlines."""
    import matplotlib.pyplot as plt

    if not rows or not rows[0]["per_case"]:
        return []
    first_fold = rows[0]["per_case"][0]["fold"]
    cases = {c["case"]: int(c["label"]) for c in rows[0]["per_case"] if c["fold"] == first_fold}
    raw = find_dataset(roots.raw, target)
    paths = []
    for case, label in list(cases.items())[:n_cases]:
        found = case_image_and_reference(raw, case)
        if found is None:
            continue
        image, reference = found
        panels = [("reference", reference == label)]
        for row in rows:
            prediction = read_prediction(folder, row, first_fold, case)
            if prediction is not None:
                panels.append((run_label(row), prediction == label))
        z = lesion_slice(panels[0][1])
        fig, axes = plt.subplots(1, len(rows) + 1, figsize=(3 * (len(rows) + 1), 3.3))
        for ax, (title, mask) in zip(axes, panels):
            draw_outline(ax, image[z], mask[z], title, "lime" if title == "reference" else "red")
        for ax in axes[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        path = folder / f"overlay_{case}.png"
        save_png(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def case_files(raw: Path, case: str) -> tuple[Path, Path] | None:
    """The first channel file and the reference label map file of a raw dataset case (test or training), or None."""
    image_path = next((p for sub in ("imagesTs", "imagesTr") for p in (raw / sub).glob(f"{case}_0000.*")), None)
    label_path = next((p for sub in ("labelsTs", "labelsTr") for p in (raw / sub).glob(f"{case}.*")), None)
    if image_path is None or label_path is None:
        return None
    return image_path, label_path


def case_image_and_reference(raw: Path, case: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The first channel and the reference label map of a raw dataset case (test or training), or None."""
    files = case_files(raw, case)
    return None if files is None else (read_image(files[0])[0], read_image(files[1])[0])


def read_prediction(folder: Path, row: dict, fold: str, case: str) -> np.ndarray | None:
    """A strategy's prediction of ``case`` in ``fold`` from the study folder, or None if there is none."""
    run = row["strategy"] if row["pretraining"] == "none" else f"{row['strategy']}__from_{row['pretraining']}"
    path = next((folder / "predictions" / run / f"fold_{fold}").glob(f"{case}.*"), None)
    return None if path is None else read_image(path)[0]


def draw_outline(ax, plane: np.ndarray, mask: np.ndarray, title: str, color: str) -> None:
    """One slice on the lung window with ``mask``'s outline in ``color``."""
    ax.imshow(np.clip(plane, -1350, 150), cmap="gray")
    if mask.any():
        ax.contour(mask > 0, levels=[0.5], colors=color, linewidths=0.8)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
