"""Ctrl-C and SIGTERM stop every process a command started, at once: the bench's worker
processes with their ffmpeg, the encoder's threads' ffmpeg. Sent for real to a real
``python -m wrapcodec``, with the processes it started read off /proc before the signal."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from procs import STOPPED_S, alive, children, requires_proc, start, stopped
from pydantic import BaseModel

from wrapcodec.bench.cache import Cache
from wrapcodec.bench.run import run_cached

SLOW = ["--codec", "vvenc", "--preset", "slower"]
"""The codec at its slowest: whatever is running when the signal comes is far from done."""

SIGNALS = pytest.mark.parametrize(
    ("sig", "line", "status"),
    [(signal.SIGTERM, "Terminated.", 143), (signal.SIGINT, "Interrupted.", 130)],
)


@requires_proc
@SIGNALS
def test_signal_stops_the_bench_workers(
    tmp_path: Path,
    parkjoy: Path,
    require_backend: Callable[[str], None],
    sig: signal.Signals,
    line: str,
    status: int,
) -> None:
    """A signal while two worker processes each code a point and two more points wait: the
    command ends at once with one line, the workers and their ffmpeg with it, and no
    temporary folder is left."""
    require_backend("vvenc")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    args = ["bench", str(parkjoy), *SLOW, "--qps", "22,27,32,37", "--options", "0"]
    args += ["--jobs", "2", "--threads", "1", "--out", str(tmp_path / "bench")]
    proc = start(args, tmp, tmp_path)
    stopped(proc, 2, sig, line, status)
    assert list(tmp.iterdir()) == []


@requires_proc
@SIGNALS
def test_signal_stops_the_encoder_threads(
    tmp_path: Path,
    parkjoy: Path,
    require_backend: Callable[[str], None],
    sig: signal.Signals,
    line: str,
    status: int,
) -> None:
    """A signal while three threads each code a candidate: the command ends at once with one
    line, every ffmpeg with it, and neither a temporary folder nor an output is left."""
    require_backend("vvenc")
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    args = ["encode", str(parkjoy), "-o", str(out / "o.wrp"), *SLOW, "--qp", "30"]
    args += ["--options", "0,9,10,12,13", "--effort", "exhaustive", "--jobs", "3"]
    proc = start(args, tmp, tmp_path)
    stopped(proc, 3, sig, line, status)
    assert list(tmp.iterdir()) == []
    assert list(out.iterdir()) == []


class _Spec(BaseModel):
    n: int
    seconds: float = 0.0

    def key(self) -> str:
        return f"n{self.n}"


class _Result(BaseModel):
    n: int
    pid: int


def _measure(spec: _Spec) -> _Result:
    time.sleep(spec.seconds)
    return _Result(n=spec.n * spec.n, pid=os.getpid())


def test_worker_processes_measure_in_order(tmp_path: Path) -> None:
    """On two processes, every result comes back, in the order of the specs, from the
    workers."""
    specs = [_Spec(n=n) for n in range(6)]
    results, measured = run_cached(specs, Cache(tmp_path, _Result), _measure, jobs=2)
    assert [r.n for r in results] == [n * n for n in range(6)]
    assert measured == 6
    assert os.getpid() not in {r.pid for r in results}


@requires_proc
def test_stopping_while_taking_a_result_stops_the_workers(tmp_path: Path) -> None:
    """A signal while the caller handles a result, outside the workers' iterator: the workers,
    still measuring, are stopped at once all the same."""
    specs = [_Spec(n=0), *(_Spec(n=n, seconds=60.0) for n in range(1, 5))]
    before = set(children(os.getpid()))  # earlier tests' helpers (a resource tracker, say)
    workers: list[int] = []

    def interrupted(result: _Result, _hit: bool) -> None:
        started = set(children(os.getpid())) - before
        workers.extend(p for p in started if not _resource_tracker(p))
        assert result.pid in workers
        raise KeyboardInterrupt

    begun = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_cached(specs, Cache(tmp_path, _Result), _measure, jobs=2, on_result=interrupted)
    assert time.monotonic() - begun < STOPPED_S
    assert len(workers) == 2
    assert not [p for p in workers if alive(p)]


def _resource_tracker(pid: int) -> bool:
    """Whether ``pid`` is multiprocessing's resource tracker, which the first pool of a process
    starts and which lives as long as that process, by design."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
