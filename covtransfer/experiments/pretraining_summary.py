"""How well each pre-training learnt its sources: the final moving-average (EMA) validation pseudo Dice per source.

The trainer records ``task_dice`` and ``task_ema`` (``{dataset name: value}``) in every epoch of ``metrics.jsonl``;
runs from before that record neither, and a source that was never scored has no value: both show as n/a.
"""

from __future__ import annotations

import math


def _number(value) -> float:
    if value is None:
        return float("nan")
    value = float(value)
    return value if math.isfinite(value) else float("nan")


def pretraining_rows(tag: str, sources: list[str], history: list[dict]) -> list[dict]:
    """One row per source of one pre-training: its final per-source EMA and pseudo Dice (NaN when not recorded)."""
    last = history[-1] if history else {}
    emas, dices = last.get("task_ema") or {}, last.get("task_dice") or {}
    return [{"pretraining": tag, "source": source, "epochs": len(history),
             "final_ema": _number(emas.get(source)), "final_pseudo_dice": _number(dices.get(source))}
            for source in sources]


def _format(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def pretraining_line(rows: list[dict]) -> str:
    """A log line: ``pre-training multi: final EMA pseudo Dice per source: A 0.612, B n/a``."""
    tag = rows[0]["pretraining"] if rows else "?"
    return f"pre-training {tag}: final EMA pseudo Dice per source: " + ", ".join(
        f"{row['source']} {_format(row['final_ema'])}" for row in rows)


def pretraining_table(rows: list[dict]) -> str:
    """The per-source EMA of every pre-training as a Markdown table."""
    lines = ["| pre-training | source | epochs | final EMA pseudo Dice | final pseudo Dice |", "|---|---|---|---|---|"]
    lines += [f"| {r['pretraining']} | {r['source']} | {r['epochs']} | {_format(r['final_ema'])} | "
              f"{_format(r['final_pseudo_dice'])} |" for r in rows]
    return "\n".join(lines)
