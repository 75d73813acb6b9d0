"""Ctrl-C and SIGTERM, sent for real to a real ``python -m wrapcodec``: one line, exit 130 or
143, no temporary folder, no partial output and no ffmpeg process left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from procs import alive, children, kill_all, one_line, requires_proc, start, wait_for

from wrapcodec.cli import cli
from wrapcodec.y4m import count_frames


@requires_proc
@pytest.mark.parametrize("jobs", ["1", "3"])
def test_sigterm_encode(tmp_path: Path, parkjoy: Path, jobs: str) -> None:
    """SIGTERM while ffmpeg codes a candidate (with --jobs 3, in worker threads, others
    queued): 'Terminated.', 143, no temporary folder, no output, and every ffmpeg gone."""
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    args = ["encode", str(parkjoy), "-o", str(out / "o.wrp"), "--codec", "x265", "--qp", "30"]
    args += ["--preset", "slow", "--options", "0,9,10,12,13", "--effort", "exhaustive"]
    proc = start([*args, "--jobs", jobs], tmp, tmp_path)
    wait_for(proc, lambda: bool(list(tmp.glob("wrapcodec-*/*.265"))), "encoding")
    time.sleep(0.5)
    coders = children(proc.pid)
    assert coders, "no ffmpeg running"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    one_line(err, "Terminated.")
    assert list(tmp.iterdir()) == []
    assert list(out.iterdir()) == []
    time.sleep(0.2)
    assert not [pid for pid in coders if alive(pid)], "ffmpeg left running"


@requires_proc
def test_sigterm_while_candidates_adapt_on_threads(tmp_path: Path, parkjoy: Path) -> None:
    """SIGTERM while two candidates are fitted on worker threads (long fits, which the handler
    cannot interrupt there): they stop at their next step, 'Terminated.', 143, nothing left."""
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    args = ["encode", str(parkjoy), "-o", str(out / "o.wrp"), "--codec", "x265", "--qp", "30"]
    args += ["--preset", "ultrafast", "--options", "0,1,5", "--effort", "exhaustive"]
    proc = start([*args, "--adapt-steps", "10000", "--jobs", "2"], tmp, tmp_path)
    wait_for(proc, lambda: bool(list(tmp.glob("wrapcodec-*/*wrapper*"))), "coding")
    time.sleep(4)  # both candidates measured; their fits (10,000 steps a rung) running
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    one_line(err, "Terminated.")
    assert time.monotonic() - t0 < 30, "the fits ran on after the signal"
    assert list(tmp.iterdir()) == []
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def wrapper_wrp(parkjoy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Park Joy clip through the 1/2 wrapper (a neural post-processor: a slow decode)."""
    out = tmp_path_factory.mktemp("wrp") / "w.wrp"
    args = ["encode", str(parkjoy), "-o", str(out), "--codec", "x264", "--qp", "30"]
    args += ["--preset", "ultrafast", "--options", "6", "--adapt-steps", "0", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


@requires_proc
def test_sigterm_decode(tmp_path: Path, wrapper_wrp: Path) -> None:
    """SIGTERM while the output is being written: 'Terminated.', 143, neither the hidden
    temporary output beside it nor the temporary folder left, ffmpeg gone."""
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    proc = start(["decode", str(wrapper_wrp), "-o", str(out / "o.y4m")], tmp, tmp_path)
    wait_for(proc, lambda: bool(list(out.glob(".o.y4m.*.tmp"))), "writing")
    decoders = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    one_line(err, "Terminated.")
    assert list(tmp.iterdir()) == []
    assert list(out.iterdir()) == []
    time.sleep(0.2)
    assert not [pid for pid in decoders if alive(pid)], "ffmpeg left running"


@pytest.mark.slow  # the command line in a child process
def test_sigterm_while_starting(tmp_path: Path) -> None:
    """SIGTERM while the command line is still importing: one line, 143."""
    proc = start(["backends"], tmp_path, tmp_path)
    time.sleep(0.5)  # the imports take seconds
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    one_line(err, "Terminated.")


_SWALLOWED = """
import os, signal, sys, types
from wrapcodec import __main__ as entry

def main():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except KeyboardInterrupt:
        pass  # swallowed inside an import, as a library's own fallback may
    raise AttributeError("module 'numpy' has no attribute 'dtype'")  # the half-made module

sys.modules["wrapcodec.cli"] = types.SimpleNamespace(main=main)
entry.main()
"""


def test_sigterm_that_breaks_an_import_still_ends_withone_line(tmp_path: Path) -> None:
    """A signal inside an import can leave a half-initialised module whose next user fails
    with another error: once a signal has come, that error ends as the signal does."""
    done = subprocess.run(
        [sys.executable, "-c", _SWALLOWED], cwd=tmp_path, capture_output=True, timeout=120
    )
    assert done.returncode == 143, done.stderr
    one_line(done.stderr, "Terminated.")


_IN_A_CALLBACK = """
import os, signal, sys, weakref
from wrapcodec import __main__ as entry

class Lock:
    pass

def lose_a_signal():
    # The interpreter reports and ignores an exception raised in a weakref callback (the
    # import system's module locks use them): the signal's exception is lost there.
    lock = Lock()
    ref = weakref.ref(lock, lambda _: os.kill(os.getpid(), signal.SIGTERM))
    del lock

def main():
    if sys.argv[1] == "command":
        lose_a_signal()
    print("the command ran")

class Cli:  # stands for the module wrapcodec.cli
    @property
    def main(self):
        if sys.argv[1] == "import":
            lose_a_signal()
        return main

sys.modules["wrapcodec.cli"] = Cli()
entry.main()
"""


@pytest.mark.parametrize("when", ["import", "command"])
def test_sigterm_lost_in_a_callback_still_ends_with_one_line(tmp_path: Path, when: str) -> None:
    """A signal whose exception the interpreter ignores (it came inside a weakref callback,
    as while the imports take their module locks): no traceback, and the program still ends
    as the signal does, not with status 0; one that came while importing runs no command."""
    done = subprocess.run(
        [sys.executable, "-c", _IN_A_CALLBACK, when],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 143, done.stderr
    one_line(done.stderr, "Terminated.")
    assert (b"the command ran" in done.stdout) == (when == "command")


_SLOW_MODULE = """
import os, signal, time
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.2)  # the rest of the module's initialisation
WHOLE = True
"""

_IMPORTS_IT = """
import sys, threading, time
from wrapcodec import interrupt

interrupt.install()
if sys.argv[2] == "threads":  # another thread might use the module
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
sys.path.insert(0, sys.argv[1])
start = time.monotonic()
try:
    import slow_module
    time.sleep(30)
    print("never interrupted")
except KeyboardInterrupt as exc:
    # whether the import ended whole is read here: the exception may come as soon as the
    # import statement returns, before any line after it
    module = sys.modules.get("slow_module")
    whole = getattr(module, "WHOLE", False)
    print(type(exc).__name__, module is not None, whole, time.monotonic() - start < 10)
"""


@pytest.mark.parametrize("threads", ["threads", "alone"])
def test_signal_inside_an_import_waits_for_its_end(tmp_path: Path, threads: str) -> None:
    """A signal while a module is being imported does not cut the import short, whether
    other threads run (a half-initialised module for them to find) or not (the command line
    still loading: an exception raised in Python code that a C++ extension calls as it
    initialises would abort the process): the import ends whole, and the signal's exception
    is raised right after, even inside a blocking call."""
    (tmp_path / "slow_module.py").write_text(_SLOW_MODULE)
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_IT, str(tmp_path), threads],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["Terminated", "True", "True", "True"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_after_the_decode_wrote_its_output(
    tmp_path: Path, wrapper_wrp: Path, sig: signal.Signals
) -> None:
    """A Ctrl-C or SIGTERM once the output is complete (just renamed into place, or once the
    command has said so and the program winds down): the output stays whole, and the program
    says 'Interrupted.' or 'Terminated.' and exits 130 or 143 (or, if the signal came after
    its last step, ends normally), never dies by the signal without a word."""
    line, status = {signal.SIGINT: ("Interrupted.", 130), signal.SIGTERM: ("Terminated.", 143)}[sig]
    reported = 0
    for when in ("renamed", "renamed", "said", "said"):
        out = tmp_path / "o.y4m"
        out.unlink(missing_ok=True)
        proc = start(["decode", str(wrapper_wrp), "-o", str(out)], tmp_path, tmp_path)
        assert proc.stderr is not None
        said = b""
        if when == "renamed":
            deadline = time.monotonic() + 120
            while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
                pass  # as close to the rename as possible
        else:
            said = proc.stderr.readline()  # "N frames → OUT": the command is over
            assert f"→ {out}".encode() in said, said
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        text = (said + err).decode()
        assert proc.returncode in (0, status), (when, text)
        assert "Traceback" not in text
        last = text.splitlines()[-1]
        assert last == line if proc.returncode else last.endswith(f"→ {out}"), text
        assert count_frames(out) == 10
        reported += proc.returncode == status
    assert reported, "every signal came after the program had ended"


def test_after_a_signal_a_finaliser_error_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal that cuts a constructor short leaves a half-built object whose ``__del__``
    may fail (llvmlite's, while numba compiles): once a signal has come, such an error is
    its consequence and prints nothing; before, it reaches the interpreter's hook."""
    from types import SimpleNamespace

    from wrapcodec import interrupt

    seen: list[object] = []
    hook = interrupt._unraisable(seen.append)
    error = SimpleNamespace(exc_value=AttributeError("'PassBuilder' object has no attribute"))
    monkeypatch.setattr(interrupt, "_received", [])
    hook(error)
    assert seen == [error]
    monkeypatch.setattr(interrupt, "_received", [signal.SIGTERM])
    hook(error)
    hook(SimpleNamespace(exc_value=interrupt.Terminated()))
    assert seen == [error]


def test_an_error_after_a_signal_ends_as_the_signal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The handler kills the ffmpeg whose output is being read; if the reader sees the cut
    output before the signal's exception reaches it, the error it raises is the signal's
    consequence: the command ends with 'Terminated.' and 143, not with that error."""
    from wrapcodec import interrupt

    damaged = tmp_path / "d.y4m"
    damaged.write_bytes(b"YUV4MPEG2 W8 H8 F25:1 C420jpeg\nFRAME\n" + bytes(10))
    args = ["info", str(damaged)]
    plain = CliRunner().invoke(cli, args)
    assert plain.exit_code == 1 and "Error:" in plain.output, plain.output
    monkeypatch.setattr(interrupt, "_received", [signal.SIGTERM])
    monkeypatch.setattr(interrupt, "_held", False)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 143, result.output
    assert result.output.strip().splitlines() == ["Terminated."]


_SEMAPHORES = """
import multiprocessing, os, signal, sys, time
import multiprocessing.synchronize as synchronize
from wrapcodec import interrupt

interrupt.install()
context = multiprocessing.get_context("spawn")  # named semaphores, known to a tracker
kept = [context.Lock() for _ in range(3)]  # alive as the program ends
if sys.argv[1] == "removing":
    real = synchronize.sem_unlink

    def unlink(name):  # the signal comes as a finalizer removes a semaphore
        os.kill(os.getpid(), signal.SIGTERM)
        real(name)

    synchronize.sem_unlink = unlink
    try:
        gone = context.Lock()
        del gone
        time.sleep(30)
    except KeyboardInterrupt as exc:
        interrupt.hold()
        sys.stderr.write(interrupt.message(exc) + "\\n")
        interrupt.finish(interrupt.exit_status(exc))
interrupt.finish(0)
"""


@pytest.mark.parametrize("when", ["exiting", "removing"])
def test_named_semaphores_leave_no_warning(tmp_path: Path, when: str) -> None:
    """A spawned process pool's queues hold named semaphores, which multiprocessing's resource
    tracker warns of on standard error if the program ends without removing them. They are
    removed at the exit that skips the interpreter's teardown, and a signal that comes while
    a finalizer removes one waits for its end (cut short, the tracker would still list it)."""
    done = subprocess.run(
        [sys.executable, "-c", _SEMAPHORES, when],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    if when == "exiting":
        assert done.returncode == 0 and done.stderr == b"", done.stderr
    else:
        assert done.returncode == 143, done.stderr
        one_line(done.stderr, "Terminated.")


@requires_proc
def test_the_cleanup_does_not_wait_on_pipes_held_elsewhere(tmp_path: Path) -> None:
    """The tests' cleanup kills what a command started and reaps it even when a process it
    no longer knows (here one left behind by a shell that has ended) holds its pipes open,
    instead of waiting for that process to end."""
    pidfile = tmp_path / "orphan"
    proc = subprocess.Popen(
        ["sh", "-c", f"(sleep 60 & echo $! > {pidfile}); sleep 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_for(proc, lambda: pidfile.is_file() and pidfile.read_text().strip() != "", "the orphan")
    orphan = int(pidfile.read_text())
    try:
        begun = time.monotonic()
        kill_all(proc, [])
        assert proc.returncode is not None and time.monotonic() - begun < 30
        assert alive(orphan)  # it held the pipes all along
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)
