"""A real ``python -m wrapcodec`` in a child process, and the processes it started, read off
/proc: for the tests that send it Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

requires_proc = pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/task").is_dir(), reason="needs /proc to see child processes"
)


def start(args: list[str], tmp: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """``python -m wrapcodec ARGS`` in ``cwd``, with ``tmp`` as its temporary folder."""
    return subprocess.Popen(
        [sys.executable, "-m", "wrapcodec", *args],
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        # A runner started in the background ignores SIGINT, and children inherit that;
        # a user's terminal does not, so give the child the default dispositions.
        preexec_fn=lambda: [
            signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)
        ],
    )


def wait_for(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str) -> None:
    """Wait (two minutes at most) until ``ready()``, failing if ``proc`` ends first."""
    deadline = time.monotonic() + 120
    while not ready() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    assert ready(), f"{what} never happened"


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (ffmpeg), from every thread."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:  # the process ended meanwhile
        return []
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process whose parent chain leads to ``pid``: its children, theirs, and so on."""
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def command(pid: int) -> str:
    """The process's name ('' once it has gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: it only waits to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def one_line(err: bytes, line: str) -> None:
    """``err`` holds ``line`` and nothing else."""
    lines = [x for x in err.decode().splitlines() if x.strip()]
    assert lines == [line], err.decode()
