"""Input and output file checks and file helpers shared by the commands."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
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


def sha256_file(path: Path) -> str:
    """Content hash of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it onto ``path``; on
    any failure the temporary file goes and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
