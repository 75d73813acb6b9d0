"""The codecs' own resampling as bench rivals: SVT-AV1 super-resolution really coded (frame
headers), rival points and rows in a real bench run, their cache keys, and the BD-rate of one
family of curves against another."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_errors import fails
from click.testing import CliRunner
from pydantic import BaseModel

from wrapcodec import ffmpeg
from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bdrate import Curve, bd_rate_envelope, bd_rate_envelopes
from wrapcodec.bench.plan import BenchConfig, plan
from wrapcodec.bench.points import PointSpec, run_point
from wrapcodec.cli import cli
from wrapcodec.errors import BackendError, InputError
from wrapcodec.y4m import iter_frames, read_info

SUPERRES = {"superres-4/5": 10, "superres-2/3": 12, "superres-1/2": 16}


def test_svtav1_offers_superres_and_the_others_nothing() -> None:
    svt = get_backend("svtav1")
    assert [r.name for r in svt.rivals] == list(SUPERRES)
    for name in ("aom", "x264", "x265", "vvenc"):
        assert get_backend(name).rivals == ()
    with pytest.raises(BackendError, match=r"no rival 'superres-3/4'.*superres-4/5"):
        svt.with_rival("superres-3/4")
    rival = svt.with_rival("superres-1/2")
    assert rival.align == 8 and rival.coded_size(480, 270) == (480, 272)
    assert svt.coded_size(480, 270) == (480, 270)  # the backend itself keeps its sizes
    args = rival.codec_args(32, "8", None)
    params = dict(p.split("=") for p in args[args.index("-svtav1-params") + 1].split(":"))
    assert params["qp"] == "34" and params["aq-mode"] == "0"  # the backend's fixed QP
    assert params["superres-mode"] == "1"
    assert params["superres-denom"] == params["superres-kf-denom"] == "16"


def superres_denominators(stream: Path) -> list[int]:
    """Per coded frame: the super-resolution denominator its header signals (8: none)."""
    cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(stream), "-c", "copy"]
    cmd += ["-bsf:v", "trace_headers", "-f", "null", "-"]
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    fields = re.findall(r"\]\s+\d+\s+(use_superres|coded_denom)\s+\S+\s+=\s+(\d+)", log)
    denominators = []
    for key, value in fields:
        if key == "use_superres":
            denominators.append(8)
        elif denominators:
            denominators[-1] = int(value) + 9  # AV1 §5.9.8: SUPERRES_DENOM_MIN
    return denominators


@pytest.mark.parametrize("name", list(SUPERRES))
def test_superres_rival_codes_every_frame_narrower(
    name: str,
    tmp_path: Path,
    parkjoy: Path,
    cut_clip: Callable[..., Path],
    require_backend: Callable[[str], None],
) -> None:
    require_backend("svtav1")
    backend = get_backend("svtav1").with_rival(name)
    clip = cut_clip(parkjoy, tmp_path / "pj.y4m", 192, 96, 4, 8)
    info = read_info(clip)
    settings = EncodeSettings(qp=32, preset="12", bitdepth=8)
    stream = tmp_path / "s.obu"
    width, height = backend.coded_size(info.width, info.height)
    assert (width, height) == (192, 96)  # multiples of 8 already
    count = ffmpeg.encode(backend, settings, iter_frames(clip), width, height, "25", stream)
    assert superres_denominators(stream) == [SUPERRES[name]] * count
    decoded = list(ffmpeg.decode(backend, stream, width, height, 8, count))
    assert len(decoded) == count and decoded[0].y.shape == (height, width)


@pytest.fixture(scope="module")
def rival_run(
    parkjoy: Path, tmp_path_factory: pytest.TempPathFactory, cut_clip: Callable[..., Path]
) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("rivals")
    clip = cut_clip(parkjoy, folder / "pj.y4m", 160, 90, 3, 8)  # 90: not a multiple of 8
    out = folder / "bench"
    args = ["bench", str(clip), "--codec", "svtav1", "--preset", "12", "--qps", "27,37,47"]
    args += ["--options", "10", "--rivals", "all", "--out", str(out), "--jobs", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text()), out


def test_bench_codes_rivals_as_their_own_curves(rival_run: tuple[dict, Path]) -> None:
    results, out = rival_run
    points = results["points"]
    assert results["config"]["rivals"] == list(SUPERRES)
    assert results["computed_points"] == len(points) == 3 * (2 + len(SUPERRES))
    by_curve: dict[str, dict[int, dict]] = {}
    for p in points:
        by_curve.setdefault(p["spec"]["rival"] or str(p["spec"]["option"]), {})[p["spec"]["qp"]] = p
    for name in SUPERRES:
        for qp, p in by_curve[name].items():
            direct = by_curve["0"][qp]
            assert p["spec"]["option"] == 0 and p["kind"] == "rival"
            assert p["option_name"] == name and p["bottleneck"] == direct["bottleneck"]
            assert p["bits"] < direct["bits"] and p["psnr_yuv"] < direct["psnr_yuv"]
    # narrower coded widths: fewer bits and less quality at the same QP
    for qp in (27, 37, 47):
        bits = [by_curve[name][qp]["bits"] for name in SUPERRES]
        assert bits == sorted(bits, reverse=True), (qp, bits)
    bd = results["bd_rate"]
    for name in SUPERRES:
        assert f"{name} alone" in bd
    for row in ("codec resampling", "all options vs codec resampling"):
        r = bd[row]["psnr_yuv"]["pj"]["envelope"]
        assert r["bd_rate"] is not None
    assert bd["codec resampling"]["psnr_yuv"]["pj"]["envelope"]["bd_rate"] <= 1e-9
    report = (out / "report.md").read_text()
    assert "| superres-1/2 alone |" in report and "all options vs codec resampling" in report
    assert "superres-1/2" in (out / "points.csv").read_text()


def test_rival_points_are_cached_under_their_own_key(rival_run: tuple[dict, Path]) -> None:
    _, out = rival_run
    again = CliRunner().invoke(
        cli,
        ["bench", str(next(out.parent.glob("*.y4m"))), "--codec", "svtav1", "--preset", "12",
         "--qps", "27,37,47", "--options", "10", "--rivals", "superres-1/2", "--out", str(out)],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["computed_points"] == 0


def test_cache_key_without_rival_is_the_old_key(
    clip8: Path, first_bench_key: Callable[[BaseModel], str]
) -> None:
    config = BenchConfig(dataset=str(clip8), codec="svtav1", qps=[30, 40], options=[0])
    spec = plan(config)[0][0]
    digest = first_bench_key(spec)
    assert spec.key() == digest
    keys = {spec.model_copy(update={"rival": r}).key() for r in SUPERRES}
    assert len(keys) == len(SUPERRES) and digest not in keys


def test_rival_is_coded_as_direct_only(clip8: Path) -> None:
    config = BenchConfig(dataset=str(clip8), codec="svtav1", qps=[30, 40], options=[0, 10])
    spec = plan(config)[0][-1]
    assert spec.option == 10
    with pytest.raises(InputError, match="coded as option 0"):
        run_point(PointSpec(**{**spec.model_dump(), "rival": "superres-1/2"}))


@pytest.mark.parametrize(
    ("codec", "rivals", "message"),
    [
        ("x265", "all", "x265 has no resampling modes of its own"),
        ("svtav1", "superres-3/4", "svtav1 has no rival 'superres-3/4'"),
        ("svtav1", "superres-1/2,superres-1/2", "names one twice"),
    ],
)
def test_bad_rivals_are_refused(
    runner: CliRunner, clip8: Path, tmp_path: Path, codec: str, rivals: str, message: str
) -> None:
    args = ["bench", str(clip8), "--codec", codec, "--rivals", rivals, "--out", str(tmp_path)]
    fails(runner, args, message)
    assert not (tmp_path / "results.json").exists()


# --- one family of curves against another (pure) -------------------------------------------

ANCHOR = Curve.of([100, 200, 400, 800], [30, 33, 36, 39])
TEN_PERCENT_LESS = Curve.of([90, 180, 360, 720], [30, 33, 36, 39])
LOW = Curve.of([50, 100, 200, 400], [26, 30.5, 33.2, 35])


def test_one_anchor_is_the_envelope_bd_rate() -> None:
    options = [ANCHOR, TEN_PERCENT_LESS, LOW]
    single = bd_rate_envelope(ANCHOR, options)
    family = bd_rate_envelopes([ANCHOR], options)
    assert family.bd_rate == pytest.approx(single.bd_rate, abs=1e-9)
    assert family.method == "envelopes"
    assert bd_rate_envelopes([ANCHOR], [TEN_PERCENT_LESS]).bd_rate == pytest.approx(-10.0)


def test_the_anchor_family_at_its_best_at_every_quality() -> None:
    # LOW beats the anchor below 33.6 dB or so: against both, TEN_PERCENT_LESS gains less
    both = bd_rate_envelopes([ANCHOR, LOW], [TEN_PERCENT_LESS])
    assert both.bd_rate is not None and -10.0 < both.bd_rate < 0.0
    # integrated over the first anchor's range only (30–39 dB), though LOW reaches 26 dB
    assert both.quality_range == (30.0, 39.0)
    assert bd_rate_envelopes([ANCHOR, LOW], [ANCHOR, LOW]).bd_rate == pytest.approx(0.0)


def test_no_shared_quality_gives_no_figure() -> None:
    high = Curve.of([1000, 2000], [40, 42])
    result = bd_rate_envelopes([ANCHOR], [high])
    assert result.bd_rate is None and "no quality overlap" in (result.warning or "")
