"""Ctrl-C and SIGTERM: one line, exit status 130 or 143, nothing left behind.

Python turns SIGINT (Ctrl-C) into :class:`KeyboardInterrupt`, which unwinds the program: every
``with`` block and ``finally`` on the way removes what it made (temporary folders, the hidden
temporary file beside an output). SIGTERM, what ``timeout``, systemd and container runtimes
send, would kill the process on the spot instead. :func:`install` makes it raise
:class:`Terminated`, a :class:`KeyboardInterrupt`, so that it unwinds the same way.

A terminal's Ctrl-C reaches every process of the foreground group, ffmpeg included; SIGTERM
reaches only wrapcodec. So the handler also kills the ffmpeg processes started through
:func:`track` (worker threads' included), and after the first signal :func:`track` kills and
refuses any new one, so work still queued cannot start one. Repeated signals are ignored while
the program cleans up (SIGKILL still ends it).

A signal that comes while the main thread imports a module does not raise there: an import
cut short can leave a module half-initialised (a C extension's, numba's threading layer) for
other threads, or the unwinding program, to find; and an exception raised in Python code that
a C++ extension calls as it initialises (torch's, through pybind11) is thrown on as a C++
exception that nothing catches, which aborts the process. The handler kills the ffmpeg
processes at once, and the exception is raised as soon as the import is over (the signal is
delivered again every few milliseconds until then).

A signal can come where its exception cannot propagate (a weakref callback, as the import
system's module locks use): the interpreter then ignores it. The handler has noted the
signal all the same, so the traceback is not printed, no command starts after the imports,
and a command that returns as if nothing happened still ends as the signal does.

Once a command has finished, its outputs are complete: after :func:`hold` the two signals no
longer raise (the main thread blocks them, the handler notes them), and :func:`finish`
reports one that arrived since then, flushes standard output and error and
exits without the interpreter's teardown (a second or so of torch and numba), during which a
signal would end the process without a word.

A pool's worker process is set up by :func:`worker` (the pool's initializer) and runs each
task inside :func:`working`: a signal during a task kills the task's ffmpeg processes and
unwinds it as in the main program (its temporary folder removed); one while the worker waits
for a task ends the worker on the spot, with nothing to clean up. So the parent stops its
workers by sending them SIGTERM, and a terminal's Ctrl-C, which reaches them too, does the same.
A worker whose parent has ended without stopping it (SIGKILL) sends itself SIGTERM.

A pool of spawned processes holds named semaphores, which multiprocessing removes in finalizers
and reports to a resource tracker; the tracker warns on standard error of any left when the
program ends. So a signal waits while such a finalizer runs, and :func:`finish` runs the ones
still due before it exits.

This module imports only the standard library's lightest modules, so that ``__main__`` can
install the handlers before it imports the command line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator

EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports a command that Ctrl-C ended."""
EXIT_TERMINATED = 143
"""128 + SIGTERM."""

_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise :class:`KeyboardInterrupt`."""


_received: list[int] = []  # the first signal handled, if any
_late: list[int] = []  # signals that came after hold()
_deferred: list[int] = []  # redeliveries pending while an import runs
_children: set[subprocess.Popen[bytes]] = set()
_installed = False
_held = False
_worker = False  # this process is a pool's worker (see worker())
_busy = False  # ... and runs a task (see working())
_orphaned = False  # ... whose parent has ended (see _watch_parent())


def exit_status(exc: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def message(exc: KeyboardInterrupt) -> str:
    """The one line that says why the program stopped."""
    return "Terminated." if isinstance(exc, Terminated) else "Interrupted."


def _interruption(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def stopping() -> bool:
    """Whether a signal has asked the program to stop."""
    return bool(_received)


def received() -> KeyboardInterrupt | None:
    """The interruption of the first signal handled (None: no signal yet)."""
    return _interruption(_received[0]) if _received else None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        if proc.returncode is None:
            proc.kill()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _held:  # the command is over: finish() reports it
        _late.append(signum)
        return
    if _worker and not _busy:  # a worker between tasks: nothing to clean up
        for proc in list(_children):
            _kill(proc)
        os._exit(128 + signum)
    if _received and not _deferred:
        return  # cleaning up after the first one
    if not _received:
        _received.append(signum)
        for proc in list(_children):
            _kill(proc)
    if _importing(frame) or _naming_semaphore(frame):
        _deliver_again(signum)
        return
    _deferred.clear()
    raise _interruption(_received[0])


REDELIVERY_S = 0.005
"""How often a signal deferred by an import is delivered again."""
_REDELIVERY = "wrapcodec-signal"  # the name of the thread that delivers it


def _importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside an import (the import system's frames are below it)."""
    return _inside(frame, lambda code: code.co_filename.startswith("<frozen importlib"))


