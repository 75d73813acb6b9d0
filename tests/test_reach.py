"""Adaptation in turn: at ``medium`` the neural candidates are adapted one after another from
the lowest J, and a later one stops climbing the capacity ladder once it can no longer reach
the lowest J found (:class:`~wrapcodec.adaptation.Reach`)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from wrapcodec.adapt import AdaptConfig
from wrapcodec.adaptation import Climb, Reach, Segment, climb
from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.cli import _rungs_line, cli
from wrapcodec.encode.efforts import EFFORTS
from wrapcodec.encode.report import AdaptationReport
from wrapcodec.options import OPTIONS
from wrapcodec.pipeline import Layout, code_and_measure
from wrapcodec.update import Subset
from wrapcodec.y4m import count_frames, read_info


def test_reach_projects_the_rungs_above_from_the_gain_so_far() -> None:
    """A J of 10 without an update, a bar of 9, the rungs above gaining twice what those so
    far did: a 2 % gain so far projects to 9.4 (out of reach), 4 % to 8.8 (within)."""
    reach = Reach(bar=9.0, plain=10.0, factor=2.0)
    assert reach.out_of_reach(10.0, 9.8)
    assert not reach.out_of_reach(10.0, 9.6)
    # the gain is a share of J on the frames the rungs are compared on, which may be fewer
    assert reach.out_of_reach(5.0, 4.9)
    assert not reach.out_of_reach(5.0, 4.8)
    assert reach.out_of_reach(10.0, 10.5)  # a rung that lost
    assert Reach(bar=5.0, plain=8.0, factor=2.0).out_of_reach(8.0, 7.0)  # projected onto the bar


def _climb(clip: Path, tmp_path: Path, bar: float | None) -> Climb:
    """Post-1/1 climbing two rungs on ``clip`` coded by x265, J the MSE alone; with a reach
    of ``bar`` (its own J without an update measured as the caller measures it)."""
    backend = get_backend("x265")
    info, count = read_info(clip), count_frames(clip)
    layout = Layout.make(info, OPTIONS[1], backend, 10, get_bank())
    stream = tmp_path / "s.265"
    settings = EncodeSettings(qp=37, preset="ultrafast")
    plain = code_and_measure(backend, settings, clip, layout, 0, count, stream)
    seg = Segment(backend, stream, layout, clip, 0, count)
    plan = [(Subset.BIAS, 10), (Subset.BIAS_TAIL, 10)]
    cfg = AdaptConfig(steps=10, batch=2, crop=64)
    reach = None if bar is None else Reach(bar, plain.mse_8bit, 2.0)
    return climb(seg, cfg, plan, backend.qp_to_lambda(37), None, lambda c, u: c.mse_8bit, reach)


def test_a_climb_out_of_reach_stops_after_its_first_rung(
    clip8: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    """With a bar no update can reach (J 0) the climb stops after its first rung and says so;
    with one any update reaches (J ∞) it climbs every rung, exactly as without a bar."""
    require_backend("x265")
    alone = _climb(clip8, tmp_path, None)
    assert [v.rung for v in alone.variants] == [Subset.BIAS, Subset.BIAS_TAIL]
    assert not alone.out_of_reach
    stopped = _climb(clip8, tmp_path, 0.0)
    assert [v.rung for v in stopped.variants] == [Subset.BIAS] and stopped.out_of_reach
    assert stopped.variants[0].cost == alone.variants[0].cost
    free = _climb(clip8, tmp_path, math.inf)
    assert [v.cost for v in free.variants] == [v.cost for v in alone.variants]
    assert not free.out_of_reach


def _encode(runner: CliRunner, src: Path, out: Path, *extra: str) -> dict:
    args = ["encode", str(src), "-o", str(out), "--codec", "x265", "--json", "-y", "--qp", "27"]
    args += ["--preset", "ultrafast", "--options", "0,1,5", "--adapt-steps", "20"]
    result = runner.invoke(cli, [*args, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_medium_adapts_in_turn_against_the_lowest_j_so_far(
    clip8: Path, tmp_path: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    """At ``medium`` the neural candidate of lowest J without an update is adapted first,
    with no bar; the other's bar is the lowest J of direct, both without an update and the
    first adapted. The bytes are the same on one worker and on two; ``exhaustive`` sets no
    bar."""
    require_backend("x265")
    assert EFFORTS["medium"].adapt_reach is not None and EFFORTS["exhaustive"].adapt_reach is None
    one, two = tmp_path / "one.wrp", tmp_path / "two.wrp"
    report = _encode(runner, clip8, one, "--jobs", "1")
    _encode(runner, clip8, two, "--jobs", "2")
    assert one.read_bytes() == two.read_bytes()
    cands = {c["name"]: c for c in report["segments"][0]["candidates"]}
    neural = sorted(
        (cands["post-1/1"], cands["wrapper-1/1"]), key=lambda c: c["adaptation"]["cost_without"]
    )
    first, second = (c["adaptation"] for c in neural)
    assert first["bar"] is None and not first["out_of_reach"]
    bar = min(cands["direct"]["cost"], neural[0]["cost"], second["cost_without"])
    assert second["bar"] == pytest.approx(bar, rel=1e-12)
    line = _rungs_line(neural[1]["name"], AdaptationReport.model_validate(second))
    assert ("out of reach" in line) == second["out_of_reach"]
    exhaustive = _encode(runner, clip8, tmp_path / "x.wrp", "--effort", "exhaustive")
    for c in exhaustive["segments"][0]["candidates"]:
        if c.get("adaptation"):
            assert c["adaptation"]["bar"] is None and not c["adaptation"]["out_of_reach"]
