"""Every option of every console script is documented: some page of documentation/ that names the command also names
the option (in its long or short form), so a user who finds the command finds its options."""

import contextlib
import importlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = re.findall(r'"(covtransfer_\w+)": "(\w+)"', (ROOT / "setup.py").read_text())
PAGES = {page.name: page.read_text() for page in (ROOT / "documentation").glob("*.md")}


def options(module: str) -> list[list[str]]:
    """The option strings of each option in the command's ``--help``, e.g. ``[["-d", "--dataset"], ...]``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        importlib.import_module(f"covtransfer.cli.{module}").main(["--help"])
    # argparse indents each option's own line by two spaces; its wrapped description lines by more
    heads = [re.split(r"\s{2,}", line.strip())[0] for line in out.getvalue().splitlines() if re.match(r"  -", line)]
    return [re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", head) for head in heads]


def test_the_scripts_are_found():
    assert len(SCRIPTS) >= 13 and ("covtransfer_train", "train") in SCRIPTS


@pytest.mark.parametrize("script, module", SCRIPTS)
def test_every_option_is_on_a_page_that_names_the_command(script, module):
    pages = [text for text in PAGES.values() if script in text]
    assert pages, f"no page of documentation/ names {script}"
    found = options(module)
    assert len(found) >= 2, found  # at least -h and one more: the help was parsed
    missing = [forms for forms in found if forms != ["-h", "--help"] and not any(
        re.search(r"(?<![\w-])" + re.escape(form) + r"(?![\w-])", text) for form in forms for text in pages)]
    assert not missing, f"{script}: options on no page that names it: {missing}"
