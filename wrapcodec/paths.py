"""Input and output file checks shared by the commands."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from wrapcodec.errors import InputError


def check_input(path: str) -> None:
    """A readable, non-empty regular file, or ``-`` for stdin."""
    if path == "-":
        return
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if not p.is_file():
        raise InputError(f"{path}: not a regular file")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: empty file")


def check_output(path: str, overwrite: bool) -> None:
    """Refuse to clobber without ``-y`` and fail early on a missing directory."""
    if path == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{path}: is a directory")
    if not p.parent.is_dir():
        raise InputError(f"{path}: output directory {p.parent} does not exist")
    if p.exists() and not overwrite:
        raise InputError(f"{path}: already exists (use -y to overwrite)")


def spool_stdin(dest: Path) -> Path:
    """Copy stdin to ``dest`` in chunks (the encoder reads its input once per candidate)."""
    with dest.open("wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    return dest
