"""A real ``python -m wrapcodec`` in a child process, and the processes it started, read off
/proc: for the tests that send it Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
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
        # A crash (a signal the program does not survive) prints every thread's stack.
        env={**os.environ, "TMPDIR": str(tmp), "PYTHONFAULTHANDLER": "1"},
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
    assert ready(), f"{what} never happened; running: {tree(proc.pid)}"


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


def tree(pid: int) -> str:
    """``pid`` and every process it started: name, state and what each waits in, to say
    where a command that never got on stood."""

    def about(p: int) -> str:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
            waits = Counter(
                (t / "wchan").read_text().strip() or "-" for t in Path(f"/proc/{p}/task").iterdir()
            )
        except OSError:
            return f"{p} (ended)"
        threads = ", ".join(f"{n}×{w}" for w, n in sorted(waits.items()))
        return f"{p} {command(p)} {state} [{threads}]"

    return "; ".join(about(p) for p in [pid, *descendants(pid)])


def one_line(err: bytes, line: str) -> None:
    """``err`` holds ``line`` and nothing else."""
    lines = [x for x in err.decode().splitlines() if x.strip()]
    assert lines == [line], err.decode()


STOPPED_S = 10.0
"""How soon after the signal a command must have ended, and everything it started with it
(a point or segment of a slow preset takes a minute or more)."""


def coders(pid: int) -> list[int]:
    return [p for p in descendants(pid) if command(p).startswith("ffmpeg")]


def stopped(
    proc: subprocess.Popen[bytes], busy: int, sig: signal.Signals, line: str, status: int
) -> None:
    """Once ``busy`` ffmpeg processes run under ``proc``, send ``sig``: ``proc`` ends with
    ``status`` and ``line``, and every process it had started ends too, within
    :data:`STOPPED_S` seconds."""
    started: list[int] = []
    try:
        wait_for(proc, lambda: len(coders(proc.pid)) >= busy, f"{busy} ffmpeg running")
        time.sleep(0.5)
        started = descendants(proc.pid)
        proc.send_signal(sig)
        signalled = time.monotonic()
        ended = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            ended = proc.communicate(timeout=STOPPED_S)
        assert ended is not None, f"still running {STOPPED_S:g} s after the signal"
        err = ended[1]
        assert proc.returncode == status, err
        one_line(err, line)
        _all_ended(started, signalled)
    finally:  # a failed test leaves nothing behind either
        kill_all(proc, started)


def killed(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``, which leaves it no time to stop what it started: every process it
    had started (its segment workers, their ffmpeg) ends all the same, and its pipes close,
    within :data:`STOPPED_S` seconds."""
    started = descendants(proc.pid)
    try:
        proc.send_signal(signal.SIGKILL)
        signalled = time.monotonic()
        ended = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            ended = proc.communicate(timeout=STOPPED_S)
        alive_then = [f"{p} {command(p)}" for p in started if alive(p)]
        assert ended is not None, f"its pipes still open {STOPPED_S:g} s on: {alive_then}"
        _all_ended(started, signalled)
    finally:
        kill_all(proc, started)


def _all_ended(started: list[int], signalled: float) -> None:
    while [p for p in started if alive(p)] and time.monotonic() - signalled < STOPPED_S:
        time.sleep(0.05)
    left = [f"{p} {command(p)}" for p in started if alive(p)]
    assert not left, f"left running: {left}"


def kill_all(proc: subprocess.Popen[bytes], started: list[int]) -> None:
    """SIGKILL ``proc`` and everything it started, known before or found now, and reap it
    without waiting on pipes that a process unknown here may still hold open."""
    for pid in dict.fromkeys([*descendants(proc.pid), proc.pid, *started]):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=STOPPED_S)
    except subprocess.TimeoutExpired:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
