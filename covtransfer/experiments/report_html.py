"""``report.html``: the study on one self-contained page (images as base64, no scripts, no network access).

A warning banner when the models were trained too briefly to mean anything (the smoke demo), the verdict of every
strategy against scratch, the results table with what its columns mean, the paired comparison and the pre-training
EMA per source (the Markdown of results.md as HTML), the convergence curves and the DSC box plot, the best, median
and worst test case of every strategy next to its reference, and the run's settings (study.json) and training time.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path


from covtransfer.atomic import write_text
from covtransfer.config import Roots, find_dataset
from covtransfer.experiments.report import summary_text
from covtransfer.experiments.report_figures import (case_image_and_reference, draw_outline, lesion_slice,
                                                    read_prediction)
from covtransfer.experiments.study_record import RECORD_FILE, read_record
from covtransfer.experiments.verdict import run_label

REPORT_FILE = "report.html"
# fewer training iterations per model than this (the smoke demo trains 2) cannot have learnt anything
UNTRAINED_ITERATIONS = 100
_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #bbb;padding:3px 7px}
th{background:#eee}td{text-align:right}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}
h2{margin-top:1.4em;border-bottom:1px solid #ccc}th{text-align:left}td{word-break:break-word}
.banner{background:#fde2c4;border:2px solid #c05800;padding:.6em 1em;font-weight:600}li{margin:.25em 0}"""


def _image_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def markdown_to_html(text: str) -> str:
    """The subset of Markdown that :func:`summary_text` writes: ``##`` headings, pipe tables, ``-`` lists and
    paragraphs."""
    out, table, items = [], [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append([html.escape(c.strip()) for c in line.strip().strip("|").split("|")])
            continue
        if line.startswith("- "):
            items.append(f"<li>{html.escape(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if table:
            header, body = table[0], [r for r in table[1:] if not set("".join(r)) <= set("-: ")]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in header) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body) + "</table>")
            table = []
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)


def _ranked_cases(row: dict) -> list[tuple[str, dict]]:
    """The best, median and worst test case of a strategy by DSC (undefined DSC left out)."""
    scored = sorted((c for c in row["per_case"] if c["dice"] is not None and math.isfinite(c["dice"])),
                    key=lambda c: c["dice"], reverse=True)
    if not scored:
        return []
    if len(scored) < 3:
        return list(zip(("best", "worst"), scored))[:len(scored)]
    return [("best", scored[0]), ("median", scored[len(scored) // 2]), ("worst", scored[-1])]


def _strategy_figure(folder: Path, raw: Path, row: dict) -> bytes | None:
    """PNG: for the best, median and worst case, the reference and the prediction on the slice that shows the lesion
    (:func:`~covtransfer.experiments.report_figures.lesion_slice`)."""
    import io

    import matplotlib.pyplot as plt

    panels = []
    for rank, case in _ranked_cases(row):
        found = case_image_and_reference(raw, case["case"])
        prediction = read_prediction(folder, row, case["fold"], case["case"])
        if found is not None and prediction is not None:
            label = int(case["label"])
            panels.append((f"{rank}: {case['case']} (DSC {100 * case['dice']:.1f} %)", found[0], found[1] == label,
                           prediction == label))
    if not panels:
        return None
    fig, axes = plt.subplots(1, 2 * len(panels), figsize=(2.2 * 2 * len(panels), 2.6), squeeze=False)
    for i, (title, image, reference, prediction) in enumerate(panels):
        z = lesion_slice(reference, prediction)
        draw_outline(axes[0, 2 * i], image[z], reference[z], f"{title}\nreference (green)", "lime")
        draw_outline(axes[0, 2 * i + 1], image[z], prediction[z], "\nprediction (red)", "red")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def untrained_banner(record: dict | None) -> str | None:
    """The warning for a study whose target models trained for fewer than :data:`UNTRAINED_ITERATIONS` iterations
    (as ``study.json`` records them), or None."""
    settings = (record or {}).get("settings") or {}
    if "epochs" not in settings or "iters_per_epoch" not in settings:
        return None
    epochs, iterations = int(settings["epochs"]), int(settings["iters_per_epoch"])
    if epochs * iterations >= UNTRAINED_ITERATIONS:
        return None
    return (f"Smoke-scale run: each model was trained for only {epochs * iterations} iterations ({epochs} "
            f"epoch{'' if epochs == 1 else 's'} of {iterations}), far too few to learn anything. The models are not "
            "trained: the numbers, verdicts and pictures below say nothing about the strategies, only that the "
            "pipeline runs from end to end. For results, run the demo at --scale cpu or gpu, or the study with its "
            "default training length.")


def report_html(folder: Path, rows: list[dict], target: str, roots: Roots, paired: list[dict],
                pretraining: list[dict], burden: str = "") -> str:
    """The page's HTML, reading the plots the study wrote into ``folder``, its ``study.json`` and the raw target
    cases (``burden``: a Markdown section shown after the results)."""
    raw = find_dataset(roots.raw, target)
    record = read_record(folder / RECORD_FILE)
    banner = untrained_banner(record)
    parts = [f"<h1>covtransfer study: {html.escape(target)}</h1>"]
    parts += [f'<p class="banner">{html.escape(banner)}</p>'] if banner else []
    parts.append(markdown_to_html(summary_text(rows, paired, pretraining, (record or {}).get("tolerance_mm"))))
    if burden:
        parts.append(markdown_to_html(burden))
    for title, name in (("Convergence", "convergence.png"), ("DSC per test case", "dice_boxplot.png")):
        if (folder / name).is_file():
            parts += [f"<h2>{title}</h2>", _image_tag((folder / name).read_bytes(), title)]
    parts.append("<h2>Best, median and worst test case per strategy</h2>")
    parts.append("<p>Each case on the axial slice with most reference lesion (without one, with most predicted "
                 "lesion): the reference outline in green beside the prediction in red.</p>")
    for row in rows:
        png = _strategy_figure(folder, raw, row)
        parts += [f"<h3>{html.escape(run_label(row))}</h3>",
                  _image_tag(png, run_label(row)) if png else "<p>no scored test case with a prediction</p>"]
    minutes = sum(r["training_minutes"] for r in rows if math.isfinite(r["training_minutes"]))
    parts += ["<h2>Settings and time</h2>",
              f"<p>training time of the target strategies: {minutes:.1f} min per fold, summed over strategies "
              "(sum of epoch times; pre-training and prediction not included)</p>"]
    if record:
        parts.append("<table>" + "".join(f"<tr><th>{html.escape(key)}</th><td>{html.escape(json.dumps(value))}</td>"
                                         "</tr>" for key, value in record.items()) + "</table>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>covtransfer study '
            f"{html.escape(target)}</title><style>{_STYLE}</style></head><body>\n" + "\n".join(parts) +
            "\n</body></html>\n")


def write_html_report(folder: Path, rows: list[dict], target: str, roots: Roots, paired: list[dict],
                      pretraining: list[dict], burden: str = "") -> Path:
    """Write ``report.html`` into the study folder (atomically) and return its path."""
    import matplotlib
    matplotlib.use("Agg")

    path = folder / REPORT_FILE
    write_text(path, report_html(folder, rows, target, roots, paired, pretraining, burden))
    return path
