"""Each segment's λ, measured on direct coding's RD curve (wrapcodec.encode.lagrange): the
secant's arithmetic, where the probe is coded, when it is measured, and what the report says.
tests/test_effort.py checks an exhaustive encode against J computed independently at the
measured λ; tests/test_bitdepth.py that ``--bitdepth auto`` judges candidates at the λ of the
depth chosen."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from wrapcodec.adapt import AdaptConfig
from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.cli import cli
from wrapcodec.encode import EncodeConfig, encode_file
from wrapcodec.encode.lagrange import SCALE_RANGE, probe_qp, secant_scale
from wrapcodec.encode.parts import encode_key
from wrapcodec.options import OPTIONS
from wrapcodec.y4m import read_info

X265 = get_backend("x265")


def test_the_scale_is_the_secant_over_the_relation_at_the_midpoint() -> None:
    # 4 more MSE for 200 fewer bits over 10,000 samples: a slope of 200 per bit per sample.
    scale = secant_scale(X265, 32, 10.0, 1000, 35, 14.0, 800, 10_000)
    assert scale == pytest.approx(200 / (0.57 * 2 ** ((33.5 - 12) / 3)), rel=1e-12)
    # The probe below the QP (at the top of the range) gives the same slope.
    assert secant_scale(X265, 35, 14.0, 800, 32, 10.0, 1000, 10_000) == pytest.approx(scale)


@pytest.mark.parametrize(
    ("mse", "bits"),
    [(10.0, 1000), (9.0, 800), (14.0, 1000), (float("inf"), 800)],
    ids=["same", "better-with-fewer-bits", "no-rate-change", "infinite"],
)
def test_a_curve_that_does_not_fall_gives_no_scale(mse: float, bits: int) -> None:
    assert secant_scale(X265, 32, 10.0, 1000, 35, mse, bits, 100) is None


def test_the_scale_is_bounded() -> None:
    steep = secant_scale(X265, 32, 1.0, 1000, 35, 100.0, 999, 10**6)
    flat = secant_scale(X265, 32, 1.0, 10**9, 35, 1.0 + 1e-9, 1, 10)
    assert (steep, flat) == (SCALE_RANGE[1], SCALE_RANGE[0])


def test_the_probe_is_three_qps_up_or_down_at_the_top() -> None:
    assert probe_qp(X265, 32) == 35
    assert probe_qp(X265, 48) == 51
    assert probe_qp(X265, 50) == 47
    assert probe_qp(get_backend("x264"), 69) == 66


def test_the_choice_of_lambda_is_part_of_a_resumed_encodes_identity(parkjoy: Path) -> None:
    config = EncodeConfig(
        backend=X265,
        settings=EncodeSettings(qp=32, preset="ultrafast", bitdepth=10),
        options=tuple(OPTIONS.values()),
        bank=get_bank(None),
        adapt=AdaptConfig(steps=0),
    )
    model = config.model_copy(update={"lam": "measured"})
    assert encode_key(config, parkjoy, [(0, 10)]) != encode_key(model, parkjoy, [(0, 10)])


def _encode(runner: CliRunner, src: Path, out: Path, *args: str) -> tuple[dict, str]:
    """The table and the JSON report of one encode."""
    fixed = ["--codec", "x264", "--preset", "fast", "--adapt-steps", "0", "--effort", "exhaustive"]
    cmd = ["encode", str(src), "-o", str(out), *fixed, *args]
    result = runner.invoke(cli, cmd)
    assert result.exit_code == 0, result.output + str(result.exception)
    as_json = runner.invoke(cli, [*cmd, "-y", "--json"])
    assert as_json.exit_code == 0, as_json.output
    return json.loads(as_json.stdout), result.output


def _costs_at(report: dict, lam: float, samples: int) -> None:
    """Every candidate coded in full has J = MSE + ``lam`` · bits per source sample."""
    coded = [c for c in report["segments"][0]["candidates"] if c["cost"] is not None]
    assert len(coded) > 1
    for c in coded:
        assert c["cost"] == pytest.approx(c["mse"] + lam * c["bits"] / samples, rel=1e-9)


def test_a_measured_lambda_prices_every_candidate_and_the_report_says_it(
    runner: CliRunner, tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x264")
    info = read_info(clip8)
    samples = 4 * info.width * info.height
    args = ["--qp", "34", "--options", "0,1,5,9", "--bitdepth", "10"]
    report, table = _encode(runner, clip8, tmp_path / "m.wrp", *args, "--lambda", "measured")
    lam = report["segments"][0]["lam"]
    relation = get_backend("x264").qp_to_lambda(34)
    assert lam["measured"] and lam["probe_qp"] == 37 and lam["model"] == relation
    assert lam["scale"] != 1.0 and report["rdo_lambda"] == pytest.approx(lam["scale"] * relation)
    assert report["encodes"] == 4  # direct, its probe 3 QPs up, the wrapper and the linear
    _costs_at(report, report["rdo_lambda"], samples)
    assert f"λ: {report['rdo_lambda']:.4g} ({lam['scale']:.2f} × the relation's)" in table

    model, table = _encode(runner, clip8, tmp_path / "r.wrp", *args)  # the default
    assert model["segments"][0]["lam"] is None and model["rdo_lambda"] == relation
    assert model["encodes"] == 3
    _costs_at(model, relation, samples)
    assert "λ:" not in table


def test_the_default_quantises_updates_at_the_slope_scale_and_judges_at_the_relation(
    tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    """``--lambda model``: every J at the codec's λ(QP), an update's quantisation pricing a
    bit at that λ times the codec's slope scale, so its updates are coarser than at λ."""
    require_backend("x264")
    x264 = get_backend("x264")
    assert x264.slope_scale > 1  # measured on the training clips (scripts/slope_scale.py)
    samples = 4 * read_info(clip8).width * read_info(clip8).height
    tried = []
    for k, backend in enumerate((x264, dataclasses.replace(x264, slope_scale=1.0))):
        config = EncodeConfig(
            backend=backend,
            settings=EncodeSettings(qp=34, preset="fast", bitdepth=10),
            options=(OPTIONS[0], OPTIONS[1]),
            bank=get_bank(None),
            adapt=AdaptConfig(steps=40),
            effort="exhaustive",
        )
        report = encode_file(str(clip8), str(tmp_path / f"{k}.wrp"), config)
        assert report.rdo_lambda == x264.qp_to_lambda(34)
        _costs_at(report.model_dump(), x264.qp_to_lambda(34), samples)
        (post,) = [c for c in report.segments[0].candidates if c.code == 1]
        assert post.adaptation is not None
        tried.append([t.bytes for t in post.adaptation.tried])
    scaled, relation = tried
    assert scaled[0] < relation[0], (scaled, relation)  # the same first fit, coarser steps


def test_nothing_to_choose_measures_nothing(
    runner: CliRunner, tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    """Direct coding alone, at one depth or choosing between two (at the codec's λ(QP)), and
    any encode under a bitrate budget, spend no encode on λ."""
    require_backend("x264")
    for args in (
        ["--qp", "34", "--options", "0", "--bitdepth", "10"],
        ["--qp", "34", "--options", "0"],
        ["--bitrate", "300"],
    ):
        args += ["--lambda", "measured"]
        report, _ = _encode(runner, clip8, tmp_path / f"{len(args)}.wrp", *args)
        assert report["segments"][0]["lam"] is None
        if args[:4] == ["--qp", "34", "--options", "0"] and "--bitdepth" not in args:
            assert report["encodes"] == 2  # direct coding at each depth, no probe
