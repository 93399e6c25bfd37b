"""Markdown tables for the study's reports."""

from __future__ import annotations

import math
from typing import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table with one header row; every row must have as many cells as the header."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def mean_sd_cell(mean: float, sd: float, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    """``mean ± sd`` scaled (percent by default) for a table cell; ``n/a`` for an undefined mean (e.g. precision
    when nothing was predicted), the mean alone for an undefined sd (e.g. across a single seed)."""
    if not math.isfinite(mean):
        return "n/a"
    text = f"{scale * mean:{'+' if signed else ''}.{digits}f}"
    return text + (f" ± {scale * sd:.{digits}f}" if math.isfinite(sd) else "")
