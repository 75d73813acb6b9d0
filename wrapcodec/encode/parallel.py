"""Segments coded one after another in this process, on local worker processes
(``--jobs N``) or on a Dask cluster (``--dask ADDRESS``), with the same bytes whatever the
executor and its size.

A segment's update is fitted from, and may be sent as a change to, the update its chain's
previous segment left in force (:func:`~wrapcodec.encode.segments.chain_after`), so a chain
is coded in order. Chains restart where the content changes (``EncodeConfig.chains``): the
segments of different scenes are independent, and those are what runs at once. A worker gets
a segment's frames (on a Dask cluster as bytes, so that a worker needs no access to the
source) and the update in force; the model bank it loads itself. No more segments are handed
out than there are workers, so memory does not grow with the clip's length.

Progress: in this process and on local workers, every candidate judged (per segment and in
all); on a Dask cluster, every segment finished.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import queue
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from wrapcodec import interrupt, workers
from wrapcodec.encode.config import EncodeConfig
from wrapcodec.encode.report import ProgressSink, SegmentProgress
from wrapcodec.encode.segments import SegmentDone, SegmentTask, chain_after, code_segment
from wrapcodec.encode.trials import default_jobs
from wrapcodec.options import Option
from wrapcodec.pipeline import InForce
from wrapcodec.y4m import VideoInfo, clip_bytes

if TYPE_CHECKING:
    from distributed import Client

EVENT_POLL_S = 0.2
"""How often the progress of local workers is read while they work."""


@dataclass(frozen=True)
class Plan:
    """What is coded: the source, its header, the options usable at its size, the segments
    ``(first frame, frame count)`` and the chains, each a list of segment indices in order."""

    source: Path
    info: VideoInfo
    usable: tuple[Option, ...]
    ranges: list[tuple[int, int]]
    chains: list[list[int]]


class _Tracker:
    """Progress in all and per segment: each segment counts ``per_segment`` candidates, and
    its end tops its count up (a Dask worker reports none; a local worker's last reports may
    arrive after its result)."""

    def __init__(self, sink: ProgressSink, per_segment: int, segments: int) -> None:
        self.sink = sink
        self.per_segment = per_segment
        self.total = segments
        self.counts: dict[int, int] = {}
        self.segments = sink if isinstance(sink, SegmentProgress) else None

    def begin(self, index: int, first: int) -> None:
        self.counts[index] = 0
        if self.segments is not None:
            label = f"segment {index + 1}/{self.total} @{first}"
            self.segments.begin_segment(index, label, self.per_segment)

    def event(self, index: int, label: str) -> None:
        if self.counts.get(index, self.per_segment) >= self.per_segment:
            return  # late, or a segment already ended
        self.counts[index] += 1
        self.sink.advance(label)
        if self.segments is not None:
            self.segments.advance_segment(index)

    def end(self, index: int, label: str) -> None:
        while self.counts.get(index, self.per_segment) < self.per_segment:
            self.event(index, label)
        self.counts[index] = self.per_segment
        if self.segments is not None:
            self.segments.end_segment(index)

    def resumed(self, label: str) -> None:
        for _ in range(self.per_segment):
            self.sink.advance(label)


class _SegmentSink:
    """The progress of one segment coded in this process."""

    def __init__(self, tracker: _Tracker, index: int) -> None:
        self.tracker, self.index = tracker, index

    def start(self, total: int) -> None:
        pass

    def advance(self, label: str) -> None:
        self.tracker.event(self.index, label)


class _Runner(Protocol):
    slots: int  # segments handed out at once

    def submit(self, task: SegmentTask) -> None: ...

    def next_done(self) -> SegmentDone: ...

    def stop(self) -> None: ...  # at once, on a signal or an error

    def close(self) -> None: ...  # every segment done


class _Inline:
    """In this process, one segment after another."""

    slots = 1

    def __init__(self, tracker: _Tracker) -> None:
        self.tracker = tracker
        self.tasks: deque[SegmentTask] = deque()

    def submit(self, task: SegmentTask) -> None:
        self.tasks.append(task)

    def next_done(self) -> SegmentDone:
        task = self.tasks.popleft()
        return code_segment(task, _SegmentSink(self.tracker, task.index))

    def stop(self) -> None:
        self.tasks.clear()

    def close(self) -> None:
        pass


_events: Any = None  # a local worker's queue of progress events


def _worker_init(events: Any) -> None:
    interrupt.worker()
    global _events
    _events = events


class _Queued:
    """A local worker's progress of one segment, sent to the parent."""

    def __init__(self, index: int) -> None:
        self.index = index

    def start(self, total: int) -> None:
        pass

    def advance(self, label: str) -> None:
        with contextlib.suppress(Exception):  # progress is never worth failing for
            _events.put((self.index, label))


