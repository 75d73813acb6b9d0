"""A copy of the shipped model bank, for the tests that change one (add a prior, break a
weight or a card)."""

from __future__ import annotations

import shutil
from pathlib import Path

from wrapcodec.bank import shipped_folder


def copy_bank(dest: Path, priors: bool = True) -> Path:
    """The shipped bank's weights and cards in ``dest`` (its Python files left out); without
    its priors (``post-*-pN``) when ``priors`` is False."""
    skip = ["*.py", "__pycache__", *([] if priors else ["post-*-p*"])]
    shutil.copytree(shipped_folder(), dest, ignore=shutil.ignore_patterns(*skip))
    return dest
