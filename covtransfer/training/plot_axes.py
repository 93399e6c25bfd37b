"""Axis settings shared by the training and study plots, so that their epoch axes read the same way."""

from __future__ import annotations


def epoch_axis(ax, epochs: list[int]) -> None:
    """Whole-number epoch ticks and limits half an epoch beyond the first and last epoch (a single epoch gets one
    tick at its number, not a range of fractions around it)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.set_xlabel("epoch")
