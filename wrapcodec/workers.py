"""Work spread over processes: a local pool of worker processes that a signal or an error
stops with everything they started, and a client of a Dask distributed scheduler. The bench
measures its points and the encoder codes its segments through these.

A pool's worker process is set up by :func:`wrapcodec.interrupt.worker` and runs each task
inside :func:`wrapcodec.interrupt.working` (:func:`in_worker`), so that SIGTERM unwinds a task
as it would the main program: its ffmpeg processes killed, its temporary folders removed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from wrapcodec import allocator, interrupt
from wrapcodec.errors import WrapcodecError

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

    from distributed import Client

S = TypeVar("S")
R = TypeVar("R")

STOP_GRACE_S = 5.0
"""How long worker processes have to unwind their tasks after SIGTERM (kill their ffmpeg,
remove their temporary folders) before they are killed."""


def in_worker(task: Callable[[S], R], spec: S) -> R:
    """``task(spec)`` in a worker process, as one task (:func:`interrupt.working`), the
    allocator set as the command line sets it (:mod:`wrapcodec.allocator`; a spawned worker
    does not inherit it)."""
    allocator.keep_freed_memory()
    with interrupt.working():
        return task(spec)


def pool(
    jobs: int,
    initializer: Callable[..., object] = interrupt.worker,
    initargs: tuple[Any, ...] = (),
    context: BaseContext | None = None,
) -> concurrent.futures.ProcessPoolExecutor:
    """``jobs`` worker processes, each set up by ``initializer(*initargs)``, which must call
    :func:`interrupt.worker` (the default is that function), started as ``context`` says
    (the platform's default: on Linux, forked). A process that has run torch's OpenMP
    threads cannot fork safely: it needs the ``spawn`` context."""
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=initializer, initargs=initargs
    )


def stop(executor: concurrent.futures.ProcessPoolExecutor) -> None:
    """Cancel the tasks not started and stop the worker processes: SIGTERM, which makes each
    unwind its task (:mod:`wrapcodec.interrupt`), then SIGKILL for one still there after
    :data:`STOP_GRACE_S`. Waiting for the running tasks instead could take minutes."""
    # The executor's own list of its processes (Python 3.14's terminate_workers() reads it
    # too): the public shutdown() would wait for the running tasks or leave them running.
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    try:
        for proc in processes:
            with contextlib.suppress(OSError, ValueError):
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in processes:
            proc.join(max(0.0, deadline - time.monotonic()))
    finally:
        for proc in processes:
            with contextlib.suppress(OSError, ValueError):
                if proc.exitcode is None:
                    proc.kill()
                    proc.join(1.0)
        # The executor's thread that fed the processes ends once they have. Wait for it, so
        # that it does not release the pool's queues (spawned: named semaphores, which their
        # finalizers remove) while the program exits, leaving one to multiprocessing's
        # resource tracker, which warns of it on standard error.
        manager = getattr(executor, "_executor_manager_thread", None)
        if manager is not None and manager.is_alive():
            manager.join(STOP_GRACE_S)


def dask_task(task: Callable[..., R], *args: Any) -> R:
    """``task(*args)`` on a Dask worker, its heap set up for frames first
    (:func:`heap_for_frames`)."""
    heap_for_frames()
    return task(*args)


def dask_client(address: str) -> Client:
    """A client of the Dask scheduler at ``address``; a :class:`WrapcodecError` when
    dask.distributed is not installed or the scheduler cannot be reached."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise WrapcodecError(
            "--dask needs dask.distributed: pip install 'wrapcodec[cluster]'"
        ) from exc
    try:
        return Client(address, timeout="20s")
    except OSError as exc:
        raise WrapcodecError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc


def release_memory() -> None:
    """Give the memory freed since the last call back to the system: collect the garbage,
    then (glibc) trim every malloc arena. Without it a process that codes segment after
    segment keeps the freed frames of earlier ones as fragmented heap, and its footprint grows
    with the clip's length."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        allocator.libc().malloc_trim(0)


def heap_for_frames() -> None:
    """Serve the frame-sized arrays a segment allocates by the thousand from the heap again
    (glibc), where a worker's environment stops that: Dask starts its workers with
    ``MALLOC_TRIM_THRESHOLD_`` set, which turns off glibc's dynamic mmap threshold, so that
    every array above 128 KiB is mapped and faulted in afresh and a segment codes 2x slower.
    The thresholds are the command line's (:func:`wrapcodec.allocator.keep_freed_memory`);
    :func:`release_memory` gives the heap back after each segment."""
    allocator.keep_freed_memory()