def _inside(frame: FrameType | None, where: Callable[[CodeType], bool]) -> bool:
    """Whether ``frame`` or a frame below it runs code that ``where`` picks."""
    while frame is not None:
        if where(frame.f_code):
            return True
        frame = frame.f_back
    return False


_SEMAPHORE_CODE = {
    os.path.join("multiprocessing", "resource_tracker.py"): None,  # any of it
    os.path.join("multiprocessing", "synchronize.py"): ("__init__", "_cleanup"),
    os.path.join("multiprocessing", "util.py"): ("__call__",),  # a finalizer's
}


def _naming_semaphore(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside multiprocessing's code that creates a named semaphore
    (a process pool's queues, when its processes are spawned) or removes it in a finalizer,
    and tells its resource tracker. Cut short there, a semaphore would stay registered with
    the tracker after its removal, or with no finalizer left to remove it, and the tracker
    would print a warning about it when the program has ended. (Only that code: a wait on a
    multiprocessing condition, say, must not put the signal off.)"""
    return _inside(
        frame,
        lambda code: any(
            code.co_filename.endswith(path) and (names is None or code.co_name in names)
            for path, names in _SEMAPHORE_CODE.items()
        ),
    )


def _deliver_again(signum: int) -> None:
    """Send ``signum`` to the main thread again in :data:`REDELIVERY_S` (a real signal, so
    that a blocking call returns to the handler as it did the first time)."""
    _deferred[:] = [signum]
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(REDELIVERY_S, signal.pthread_kill, (main, signum))
    timer.name = _REDELIVERY
    timer.daemon = True
    timer.start()


def _unraisable(hook: Callable[[Any], object]) -> Callable[[Any], object]:
    """``sys.unraisablehook`` that stays silent once a signal has come.

    The interpreter ignores an exception raised where it cannot propagate (a weakref
    callback, such as the import system's module locks use; a ``__del__``) and prints its
    traceback. The signal is not lost for that: :func:`received` has it, and the program
    ends as the signal does (:func:`finish`). Nor is any other such exception after the
    signal worth a traceback: it is the signal's consequence, as when the signal cut short
    the constructor of an object whose ``__del__`` then finds it half-built (llvmlite's,
    while numba compiles)."""

    def silent(unraisable: Any) -> object:
        if _received:
            return None
        return hook(unraisable)

    return silent


def install() -> None:
    """Handle SIGINT and SIGTERM as described above (from the main thread; a signal the
    program was started ignoring, as a shell does for background jobs, stays ignored)."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    if not _installed:
        sys.unraisablehook = _unraisable(sys.unraisablehook)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)
        _installed = True
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _handler)
        _installed = True


def worker() -> None:
    """Set up a pool's worker process (the pool's initializer): the handlers installed, as
    :func:`install` does (a forked worker has them already, a spawned one not), and nothing
    of the parent's state kept (its signals, its ffmpeg processes)."""
    global _worker, _held
    _received.clear()
    _late.clear()
    _deferred.clear()
    _children.clear()
    _held = False
    _worker = True
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    install()
    _watch_parent()


_WATCHER = "wrapcodec-parent"  # the name of a worker's thread that waits for its parent


def _watch_parent() -> None:
    """End this worker when its parent ends, whatever ended it (SIGKILL included): a thread
    waits for the parent's end and sends this process SIGTERM, which unwinds a task as a
    signal from the parent would (its ffmpeg killed, its temporary folder removed). Without
    it, an orphaned worker would code on for no one, holding the pipes of whoever ran the
    parent (a shell's pipeline, ``subprocess.run``), so that they never close."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None or any(t.name == _WATCHER for t in threading.enumerate()):
        return

    def watch() -> None:
        global _orphaned
        parent.join()
        _orphaned = True
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name=_WATCHER, daemon=True).start()


@contextlib.contextmanager
def working() -> Iterator[None]:
    """In a worker process, the span of one task: a signal inside it unwinds the task (see
    the module's docstring). A task that comes after a signal is refused at once."""
    global _busy
    if _received:
        raise _interruption(_received[0])
    _busy = True
    try:
        yield
    finally:
        _busy = False
        if _orphaned:  # unwound: no one is left to take the outcome
            os._exit(EXIT_TERMINATED)


def track(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` when a signal stops the program; once one has, kill it now and raise
    the signal's :class:`KeyboardInterrupt`. Call :func:`untrack` once it is reaped."""
    _children.add(proc)
    if _received:  # the handler ran before ``proc`` was added: it did not see it
        _kill(proc)
        raise _interruption(_received[0])


def untrack(proc: subprocess.Popen[bytes]) -> None:
    """Forget ``proc`` (it has exited)."""
    _children.discard(proc)


def hold() -> None:
    """SIGINT and SIGTERM no longer raise from now on (the command has finished);
    :func:`finish` reports one that arrives meanwhile. Does nothing unless :func:`install`
    took them."""
    global _held
    if _installed and not _held and threading.current_thread() is threading.main_thread():
        _held = True
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)


def finish(status: int) -> NoReturn:
    """Exit with ``status``, or 130/143 with its line if a signal came after :func:`hold`,
    or came before and its exception was lost (see :func:`_unraisable`) while ``status`` says
    the command succeeded.

    With the handlers installed, the process ends here, without the interpreter's teardown:
    the command's files are closed and its output flushed, and a signal during that second
    would kill the process silently."""
    hold()
    exc: KeyboardInterrupt | None = None
    if _received and status == 0:  # its exception was lost where it could not propagate
        exc = _interruption(_received[0])
    elif _held and not _received:
        pending = set(_late) | (signal.sigpending() & _SIGNALS)
        if pending:
            exc = _interruption(signal.SIGTERM if signal.SIGTERM in pending else signal.SIGINT)
    if exc is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(message(exc) + "\n")
        status = exit_status(exc)
    if not _held:
        sys.exit(status)
    _run_exit_finalizers()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


FINALIZERS_S = 1.0
"""How long the exit waits for another thread's multiprocessing finalizer to finish."""


def _run_exit_finalizers() -> None:
    """The exit work that multiprocessing registered and ``os._exit`` would skip: its
    finalizers of priority 0 and up, which remove the named semaphores of a spawned pool's
    queues still alive (after a signal, the stopped pool's) and tell the resource tracker,
    which would otherwise warn of each on standard error once the program has ended. A
    finalizer that the garbage collector runs in another thread is waited for first."""
    util = sys.modules.get("multiprocessing.util")
    run = getattr(util, "_run_finalizers", None)
    if not callable(run):
        return
    me = threading.get_ident()
    deadline = time.monotonic() + FINALIZERS_S
    while time.monotonic() < deadline and any(
        _naming_semaphore(frame) for ident, frame in sys._current_frames().items() if ident != me
    ):
        time.sleep(0.001)
    with contextlib.suppress(Exception):
        run(0)
