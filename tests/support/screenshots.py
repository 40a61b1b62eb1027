"""Screenshots the browser tests take stay in the test's temporary folder.

The README's pictures (docs/*.png) are refreshed by hand: run the browser tests with
SCREENSHOT_DIR=docs and commit what changed. No test writes into the repository otherwise.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def keep_screenshot(shot: Path, name: str | None = None) -> None:
    """Copy `shot` to $SCREENSHOT_DIR (as `name`, else its own name) when that is set."""
    folder = os.environ.get("SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(folder) / (name or shot.name))
