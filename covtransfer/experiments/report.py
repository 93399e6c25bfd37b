"""The study's outputs: ``results.csv`` and ``results.md`` (one row per pre-training and strategy, with the paired
comparison against scratch), ``pretraining.csv`` (final EMA per source), the convergence plot, the per-case DSC box
plot, overlay PNGs of a few test cases, ``per_case.csv`` and ``commands.txt``. Undefined values are written n/a.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from covtransfer.atomic import atomic_path, write_text
from covtransfer.config import Roots, find_dataset
from covtransfer.data.image_io import read_image
from covtransfer.experiments.markdown import markdown_table, mean_sd_cell
from covtransfer.experiments.paired import N_RESAMPLES, paired_table
from covtransfer.experiments.pretraining_summary import pretraining_table

COLUMNS = [("DSC %", "dice"), ("NSD@τ %", "nsd"), ("sensitivity %", "sensitivity"), ("precision %", "precision"),
           ("MCC %", "mcc")]


def _name(row: dict) -> str:
    return row["strategy"] if row["pretraining"] == "none" else f"{row['strategy']} ({row['pretraining']})"


def _number(value: float) -> str:
    return f"{value:.1f}" if np.isfinite(value) else "n/a"


def results_table(rows: list[dict]) -> str:
    """The results as a Markdown table (metrics in %, mean ± std over all test cases of all folds)."""
    header = ["pre-training", "strategy", "cases"] + [c for c, _ in COLUMNS] + ["train min/fold", "conv. epoch"]
    table = []
    for row in rows:
        cells = [row["pretraining"], row["strategy"], str(row["num_cases"])]
        cells += [mean_sd_cell(row[f"{m}_mean"], row[f"{m}_std"]) for _, m in COLUMNS]
        cells += [_number(row["training_minutes"]), _number(row["convergence_epoch"])]
        table.append(cells)
    return markdown_table(header, table)


PAIRED_NOTE = ("Each strategy minus scratch on the same test cases (same fold), in percentage points; 95 % CI: "
               f"percentile bootstrap of the mean difference ({N_RESAMPLES:,} resamples of the pairs, seeded); "
               "Wilcoxon p: two-sided signed-rank test of the paired differences. n/a: fewer than 2 pairs, or every "
               "difference zero.")
NO_PAIRS = "n/a: the paired comparison needs scratch and at least one other strategy."


def summary_text(rows: list[dict], paired: list[dict], pretraining: list[dict]) -> str:
    """The results table, the paired comparison with scratch and the pre-training EMA per source, in Markdown."""
    parts = [results_table(rows), "## Paired comparison with scratch",
             paired_table(paired) if paired else NO_PAIRS, PAIRED_NOTE]
    if pretraining:
        parts += ["## Pre-training: final EMA pseudo Dice per source", pretraining_table(pretraining)]
    return "\n\n".join(parts) + "\n"


def results_markdown(target: str, rows: list[dict], paired: list[dict], pretraining: list[dict]) -> str:
    """``results.md``: a title and the :func:`summary_text`."""
    return f"# Transfer study on {target}\n\n" + summary_text(rows, paired, pretraining)


def _cell(value):
    """A CSV cell: non-finite numbers as n/a."""
    return "n/a" if isinstance(value, float) and not np.isfinite(value) else value


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Write ``rows`` (dicts) with ``columns`` atomically, non-finite numbers as n/a."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", restval="n/a")
        writer.writeheader()
        writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def write_report(folder: Path, rows: list[dict], commands: list[str], target: str, roots: Roots,
                 paired: list[dict] | None = None, pretraining: list[dict] | None = None,
                 burden: str = "") -> list[Path]:
    """Write every study output into ``folder`` (``burden``: a Markdown section appended to results.md); returns the
    plot paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paired, pretraining = paired or [], pretraining or []
    by_run = {(p["pretraining"], p["strategy"]): p for p in paired}
    table = [{**row, **by_run.get((row["pretraining"], row["strategy"]), {})} for row in rows]
    keys = list(dict.fromkeys(k for row in table for k in row if k not in ("per_case", "histories")))
    write_csv(folder / "results.csv", table, keys)
    write_csv(folder / "pretraining.csv", pretraining,
              ["pretraining", "source", "epochs", "final_ema", "final_pseudo_dice"])
    write_text(folder / "results.md", results_markdown(target, rows, paired, pretraining) + (
        "\n" + burden if burden else ""))
    write_text(folder / "commands.txt", "\n".join(dict.fromkeys(commands)) + "\n")
    with atomic_path(folder / "per_case.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pretraining", "strategy", "fold", "case", "label", "dice", "nsd", "hd95"])
        for row in rows:
            for case in row["per_case"]:
                writer.writerow([row["pretraining"], row["strategy"], case["fold"], case["case"], case["label"],
                                 case["dice"], case["nsd"], case["hd95"]])
    plots = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        history = row["histories"][0] if row["histories"] else []
        ax.plot([r["epoch"] for r in history], [r["ema_dice"] for r in history], marker=".", label=_name(row))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation pseudo Dice (moving average)")
    ax.set_title("Convergence (first fold)")
    ax.legend(fontsize=8)
    _save(fig, folder / "convergence.png")
    plt.close(fig)
    plots.append(folder / "convergence.png")

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 5))
    ax.boxplot([[c["dice"] for c in row["per_case"] if c["dice"] is not None and np.isfinite(c["dice"])]
                or [np.nan] for row in rows])
    ax.set_xticks(range(1, len(rows) + 1), [_name(r) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("DSC per test case")
    fig.tight_layout()
    _save(fig, folder / "dice_boxplot.png")
    plt.close(fig)
    plots.append(folder / "dice_boxplot.png")
    plots += write_overlays(folder, rows, target, roots)
    return plots


def write_overlays(folder: Path, rows: list[dict], target: str, roots: Roots, n_cases: int = 3) -> list[Path]:
    """For a few test cases of the first fold: the axial slice with most reference lesion, with the reference and
    each strategy's prediction drawn as contours."""
    import matplotlib.pyplot as plt

    if not rows or not rows[0]["per_case"]:
        return []
    first_fold = rows[0]["per_case"][0]["fold"]
    cases = list(dict.fromkeys(c["case"] for c in rows[0]["per_case"] if c["fold"] == first_fold))[:n_cases]
    raw = find_dataset(roots.raw, target)
    paths = []
    for case in cases:
        found = case_image_and_reference(raw, case)
        if found is None:
            continue
        image, reference = found
        z = int(np.argmax((reference > 0).sum(axis=(1, 2))))
        fig, axes = plt.subplots(1, len(rows) + 1, figsize=(3 * (len(rows) + 1), 3.3))
        panels = [("reference", reference)]
        for row in rows:
            prediction = read_prediction(folder, row, first_fold, case)
            if prediction is not None:
                panels.append((_name(row), prediction))
        for ax, (title, mask) in zip(axes, panels):
            draw_outline(ax, image[z], mask[z], title, "lime" if title == "reference" else "red")
        for ax in axes[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        path = folder / f"overlay_{case}.png"
        _save(fig, path)
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
    path = next((folder / "predictions" / _run_folder(row) / f"fold_{fold}").glob(f"{case}.*"), None)
    return None if path is None else read_image(path)[0]


def draw_outline(ax, plane: np.ndarray, mask: np.ndarray, title: str, color: str) -> None:
    """One slice on the lung window with ``mask``'s outline in ``color``."""
    ax.imshow(np.clip(plane, -1350, 150), cmap="gray")
    if mask.any():
        ax.contour(mask > 0, levels=[0.5], colors=color, linewidths=0.8)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _run_folder(row: dict) -> str:
    return row["strategy"] if row["pretraining"] == "none" else f"{row['strategy']}__from_{row['pretraining']}"
