"""Test helpers for the console scripts: run one as its entry point would, and check that one refuses its input."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from covtransfer.cli.common import run_cli
from covtransfer.config import Roots


def run_command(main, argv: list[str]) -> tuple[int, str]:
    """The exit code and standard output of the console script ``main`` given ``argv``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run_cli(main, argv)
    return code, out.getvalue()


def refusal(main, argv: list[str], capsys, *words: str, after_progress: bool = False) -> str:
    """Run a command that must refuse its input and return its ``error:`` line.

    The command must exit with 1, print no traceback and end standard error with one ``error:`` line holding every
    word. Nothing else may be printed, unless ``after_progress``: then earlier lines (progress of steps that had
    finished before the refusal) may come first."""
    capsys.readouterr()
    code, out = run_command(main, argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and lines and "Traceback" not in err, err
    assert after_progress or (len(lines) == 1 and out == ""), err
    assert lines[-1].startswith("error: ") and all(word in lines[-1] for word in words), err
    return lines[-1]


def root_flags(roots: Roots | Path) -> list[str]:
    """``--raw``, ``--preprocessed`` and ``--results`` for ``roots``, or for the three folders of that name in a base
    folder."""
    if isinstance(roots, Path):
        roots = Roots(roots / "raw", roots / "preprocessed", roots / "results")
    return ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]
