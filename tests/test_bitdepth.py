"""The bottleneck's bit depth chosen per segment (``--bitdepth auto``), and files whose
segments were coded at different depths (container version 4)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from wrapcodec.bank import get_bank
from wrapcodec.cli import cli
from wrapcodec.container import Segment, read_wrp, write_wrp
from wrapcodec.encode.efforts import EFFORTS, depth_probe
from wrapcodec.encode.encoder import _version
from wrapcodec.metrics import measure_files
from wrapcodec.options import OPTIONS
from wrapcodec.y4m import iter_frames


def _encode(runner: CliRunner, src: Path, out: Path, *args: str) -> dict:
    fixed = ["--codec", "x264", "--preset", "fast", "--adapt-steps", "0", "--effort", "exhaustive"]
    result = runner.invoke(cli, ["encode", str(src), "-o", str(out), "--json", *fixed, *args])
    assert result.exit_code == 0, result.output + str(result.exception)
    return json.loads(result.stdout)


def _frames(path: Path) -> list[bytes]:
    return [b"".join(p.tobytes() for p in (f.y, f.u, f.v)) for f in iter_frames(path)]


@pytest.mark.parametrize("lam", ["model", "measured"])
@pytest.mark.parametrize("qp", ["22", "44"])
def test_auto_codes_at_the_depth_of_direct_codings_lower_j(
    runner: CliRunner,
    tmp_path: Path,
    clip8: Path,
    qp: str,
    lam: str,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x264")
    args = ["--qp", qp, "--options", "0,1", "--lambda", lam]
    report = _encode(runner, clip8, tmp_path / "auto.wrp", *args)
    (segment,) = report["segments"]
    assert report["auto_bitdepth"]
    assert [d["bitdepth"] for d in segment["depths"]] == [10, 8]
    lowest = min(segment["depths"], key=lambda d: d["cost"])
    assert segment["bitdepth"] == report["bitdepth"] == lowest["bitdepth"]
    direct = next(c for c in segment["candidates"] if c["code"] == 0)
    # the same bitstream, measured alike (with a measured λ, its J at that depth's λ)
    assert (direct["kbps"], direct["psnr_yuv"]) == (lowest["kbps"], lowest["psnr_yuv"])
    assert direct["shares"] is None and direct["encode_s"] > 0  # its own, coded once
    header, (coded,) = read_wrp(tmp_path / "auto.wrp")
    assert header.bottleneck_bitdepth == lowest["bitdepth"]
    assert header.version == (3 if coded.prior else 2)  # one depth: no version 4

    # The file is the one a fixed --bitdepth of that depth writes, byte for byte.
    fixed = tmp_path / "fixed.wrp"
    at = _encode(runner, clip8, fixed, *args, "--bitdepth", str(lowest["bitdepth"]))
    assert (tmp_path / "auto.wrp").read_bytes() == fixed.read_bytes()
    if lam == "measured":  # the candidates were judged at the λ measured at the depth chosen
        auto_lam, fixed_lam = segment["lam"], at["segments"][0]["lam"]
        assert auto_lam.pop("seconds") > 0 and fixed_lam.pop("seconds") > 0
        assert auto_lam == fixed_lam and auto_lam["measured"]
    else:
        assert segment["lam"] is None


def test_depth_probe_is_centred_windows_of_a_long_segment() -> None:
    assert depth_probe(120, None) is None  # exhaustive: the whole segment
    assert depth_probe(120, 16) == list(range(52, 68))
    assert depth_probe(64, 16) == list(range(24, 40))
    assert depth_probe(63, 16) is None  # more than a quarter of the segment: the whole of it
    assert len(depth_probe(600, 16) or []) == 4 * 16  # a window per 120 frames, at most four
    assert EFFORTS["exhaustive"].depth_window is EFFORTS["medium"].depth_window is None
    assert EFFORTS["fast"].depth_window == 16


def test_depth_chosen_on_a_probe_codes_as_that_fixed_depth(
    runner: CliRunner,
    tmp_path: Path,
    parkjoy: Path,
    cut_clip: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    require_backend: Callable[[str], None],
) -> None:
    """With a depth window (``fast``'s), direct coding at each depth is measured on a probe of
    the segment; every candidate is then coded at the depth chosen, as with that depth fixed."""
    require_backend("x264")
    src = cut_clip(parkjoy, tmp_path / "pj.y4m", 192, 108, 10, 8)
    fast = dataclasses.replace(EFFORTS["fast"], depth_window=2)
    monkeypatch.setitem(EFFORTS, "fast", fast)  # 2 of 10 frames: a probe
    args = ["--qp", "30", "--options", "0,1", "--effort", "fast"]
    report = _encode(runner, src, tmp_path / "auto.wrp", *args)
    (segment,) = report["segments"]
    assert [(d["bitdepth"], d["frames"]) for d in segment["depths"]] == [(10, 2), (8, 2)]
    lowest = min(segment["depths"], key=lambda d: d["cost"])
    assert segment["bitdepth"] == lowest["bitdepth"]
    direct = next(c for c in segment["candidates"] if c["code"] == 0)
    assert direct["shares"] is None and direct["encode_s"] > 0  # coded on the whole segment,
    assert direct["psnr_yuv"] != lowest["psnr_yuv"]  # not the probe's figures
    fixed = tmp_path / "fixed.wrp"
    _encode(runner, src, fixed, *args, "--bitdepth", str(lowest["bitdepth"]))
    assert (tmp_path / "auto.wrp").read_bytes() == fixed.read_bytes()

    whole = _encode(runner, src, tmp_path / "ex.wrp", "--qp", "30", "--options", "0,1")
    assert [d["frames"] for d in whole["segments"][0]["depths"]] == [None, None]


def test_one_depth_under_a_bitrate_budget_or_when_asked(
    runner: CliRunner, tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x264")
    budget = _encode(runner, clip8, tmp_path / "b.wrp", "--bitrate", "300", "--options", "0")
    assert not budget["auto_bitdepth"] and budget["bitdepth"] == 10
    assert budget["segments"][0]["depths"] == []
    eight = _encode(
        runner, clip8, tmp_path / "e.wrp", "--qp", "30", "--options", "0", "--bitdepth", "8"
    )
    assert not eight["auto_bitdepth"] and eight["segments"][0]["bitdepth"] == 8


def test_segments_coded_at_different_depths_decode_as_coded(
    runner: CliRunner, tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    """Segment 0 of a 10-bit encode and segment 1 of an 8-bit one, in one version 4 file,
    decode to exactly those encodes' frames."""
    require_backend("x264")
    coded = {}
    for depth in (10, 8):
        wrp = tmp_path / f"d{depth}.wrp"
        args = ["--qp", "30", "--options", "0", "--bitdepth", str(depth), "--segment-frames", "2"]
        _encode(runner, clip8, wrp, *args)
        header, segments = read_wrp(wrp)
        assert len(segments) == 2
        result = runner.invoke(cli, ["decode", str(wrp), "-o", str(tmp_path / f"d{depth}.y4m")])
        assert result.exit_code == 0, result.output
        coded[depth] = (header, segments, _frames(tmp_path / f"d{depth}.y4m"))
    header10, (first, _), frames10 = coded[10]
    _, (_, second), frames8 = coded[8]
    mixed: list[Segment] = [
        dataclasses.replace(first, bottleneck_bitdepth=10),
        dataclasses.replace(second, bottleneck_bitdepth=8),
    ]
    assert _version(mixed, [10, 8]) == 4
    out = tmp_path / "mixed.wrp"
    write_wrp(out, dataclasses.replace(header10, version=4), mixed)
    result = runner.invoke(cli, ["decode", str(out), "-o", str(tmp_path / "mixed.y4m")])
    assert result.exit_code == 0, result.output
    assert _frames(tmp_path / "mixed.y4m") == frames10[:2] + frames8[2:]
    assert frames10[2:] != frames8[2:]  # the two depths do code differently
    info = runner.invoke(cli, ["info", str(out)])
    assert "at 10 bits" in info.stdout and "at 8 bits" in info.stdout


def test_the_table_report_says_the_depth_and_why(
    runner: CliRunner, tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x264")
    args = ["--codec", "x264", "--preset", "fast", "--qp", "30", "--options", "0"]
    result = runner.invoke(cli, ["encode", str(clip8), "-o", str(tmp_path / "t.wrp"), *args])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("bottleneck bit depth"))
    assert " at 10, " in line and line.endswith(" at 8)")


def test_an_8_bit_bottleneck_takes_the_banks_prior_for_8_bits(
    runner: CliRunner, tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    """The shipped bank's x264 prior for 8-bit bottlenecks codes post-1/1 at 8 bits, and only
    there; the file names it and decodes to what the encoder measured."""
    require_backend("x264")
    bank, post = get_bank(), OPTIONS[1]
    expected = {8: bank.prior_for(post, "x264", 30, 8), 10: bank.prior_for(post, "x264", 30, 10)}
    assert expected[8] != 0 and expected[10] == 0
    for depth, prior in expected.items():
        wrp = tmp_path / f"p{depth}.wrp"
        args = ["--qp", "30", "--options", "1", "--bitdepth", str(depth)]
        report = _encode(runner, clip8, wrp, *args)
        header, (segment,) = read_wrp(wrp)
        assert segment.prior == prior and header.version == (3 if prior else 2)
        out = tmp_path / f"p{depth}.y4m"
        assert runner.invoke(cli, ["decode", str(wrp), "-o", str(out)]).exit_code == 0
        assert measure_files(str(clip8), str(out)).psnr_yuv == pytest.approx(
            report["psnr_yuv"], abs=1e-9
        )
