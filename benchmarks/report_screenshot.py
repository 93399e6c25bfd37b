"""Look at a study's report.html in a real browser: headless Chromium saves a screenshot of the page.

    python benchmarks/report_screenshot.py STUDY_FOLDER/report.html shot.png [--width 1280] [--height 4000]

The page is opened as a file with the network off, so an image that is not embedded would not load.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def screenshot(page: Path, output: Path, width: int = 1280, height: int = 4000, timeout: float = 120) -> Path:
    """Render ``page`` in headless Chromium at ``width`` x ``height`` CSS pixels into the PNG ``output``."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no Chromium on PATH (apt-get install chromium)")
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", f"--window-size={width},{height}",
                    f"--screenshot={output.resolve()}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=timeout)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args(argv)
    print(screenshot(args.page, args.output, args.width, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
