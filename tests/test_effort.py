"""Effort levels of the option search: the rules (probe frames, rate search, presets), the
shared bitstreams, and real encodes at every level checked against their own measurement,
against an independent exhaustive reference, and for determinism."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wrapcodec.adapt import AdaptConfig
from wrapcodec.backend import EncodeSettings, backends, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.bdrate import Curve, bd_rate
from wrapcodec.cli import cli
from wrapcodec.container import overhead_bytes
from wrapcodec.encode import EncodeConfig, EncodeReport, encode_file, rd_cost
from wrapcodec.encode.efforts import CODING_SHARE, EFFORTS, probe_frames, spread
from wrapcodec.encode.lagrange import secant_scale
from wrapcodec.encode.rate import MODEL_ENCODES, next_qp
from wrapcodec.metrics import measure_files
from wrapcodec.nets import default_pre_arithmetic
from wrapcodec.options import OPTIONS, skip_reason
from wrapcodec.pipeline import Layout, code_and_measure, preprocess, stream_key
from wrapcodec.y4m import iter_frames, read_info

ALL = list(OPTIONS.values())


def _encode(src: Path, out: Path, effort: str, qp: int | None = 37, **kw: object) -> EncodeReport:
    backend = get_backend("x264")
    settings = EncodeSettings(qp=qp if qp is not None else 0, preset="fast", bitdepth=10)
    config = EncodeConfig(
        backend=backend,
        settings=settings,
        options=tuple(ALL),
        bank=get_bank(None),
        adapt=AdaptConfig(steps=0),
        effort=effort,
        **kw,  # type: ignore[arg-type]
    )
    return encode_file(str(src), str(out), config)


# --- the rules -------------------------------------------------------------------------------


def test_probe_frames_are_centred_windows() -> None:
    assert probe_frames(30, 8) == list(range(11, 19))
    assert probe_frames(5, 8) == [0, 1, 2, 3, 4]  # a short segment is its own probe
    long = probe_frames(600, 4)
    assert len(long) == 4 * 4 and long[0] > 0 and long[-1] < 599  # 4 windows, one per part
    assert all(0 <= f < 600 for f in long) and long == sorted(set(long))
    assert spread(30, 2) == [7, 22] and spread(1, 2) == [0]


def test_a_probe_window_of_small_pictures_holds_more_frames() -> None:
    fast = EFFORTS["fast"]
    assert fast.probe_window(1280, 720) == fast.window  # enough samples in 4 frames
    assert fast.probe_window(960, 540) == fast.window
    assert fast.probe_window(480, 270) == 4 * fast.window  # a quarter of the samples
    assert fast.probe_window(416, 240) * 416 * 240 >= fast.probe_samples
    assert EFFORTS["medium"].probe_window(416, 240) == EFFORTS["medium"].window  # no minimum


@pytest.mark.parametrize("octave", [3.0, 5.3, 9.0])
@pytest.mark.parametrize("budget", [0.5, 30.0, 200.0, 900.0, 5000.0, 1e6])
def test_rate_search_finds_the_lowest_fitting_qp(octave: float, budget: float) -> None:
    """Against every monotone rate curve of this family (with a constant overhead the log-linear
    model does not know), the search ends at the lowest QP within budget, as a full scan says."""

    def rate(q: int) -> float:
        return 1000.0 * 2 ** (-(q - 20) / octave) + 20.0

    rates: dict[int, float] = {}
    qp: int | None = 32
    while qp is not None:
        assert qp not in rates and 0 <= qp <= 51
        rates[qp] = rate(qp)
        qp = next_qp(rates, budget, (0, 51), model=len(rates) < MODEL_ENCODES)
    truth = min((q for q in range(52) if rate(q) <= budget), default=None)
    fits = [q for q, r in rates.items() if r <= budget]
    assert (min(fits) if fits else None) == truth
    assert len(rates) <= 8  # a bisection of 0..51 alone needs 6


def test_probe_preset_is_never_slower_than_the_users() -> None:
    for backend in backends().values():
        order = backend.presets if backend.fastest_first else backend.presets[::-1]
        for preset in backend.presets:
            probe = backend.probe_preset(preset)
            assert order.index(probe) <= order.index(preset)
    assert get_backend("x265").probe_preset("medium") == "ultrafast"
    assert get_backend("svtav1").probe_preset("13") == "13"


@pytest.mark.parametrize("bitdepth", [8, 10])
def test_options_that_share_a_bitstream_preprocess_alike(parkjoy: Path, bitdepth: int) -> None:
    info, bank, backend = read_info(parkjoy), get_bank(None), get_backend("x265")
    frame = next(iter_frames(parkjoy))
    groups: dict[str, list[np.ndarray]] = {}
    for opt in ALL:
        pre = preprocess(frame, Layout.make(info, opt, backend, bitdepth, bank))
        planes = np.concatenate([p.ravel() for p in pre])
        first = groups.setdefault(stream_key(opt), [planes])[0]
        assert np.array_equal(first, planes), opt.name
    assert len(groups) == 11  # 15 options, 11 bitstreams


# --- real encodes ----------------------------------------------------------------------------


@pytest.mark.parametrize("effort", list(EFFORTS))
@pytest.mark.parametrize("qp", [27, 47])
def test_every_effort_writes_a_file_that_decodes_to_its_measurement(
    parkjoy: Path, tmp_path: Path, runner: CliRunner, effort: str, qp: int
) -> None:
    wrp, y4m = tmp_path / "o.wrp", tmp_path / "o.y4m"
    report = _encode(parkjoy, wrp, effort, qp)
    result = runner.invoke(cli, ["decode", str(wrp), "-o", str(y4m)])
    assert result.exit_code == 0, result.output
    acc = measure_files(str(parkjoy), str(y4m))
    assert acc.psnr_yuv == pytest.approx(report.psnr_yuv, abs=1e-9)
    assert report.bits == 8 * wrp.stat().st_size
    assert report.effort == effort
    (segment,) = report.segments
    coded = [c for c in segment.candidates if c.qp is not None]
    chosen = next(c for c in coded if c.chosen)
    assert chosen.cost == min(c.cost for c in coded if c.cost is not None)
    if effort == "exhaustive":
        assert len(coded) == 15 and segment.probe is None
        assert report.encodes == 11  # 15 options, 11 distinct pre-processings
    else:
        verify = EFFORTS[effort].verify
        assert verify is not None and len(coded) <= verify + 1  # the anchor and the best


def test_exhaustive_matches_coding_every_option_on_its_own(parkjoy: Path, tmp_path: Path) -> None:
    """The reference: each option coded and measured by itself (no shared streams, no
    search), J computed here at the λ of direct coding's secant from QP 42 to 45 (also coded
    here); exhaustive must choose the same option with the same bits."""
    report = _encode(parkjoy, tmp_path / "e.wrp", "exhaustive", 42, lam="measured")
    backend, bank, info = get_backend("x264"), get_bank(None), read_info(parkjoy)
    settings = EncodeSettings(qp=42, preset="fast", bitdepth=10)
    direct = Layout.make(info, OPTIONS[0], backend, 10, bank)
    at = [
        code_and_measure(backend, settings.model_copy(update={"qp": q}), parkjoy, direct, 0, 10, p)
        for q, p in ((42, tmp_path / "d42"), (45, tmp_path / "d45"))
    ]
    scale = secant_scale(
        backend,
        42,
        at[0].mse_8bit,
        8 * at[0].payload_bytes,
        45,
        at[1].mse_8bit,
        8 * at[1].payload_bytes,
        10 * info.width * info.height,
    )
    assert scale is not None and report.segments[0].lam is not None
    assert report.segments[0].lam.scale == pytest.approx(scale, rel=1e-12)
    lam = scale * 0.85 * 2**10
    assert report.rdo_lambda == pytest.approx(lam, rel=1e-12)
    costs: dict[int, tuple[float, int]] = {}
    for opt in ALL:
        if skip_reason(opt, info.width, info.height) is not None:
            continue
        layout = Layout.make(info, opt, backend, 10, bank, pre_arithmetic=report.pre_arithmetic)
        stream = tmp_path / f"{int(opt.code)}{backend.extension}"
        coded = code_and_measure(backend, settings, parkjoy, layout, 0, 10, stream)
        bits = 8 * (coded.payload_bytes + overhead_bytes(1))
        costs[int(opt.code)] = (rd_cost(coded.mse_8bit, bits, 10, info, lam), bits)
    best = min(costs, key=lambda c: costs[c][0])
    assert report.option == best
    assert report.bits == costs[best][1]
    for c in report.candidates:
        assert c.cost == pytest.approx(costs[c.code][0], rel=1e-12)


def test_fast_decision_is_deterministic(parkjoy: Path, tmp_path: Path) -> None:
    a = _encode(parkjoy, tmp_path / "a.wrp", "fast", 42)
    b = _encode(parkjoy, tmp_path / "b.wrp", "fast", 42)
    assert (tmp_path / "a.wrp").read_bytes() == (tmp_path / "b.wrp").read_bytes()

    def figures(r: EncodeReport) -> object:
        d = r.model_dump(exclude={"output", "timings"})
        for s in d["segments"]:
            for timed in ("probe", "lam"):
                if s[timed]:
                    s[timed].pop("seconds")
            for c in s["candidates"]:
                c.pop("encode_s"), c.pop("decode_s")
        d.pop("candidates")
        return d

    assert figures(a) == figures(b)


@pytest.mark.parametrize(("effort", "qp"), [("medium", 27), ("fast", 38), ("fast", 47)])
def test_json_says_how_every_candidate_was_judged(
    parkjoy: Path, tmp_path: Path, effort: str, qp: int
) -> None:
    report = _encode(parkjoy, tmp_path / "f.wrp", effort, qp)
    (segment,) = report.segments
    direct = next(c for c in segment.candidates if c.code == 0)
    assert direct.qp is not None and direct.estimate is None  # the anchor, coded in full
    assert direct.cost is not None
    probe = segment.probe
    assert probe is not None and probe.anchor == "direct" and probe.preset == "superfast"
    window = EFFORTS[effort].window
    assert probe.frames == probe_frames(10, EFFORTS[effort].probe_window(480, 270))
    assert probe.rate_scale > 0
    probed = {
        c.code: c.estimate.cost
        for c in segment.candidates
        if c.estimate and c.estimate.method in ("probe", "shared")
    }
    best = min([direct.cost, *probed.values()])
    by_name = {c.name: c for c in segment.candidates}
    methods = set()
    for c in segment.candidates:
        if c.code == 0:
            continue
        assert c.estimate is not None
        methods.add(c.estimate.method)
        if c.estimate.method == "bound":  # cannot beat direct: its D alone is above J
            assert c.pruned and c.estimate.lossless_mse is not None
            assert c.estimate.lossless_mse >= direct.cost and c.qp is None
        elif c.estimate.method == "family" and "pair" in (c.pruned or ""):
            # a wrapper whose ratio's post-processor did not beat linear upsampling
            assert EFFORTS[effort].pairs_need_post and OPTIONS[c.code].kind == "wrapper"
            text = OPTIONS[c.code].ratio_text
            post = by_name[f"post-{text}"]
            linear = by_name["direct" if text == "1/1" else f"bilinear-{text}"]
            assert post.estimate is not None and c.estimate.cost == post.estimate.cost
            lin = linear.cost if linear.code == 0 else linear.estimate.cost  # type: ignore[union-attr]
            assert lin is not None and c.estimate.cost >= lin and c.qp is None
        elif c.estimate.method == "family" and "stronger downscale" in (c.pruned or ""):
            # a Lanczos ratio below a milder one that was far behind (its estimate or bound)
            margin = EFFORTS[effort].family_margin
            assert EFFORTS[effort].ratio_ladder and margin is not None
            assert OPTIONS[c.code].kind == "lanczos" and c.qp is None
            milder = [
                m
                for m in segment.candidates
                if OPTIONS[m.code].kind == "lanczos"
                and OPTIONS[m.code].ratio > OPTIONS[c.code].ratio
                and m.estimate is not None
                and m.estimate.cost == c.estimate.cost
            ]
            assert milder and c.estimate.cost > (1 + margin) * best
        elif c.estimate.method == "family":  # its ratio's linear options were far behind
            margin = EFFORTS[effort].family_margin
            assert margin is not None and OPTIONS[c.code].kind in ("bilinear", "post", "wrapper")
            assert c.pruned and c.qp is None and c.estimate.cost > (1 + margin) * best
        elif c.estimate.method == "shared":  # post-1/1 on the anchor's own decoded frames
            e = c.estimate
            assert OPTIONS[c.code].kind == "post" and OPTIONS[c.code].ratio == 1
            assert e.frames == spread(10, window) and e.rank
            assert e.sample_mse and e.anchor_sample_mse and direct.mse
            rate_term = direct.cost - direct.mse  # the same bitstream: the anchor's rate
            scaled = direct.mse * e.sample_mse / e.anchor_sample_mse
            assert e.cost == pytest.approx(scaled + rate_term, rel=1e-12)
            assert (c.qp is not None) == e.coded
            if c.cost is not None:  # coded in full: the estimate was close
                assert c.cost == pytest.approx(e.cost, rel=0.02)
        else:
            assert c.estimate.probe_bits and c.estimate.probe_mse and c.estimate.rank
            assert (c.qp is not None) == c.estimate.coded
            assert (c.pruned is None) == c.estimate.coded
            if OPTIONS[c.code].kind == "wrapper":  # the pairs' verify rule (medium)
                post = by_name[f"post-{OPTIONS[c.code].ratio_text}"].estimate
                behind = post is not None and post.method in ("probe", "shared")
                behind = behind and c.estimate.cost >= post.cost  # type: ignore[union-attr]
                pair_rule = "the pair is not coded in full" in (c.pruned or "")
                assert pair_rule == (
                    EFFORTS[effort].pairs_beat_post
                    and behind
                    and c.estimate.rank <= (EFFORTS[effort].verify or 0)
                )
        if c.estimate.rank == 1 and not c.estimate.coded:  # the best, within the margin
            worth = (1 - EFFORTS[effort].verify_margin) * direct.cost
            assert c.estimate.cost >= worth and "not coded in full" in (c.pruned or "")
    ranks = sorted(c.estimate.rank for c in segment.candidates if c.estimate and c.estimate.rank)
    assert len(set(ranks)) == len(ranks) == len(probed)
    if qp == 27:  # at a low QP the bound rules out the coarse ratios without a probe
        assert "bound" in methods
    if effort == "medium":  # wrapper-1/1, third of the ranking, behind post-1/1
        assert "the pair is not coded in full" in (by_name["wrapper-1/1"].pruned or "")


def test_fast_probes_a_stronger_downscale_only_while_the_milder_one_is_close(
    parkjoy: Path, tmp_path: Path
) -> None:
    """At QP 38, at the relation's λ, lanczos-2/3's estimate is more than 10 % above direct's
    J, so lanczos-1/2 (which the bound leaves in play) is not probed; coded in full, it is
    indeed behind lanczos-2/3."""
    report = _encode(parkjoy, tmp_path / "f.wrp", "fast", 38, lam="model")
    fast = {c.name: c for c in report.candidates}
    milder, stronger = fast["lanczos-2/3"].estimate, fast["lanczos-1/2"].estimate
    assert milder is not None and milder.method == "probe"
    assert stronger is not None and stronger.method == "family"
    assert "stronger downscale" in (fast["lanczos-1/2"].pruned or "")
    margin = EFFORTS["fast"].family_margin
    assert margin is not None
    assert stronger.cost == milder.cost > (1 + margin) * fast["direct"].cost  # type: ignore[operator]
    for name in ("bilinear-1/2", "post-1/2", "wrapper-1/2"):  # its ratio is out of play
        estimate = fast[name].estimate
        assert fast[name].qp is None and estimate is not None
        assert estimate.method in ("family", "bound")
    full = {c.name: c for c in _encode(parkjoy, tmp_path / "x.wrp", "exhaustive", 38).candidates}
    assert full["lanczos-1/2"].cost > full["lanczos-2/3"].cost > full["direct"].cost  # type: ignore[operator]


def test_bound_never_rules_out_a_winner(parkjoy: Path, tmp_path: Path) -> None:
    """What the bound prunes at a low QP, coded in full, has a higher J than direct."""
    fast = _encode(parkjoy, tmp_path / "f.wrp", "fast", 22)
    full = {c.code: c for c in _encode(parkjoy, tmp_path / "x.wrp", "exhaustive", 22).candidates}
    pruned = [c for c in fast.candidates if c.estimate and c.estimate.method == "bound"]
    assert pruned
    for c in pruned:
        assert full[c.code].cost is not None and full[0].cost is not None
        assert full[c.code].cost > full[0].cost
        assert full[c.code].mse is not None and c.estimate is not None
        assert full[c.code].mse >= 0.9 * c.estimate.lossless_mse  # coding adds error
        if OPTIONS[c.code].kind in ("lanczos", "bilinear"):  # at least the coding share
            assert full[0].mse is not None and c.estimate.lossless_mse is not None
            coding = CODING_SHARE * full[0].mse
            assert c.estimate.cost == pytest.approx(c.estimate.lossless_mse + coding)
            assert full[c.code].mse >= 0.9 * c.estimate.lossless_mse + coding


def test_fast_probes_a_pair_only_where_its_post_beats_linear(parkjoy: Path, tmp_path: Path) -> None:
    """At a low QP post-1/1 loses to direct, so fast does not probe wrapper-1/1; exhaustive
    confirms that the pair loses too."""
    fast = {c.name: c for c in _encode(parkjoy, tmp_path / "f.wrp", "fast", 22).candidates}
    post, pair = fast["post-1/1"], fast["wrapper-1/1"]
    assert post.estimate is not None and post.estimate.method == "shared"
    assert fast["direct"].cost is not None and post.estimate.cost >= fast["direct"].cost
    assert pair.estimate is not None and pair.estimate.method == "family"
    assert pair.pruned is not None and "pair is not probed" in pair.pruned and pair.qp is None
    full = {c.name: c for c in _encode(parkjoy, tmp_path / "x.wrp", "exhaustive", 22).candidates}
    assert full["wrapper-1/1"].cost is not None and full["direct"].cost is not None
    assert full["wrapper-1/1"].cost > full["direct"].cost


@pytest.mark.parametrize("effort", ["fast", "exhaustive"])
def test_bitrate_budget_by_rate_model(parkjoy: Path, tmp_path: Path, effort: str) -> None:
    report = _encode(parkjoy, tmp_path / "b.wrp", effort, None, bitrate_kbps=900.0)
    assert report.kbps <= 900.0 and report.qp is None
    coded = [c for c in report.candidates if c.qp is not None]
    for c in coded:
        assert c.kbps is not None and c.kbps <= 900.0
        assert c.qps_tried and c.qp in c.qps_tried
        if effort == "exhaustive":  # proven the lowest: one QP lower is over budget
            assert c.qp - 1 in c.qps_tried or c.qp == 0
    best = max(c.psnr_yuv for c in coded if c.psnr_yuv is not None)
    assert report.psnr_yuv == pytest.approx(best, abs=1e-12)
    if effort == "fast":
        direct = next(c for c in coded if c.code == 0)
        assert direct.qps_tried is not None and len(direct.qps_tried) <= MODEL_ENCODES + 2


def test_cli_effort_choices_and_table(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    bad = runner.invoke(
        cli,
        ["encode", str(clip8), "-o", str(tmp_path / "x.wrp"), "--qp", "30", "--effort", "quick"],
    )
    assert bad.exit_code == 2 and "--effort" in bad.output
    assert not (tmp_path / "x.wrp").exists()
    args = ["encode", str(clip8), "-o", str(tmp_path / "y.wrp"), "--qp", "22", "--codec", "x264"]
    ok = CliRunner().invoke(cli, [*args, "--effort", "fast"], env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert "effort fast" in ok.output and "≥" in ok.output


def test_bench_effort_measures_each_search_once_without_adaptation() -> None:
    from wrapcodec.bench import effort as effortbench

    assert effortbench.searches() == ["fast", "medium", "exhaustive"]
    slow, medium = EFFORTS["slow"], EFFORTS["medium"]
    assert slow.adapt_budget != medium.adapt_budget  # with adaptation they differ


def test_bench_effort(
    runner: CliRunner, tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x264")
    data = tmp_path / "data"
    data.mkdir()
    (data / "pj.y4m").write_bytes(clip8.read_bytes())
    out = tmp_path / "out"
    args = ["bench-effort", str(data), "--codec", "x264", "--qps", "27,37,47", "--preset"]
    args += ["ultrafast", "--efforts", "fast", "--out", str(out)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output + str(result.exception)
    results = json.loads((out / "results.json").read_text())
    assert set(results["efforts"]) == {"fast", "exhaustive"}
    assert results["efforts"]["exhaustive"]["same_choice"] == "3/3"
    fast = results["efforts"]["fast"]
    assert fast["runs"] == 3 and math.isfinite(fast["time_ratio_median"])

    def curve(effort: str) -> Curve:  # a level's recorded points, by QP
        runs = sorted((r for r in results["runs"] if r["effort"] == effort), key=lambda r: r["qp"])
        return Curve.of([r["kbps"] for r in runs], [r["psnr_yuv"] for r in runs])

    expected = bd_rate(curve("exhaustive"), curve("fast")).bd_rate  # fast against exhaustive
    assert fast["bd_rate_vs_exhaustive_mean"] == pytest.approx(expected, rel=1e-12)
    assert "| fast |" in (out / "report.md").read_text()
    again = runner.invoke(cli, args)  # from the cache
    assert again.exit_code == 0
    assert json.loads((out / "results.json").read_text())["runs"] == results["runs"]
    # the command as resolved names the pre-processors' arithmetic; another one is a new run
    assert f"--pre-arithmetic={default_pre_arithmetic()}" in results["command"]
    entries = len(list((out / "cache").iterdir()))
    other = "float32" if default_pre_arithmetic() == "bfloat16" else "bfloat16"
    third = runner.invoke(cli, [*args, "--pre-arithmetic", other])
    assert third.exit_code == 0, third.output
    assert len(list((out / "cache").iterdir())) == 2 * entries


def test_bench_effort_summary_scores_each_level_against_exhaustive() -> None:
    """Twice exhaustive's rate at the same PSNR is a BD-rate of +100 %, the same points 0 %;
    the mean is over sequences, and a choice counts as the same at the same QP only."""
    from wrapcodec.bench.effort import EffortRun, summarise

    curve = [(27, 800.0, 40.0), (37, 300.0, 35.0), (47, 100.0, 30.0)]
    runs = [
        EffortRun(
            sequence=seq,
            qp=qp,
            effort=effort,
            option="bilinear-1/2" if (seq, effort, qp) == ("b", "fast", 47) else "direct",
            kbps=kbps * (2.0 if (seq, effort) == ("a", "fast") else 1.0),
            psnr_yuv=psnr,
            seconds=3.0,
            direct_s=1.5,
            encodes=1,
        )
        for seq in ("a", "b")
        for effort in ("exhaustive", "fast")
        for qp, kbps, psnr in curve
    ]
    summary = summarise(runs, ["fast", "exhaustive"]).model_dump()
    fast, ex = summary["efforts"]["fast"], summary["efforts"]["exhaustive"]
    assert fast["bd_rate_vs_exhaustive"] == {
        "a": pytest.approx(100.0, rel=1e-9),
        "b": pytest.approx(0.0, abs=1e-9),
    }
    assert fast["bd_rate_vs_exhaustive_mean"] == pytest.approx(50.0, rel=1e-9)
    assert fast["bd_rate_vs_exhaustive_max"] == pytest.approx(100.0, rel=1e-9)
    assert fast["same_choice"] == "5/6" and ex["same_choice"] == "6/6"
    assert ex["bd_rate_vs_exhaustive_mean"] == pytest.approx(0.0, abs=1e-9)
    assert fast["runs"] == 6 and fast["time_ratio_median"] == 2.0


@pytest.mark.parametrize(
    ("effort", "budget"), [("exhaustive", None), ("exhaustive", 900.0), ("fast", None)]
)
def test_candidates_in_parallel_change_nothing(
    parkjoy: Path, tmp_path: Path, effort: str, budget: float | None
) -> None:
    qp = None if budget else 42
    one = _encode(parkjoy, tmp_path / "1.wrp", effort, qp, bitrate_kbps=budget, jobs=1)
    two = _encode(parkjoy, tmp_path / "2.wrp", effort, qp, bitrate_kbps=budget, jobs=3)
    assert (tmp_path / "1.wrp").read_bytes() == (tmp_path / "2.wrp").read_bytes()
    keep = {"code", "qp", "bits", "mse", "cost", "qps_tried", "shares", "chosen", "estimate"}
    assert [c.model_dump(include=keep) for c in one.candidates] == [
        c.model_dump(include=keep) for c in two.candidates
    ]
    assert one.encodes == two.encodes


def test_bench_effort_cache_names_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exhaustive runs keep their cache names; a lower level's name changes with its
    parameters and with the search's revision, so that a changed level is measured again."""
    from wrapcodec.bench import effort as effortbench

    assert effortbench._effort_fields("exhaustive") == {"effort": "exhaustive"}
    fast = effortbench._effort_fields("fast")
    assert fast != effortbench._effort_fields("medium")
    level = EFFORTS["fast"]
    # both parameters of the probe window (frames, and luma samples for small pictures)
    for change in ({"window": level.window + 1}, {"probe_samples": 2 * level.probe_samples}):
        with monkeypatch.context() as m:
            m.setitem(EFFORTS, "fast", dataclasses.replace(level, **change))
            assert effortbench._effort_fields("fast") != fast, change
    monkeypatch.setattr(effortbench, "SEARCH_REVISION", effortbench.SEARCH_REVISION + 1)
    assert effortbench._effort_fields("fast") != fast


