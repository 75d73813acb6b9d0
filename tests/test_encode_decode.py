"""End to end with the real codecs: encode with RDO, decode, and check the decoder's output
against the encoder's measurement and against ffmpeg's own PSNR filter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from wrapcodec import ffmpeg
from wrapcodec.cli import cli
from wrapcodec.metrics import measure_files


def encode(runner: CliRunner, src: Path, out: Path, *args: str) -> dict:
    """``wrapcodec encode --json``; the bank's models as they are unless ``args`` ask for
    content adaptation (tests/test_adapt.py covers it), every option coded unless ``args``
    give an effort (tests/test_effort.py covers the others)."""
    if "--adapt-steps" not in args:
        args = (*args, "--adapt-steps", "0")
    if "--effort" not in args:
        args = (*args, "--effort", "exhaustive")
    result = runner.invoke(cli, ["encode", str(src), "-o", str(out), "--json", *args])
    assert result.exit_code == 0, result.output + str(result.exception)
    return json.loads(result.stdout)


def decode(runner: CliRunner, wrp: Path, out: Path) -> None:
    result = runner.invoke(cli, ["decode", str(wrp), "-o", str(out)])
    assert result.exit_code == 0, result.output


def ffmpeg_psnr(ref: Path, rec: Path) -> tuple[float, float, float]:
    """Per-frame PSNR from ffmpeg's psnr filter, averaged over frames (HM convention)."""
    stats = rec.with_suffix(".psnr.log")
    cmd = [
        ffmpeg.ffmpeg_exe(),
        "-hide_banner",
        "-i",
        str(rec),
        "-i",
        str(ref),
        "-lavfi",
        f"psnr=stats_file={stats}",
        "-f",
        "null",
        "-",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [dict(re.findall(r"(\w+):(\S+)", line)) for line in stats.read_text().splitlines()]
    return tuple(  # type: ignore[return-value]
        sum(min(100.0, float(r[f"psnr_{p}"])) for r in rows) / len(rows) for p in "yuv"
    )


@pytest.mark.parametrize(
    ("codec", "qp", "clip"),
    [
        ("x264", "30", "clip8"),
        ("x265", "32", "clip8"),
        ("vvenc", "32", "clip8"),
        ("x264", "34", "clip10_odd"),
        ("x265", "27", "clip10_odd"),
        ("vvenc", "37", "clip10_odd"),
    ],
)
def test_round_trip_matches_encoder_report(
    runner: CliRunner,
    tmp_path: Path,
    codec: str,
    qp: str,
    clip: str,
    request: pytest.FixtureRequest,
    require_backend: Callable[[str], None],
) -> None:
    require_backend(codec)
    src: Path = request.getfixturevalue(clip)
    wrp, out = tmp_path / "o.wrp", tmp_path / "o.y4m"
    extra = ["--preset", "faster"] if codec == "vvenc" else ["--preset", "fast"]
    report = encode(runner, src, wrp, "--codec", codec, "--qp", qp, *extra)
    decode(runner, wrp, out)

    assert report["bits"] == 8 * wrp.stat().st_size  # header bits count
    acc = measure_files(str(src), str(out))
    assert acc.psnr_yuv == pytest.approx(report["psnr_yuv"], abs=0.01)
    y, u, v = ffmpeg_psnr(src, out)
    assert y == pytest.approx(report["psnr_y"], abs=0.01)
    assert (6 * y + u + v) / 8 == pytest.approx(report["psnr_yuv"], abs=0.01)

    coded = [c for c in report["candidates"] if c["skipped"] is None]
    assert len(coded) >= 5
    direct = next(c for c in coded if c["code"] == 0)
    chosen = next(c for c in coded if c["chosen"])
    assert chosen["code"] == report["option"]
    assert chosen["cost"] <= direct["cost"]  # RDO is never worse in J than direct
    assert chosen["cost"] == min(c["cost"] for c in coded)
    assert 20.0 < report["psnr_yuv"] < 60.0


def test_downsampling_wins_at_high_qp_direct_at_low(
    runner: CliRunner, tmp_path: Path, clip8: Path
) -> None:
    """The RDO decision follows λ: at QP 51 a bottleneck option beats direct on Park Joy,
    at QP 12 direct wins."""
    high = encode(
        runner, clip8, tmp_path / "h.wrp", "--codec", "x265", "--qp", "51", "--preset", "ultrafast"
    )
    low = encode(
        runner, clip8, tmp_path / "l.wrp", "--codec", "x265", "--qp", "12", "--preset", "ultrafast"
    )
    assert high["option"] != 0
    assert low["option"] == 0


def test_bitrate_budget(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    report = encode(
        runner,
        clip8,
        tmp_path / "b.wrp",
        "--codec",
        "x264",
        "--bitrate",
        "600",
        "--preset",
        "ultrafast",
        "--options",
        "0,9",
    )
    coded = [c for c in report["candidates"] if c["skipped"] is None]
    assert all(c["kbps"] <= 600 for c in coded)
    assert report["kbps"] <= 600
    assert report["psnr_yuv"] == max(c["psnr_yuv"] for c in coded)
    assert report["qp"] is None


def test_segments_switch_and_decode(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    wrp, out = tmp_path / "s.wrp", tmp_path / "s.y4m"
    report = encode(
        runner,
        clip8,
        wrp,
        "--codec",
        "x264",
        "--qp",
        "40",
        "--preset",
        "ultrafast",
        "--segment-frames",
        "3",
        "--options",
        "0,10",
    )
    assert [s["frame_count"] for s in report["segments"]] == [3, 1]
    decode(runner, wrp, out)
    acc = measure_files(str(clip8), str(out))
    assert acc.frames == 4
    assert acc.psnr_yuv == pytest.approx(report["psnr_yuv"], abs=0.01)
    info = runner.invoke(cli, ["info", str(wrp), "--json"])
    meta = json.loads(info.stdout)
    assert [s["first_frame"] for s in meta["segments"]] == [0, 3]
    assert meta["bytes"] == wrp.stat().st_size


def test_info_text_and_json(runner: CliRunner, tmp_path: Path, clip10_odd: Path) -> None:
    wrp = tmp_path / "i.wrp"
    encode(
        runner,
        clip10_odd,
        wrp,
        "--codec",
        "x265",
        "--qp",
        "40",
        "--preset",
        "ultrafast",
        "--options",
        "lanczos-1/2",
    )
    meta = json.loads(runner.invoke(cli, ["info", str(wrp), "--json"]).stdout)
    assert (meta["width"], meta["height"], meta["bitdepth"], meta["frames"]) == (161, 97, 10, 3)
    assert meta["codec"] == "x265" and meta["segments"][0]["option"] == 9
    assert meta["segments"][0]["bottleneck"] == "80x48"
    text = runner.invoke(cli, ["info", str(wrp)]).stdout
    assert "lanczos-1/2" in text and "161" in text


def test_stdin_and_stdout(tmp_path: Path, clip8: Path) -> None:
    wrp = tmp_path / "p.wrp"
    with clip8.open("rb") as src:
        enc = subprocess.run(
            [
                sys.executable,
                "-m",
                "wrapcodec",
                "encode",
                "-",
                "-o",
                str(wrp),
                "--codec",
                "x264",
                "--qp",
                "35",
                "--preset",
                "ultrafast",
                "--options",
                "0",
                "--json",
            ],
            stdin=src,
            capture_output=True,
            check=False,
            cwd=tmp_path,  # not the checkout: import the installed package
        )
    assert enc.returncode == 0, enc.stderr
    dec = subprocess.run(
        [sys.executable, "-m", "wrapcodec", "decode", str(wrp), "-o", "-"],
        capture_output=True,
        cwd=tmp_path,
    )
    assert dec.returncode == 0, dec.stderr
    (tmp_path / "p.y4m").write_bytes(dec.stdout)
    acc = measure_files(str(clip8), str(tmp_path / "p.y4m"))
    assert acc.psnr_yuv == pytest.approx(json.loads(enc.stdout)["psnr_yuv"], abs=0.01)


def test_tiny_frames_pad_for_the_codec(
    runner: CliRunner, tmp_path: Path, parkjoy: Path, cut_clip: Callable[..., Path]
) -> None:
    tiny = cut_clip(parkjoy, tmp_path / "tiny.y4m", 10, 6, 2, 8)
    report = encode(
        runner, tiny, tmp_path / "t.wrp", "--codec", "vvenc", "--qp", "30", "--preset", "faster"
    )
    assert report["option"] == 0
    assert all(c["skipped"] for c in report["candidates"] if c["code"] != 0)
    decode(runner, tmp_path / "t.wrp", tmp_path / "t.y4m")
    acc = measure_files(str(tiny), str(tmp_path / "t.y4m"))
    assert acc.psnr_yuv == pytest.approx(report["psnr_yuv"], abs=0.01)


@pytest.mark.slow  # the demo codes the bundled clip with every option
def test_demo(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["demo", "--codec", "x264", "--qp", "36", "--keep", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "chosen: option" in result.stdout
    assert (tmp_path / "demo.wrp").exists() and (tmp_path / "demo.y4m").exists()


def test_colour_range_survives_encode_and_decode(
    runner: CliRunner, tmp_path: Path, clip8: Path
) -> None:
    """A source's XCOLORRANGE goes into the .wrp header and back into the decoded y4m."""
    from dataclasses import replace

    from wrapcodec.y4m import Y4MWriter, iter_frames, read_info

    src = tmp_path / "limited.y4m"
    with Y4MWriter(src, replace(read_info(clip8), color_range="LIMITED")) as writer:
        for frame in iter_frames(clip8):
            writer.write(frame)
    wrp, out = tmp_path / "l.wrp", tmp_path / "l.y4m"
    encode(runner, src, wrp, "--codec", "x264", "--qp", "30", "--options", "0,9")
    info = json.loads(runner.invoke(cli, ["info", str(wrp), "--json"]).stdout)
    assert info["color_range"] == "LIMITED"
    decode(runner, wrp, out)
    assert b"XCOLORRANGE=LIMITED" in out.read_bytes().split(b"\n", 1)[0]
    assert read_info(out).color_range == "LIMITED"
