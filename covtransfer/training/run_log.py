"""The run's human-readable record: ``metrics.jsonl`` (one object per epoch), ``training_log.txt``, ``progress.png``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from covtransfer.atomic import atomic_path, write_text
from covtransfer.training.plot_axes import epoch_axis


class RunLog:
    """Writes epoch records and log lines for one fold folder; only the main process creates one."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.log_path = self.folder / "training_log.txt"
        self.metrics_path = self.folder / "metrics.jsonl"

    def line(self, message: str) -> None:
        """Print ``message`` and append it, timestamped, to the training log."""
        print(message, flush=True)
        with open(self.log_path, "a") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}\n")

    def write_history(self, history: list[dict]) -> None:
        """Rewrite ``metrics.jsonl`` from the full history (exactly one record per completed epoch)."""
        write_text(self.metrics_path, "".join(json.dumps(record) + "\n" for record in history))

    def plot(self, history: list[dict]) -> None:
        """Draw :func:`progress_figure` into ``progress.png``."""
        if not history:
            return
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = progress_figure(history)
        with atomic_path(self.folder / "progress.png") as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)


def progress_figure(history: list[dict]):
    """Losses, pseudo Dice (and its moving average), learning rate and epoch time per epoch, with the legend right
    of the plots (beyond the Dice axis) so that it covers no curve."""
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    axes[0].plot(epochs, [r["train_loss"] for r in history], label="train loss")
    axes[0].plot(epochs, [r["val_loss"] for r in history], label="validation loss")
    twin = axes[0].twinx()
    twin.plot(epochs, [r["val_dice"] for r in history], "g.", label="pseudo Dice")
    twin.plot(epochs, [r["ema_dice"] for r in history], "g-", label="pseudo Dice (EMA)")
    twin.set_ylabel("Dice")
    lines = axes[0].get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    axes[0].legend(lines, [line.get_label() for line in lines], loc="upper left", bbox_to_anchor=(1.08, 1.0),
                   fontsize=8)
    axes[1].plot(epochs, [r["lr"] for r in history])
    axes[1].set_ylabel("learning rate")
    axes[2].plot(epochs, [r["epoch_time"] for r in history])
    axes[2].set_ylabel("epoch time (s)")
    epoch_axis(axes[2], epochs)
    fig.tight_layout()
    return fig