def test_bench_effort_cache_key_is_the_old_key() -> None:
    """An effort run's cache key is the hash of the fields it had before the bench's cache
    was shared: sequence and path left out, the arithmetic only when not float32."""
    import hashlib
    import json

    from wrapcodec.bench import effort as effortbench

    fields = {
        "source": "ab" * 32,
        "codec": "x264",
        "preset": "ultrafast",
        "bitdepth": 10,
        "qp": 27,
        "options": [0, 9, 12],
        "bank": "cd" * 8,
        "adapt_steps": 0,
        "revision": effortbench.REVISION,
        "jobs": 2,
    }
    spec = effortbench.EffortSpec(sequence="pj", path="/x/pj.y4m", effort="fast", **fields)
    old = {**fields, **effortbench._effort_fields("fast")}
    assert spec.key() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:24]
    bf16 = spec.model_copy(update={"pre_arithmetic": "bfloat16"})
    old_bf16 = {**old, "pre_arithmetic": "bfloat16"}
    expected = hashlib.sha256(json.dumps(old_bf16, sort_keys=True).encode()).hexdigest()[:24]
    assert bf16.key() == expected
    # a run that adapts holds the fit's revision, so it is measured again once the fit changes
    adapting = spec.model_copy(update={"adapt_steps": 20})
    with_fit = {**old, "adapt_steps": 20, "adapt_revision": effortbench.ADAPT_REVISION}
    expected = hashlib.sha256(json.dumps(with_fit, sort_keys=True).encode()).hexdigest()[:24]
    assert adapting.key() == expected