def _code_in_worker(task: SegmentTask) -> SegmentDone:
    return code_segment(task, _Queued(task.index))


class _Processes:
    """On ``jobs`` local worker processes, stopped with everything they started by a signal
    or an error (:func:`wrapcodec.workers.stop`)."""

    def __init__(self, jobs: int, tracker: _Tracker) -> None:
        self.slots = jobs
        self.tracker = tracker
        # spawned: this process may have run torch's OpenMP threads, which a fork inherits
        # broken (a segment resumed, or an encode before this one in the same program)
        context = multiprocessing.get_context("spawn")
        self.events = context.Queue()
        self.pool = workers.pool(jobs, _worker_init, (self.events,), context)
        self.futures: set[concurrent.futures.Future[SegmentDone]] = set()

    def submit(self, task: SegmentTask) -> None:
        self.futures.add(self.pool.submit(workers.in_worker, _code_in_worker, task))

    def next_done(self) -> SegmentDone:
        while True:
            done, _ = concurrent.futures.wait(
                self.futures, EVENT_POLL_S, concurrent.futures.FIRST_COMPLETED
            )
            self._drain()
            if done:
                future = done.pop()
                self.futures.discard(future)
                return future.result()

    def _drain(self) -> None:
        while True:
            try:
                index, label = self.events.get_nowait()
            except queue.Empty:
                return
            self.tracker.event(index, label)

    def stop(self) -> None:
        workers.stop(self.pool)
        self.events.close()

    def close(self) -> None:
        self.pool.shutdown()
        self.events.close()


def _code_from_bytes(task: SegmentTask, frames: bytes) -> SegmentDone:
    return code_segment(dataclasses.replace(task, source=frames))


class _Dask:
    """On the Dask scheduler at ``address``: each segment goes, with its frames, to the worker
    with the most threads free (the scheduler would otherwise follow the frames, wherever
    scattering them put them). A signal or an error cancels the segments on the cluster (one
    already running on a worker runs to its end there, as Dask cannot stop a thread)."""

    def __init__(self, address: str) -> None:
        from distributed import as_completed

        self.client: Client = workers.dask_client(address)
        self.threads = {
            w: int(info.get("nthreads", 1))
            for w, info in self.client.scheduler_info()["workers"].items()
        }
        self.slots = max(1, sum(self.threads.values()))
        self.done = as_completed([])
        self.running: dict[Any, str] = {}  # future: the worker it runs on

    def submit(self, task: SegmentTask) -> None:
        assert isinstance(task.source, Path)
        busy = list(self.running.values())
        worker = max(sorted(self.threads), key=lambda w: self.threads[w] - busy.count(w))
        frames = self.client.scatter(
            clip_bytes(task.source, task.first, task.count), workers=[worker]
        )
        future = self.client.submit(
            workers.dask_task, _code_from_bytes, task, frames, workers=[worker], pure=False
        )
        self.running[future] = worker
        self.done.add(future)

    def next_done(self) -> SegmentDone:
        future = next(self.done)
        self.running.pop(future, None)
        result: SegmentDone = future.result()
        return result

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.cancel(list(self.running))
        self.client.close()

    def close(self) -> None:
        self.client.close()


