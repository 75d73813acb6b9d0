"""Adaptation in rounds: at ``medium`` the neural candidates climb the capacity ladder rung by
rung side by side, and one stops once it can no longer reach the lowest J of the others
(:class:`~wrapcodec.encode.rounds.Rounds`)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from climbs import climb_beside

from wrapcodec.cli import _rungs_line, cli
from wrapcodec.encode.efforts import EFFORTS
from wrapcodec.encode.report import AdaptationReport
from wrapcodec.encode.rounds import Rounds, projected
from wrapcodec.update import Subset


def test_the_projection_lets_the_rungs_above_gain_factor_times_more() -> None:
    """A J of 10 without an update, the rungs above gaining twice what those so far did: a
    2 % gain so far projects to 9.4, 4 % to 8.8, a rung that lost to more than 10."""
    assert projected(10.0, 0.02, 2.0) == pytest.approx(9.4)
    assert projected(10.0, 0.04, 2.0) == pytest.approx(8.8)
    assert projected(10.0, -0.01, 2.0) > 10.0
    assert projected(8.0, 0.125, 2.0) == 5.0


def _race(gains: dict[int, list[float]], plains: list[float], workers: int) -> tuple[dict, list]:
    """Candidates reporting the best J each rung reached (J without an update 1 on the frames
    compared, so a gain is 1 − J), each on a thread of its own, in ``workers`` slots: which
    rung each stopped after (None: it climbed every rung given) and the bars compared with."""
    rounds = Rounds(plains, 2.0, workers)
    stopped: dict[int, int | None] = {}

    def climb(k: int) -> None:
        with rounds.turn(k) as pace:
            stopped[k] = None
            for n, g in enumerate(gains[k], 1):
                if pace.out_of_reach(1.0, 1.0 - g, n == len(gains[k])):
                    stopped[k] = n
                    return

    threads = [threading.Thread(target=climb, args=(k,)) for k in gains]
    for t in reversed(threads):  # the later candidates start first
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return stopped, rounds.bars


def test_rounds_stop_the_candidate_out_of_reach_whatever_the_timing() -> None:
    """Candidate 1 (J 10 without an update) gains 1 % a rung, candidate 0 (J 9.5) gains 5 % at
    once: after its first rung candidate 1 projects to 9.7, above candidate 0's 9.025, and
    stops; candidate 0 is never stopped (candidate 1's last estimate, 9.9, is above its
    projections). The same on one worker and on three."""
    gains = {0: [0.05, 0.06, 0.065], 1: [0.01, 0.02, 0.03]}
    for workers in (1, 3):
        stopped, bars = _race(gains, [9.5, 10.0], workers)
        assert stopped == {0: None, 1: 1}
        assert bars[1] == pytest.approx(9.5 * 0.95)
        assert bars[0] == pytest.approx(10.0 * 0.99)


def test_a_candidate_is_compared_with_the_others_after_as_many_rungs() -> None:
    """Three candidates of equal J without an update: after rung 1 the bars are the others'
    estimates after rung 1; one that stopped early counts with its last estimate."""
    gains = {0: [0.02, 0.021], 1: [0.001], 2: [0.03, 0.05]}
    stopped, bars = _race(gains, [10.0, 10.0, 10.0], 2)
    # candidate 1 told its only rung as its last: it is never stopped, compares with nothing
    assert stopped[1] is None and bars[1] is None
    # after rung 1 candidate 0 compares with candidate 2's 9.7: projected 9.4, below, so it
    # climbs on; its last rung is only told
    assert stopped[0] is None and bars[0] == pytest.approx(9.7)
    assert stopped[2] is None and bars[2] == pytest.approx(9.8)


def test_a_climb_with_no_j_to_lower_counts_no_gain() -> None:
    """A J of 0 without an update on the frames compared (nothing to lower) counts as no
    gain: the candidate projects to its own J and stops behind an equal one."""
    rounds = Rounds([1.0, 1.0], 2.0, 1)
    rounds.done(1)
    with rounds.turn(0) as pace:
        assert pace.out_of_reach(0.0, 0.0, False)
        assert pace.bar == 1.0


def test_a_climb_out_of_reach_stops_after_its_first_rung(
    clip8: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    """Beside a candidate of J 0, which no update reaches, the climb stops after its first
    rung and says so; beside one of J ∞ it climbs every rung, exactly as alone."""
    require_backend("x265")
    alone = climb_beside(clip8, tmp_path, None)
    assert [v.rung for v in alone.variants] == [Subset.BIAS, Subset.BIAS_TAIL]
    assert not alone.out_of_reach
    stopped = climb_beside(clip8, tmp_path, 0.0)
    assert [v.rung for v in stopped.variants] == [Subset.BIAS] and stopped.out_of_reach
    assert stopped.variants[0].cost == alone.variants[0].cost
    free = climb_beside(clip8, tmp_path, math.inf)
    assert [v.cost for v in free.variants] == [v.cost for v in alone.variants]
    assert not free.out_of_reach


def _encode(runner: CliRunner, src: Path, out: Path, *extra: str) -> dict:
    args = ["encode", str(src), "-o", str(out), "--codec", "x265", "--json", "-y", "--qp", "42"]
    args += ["--preset", "ultrafast", "--options", "0,1,3", "--adapt-steps", "20"]
    result = runner.invoke(cli, [*args, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_medium_adapts_in_rounds_the_same_bytes_on_any_worker_count(
    clip8: Path, tmp_path: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    """At ``medium`` the neural candidates climb in rounds: each reports the bar it compared
    with, the other's J estimated after as many rungs, so never above the other's J without
    an update; the bytes are the same on one worker and on two. ``exhaustive`` climbs every
    candidate alone."""
    require_backend("x265")
    assert EFFORTS["medium"].adapt_reach is not None and EFFORTS["exhaustive"].adapt_reach is None
    one, two = tmp_path / "one.wrp", tmp_path / "two.wrp"
    report = _encode(runner, clip8, one, "--jobs", "1")
    _encode(runner, clip8, two, "--jobs", "2")
    assert one.read_bytes() == two.read_bytes()
    cands = {c["name"]: c for c in report["segments"][0]["candidates"]}
    pair = [cands["post-1/1"], cands["post-2/3"]]  # (wrapper-1/1 would not be coded in full)
    for c, other in zip(pair, reversed(pair), strict=True):
        a = c["adaptation"]
        if len(a["tried"]) > 1 or a["out_of_reach"]:  # compared after a rung that was not its last
            assert a["bar"] <= other["adaptation"]["cost_without"]
        line = _rungs_line(c["name"], AdaptationReport.model_validate(a))
        assert ("out of reach" in line) == a["out_of_reach"]
    exhaustive = _encode(runner, clip8, tmp_path / "x.wrp", "--effort", "exhaustive")
    for c in exhaustive["segments"][0]["candidates"]:
        if c.get("adaptation"):
            assert c["adaptation"]["bar"] is None and not c["adaptation"]["out_of_reach"]
