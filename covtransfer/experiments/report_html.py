"""``report.html``: the study on one self-contained page (images as base64, no scripts, no network access).

The results table with the paired comparison and the pre-training EMA per source (the Markdown of results.md as
HTML tables), the convergence curves and the DSC box plot, the best, median and worst test case of every strategy
next to its reference, and the run's settings (study.json) and training time.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from covtransfer.atomic import write_text
from covtransfer.config import Roots, find_dataset
from covtransfer.experiments.report import (_name, case_image_and_reference, draw_outline, read_prediction,
                                            summary_text)

REPORT_FILE = "report.html"
_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #bbb;padding:3px 7px}
th{background:#eee}td{text-align:right}td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}
h2{margin-top:1.4em;border-bottom:1px solid #ccc}th{text-align:left}td{word-break:break-word}"""


def _image_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def markdown_to_html(text: str) -> str:
    """The subset of Markdown that :func:`summary_text` writes: ``##`` headings, pipe tables and paragraphs."""
    out, table = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            table.append([html.escape(c.strip()) for c in line.strip().strip("|").split("|")])
            continue
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
    """PNG: for the best, median and worst case, the reference and the prediction on the slice of most lesion."""
    import io

    import matplotlib.pyplot as plt

    panels = []
    for rank, case in _ranked_cases(row):
        found = case_image_and_reference(raw, case["case"])
        prediction = read_prediction(folder, row, case["fold"], case["case"])
        if found is not None and prediction is not None:
            panels.append((f"{rank}: {case['case']} (DSC {100 * case['dice']:.1f} %)", *found, prediction))
    if not panels:
        return None
    fig, axes = plt.subplots(1, 2 * len(panels), figsize=(2.2 * 2 * len(panels), 2.6), squeeze=False)
    for i, (title, image, reference, prediction) in enumerate(panels):
        z = int(np.argmax((reference > 0).sum(axis=(1, 2)) + (prediction > 0).sum(axis=(1, 2))))
        draw_outline(axes[0, 2 * i], image[z], reference[z], f"{title}\nreference (green)", "lime")
        draw_outline(axes[0, 2 * i + 1], image[z], prediction[z], "\nprediction (red)", "red")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def report_html(folder: Path, rows: list[dict], target: str, roots: Roots, paired: list[dict],
                pretraining: list[dict], burden: str = "") -> str:
    """The page's HTML, reading the plots the study wrote into ``folder`` and the raw target cases (``burden``: a
    Markdown section shown after the results)."""
    raw = find_dataset(roots.raw, target)
    parts = [f"<h1>covtransfer study: {html.escape(target)}</h1>", markdown_to_html(summary_text(rows, paired,
                                                                                                 pretraining))]
    if burden:
        parts.append(markdown_to_html(burden))
    for title, name in (("Convergence", "convergence.png"), ("DSC per test case", "dice_boxplot.png")):
        if (folder / name).is_file():
            parts += [f"<h2>{title}</h2>", _image_tag((folder / name).read_bytes(), title)]
    parts.append("<h2>Best, median and worst test case per strategy</h2>")
    for row in rows:
        png = _strategy_figure(folder, raw, row)
        parts += [f"<h3>{html.escape(_name(row))}</h3>",
                  _image_tag(png, _name(row)) if png else "<p>no scored test case with a prediction</p>"]
    minutes = sum(r["training_minutes"] for r in rows if math.isfinite(r["training_minutes"]))
    parts += ["<h2>Settings and time</h2>",
              f"<p>training time of the target strategies: {minutes:.1f} min per fold, summed over strategies "
              "(sum of epoch times; pre-training and prediction not included)</p>"]
    record = folder / "study.json"
    if record.is_file():
        settings = json.loads(record.read_text())
        parts.append("<table>" + "".join(f"<tr><th>{html.escape(key)}</th><td>{html.escape(json.dumps(value))}</td>"
                                         "</tr>" for key, value in settings.items()) + "</table>")
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