def code_segments(
    config: EncodeConfig,
    plan: Plan,
    done: dict[int, SegmentDone],
    keep: Callable[[SegmentDone], None],
    progress: ProgressSink,
) -> list[SegmentDone]:
    """Every segment of ``plan``, in order: those of ``done`` (resumed) as they are where
    their chain has them all from its start, the others coded, each handed to ``keep`` as
    it finishes. The executor is ``config``'s: its Dask scheduler, else ``config.jobs``
    local processes where there are chains to run at once, else this process."""
    tracker = _Tracker(progress, len(plan.usable), len(plan.ranges))
    results, in_force, ready = _taken_up(config, plan, done, tracker)
    runner, candidate_jobs = _runner(config, len(ready), tracker)
    running: dict[int, tuple[int, int]] = {}  # segment: (chain, position in it)
    try:
        while ready or running:
            while ready and len(running) < runner.slots:
                c, position = ready.popleft()
                index = plan.chains[c][position]
                first, count = plan.ranges[index]
                tracker.begin(index, first)
                runner.submit(
                    SegmentTask(
                        config,
                        plan.info,
                        plan.usable,
                        len(plan.ranges),
                        index,
                        first,
                        count,
                        plan.source,
                        in_force[c],
                        candidate_jobs,
                    )
                )
                running[index] = (c, position)
            finished = runner.next_done()
            c, position = running.pop(finished.index)
            keep(finished)
            results[finished.index] = finished
            tracker.end(finished.index, f"segment {finished.index + 1} done")
            in_force[c] = chain_after(config, plan.info, finished.segment, in_force[c])
            if position + 1 < len(plan.chains[c]):
                ready.appendleft((c, position + 1))  # finish a chain before starting another
    except BaseException:
        runner.stop()
        raise
    runner.close()
    return [results[k] for k in range(len(plan.ranges))]


def _taken_up(
    config: EncodeConfig, plan: Plan, done: dict[int, SegmentDone], tracker: _Tracker
) -> tuple[dict[int, SegmentDone], list[InForce | None], deque[tuple[int, int]]]:
    """The segments of ``done`` that each chain has from its start, the update in force after
    them in each chain, and where each chain not finished goes on: ``(chain, position)``."""
    results: dict[int, SegmentDone] = {}
    in_force: list[InForce | None] = []
    ready: deque[tuple[int, int]] = deque()
    for c, chain in enumerate(plan.chains):
        previous, position = None, 0
        while position < len(chain) and chain[position] in done:
            kept = done[chain[position]]
            results[kept.index] = kept
            tracker.resumed(f"segment {kept.index + 1} kept")
            previous = chain_after(config, plan.info, kept.segment, previous)
            position += 1
        in_force.append(previous)
        if position < len(chain):
            ready.append((c, position))
    return results, in_force, ready


def _runner(config: EncodeConfig, chains: int, tracker: _Tracker) -> tuple[_Runner, int | None]:
    """The executor of ``config`` for ``chains`` chains to code, and the candidates each
    segment codes at once (None: the default)."""
    if config.dask is not None:
        return _Dask(config.dask), 1
    jobs = min(config.jobs or 1, chains)
    if jobs > 1:
        return _Processes(jobs, tracker), max(1, default_jobs() // jobs)
    return _Inline(tracker), config.jobs


def chains_of(ranges: Sequence[tuple[int, int]], restarts: Sequence[int]) -> list[list[int]]:
    """The segments of ``ranges`` grouped into chains, a new one at each segment whose first
    frame is in ``restarts``."""
    starts = set(restarts)
    chains: list[list[int]] = []
    for k, (first, _) in enumerate(ranges):
        if not chains or first in starts:
            chains.append([])
        chains[-1].append(k)
    return chains
