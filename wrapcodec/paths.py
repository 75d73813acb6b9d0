"""Input and output file checks and file helpers shared by the commands.

Every output wrapcodec writes follows one rule, :func:`output_target`, used by
:class:`OutputFile` (behind the y4m and ``.wrp`` writers), :func:`atomic_write` and
:func:`check_output`:

- a regular file, or a path that does not exist yet, is written to a hidden temporary file
  beside it and renamed onto it only once complete, so a failure or Ctrl-C leaves the old file
  (or nothing) and never half a file. A symlink is followed: the file it points to is replaced
  and the link stays a link;
- anything else (a character or block device, a FIFO, a socket) is opened and written in
  place: renaming would put a regular file where ``/dev/null`` was, or leave a FIFO's reader
  waiting for a writer that never comes. Such an output cannot be all-or-nothing. A FIFO that
  no process opens for reading within :data:`FIFO_WAIT_S` is given up on (``cannot write``);
- ``-`` is standard output, written in place too.

A path that cannot name a file to write is refused before anything is written: a symlink loop
(``too many levels of symbolic links``), a path through something that is not a directory, or
a name that ends in a slash but is not a directory. A replaced file gets the mode of a new file
(0666 less the umask) whatever the writer made its temporary file with.

This module imports only :mod:`wrapcodec.errors`, so the container and y4m modules can use it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

from wrapcodec.errors import InputError

STDIO = "-"
"""The path that means standard input (for inputs) or standard output (for outputs)."""

_TEMP_NAME_CHARS = 200
"""Longest part of the destination's name kept in a temporary name (names stop at 255)."""

FIFO_WAIT_S = 60.0
"""Longest wait for a process to open a FIFO output for reading before giving up on it."""


def display_name(path: str | os.PathLike[str], *, output: bool = False) -> str:
    """How a path is named in messages: ``-`` is "standard input" or "standard output"."""
    text = os.fspath(path)
    if text == STDIO:
        return "standard output" if output else "standard input"
    return text


def check_input(path: str) -> None:
    """A readable, non-empty regular file, or ``-`` for stdin."""
    if path == "":
        raise InputError("the input path is empty")
    if path == STDIO:
        return
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file")
    if not p.is_file():
        raise InputError(f"{path}: not a regular file")
    if p.stat().st_size == 0:
        raise InputError(f"{path}: empty file")


class OutputTarget(NamedTuple):
    """Where an output goes and how (see the module docstring)."""

    path: Path
    """The file to replace (symlinks resolved), or the special file to write in place."""
    in_place: bool
    """True for devices, FIFOs and sockets: open and write, no temporary file, no rename."""


def output_target(path: str | os.PathLike[str]) -> OutputTarget:
    """The one rule for writing ``path`` (not ``-``): replace a regular or new file through a
    temporary file renamed onto it (symlinks followed to the file they point to); write
    anything else in place."""
    text = os.fspath(path)
    try:
        st = os.stat(text)  # follows symlinks: what matters is what the link points to
    except FileNotFoundError:
        st = None  # new file, or dangling link
    except OSError as exc:  # a symlink loop, a path through a file, ...
        reason = exc.strerror or str(exc)
        raise InputError(f"{text}: {reason[:1].lower()}{reason[1:]}") from None
    if st is None and text.endswith(("/", os.sep)):
        raise InputError(f"{text}: not a directory")  # the name would lose its slash
    if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        # Opened by its own name: the kernel follows links such as /dev/stdout ->
        # /proc/self/fd/1 -> pipe:[…], which no resolved path could name.
        return OutputTarget(Path(text), True)
    return OutputTarget(Path(os.path.realpath(text)), False)


def same_file(source: str, output: str) -> bool:
    """Whether writing ``output`` would overwrite ``source``: the same device and inode, so
    also through a symlink or a hard link. ``-`` as output compares standard output."""
    if source in ("", STDIO) or output == "":
        return False
    try:
        src = os.stat(source)
        out = os.fstat(sys.stdout.fileno()) if output == STDIO else os.stat(output)
    except (OSError, ValueError, AttributeError):  # no such file, or stdout has no descriptor
        return False
    return (src.st_dev, src.st_ino) == (out.st_dev, out.st_ino)


def check_output(path: str, overwrite: bool, source: str | None = None) -> None:
    """Fail before any work on an output that cannot or must not be written: an empty path,
    a directory, the input ``source`` itself (``-y`` or not), a missing directory, or an
    existing file without ``-y``."""
    if path == "":
        raise InputError("the output path is empty (give a file name, or - for stdout)")
    if source is not None and same_file(source, path):
        raise InputError(
            f"{display_name(path, output=True)}: is the input file {source}; writing it would "
            "destroy the input (choose another output)"
        )
    if path == STDIO:
        return
    target = output_target(path)
    if target.path.is_dir():
        raise InputError(f"{path}: is a directory")
    if not target.in_place and not target.path.parent.is_dir():
        raise InputError(f"{path}: output directory {target.path.parent} does not exist")
    if os.path.lexists(path) and not overwrite:
        raise InputError(f"{path}: already exists (use -y to overwrite)")


