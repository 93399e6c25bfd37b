"""Signs of life inside training epochs: a progress bar with ETA on a terminal, a plain line now and then when the
output goes to a log, and once per run, after the first few iterations, an estimate of the epoch's and the run's time.

An epoch of 250 iterations of the GPU-sized network takes a quarter of an hour or more on a CPU; without these the
first line after the start would come only when the epoch ends.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

from tqdm import tqdm

ESTIMATE_AFTER = 5  # iterations timed before the estimate; the first, which carries the warm-up, is left out of it
LINE_INTERVAL_S = 30.0  # without a terminal: at most one progress line this often
VALIDATION_COST = 1 / 3  # a validation batch (forward only) against a training iteration (forward and backward)


def format_duration(seconds: float) -> str:
    """``42 s``, ``2.5 min``, ``12 min``, ``3.5 h`` or ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.{1 if seconds < 600 else 0}f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class EpochTicker:
    """Counts one epoch's iterations: updates the bar or prints a plain line, and calls ``estimate`` once."""

    def __init__(self, epoch: int, iterations: int, estimate: Callable[[float], None] | None, bar: bool,
                 line_interval_s: float):
        self.epoch, self.iterations, self.estimate = epoch, iterations, estimate
        self.line_interval_s = line_interval_s
        self.start = self.last_line = time.perf_counter()
        self.first_done: float | None = None
        self.done = 0
        self.bar = tqdm(total=iterations, desc=f"epoch {epoch}", unit="it", leave=False) if bar else None

    def step(self) -> None:
        """Record a finished iteration."""
        now = time.perf_counter()
        self.done += 1
        if self.done == 1:
            self.first_done = now
        # the pace after the first iteration, which carries the warm-up
        pace = (now - self.first_done) / (self.done - 1) if self.done > 1 else now - self.start
        if self.bar is not None:
            self.bar.update()
        elif now - self.last_line >= self.line_interval_s and self.done < self.iterations:
            left = pace * (self.iterations - self.done)
            print(f"epoch {self.epoch}: iteration {self.done}/{self.iterations}, {format_duration(now - self.start)} "
                  f"so far, about {format_duration(left)} left in the epoch", flush=True)
            self.last_line = now
        if self.estimate is not None and self.done == min(ESTIMATE_AFTER, self.iterations):
            self.estimate(pace)
            self.estimate = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Silent:
    """The ticker of a process that shows no progress."""

    def step(self) -> None:
        pass


class TrainingProgress:
    """Progress of one training run from ``first_epoch`` to ``epochs``: a bar on stderr when it is a terminal (or
    ``bar``), else plain lines on stdout; nothing at all when ``log_line`` is None, as in the non-main processes of a
    distributed run."""

    def __init__(self, first_epoch: int, epochs: int, iters_per_epoch: int, val_iters: int,
                 log_line: Callable[[str], None] | None, bar: bool | None = None,
                 line_interval_s: float = LINE_INTERVAL_S):
        self.epochs_left = epochs - first_epoch
        self.iters_per_epoch, self.val_iters = iters_per_epoch, val_iters
        self.log_line = log_line
        self.bar = sys.stderr.isatty() if bar is None else bar
        self.line_interval_s = line_interval_s
        self.estimated = False

    def estimate_text(self, per_iteration: float) -> str:
        """The one-off estimate from the seconds one training iteration took."""
        epoch = per_iteration * (self.iters_per_epoch + VALIDATION_COST * self.val_iters)
        return (f"estimate: {per_iteration:.2f} s per iteration, so about {format_duration(epoch)} per epoch and "
                f"{format_duration(epoch * self.epochs_left)} for the {self.epochs_left} epoch(s) to run")

    def _estimate(self, per_iteration: float) -> None:
        self.estimated = True
        self.log_line(self.estimate_text(per_iteration))

    @contextlib.contextmanager
    def epoch(self, epoch: int) -> Iterator[EpochTicker | _Silent]:
        """A ticker for ``epoch``'s iterations; the bar is cleared when the epoch ends."""
        if self.log_line is None:
            yield _Silent()
            return
        estimate = None if self.estimated else self._estimate
        ticker = EpochTicker(epoch, self.iters_per_epoch, estimate, self.bar, self.line_interval_s)
        try:
            yield ticker
        finally:
            ticker.close()
