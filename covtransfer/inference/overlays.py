"""QC overlays: ``<case>_overlay.png``, a quick look at a prediction on the lung window.

Three axial slices through the largest predicted component (its first, middle and last slice) and one coronal slice
through its centre, each with the prediction's outline; a case without foreground shows the middle slices. With
``--statistics`` the title also gives the case's PO and PHO, total and per lung.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np
from scipy import ndimage

from covtransfer.atomic import atomic_path
from covtransfer.data.image_io import read_image
from covtransfer.inference.case_result import CaseResult
from covtransfer.inference.inputs import InputCase

LUNG_WINDOW = (-1350.0, 150.0)  # width 1500 HU, level -600 HU


def _largest_component_slices(segmentation: np.ndarray) -> tuple[list[int], int]:
    """Axial indices (first, middle, last) and the coronal index through the largest foreground component."""
    components, count = ndimage.label(segmentation > 0)
    if count == 0:
        return [segmentation.shape[0] // 2], segmentation.shape[1] // 2
    sizes = np.bincount(components.ravel())[1:]
    z, y, _ = np.nonzero(components == int(np.argmax(sizes)) + 1)
    axial = sorted({int(z.min()), int(np.median(z)), int(z.max())})
    return axial, int(np.median(y))


def overlay_figure(image: np.ndarray, segmentation: np.ndarray, spacing: tuple[float, float, float], title: str):
    """A matplotlib figure of the axial and coronal slices with the prediction's outline (Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axial, coronal = _largest_component_slices(segmentation)
    panels = [(f"axial {z}", image[z], segmentation[z], spacing[1] / spacing[2]) for z in axial]
    panels.append((f"coronal {coronal}", image[:, coronal], segmentation[:, coronal], spacing[0] / spacing[2]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
    for ax, (name, plane, mask, aspect) in zip(axes, panels):
        ax.imshow(np.clip(plane, *LUNG_WINDOW), cmap="gray", aspect=aspect, vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1])
        if mask.any() and min(mask.shape) > 1:
            ax.contour(mask > 0, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def burden_title(case_id: str, row: dict | None) -> str:
    """An overlay's title: the case, with its PO and PHO (total, right, left) when its statistics are known."""
    if not row or row.get("po_total") is None:
        return case_id
    return (f"{case_id}   PO {_percent(row['po_total'])} % (R {_percent(row['po_right'])}, "
            f"L {_percent(row['po_left'])})   PHO {_percent(row['pho_total'])} % (R {_percent(row['pho_right'])}, "
            f"L {_percent(row['pho_left'])})")


def save_overlay(path: Path, image: np.ndarray, segmentation: np.ndarray, spacing, title: str) -> None:
    """Draw :func:`overlay_figure` and write it as a PNG atomically."""
    import matplotlib.pyplot as plt

    fig = overlay_figure(image, segmentation, spacing, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def write_overlay(result: "CaseResult", output_folder: Path, case: InputCase) -> None:
    """The predictor's extra writer for ``--overlays``: ``<case>_overlay.png`` beside the label map."""
    image, geometry = read_image(case.images[0])
    save_overlay(output_folder / f"{case.case_id}_overlay.png", image, result.segmentation, geometry.spacing,
                 case.case_id)