def _create_temp(dest: Path) -> tuple[int, Path]:
    """Create ``.<name>.<random>.tmp`` beside ``dest`` exclusively, with the mode of any new
    file (0666 less the umask; mkstemp's 0600 would stay after the rename)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = dest.with_name(f".{dest.name[:_TEMP_NAME_CHARS]}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(dest.parent))


class OutputFile:
    """A binary output written by the rule of :func:`output_target`.

    As a context manager, leaving the block normally :meth:`commit`\\ s (flush, optional
    fsync, rename the temporary file onto the destination) and leaving it through an
    exception, KeyboardInterrupt included, :meth:`abort`\\ s (the temporary file goes, the
    destination is untouched). Every failure to create, write or finish the output (a full
    disk, a file-size limit, a reader that went away) is an :class:`InputError`
    ``cannot write NAME: reason``. Standard output is flushed, never closed.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = False) -> None:
        """Open ``path`` for writing (``-``: standard output); ``sync`` fsyncs a replaced
        file before the rename, so a crash cannot leave an empty file behind it."""
        self.name = display_name(path, output=True)
        self._sync = sync
        self._tmp: Path | None = None
        self._dest: Path | None = None
        self._owned = True
        self._done = False
        self._stream: IO[bytes]
        if os.fspath(path) == STDIO:
            self._stream, self._owned = sys.stdout.buffer, False
            return
        target = output_target(path)
        try:
            if target.in_place:
                self._stream = _open_in_place(target.path)
                return
            fd, self._tmp = _create_temp(target.path)
            self._dest = target.path
            self._stream = os.fdopen(fd, "wb")
        except OSError as exc:
            self.abort()
            raise self._error(exc) from exc

    def _error(self, exc: OSError) -> InputError:
        return InputError(f"cannot write {self.name}: {exc.strerror or exc}")

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``."""
        if self._done:
            raise ValueError(f"{self.name}: write to a finished output")
        try:
            self._stream.write(data)
        except OSError as exc:
            raise self._error(exc) from exc

    def commit(self) -> None:
        """Finish the output: flush it and, for a replaced file, move it into place."""
        if self._done:
            return
        self._done = True
        try:
            self._stream.flush()
            if self._tmp is not None and self._sync:
                os.fsync(self._stream.fileno())
            if self._owned:
                self._stream.close()
            if self._tmp is not None and self._dest is not None:
                os.replace(self._tmp, self._dest)
                self._tmp = None
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise self._error(exc) from exc
            raise

    def abort(self) -> None:
        """Give up: close quietly and delete the temporary file (a replaced file is left as it
        was; what a device, FIFO or standard output already took stays taken)."""
        self._done = True
        stream = getattr(self, "_stream", None)
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                if self._owned:
                    stream.close()
                else:
                    stream.flush()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            self._tmp = None


def _open_in_place(path: Path) -> IO[bytes]:
    """Open a device, FIFO or socket for writing; a FIFO without a reader is waited for at
    most :data:`FIFO_WAIT_S` (an ``OSError`` saying so), never forever."""
    try:
        fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        fifo = False
    if not fifo:
        return open(path, "wb")  # closed by OutputFile.commit/abort
    deadline = time.monotonic() + FIFO_WAIT_S
    while True:
        try:  # non-blocking: ENXIO while no process has it open for reading
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_BINARY", 0))
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            if time.monotonic() >= deadline:
                raise OSError(
                    errno.ENXIO,
                    f"no process opened this FIFO for reading within {FIFO_WAIT_S:g} s",
                ) from None
            time.sleep(0.05)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "wb")


def spool_stdin(dest: Path) -> Path:
    """Copy stdin to ``dest`` in chunks (the encoder reads its input once per candidate); a
    failed write (a full disk, the file-size limit) is an :class:`InputError`."""
    try:
        with dest.open("wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    except OSError as exc:
        raise InputError(f"cannot copy standard input to {dest}: {exc.strerror or exc}") from exc
    return dest


def sha256_file(path: Path) -> str:
    """Content hash of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` with the path to write, by the rule of :func:`output_target`: a temporary
    file beside the (symlink-resolved) destination, renamed onto it when ``write`` returns and
    removed if it raises; or, for a device or FIFO, the destination itself. The file renamed
    into place has a new file's mode, whatever mode ``write`` gave it."""
    target = output_target(path)
    if target.in_place:
        write(target.path)
        return
    target.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(target.path)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    try:
        write(tmp)
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:  # safetensors, say, makes its own 0600
            os.chmod(tmp, mode)
        os.replace(tmp, target.path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
