"""A segment's neural candidates adapted side by side, rung by rung: after each rung of the
capacity ladder a candidate goes on climbing only while it can still reach the lowest J the
other adapted candidates have (:class:`Rounds`; docs/effort.md, "Adaptation in rounds").

Each candidate's climb runs on a thread of its own, at most ``workers`` at once. After a
rung, a candidate waits until every other one still climbing has fitted as many rungs (or
stopped), so what it compares with is the same whatever the threads' timing: the file is
the same bytes on one worker or several.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def projected(plain: float, gain: float, factor: float) -> float:
    """J of a candidate whose J without an update is ``plain`` and whose rungs so far
    lowered it by the share ``gain``, if the rungs above gained ``factor`` times as much
    again."""
    return plain * (1.0 - (1.0 + factor) * gain)


class Rounds:
    """The climbs of a segment's neural candidates, ``plains`` their J without an update
    (on every frame).

    After each rung, candidate ``k`` compares its :func:`projected` J (the rungs above
    gaining ``factor`` times what its rungs so far gained, as a share of its J on the frames
    its rungs are compared on) with its *bar*: the lowest of the other candidates' J
    estimated after as many rungs (each one's J without an update lowered by the share its
    rungs had gained by then; its last such figure once it stopped climbing). It stops when
    the projection is not below the bar. Options that are not adapted set no bar: a
    candidate behind direct coding before its update climbs as far as it would alone, unless
    another adapted candidate is ahead of it."""

    def __init__(self, plains: Sequence[float], factor: float, workers: int) -> None:
        self.plains = list(plains)
        self.factor = factor
        self.bars: list[float | None] = [None] * len(plains)  # the last bar each compared with
        self._gains: list[list[float]] = [[] for _ in plains]  # best so far, after each rung
        self._climbing = set(range(len(plains)))
        self._changed = threading.Condition()
        self._slots = threading.Semaphore(max(1, workers))

    @contextmanager
    def turn(self, k: int) -> Iterator[CandidatePace]:
        """Candidate ``k``'s climb: a worker's slot while it computes, and its pace."""
        with self._slots:
            try:
                yield CandidatePace(self, k)
            finally:
                self.done(k)

    def done(self, k: int) -> None:
        """Candidate ``k`` fits no more rungs (it may be told twice)."""
        with self._changed:
            self._climbing.discard(k)
            self._changed.notify_all()

    def after_rung(self, k: int, plain_here: float, best_here: float, last: bool) -> bool:
        """Candidate ``k`` fitted a rung: its best J so far on the frames it compares on
        (``best_here``, ``plain_here`` without an update there). Whether it stops: never
        after its ``last`` rung, whose result is only recorded."""
        gain = (plain_here - best_here) / plain_here if plain_here > 0 else 0.0
        with self._changed:
            self._gains[k].append(gain)
            self._changed.notify_all()
        if last:
            return False
        done = len(self._gains[k])
        self._slots.release()  # another candidate may fit its rung meanwhile
        try:
            with self._changed:
                self._changed.wait_for(lambda: self._caught_up(k, done))
                bar = self._bar(k, done)
        finally:
            self._slots.acquire()
        self.bars[k] = bar
        return projected(self.plains[k], gain, self.factor) >= bar

    def _caught_up(self, k: int, rungs: int) -> bool:
        return all(
            len(g) >= rungs or j not in self._climbing for j, g in enumerate(self._gains) if j != k
        )

    def _bar(self, k: int, rungs: int) -> float:
        return min(
            self.plains[j] * (1.0 - g[min(rungs, len(g)) - 1]) if g else self.plains[j]
            for j, g in enumerate(self._gains)
            if j != k
        )


class CandidatePace:
    """One candidate's view of its :class:`Rounds`, as a climb's
    :class:`~wrapcodec.adaptation.Pace`."""

    def __init__(self, rounds: Rounds, k: int) -> None:
        self._rounds = rounds
        self._k = k
        self.plain = rounds.plains[k]

    @property
    def bar(self) -> float | None:
        """The bar the candidate last compared with (None: none yet)."""
        return self._rounds.bars[self._k]

    def out_of_reach(self, plain_here: float, best_here: float, last: bool) -> bool:
        """:meth:`Rounds.after_rung` for this candidate."""
        return self._rounds.after_rung(self._k, plain_here, best_here, last)

    def done(self) -> None:
        """:meth:`Rounds.done` for this candidate."""
        self._rounds.done(self._k)
