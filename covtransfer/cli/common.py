"""Shared command-line plumbing: the data-root and device flags, and the wrapper that turns errors into one line
and exit 1."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from covtransfer.config import Roots, resolve_roots
from covtransfer.devices import DEVICE_HELP
from covtransfer.errors import CovtransferError


def help_description(docstring: str) -> str:
    """A module docstring as an argparse description: without the reST ````literal```` markup, which ``--help`` would
    print as it is."""
    return docstring.replace("``", "")


def add_root_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--raw``, ``--preprocessed`` and ``--results``, which override the environment variables."""
    group = parser.add_argument_group("data roots (default: $COVTRANSFER_* or ./covtransfer_data/*)")
    group.add_argument("--raw", help="raw datasets root ($COVTRANSFER_RAW)")
    group.add_argument("--preprocessed", help="preprocessed datasets root ($COVTRANSFER_PREPROCESSED)")
    group.add_argument("--results", help="training results root ($COVTRANSFER_RESULTS)")


def add_device_argument(parser: argparse.ArgumentParser, note: str = "") -> None:
    """Add ``--device`` (resolved by the command with :func:`covtransfer.devices.resolve_device`)."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP + (f"; {note}" if note else ""))


def roots_from_args(args: argparse.Namespace) -> Roots:
    """The data roots after applying the flags on top of environment and defaults."""
    return resolve_roots(getattr(args, "raw", None), getattr(args, "preprocessed", None),
                         getattr(args, "results", None))


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; a :class:`CovtransferError` prints ``error: <message>`` on one line and exits 1."""
    try:
        code = main(argv)
    except CovtransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
