"""Learning that grows with the video: the update in force carried across segments (decoder
and encoder alike), the capacity ladder the RDO climbs, the adaptation budget, the frames a
fit holds and the default segments of long clips."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from climbs import climb_beside

from wrapcodec.adapt import (
    MIN_STEPS,
    REFERENCE_SAMPLES,
    AdaptConfig,
    ladder_plan,
    step_count,
    step_seconds,
)
from wrapcodec.adaptation import (
    JUDGE_FRAMES,
    Segment,
    climb,
    judged_frames,
    training_pictures,
)
from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.cli import _rungs_line, cli
from wrapcodec.container import pack, read_wrp
from wrapcodec.encode.efforts import DIRECT_SECONDS_PER_SAMPLE, EFFORTS, AdaptBudget, parse_budget
from wrapcodec.encode.encoder import default_segment_frames
from wrapcodec.encode.report import AdaptationReport
from wrapcodec.encode.trials import Trial, pick
from wrapcodec.errors import ContainerError, InputError
from wrapcodec.metrics import measure_files
from wrapcodec.options import OPTIONS
from wrapcodec.pipeline import Coded, InForce, Layout, code_and_measure, segment_layout
from wrapcodec.update import (
    Quant,
    Quantised,
    Subset,
    Update,
    decode_update,
    encode_quantised,
    ladder,
    subset_names,
)
from wrapcodec.y4m import Frame, Y4MWriter, iter_frames, read_info

# -- the chain rules, on the decoder's own function ---------------------------------------------


def _layout(code: int) -> Layout:
    info = read_info(Path(__file__).parents[1] / "wrapcodec/data/parkjoy_480x270_10f.y4m")
    return Layout.make(info, OPTIONS[code], get_backend("x265"), 10, get_bank())


def _update(layout: Layout, subset: Subset, value: float, relative: bool) -> Update:
    assert layout.processors is not None
    post = layout.processors.post
    params = dict(post.named_parameters())
    deltas = {n: torch.full_like(params[n], value) for n in subset_names(post, subset)}
    return Update(subset, Quant.RD, deltas, relative)


def test_relative_update_without_an_update_in_force_of_its_option_is_refused() -> None:
    post_1_2, post_2_3 = _layout(2), _layout(3)
    in_force = InForce(2, _update(post_1_2, Subset.BIAS, 0.01, relative=False))
    # the chain continues only while the option stays the same
    with pytest.raises(ContainerError, match="there is none"):
        _apply_relative(post_2_3, in_force)
    with pytest.raises(ContainerError, match="none is in force"):
        segment_layout(post_2_3, b"", True, in_force)
    with pytest.raises(ContainerError, match="there is none"):
        _apply_relative(post_1_2, None)


def _apply_relative(layout: Layout, previous: InForce | None) -> None:
    """A real relative update's bytes (an encoder's), applied after ``previous``."""
    data = _relative_bytes()
    segment_layout(layout, data, False, previous)


def _relative_bytes() -> bytes:
    post = _layout(2).processors.post  # type: ignore[union-attr]
    params = dict(post.named_parameters())
    tensors = [
        Quantised(29, torch.ones_like(params[n]).long().numpy())
        for n in subset_names(post, Subset.BIAS)
    ]
    return encode_quantised(Subset.BIAS, tensors, relative=True)


def test_the_chain_resolves_relative_updates_and_breaks_without_one() -> None:
    layout = _layout(2)
    first = _update(layout, Subset.BIAS_TAIL, 0.01, relative=False)
    previous = InForce(2, first)
    _, after = segment_layout(layout, _relative_bytes(), False, previous)
    assert after is not None and after.option == 2 and not after.update.relative
    assert after.update.subset == Subset.BIAS_TAIL  # the larger of the two
    name = subset_names(layout.processors.post, Subset.BIAS)[0]  # type: ignore[union-attr]
    delta = decode_update(_relative_bytes(), layout.processors.post).deltas[name]  # type: ignore[union-attr]
    assert torch.equal(after.update.deltas[name], first.deltas[name] + delta)
    inherited, kept = segment_layout(layout, b"", True, after)
    assert kept is after and inherited.processors is not layout.processors
    bare, none = segment_layout(layout, b"", False, after)  # no update: the chain ends
    assert none is None and bare is layout


# -- the RDO's choice and the ladder's plan ------------------------------------------------------


def _trial(cost: float, psnr: float, bits: int) -> Trial:
    coded = Coded(Path("x"), bits // 8, psnr, psnr, psnr, psnr, 1.0, 0.0, 0.0)
    return Trial(OPTIONS[2], _layout(2), coded, 32, bits, cost)


def test_pick_takes_the_lowest_j_and_the_smaller_of_equals() -> None:
    info = read_info(Path(__file__).parents[1] / "wrapcodec/data/parkjoy_480x270_10f.y4m")
    plain, bias, decoder, full = (
        _trial(10.0, 30.0, 8000),
        _trial(9.5, 30.1, 8200),
        _trial(9.2, 30.2, 8600),
        _trial(9.2, 30.3, 9600),
    )
    assert pick([plain, bias, decoder, full], None, 10, info) is decoder
    assert pick([plain, _trial(10.5, 30.5, 9000)], None, 10, info) is plain
    # within a bitrate budget: the best PSNR that fits (50 fps: 8600 bits in 10 frames = 43 kbps)
    assert pick([plain, bias, decoder, full], 43.1, 10, info) is decoder
    assert pick([plain, full], 1.0, 10, info) is plain  # nothing fits: the bank's


def test_ladder_plan_climbs_within_the_budget() -> None:
    cfg = AdaptConfig(grow=True)
    crop, samples = (128, 128), 75 * 1920 * 1080
    free = ladder_plan(cfg, samples, crop, None)
    assert [r for r, _ in free] == list(ladder())[1:]  # from the default subset, BIAS_TAIL
    assert all(s == step_count(replace(cfg, subset=r), samples, crop) for r, s in free)
    budget = 40.0
    plan = ladder_plan(cfg, samples, crop, budget)
    spent = sum(s * step_seconds(r, cfg.batch, crop) for r, s in plan)
    assert spent <= budget and len(plan) < len(free)
    assert plan == ladder_plan(cfg, samples, crop, budget)  # deterministic
    # under a budget the first rung's leftover goes to every parameter, skipping between
    assert [r for r, _ in plan] == [Subset.BIAS_TAIL, Subset.ALL]
    assert plan[0][1] == step_count(cfg, samples, crop)
    # a tiny budget still tries the smallest rung at MIN_STEPS; zero fits nothing
    assert ladder_plan(cfg, samples, crop, 0.01) == [(Subset.BIAS_TAIL, MIN_STEPS)]
    assert ladder_plan(cfg, samples, crop, 0.0) == []
    # a smaller first subset starts the ladder lower
    biases = replace(cfg, subset=Subset.BIAS)
    assert [r for r, _ in ladder_plan(biases, samples, crop, None)] == list(ladder())


def test_budgets_parse_and_convert_without_a_clock() -> None:
    assert parse_budget("2x") == AdaptBudget(2.0, True)
    assert parse_budget("30s") == AdaptBudget(30.0, False)
    assert parse_budget("none") is None
    assert AdaptBudget(2.0).seconds(1000) == 2.0 * 1000 * DIRECT_SECONDS_PER_SAMPLE
    assert AdaptBudget(30.0, False).seconds(1000) == 30.0
    for bad in ("2", "x", "-1x", "2 h", "nan s", "1e9x"):
        with pytest.raises(InputError, match="--adapt-budget"):
            parse_budget(bad)
    assert EFFORTS["medium"].adapt_budget == AdaptBudget(3.0)
    assert EFFORTS["exhaustive"].adapt_budget is None


def test_slow_buys_every_parameter_its_planned_steps_on_a_long_segment() -> None:
    cfg, crop = AdaptConfig(grow=True), (128, 128)
    planned = step_count(replace(cfg, subset=Subset.ALL), REFERENCE_SAMPLES, crop)

    def top_rung(level: str) -> int:
        budget = EFFORTS[level].adapt_budget
        assert budget is not None
        plan = ladder_plan(cfg, REFERENCE_SAMPLES, crop, budget.seconds(REFERENCE_SAMPLES))
        assert [r for r, _ in plan] == [Subset.BIAS_TAIL, Subset.ALL]
        return plan[-1][1]

    assert top_rung("medium") < planned / 5  # 120 frames of 720p: a few hundred steps
    assert top_rung("slow") == planned  # the budget pays for all of them
    slow, medium = EFFORTS["slow"], EFFORTS["medium"]
    assert replace(slow, name="medium", description="", adapt_budget=None) == replace(
        medium, description="", adapt_budget=None
    )  # otherwise the same search


def test_long_clips_without_scene_detection_fall_back_to_segments_of_three_seconds() -> None:
    assert default_segment_frames(10, 25, 1) is None  # the test clips: one segment
    assert default_segment_frames(150, 25, 1) is None  # 6 s
    assert default_segment_frames(151, 25, 1) == 75
    assert default_segment_frames(600, 60000, 1001) == 180


# -- the frames a fit holds ----------------------------------------------------------------------


def test_frames_held_stay_bounded_as_the_segment_grows(
    parkjoy: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    backend = get_backend("x265")
    layout = _layout(2)
    settings = EncodeSettings(qp=37, preset="ultrafast")
    streams = {}
    for count in (3, 10):
        streams[count] = tmp_path / f"s{count}.265"
        code_and_measure(backend, settings, parkjoy, layout, 0, count, streams[count])
    per_frame = 18 * 480 * 270  # bytes held per frame (adapt.HELD_BYTES_PER_SAMPLE)
    cfg = AdaptConfig(grow=True, hold_mib=3.5 * per_frame / 2**20)
    held = {
        count: training_pictures(backend, streams[count], layout, parkjoy, 0, count, cfg)
        for count in (3, 10)
    }
    assert [len(held[c][0]) for c in (3, 10)] == [3, 3]  # memory does not grow with frames
    everything = training_pictures(
        backend, streams[10], layout, parkjoy, 0, 10, AdaptConfig(grow=True)
    )
    assert len(everything[0]) == 10  # they fit: every frame
    # spread over the whole segment: first, middle and last of the ten
    assert torch.equal(held[10][1][2][0], everything[1][9][0])
    assert torch.equal(held[10][0][0][0], everything[0][0][0])


# -- the encoder's chain, decoded ---------------------------------------------------------------


def _encode(runner: CliRunner, src: Path, out: Path, *extra: str) -> dict:
    args = ["encode", str(src), "-o", str(out), "--codec", "x265", "--json", "-y"]
    args += ["--effort", "exhaustive", "--preset", "ultrafast", "--options", "2"]
    result = runner.invoke(cli, [*args, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# One bottleneck depth throughout: with the default (auto) the segments of this clip alternate
# between 8 and 10 bits, and the RD choices need not leave a relative update to test.
CHAIN = ("--qp", "32", "--segment-frames", "3", "--adapt-steps", "20", "--adapt-budget", "1.5s")
CHAIN += ("--bitdepth", "10")


@pytest.fixture(scope="module")
def chain_file(parkjoy: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    wrp = tmp_path_factory.mktemp("chain") / "c.wrp"
    return wrp, _encode(CliRunner(), parkjoy, wrp, *CHAIN)


def test_a_difference_coded_chain_decodes_to_what_the_encoder_measured(
    chain_file: tuple[Path, dict],
    parkjoy: Path,
    tmp_path: Path,
    runner: CliRunner,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x265")
    wrp, report = chain_file
    _, segments = read_wrp(wrp)
    assert len(segments) == 4
    relative = [bool(s.update) and s.update[1] == Quant.RD and s.update[2] & 1 for s in segments]
    assert any(relative[1:]) and not relative[0]  # warm-started differences were sent
    for seg, seg_report in zip(segments, report["segments"], strict=True):
        a = seg_report["candidates"][0]["adaptation"]
        assert a["tried"] and all(t["steps"] == 20 for t in a["tried"])
        assert a["budget_s"] == 1.5
        if a["used"]:
            chosen = min(a["tried"], key=lambda t: t["cost"])
            assert seg_report["candidates"][0]["cost"] == chosen["cost"] == a["cost_with"]
            assert len(seg.update) == chosen["bytes"] and a["relative"] == chosen["relative"]
    out = tmp_path / "c.y4m"
    assert runner.invoke(cli, ["decode", str(wrp), "-o", str(out)]).exit_code == 0
    assert measure_files(str(parkjoy), str(out)).psnr_yuv == pytest.approx(
        report["psnr_yuv"], abs=1e-9
    )
    again = tmp_path / "again.wrp"
    _encode(runner, parkjoy, again, *CHAIN)
    assert again.read_bytes() == wrp.read_bytes()


def test_a_long_segment_is_judged_on_some_frames() -> None:
    assert judged_frames(2 * JUDGE_FRAMES) == []  # every frame is measured
    picks = judged_frames(120)
    assert len(picks) == JUDGE_FRAMES and picks[0] == 0 and picks[-1] == 119
    assert all(b - a in (7, 8) for a, b in itertools.pairwise(picks))


def _pan(parkjoy: Path, dest: Path, count: int) -> Path:
    """``count`` frames, 128x96, 8-bit: a window panning over Park Joy's ten frames."""
    frames = list(iter_frames(parkjoy))
    info = replace(read_info(parkjoy), width=128, height=96)
    with Y4MWriter(dest, info) as writer:
        for t in range(count):
            f, top, left = frames[t % 10], 2 * t, 3 * t
            writer.write(
                Frame(
                    f.y[top : top + 96, left : left + 128],
                    f.u[top // 2 : top // 2 + 48, left // 2 : left // 2 + 64],
                    f.v[top // 2 : top // 2 + 48, left // 2 : left // 2 + 64],
                )
            )
    return dest


@pytest.fixture(scope="module")
def long_clip(parkjoy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pan(parkjoy, tmp_path_factory.mktemp("long") / "pan40.y4m", 40)


def test_a_long_segment_measures_the_update_it_keeps_on_every_frame(
    long_clip: Path, tmp_path: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    """A segment of more than twice JUDGE_FRAMES frames: the updates of the climb are
    compared on JUDGE_FRAMES of its frames, the best of them is measured on every frame, and
    the decoder shows exactly what that measurement says."""
    require_backend("x265")
    wrp = tmp_path / "long.wrp"
    args = ["--qp", "32", "--segment-frames", "40", "--adapt-steps", "20"]
    report = _encode(runner, long_clip, wrp, *args, "--adapt-budget", "none")
    (segment,) = report["segments"]
    a = segment["candidates"][0]["adaptation"]
    assert len(a["tried"]) >= 2
    full = [t for t in a["tried"] if t["judged_on"] is None]
    assert len(full) == 1 and all(
        t["judged_on"] == JUDGE_FRAMES for t in a["tried"] if t is not full[0]
    )
    if a["used"]:
        assert a["cost_with"] == full[0]["cost"] == segment["candidates"][0]["cost"]
    out = tmp_path / "long.y4m"
    assert runner.invoke(cli, ["decode", str(wrp), "-o", str(out)]).exit_code == 0
    assert measure_files(str(long_clip), str(out)).psnr_yuv == pytest.approx(
        report["psnr_yuv"], abs=1e-9
    )


def test_inheriting_judged_best_leaves_every_update_judged(
    long_clip: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    """When inheriting the update in force has the lowest J on a long segment's judged frames
    (here a byte costs so much that no update can pay), the climb measures none of its updates
    on every frame: the caller measures inheriting instead."""
    require_backend("x265")
    backend = get_backend("x265")
    layout = Layout.make(read_info(long_clip), OPTIONS[2], backend, 10, get_bank())
    stream = tmp_path / "s.265"
    settings = EncodeSettings(qp=37, preset="ultrafast")
    code_and_measure(backend, settings, long_clip, layout, 0, 40, stream)
    seg = Segment(backend, stream, layout, long_clip, 0, 40)
    cfg = AdaptConfig(steps=10, batch=2, crop=64)
    plan, lam = [(Subset.BIAS, 10)], backend.qp_to_lambda(37)
    first = climb(seg, cfg, plan, lam, None, lambda coded, update: coded.mse_8bit)
    assert first.inheriting is None  # nothing in force
    (kept,) = (v for v in first.variants if v.judged_on is None)
    priced = climb(seg, cfg, plan, lam, kept.chain, lambda c, u: c.mse_8bit + 1e3 * len(u))
    assert priced.inheriting is not None and priced.inheriting.wins
    assert priced.inheriting.judged_on == JUDGE_FRAMES
    assert len(priced.variants) == 2  # absolute and relative, both judged only
    assert all(v.judged_on == JUDGE_FRAMES for v in priced.variants)
    free = climb(seg, cfg, plan, lam, kept.chain, lambda c, u: c.mse_8bit)
    assert free.inheriting is not None
    assert sum(v.judged_on is None for v in free.variants) == (not free.inheriting.wins)


def test_a_long_segment_out_of_reach_measures_no_update_on_every_frame(
    long_clip: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    """In rounds beside a candidate of J 0, which no update reaches, a long segment's climb
    stops after its first rung and measures none of its updates on every frame (they stay
    judged); beside one of J ∞ it measures its best, as alone."""
    require_backend("x265")
    stopped = climb_beside(long_clip, tmp_path, 0.0, 40)
    assert stopped.out_of_reach and [v.rung for v in stopped.variants] == [Subset.BIAS]
    assert all(v.judged_on == JUDGE_FRAMES for v in stopped.variants)
    free = climb_beside(long_clip, tmp_path, math.inf, 40)
    assert not free.out_of_reach and sum(v.judged_on is None for v in free.variants) == 1


def test_a_long_segment_judges_inheriting_beside_its_updates(
    parkjoy: Path, tmp_path: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    """Two long segments: in the second, inheriting the first's update is judged on the same
    frames as the new updates, and only the best of them all is measured on every frame."""
    require_backend("x265")
    clip = _pan(parkjoy, tmp_path / "pan80.y4m", 80)
    wrp = tmp_path / "long.wrp"
    args = ["--qp", "32", "--segment-frames", "40", "--adapt-steps", "20"]
    report = _encode(runner, clip, wrp, *args, "--adapt-budget", "none")
    first, second = (s["candidates"][0]["adaptation"] for s in report["segments"])
    assert first["used"] and first["inherited_gain_db"] is None
    a = second
    assert a["inherited_gain_db"] is not None  # the first segment's update is in force
    measured = [t for t in a["tried"] if t["judged_on"] is None]
    inheriting_measured = a["inherited_judged_on"] is None
    assert len(measured) + inheriting_measured == 1
    assert a["inherited_judged_on"] in (None, JUDGE_FRAMES)
    if not inheriting_measured:
        assert not a["inherited"] and a["cost_with"] == measured[0]["cost"]
    else:
        assert a["cost_with"] is None and not a["used"]
    line = _rungs_line("post-1/2", AdaptationReport.model_validate(a))
    assert f"inheriting J {a['cost_inherited']:.3f}" in line
    judged = len(a["tried"]) - len(measured) + (not inheriting_measured)
    assert line.count(f"({JUDGE_FRAMES} frames)") == judged
    out = tmp_path / "long.y4m"
    assert runner.invoke(cli, ["decode", str(wrp), "-o", str(out)]).exit_code == 0
    assert measure_files(str(clip), str(out)).psnr_yuv == pytest.approx(
        report["psnr_yuv"], abs=1e-9
    )


def test_a_relative_update_with_a_broken_chain_is_refused(
    chain_file: tuple[Path, dict], tmp_path: Path, runner: CliRunner
) -> None:
    wrp, _ = chain_file
    header, segments = read_wrp(wrp)
    k = next(i for i, s in enumerate(segments) if s.update and s.update[2] & 1)
    broken = list(segments)
    broken[k - 1] = replace(segments[k - 1], update=b"", inherit=False)
    if k >= 2:  # the segment before must not itself depend on what is gone
        broken[: k - 1] = [replace(s, update=b"", inherit=False) for s in segments[: k - 1]]
    bad = tmp_path / "bad.wrp"
    bad.write_bytes(pack(header, broken))
    out = tmp_path / "bad.y4m"
    result = runner.invoke(cli, ["decode", str(bad), "-o", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"segment {k}" in lines[0] and "update in force" in lines[0]
    assert not out.exists()


def test_a_bad_adapt_budget_is_one_line(clip8: Path, tmp_path: Path, runner: CliRunner) -> None:
    args = ["encode", str(clip8), "-o", str(tmp_path / "x.wrp"), "--qp", "32"]
    result = runner.invoke(cli, [*args, "--adapt-budget", "lots"])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1 and "--adapt-budget" in result.output
    assert "Traceback" not in result.output
