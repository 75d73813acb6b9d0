"""The AV1 backends (SVT-AV1, libaom): their fixed-QP arguments, QP mapping and λ as pure
functions, then real encodes and decodes with the bundled ffmpeg: round trips that match the
encoder's report frame for frame, the qindex every frame really carries, and rate against QP."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from wrapcodec.backends.av1 import (
    AC_QLOOKUP,
    DC_QLOOKUP,
    QUANTIZER_TO_QINDEX,
    av1_lambda,
    av1_qindex,
    av1_quantizer,
    hevc_step,
)

from wrapcodec import ffmpeg
from wrapcodec.backend import Backend, EncodeSettings, get_backend
from wrapcodec.cli import cli
from wrapcodec.errors import FFmpegError
from wrapcodec.metrics import measure_files
from wrapcodec.y4m import Frame, VideoInfo, Y4MWriter, iter_frames, read_info

AV1 = ("svtav1", "aom")
FAST = {"svtav1": "12", "aom": "8"}  # fastest presets (libaom: cpu-used 8)


def args_for(name: str, qp: int = 32, bitdepth: int = 10, threads: int | None = None) -> list[str]:
    settings = EncodeSettings(qp=qp, preset=FAST[name], bitdepth=bitdepth, threads=threads)
    return ffmpeg.encode_args("ffmpeg", get_backend(name), settings, 64, 64, "25", "o.obu")


def value_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def params(args: list[str], flag: str) -> dict[str, str]:
    """``-svtav1-params`` / ``-aom-params`` as a dict."""
    return dict(item.split("=", 1) for item in value_after(args, flag).split(":"))


# --- pure: registration, arguments, QP mapping, λ -------------------------------------------


def test_registered_with_their_codec_ids() -> None:
    assert {name: get_backend(name).codec_id for name in AV1} == {"svtav1": 4, "aom": 5}
    for name in AV1:
        b = get_backend(name)
        assert (b.stream_format, b.extension, b.bitdepths) == ("obu", ".obu", (8, 10))
        assert b.decoders == ("libdav1d", "libaom-av1")
        assert "fixed QP" in b.description and "rdmult" in b.lambda_source
        assert b.default_preset in b.presets and b.qp_range == (0, 51)
    assert get_backend("svtav1").coded_size(80, 48) == (80, 64)
    assert get_backend("aom").coded_size(15, 9) == (16, 16)


def test_svtav1_args_are_cqp_without_adaptive_quantisation() -> None:
    args = args_for("svtav1", qp=32)
    assert "-crf" not in args and "-qp" not in args
    p = params(args, "-svtav1-params")
    assert p == {
        "rc": "0",
        "qp": "34",
        "aq-mode": "0",
        "enable-variance-boost": "0",
        "enable-tf": "0",
        "tune": "1",
    }
    assert value_after(args, "-err_detect") == "explode"  # an unknown key fails the encode
    assert value_after(args, "-preset") == "12"
    assert value_after(args, "-vcodec") == "libsvtav1"
    assert args[args.index("-f", args.index("-i")) + 1] == "obu"
    assert params(args_for("svtav1", threads=8), "-svtav1-params")["lp"] == "6"
    assert params(args_for("svtav1", threads=2), "-svtav1-params")["lp"] == "2"


def test_aom_args_pin_every_frame_to_one_qindex() -> None:
    args = args_for("aom", qp=37)
    q = str(av1_quantizer(37))
    assert q == "42"
    assert [value_after(args, f) for f in ("-crf", "-b:v", "-qmin", "-qmax")] == [q, "0", q, q]
    assert params(args, "-aom-params") == {
        "aq-mode": "0",
        "deltaq-mode": "0",
        "enable-tpl-model": "0",
        "enable-keyframe-filtering": "0",
        "arnr-strength": "0",
    }
    assert value_after(args, "-tune") == "psnr"
    assert value_after(args, "-cpu-used") == "8"
    assert "-threads" not in args and value_after(args_for("aom", threads=3), "-threads") == "3"
    assert args[args.index("-f", args.index("-i")) + 1] == "obu"


@pytest.mark.parametrize("name", AV1)
def test_same_quantiser_at_8_and_10_bits(name: str) -> None:
    eight, ten = args_for(name, bitdepth=8), args_for(name, bitdepth=10)
    assert value_after(eight, "-pix_fmt") == "yuv420p"
    assert value_after(ten, "-pix_fmt") == "yuv420p10le"
    assert eight[eight.index("-vcodec") :] == ten[ten.index("-vcodec") :]


def test_quantiser_tables() -> None:
    assert len(DC_QLOOKUP) == len(AC_QLOOKUP) == len(QUANTIZER_TO_QINDEX) + 192 == 256
    assert (DC_QLOOKUP[0], DC_QLOOKUP[255], AC_QLOOKUP[0], AC_QLOOKUP[255]) == (4, 1336, 4, 1828)
    assert list(DC_QLOOKUP) == sorted(DC_QLOOKUP) and list(AC_QLOOKUP) == sorted(AC_QLOOKUP)
    assert QUANTIZER_TO_QINDEX[:3] == (0, 4, 8) and QUANTIZER_TO_QINDEX[-3:] == (244, 249, 255)


def test_qp_mapping() -> None:
    """QP → q: nearest AV1 AC step / 8 to HEVC's 2^((QP − 4)/6), never lossless."""
    assert [av1_quantizer(qp) for qp in (22, 27, 32, 37, 42, 47)] == [14, 25, 34, 42, 50, 58]
    assert av1_quantizer(0) == av1_quantizer(8) == 1 and av1_quantizer(51) == 63
    qs = [av1_quantizer(qp) for qp in range(52)]
    assert qs == sorted(qs)
    assert len(set(qs[15:])) == len(qs[15:])  # from QP 15 up, each QP its own q
    for qp in range(15, 52):  # the step it codes is within half a QP of HEVC's
        equivalent = 4 + 6 * math.log2(AC_QLOOKUP[av1_qindex(qp)] / 8)
        assert abs(equivalent - qp) <= 0.5, qp
    assert av1_qindex(32) == 136 and hevc_step(4) == 1.0


def test_lambda_is_libaom_rdmult() -> None:
    """λ = q_dc²·(3.2 + 0.0015·q_dc)/2048 at the mapped qindex (libaom rd.c)."""
    q_dc = DC_QLOOKUP[136]
    assert q_dc == 156
    for name in AV1:
        b = get_backend(name)
        assert b.qp_to_lambda(32) == pytest.approx(q_dc**2 * (3.2 + 0.0015 * q_dc) / 2048)
        assert b.qp_to_lambda(32) == pytest.approx(40.8, abs=0.05)
        assert b.lambda_factor * 2 ** (20 / 3) == pytest.approx(b.qp_to_lambda(32))
    lams = [av1_lambda(qp) for qp in range(15, 52)]
    assert all(a < b for a, b in itertools.pairwise(lams))
    hm = get_backend("x265")
    ratios = [av1_lambda(qp) / hm.qp_to_lambda(qp) for qp in range(22, 48)]
    assert min(ratios) > 0.4 and max(ratios) < 0.9  # DC step grows slower than AC


def test_decoder_falls_back_to_libaom(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ffmpeg.capabilities()
    b = get_backend("aom")
    no_dav1d = replace(real, decoders=real.decoders - {"libdav1d"})
    monkeypatch.setattr(ffmpeg, "capabilities", lambda: no_dav1d)
    if "libaom-av1" in real.decoders:
        assert ffmpeg.missing(b, decode_only=True) == []
        assert ffmpeg.with_available_decoder(b).decoder == "libaom-av1"
    neither = replace(real, decoders=real.decoders - {"libdav1d", "libaom-av1"})
    monkeypatch.setattr(ffmpeg, "capabilities", lambda: neither)
    assert ffmpeg.missing(b, decode_only=True) == ["decoder libdav1d or libaom-av1"]
    assert ffmpeg.with_available_decoder(b) is b
    # backends without fallbacks are untouched
    assert ffmpeg.with_available_decoder(get_backend("x265")) is get_backend("x265")


# --- real encodes ------------------------------------------------------------------------------


EXHAUSTIVE = ("--effort", "exhaustive")


def encode(runner: CliRunner, src: Path, out: Path, *args: str) -> dict:
    result = runner.invoke(
        cli,
        ["encode", str(src), "-o", str(out), "--json", "--adapt-steps", "0", *EXHAUSTIVE, *args],
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    return json.loads(result.stdout)


def decode(runner: CliRunner, wrp: Path, out: Path) -> None:
    result = runner.invoke(cli, ["decode", str(wrp), "-o", str(out)])
    assert result.exit_code == 0, result.output + str(result.exception)


def test_backends_json_lists_both_as_usable(
    runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    for name in AV1:
        require_backend(name)
    rows = {
        r["name"]: r
        for r in json.loads(runner.invoke(cli, ["backends", "--json"]).stdout)["backends"]
    }
    for name in AV1:
        assert rows[name]["usable"] is True and rows[name]["missing"] == []
        assert rows[name]["codec_id"] == {"svtav1": 4, "aom": 5}[name]
        assert "fixed QP" in rows[name]["description"]
        assert rows[name]["lambda"] == get_backend(name).lambda_source


@pytest.mark.parametrize("name", AV1)
@pytest.mark.parametrize("clip", ["clip8", "clip10_odd"])
def test_round_trip_matches_encoder_report(
    runner: CliRunner,
    tmp_path: Path,
    name: str,
    clip: str,
    request: pytest.FixtureRequest,
    require_backend: Callable[[str], None],
) -> None:
    require_backend(name)
    src: Path = request.getfixturevalue(clip)
    wrp, out = tmp_path / "o.wrp", tmp_path / "o.y4m"
    args = ("--codec", name, "--qp", "32", "--options", "0,9,2", "--preset", FAST[name])
    report = encode(runner, src, wrp, *args)
    decode(runner, wrp, out)

    assert report["bits"] == 8 * wrp.stat().st_size
    acc = measure_files(str(src), str(out))  # refuses a different frame count
    assert acc.frames == sum(1 for _ in iter_frames(src))
    assert acc.psnr_yuv == pytest.approx(report["psnr_yuv"], abs=0.01)
    coded = [c for c in report["candidates"] if c["skipped"] is None]
    assert sorted(c["code"] for c in coded) == [0, 2, 9]
    assert next(c for c in coded if c["chosen"])["cost"] == min(c["cost"] for c in coded)
    assert 25.0 < report["psnr_yuv"] < 50.0


def test_libaom_decoder_gives_the_same_frames(
    runner: CliRunner,
    tmp_path: Path,
    clip8: Path,
    monkeypatch: pytest.MonkeyPatch,
    require_backend: Callable[[str], None],
) -> None:
    """Without libdav1d the .wrp decodes with libaom's decoder, to the same frames (AV1
    decoding is exact)."""
    require_backend("svtav1")
    real = ffmpeg.capabilities()
    if "libaom-av1" not in real.decoders:
        pytest.skip("ffmpeg lacks the libaom-av1 decoder")
    wrp = tmp_path / "o.wrp"
    encode(
        runner, clip8, wrp, "--codec", "svtav1", "--qp", "37", "--options", "0", "--preset", "12"
    )
    used: list[str] = []
    real_args = ffmpeg.decode_args

    def spy(
        exe: str, backend: Backend, in_path: str, bitdepth: int, demuxer: str | None = None
    ) -> list[str]:
        used.append(backend.decoder)
        return real_args(exe, backend, in_path, bitdepth, demuxer)

    monkeypatch.setattr(ffmpeg, "decode_args", spy)
    decode(runner, wrp, tmp_path / "dav1d.y4m")
    monkeypatch.setattr(
        ffmpeg, "capabilities", lambda: replace(real, decoders=real.decoders - {"libdav1d"})
    )
    decode(runner, wrp, tmp_path / "aom.y4m")
    assert used == ["libdav1d", "libaom-av1"]
    assert (tmp_path / "aom.y4m").read_bytes() == (tmp_path / "dav1d.y4m").read_bytes()


# --- what the streams carry --------------------------------------------------------------------


def noise_clip(dest: Path, frames: int, width: int = 192, height: int = 108) -> Path:
    """Uniform noise: content as unlike Park Joy as it gets."""
    rng = np.random.default_rng(0)
    info = VideoInfo(width=width, height=height, bitdepth=8, fps_num=25, fps_den=1)
    with Y4MWriter(dest, info) as writer:
        for _ in range(frames):
            y = rng.integers(0, 256, (height, width))
            u, v = (rng.integers(0, 256, (height // 2, width // 2)) for _ in range(2))
            writer.write(Frame(*(p.astype(np.uint16) for p in (y, u, v))))
    return dest


def frame_headers(stream: Path) -> list[dict[str, int]]:
    """Per AV1 frame header: ``show_existing_frame``, ``base_q_idx``, ``delta_q_present``,
    ``segmentation_enabled`` and ``using_qmatrix``, from ffmpeg's trace_headers filter."""
    cmd = [ffmpeg.ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(stream), "-c", "copy"]
    cmd += ["-bsf:v", "trace_headers", "-f", "null", "-"]
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    keys = ("base_q_idx", "delta_q_present", "segmentation_enabled", "using_qmatrix")
    headers: list[dict[str, int]] = []
    for key, value in re.findall(r"\]\s+\d+\s+(\w+)\s+\S+\s+=\s+(-?\d+)\s*$", log, re.M):
        if key == "show_existing_frame":
            headers.append({key: int(value)})
        elif headers and key in keys:
            headers[-1].setdefault(key, int(value))
    return headers


def encode_stream(name: str, src: Path, out: Path, qp: int) -> tuple[Path, int]:
    """Code ``src`` with the backend's own arguments; the stream and its frame count."""
    info, b = read_info(src), get_backend(name)
    settings = EncodeSettings(qp=qp, preset=FAST[name], bitdepth=info.bitdepth)
    fps = f"{info.fps_num}/{info.fps_den}"
    count = ffmpeg.encode(b, settings, iter_frames(src), info.width, info.height, fps, out)
    return out, count


def coded_qindexes(headers: list[dict[str, int]]) -> list[int]:
    coded = [h for h in headers if not h["show_existing_frame"]]
    assert all(h["delta_q_present"] == 0 for h in coded)  # no superblock delta-q
    assert all(h["segmentation_enabled"] == 0 for h in coded)  # no segment-based AQ
    assert all(h["using_qmatrix"] == 0 for h in coded)
    return [h["base_q_idx"] for h in coded]


@pytest.fixture()
def two_clips(
    parkjoy: Path, tmp_path: Path, cut_clip: Callable[..., Path]
) -> Iterator[tuple[Path, Path]]:
    """Ten frames of Park Joy and ten of noise, the same size."""
    yield (
        cut_clip(parkjoy, tmp_path / "pj.y4m", 192, 108, 10, 8),
        noise_clip(tmp_path / "noise.y4m", 10),
    )


def test_aom_codes_every_frame_at_the_qindex_of_its_qp(
    tmp_path: Path, two_clips: tuple[Path, Path], require_backend: Callable[[str], None]
) -> None:
    require_backend("aom")
    for src in two_clips:
        stream, count = encode_stream("aom", src, tmp_path / f"{src.stem}.obu", 32)
        headers = frame_headers(stream)
        assert set(coded_qindexes(headers)) == {136}  # q 34, every frame, any content
        decoded = list(ffmpeg.decode(get_backend("aom"), stream, 192, 108, 8, count))
        assert len(decoded) == count == 10


def test_svtav1_qindexes_depend_on_the_layer_not_the_content(
    tmp_path: Path, two_clips: tuple[Path, Path], require_backend: Callable[[str], None]
) -> None:
    require_backend("svtav1")
    sequences = []
    for src in two_clips:
        stream, count = encode_stream("svtav1", src, tmp_path / f"{src.stem}.obu", 32)
        headers = frame_headers(stream)
        sequences.append(coded_qindexes(headers))
        assert max(sequences[-1]) == 136  # the top layer codes q 34 itself
        assert sum(1 for h in headers if h["show_existing_frame"]) > 0  # hidden frames shown
        decoded = list(ffmpeg.decode(get_backend("svtav1"), stream, 192, 108, 8, count))
        assert len(decoded) == count == 10
    assert sequences[0] == sequences[1]


@pytest.mark.parametrize("name", AV1)
def test_higher_qp_fewer_bits(
    runner: CliRunner,
    tmp_path: Path,
    clip8: Path,
    name: str,
    require_backend: Callable[[str], None],
) -> None:
    require_backend(name)
    bits = [
        encode(
            runner, clip8, tmp_path / f"{qp}.wrp", "--codec", name, "--qp", str(qp),
            "--options", "0", "--preset", FAST[name],
        )["bits"]
        for qp in (22, 32, 42)
    ]  # fmt: skip
    assert bits[0] > bits[1] > bits[2], bits


def test_unknown_svtav1_key_fails_the_encode(
    tmp_path: Path, clip8: Path, require_backend: Callable[[str], None]
) -> None:
    """``-err_detect explode``: an SVT-AV1 that does not know a key refuses to run, instead of
    coding with a rate control other than the one asked for."""
    require_backend("svtav1")
    b = get_backend("svtav1")

    def bogus(qp: int, preset: str, threads: int | None) -> list[str]:
        args = b.codec_args(qp, preset, threads)
        args[-1] += ":no-such-key=1"
        return args

    info = read_info(clip8)
    with pytest.raises(FFmpegError, match="libsvtav1 failed"):
        ffmpeg.encode(
            replace(b, codec_args=bogus), EncodeSettings(qp=32, preset="12", bitdepth=8),
            iter_frames(clip8), info.width, info.height, "25", tmp_path / "x.obu",
        )  # fmt: skip
