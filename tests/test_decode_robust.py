"""The decoder on damaged and forged .wrp files: it always finishes,
refuses what does not match its header with one line naming the segment, and needs only
the codec's decoder.

Every file here is a real encode of a real clip whose payload or header was changed and
whose CRC was then recomputed, so the container accepts it and only the decoder can tell;
every decode runs the real ffmpeg.
"""

from __future__ import annotations

import functools
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import GeneratorType
from typing import Any

import pytest
from click.testing import CliRunner

from wrapcodec import backend as backend_registry
from wrapcodec import ffmpeg
from wrapcodec.backend import get_backend
from wrapcodec.cli import cli
from wrapcodec.container import pack, read_wrp, unpack
from wrapcodec.decoder import bottleneck, decode_file
from wrapcodec.errors import BackendError, ContainerError, FFmpegError, WrapcodecError
from wrapcodec.y4m import count_frames, iter_frames, read_info

DECODE_TIMEOUT_S = 60


def encode(src: Path, out: Path, codec: str, *args: str) -> Path:
    """``wrapcodec encode`` of ``src`` at QP 32, the fastest preset, no content adaptation."""
    preset = "faster" if codec == "vvenc" else "ultrafast"
    argv = ["encode", str(src), "-o", str(out), "--codec", codec, "--qp", "32"]
    argv += ["--preset", preset, "--adapt-steps", "0", "--options", "0", "--json", *args]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output + str(result.exception)
    return out


def forge(src: Path, dest: Path, payload: bytes | None = None, **fields: Any) -> Path:
    """``src`` with header ``fields`` and segment 0's ``payload`` replaced, CRC recomputed."""
    header, segments = unpack(src.read_bytes())
    if payload is not None:
        segments[0] = replace(segments[0], payload=payload)
    dest.write_bytes(pack(replace(header, **fields), segments))
    return dest


def corrupt(payload: bytes, rng: random.Random, count: int) -> bytes:
    """``payload`` with ``count`` bytes after its first 16 (the stream headers) set at random."""
    data = bytearray(payload)
    for _ in range(count):
        data[rng.randrange(min(16, len(data) - 1), len(data))] = rng.randrange(256)
    return bytes(data)


def cli_decode(wrp: Path, out: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """``python -m wrapcodec decode`` in a subprocess; fails the test if it outlives the
    timeout (the child is killed by ``subprocess.run``)."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "wrapcodec", "decode", str(wrp), "-o", str(out)],
            # not the checkout's root, whose wrapcodec/ folder would shadow the installed one
            cwd=tempfile.gettempdir(),
            capture_output=True,
            text=True,
            timeout=DECODE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"decoding {wrp.name} did not finish within {DECODE_TIMEOUT_S} s")
    return proc, time.monotonic() - t0


def assert_refused(call: Callable[[], object], kind: type[WrapcodecError], *words: str) -> str:
    """``call`` raises ``kind`` with a one-line message holding every one of ``words``."""
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture(scope="module")
def files(clip8: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Direct encodes of the 4-frame 192x108 clip: x264 and x265 at 10 bits, x264 at 8 bits,
    and an x264 8-bit LANCZOS_1_2 (96x54 bottleneck)."""
    for codec in ("x264", "x265"):
        lacks = ffmpeg.missing(get_backend(codec))
        if lacks:
            pytest.skip(f"ffmpeg lacks {', '.join(lacks)} for {codec}")
    tmp = tmp_path_factory.mktemp("robust")
    return {
        "x264": encode(clip8, tmp / "x264.wrp", "x264", "--bitdepth", "10"),
        "x265": encode(clip8, tmp / "x265.wrp", "x265", "--bitdepth", "10"),
        "x264_8": encode(clip8, tmp / "x264_8.wrp", "x264", "--bitdepth", "8"),
        "x264_half": encode(
            clip8, tmp / "x264_half.wrp", "x264", "--bitdepth", "8", "--options", "9"
        ),
    }


def test_bottleneck_is_what_a_direct_file_decodes_to(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """Of a direct file coded at the source's depth, the segment's bottleneck pictures are the
    decoder's output, and its stream file lasts for the block only; of a downsampled one, they
    have the bottleneck's size."""
    out = tmp_path / "direct.y4m"
    decode_file(str(files["x264_8"]), str(out))
    header, segments = read_wrp(files["x264_8"])
    with bottleneck(str(files["x264_8"]), header, segments[0]) as (stream, frames):
        assert stream.read_bytes() == segments[0].payload
        pictures = list(frames)
    assert not stream.exists()
    expected = list(iter_frames(out))
    assert len(pictures) == len(expected) == segments[0].frame_count
    for a, b in zip(pictures, expected, strict=True):
        assert (a.y == b.y).all() and (a.u == b.u).all() and (a.v == b.v).all()
    header, segments = read_wrp(files["x264_half"])
    with bottleneck(str(files["x264_half"]), header, segments[0]) as (_, frames):
        assert {f.y.shape for f in frames} == {(54, 96)}


# --- item 1: a decode always finishes --------------------------------------------------------


def test_corrupt_payloads_finish_with_one_line(files: dict[str, Path], tmp_path: Path) -> None:
    """Damaged 10-bit H.264 payloads (CRC fixed): several used to hang the decoder for ever,
    ffmpeg blocked writing to a pipe nobody read. Each now ends, with exit 0 and the output
    or exit 1, one line on stderr and no output file."""
    payload = read_wrp(files["x264"])[1][0].payload
    outcomes = []
    for seed in range(6):
        wrp = forge(
            files["x264"], tmp_path / f"m{seed}.wrp", corrupt(payload, random.Random(seed), 20)
        )
        out = tmp_path / f"m{seed}.y4m"
        proc, seconds = cli_decode(wrp, out)
        assert proc.returncode in (0, 1), proc.stderr
        assert "Traceback" not in proc.stderr
        if proc.returncode == 0:
            assert count_frames(out) == 4
        else:
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert proc.stderr.startswith(f"Error: {wrp}: segment 0 "), proc.stderr
            assert not out.exists()
        outcomes.append((proc.returncode, round(seconds, 1)))
    decoded = {f"m{seed}.y4m" for seed, (rc, _) in enumerate(outcomes) if rc == 0}
    wrps = {f"m{seed}.wrp" for seed in range(len(outcomes))}
    assert {p.name for p in tmp_path.iterdir()} == wrps | decoded  # no temporary file left
    assert any(rc == 1 for rc, _ in outcomes), outcomes  # the damage is seen, not concealed


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe (POSIX)")
def test_stalled_ffmpeg_is_killed(tmp_path: Path) -> None:
    """ffmpeg reading a named pipe nobody writes waits for ever; the decode gives up after
    its stall timeout, kills it and says so in one line."""
    fifo = tmp_path / "stream.265"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    frames = ffmpeg.decode(get_backend("x265"), fifo, 192, 108, 10, 4, stall_timeout=1.0)
    assert_refused(lambda: list(frames), FFmpegError, "hevc stalled", "after 0 frames")
    assert time.monotonic() - t0 < 15


def _children_reading(path: Path) -> list[int]:
    """Our child processes whose command line names ``path`` (Linux; [] elsewhere)."""
    pids = []
    for children in Path("/proc/self/task").glob("*/children"):
        pids += [int(pid) for pid in children.read_text().split()]
    return [
        pid
        for pid in pids
        if Path(f"/proc/{pid}/cmdline").exists()
        and str(path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def test_stopping_early_stops_ffmpeg(files: dict[str, Path], tmp_path: Path) -> None:
    """A caller that stops reading (its own error, say) leaves no ffmpeg behind blocked on
    the pipe: closing the iterator kills and reaps it at once."""
    stream = tmp_path / "s.264"
    stream.write_bytes(read_wrp(files["x264"])[1][0].payload)
    frames = ffmpeg.decode(get_backend("x264"), stream, 192, 108, 10, 4)
    assert isinstance(frames, GeneratorType)
    next(frames)
    if Path("/proc/self/task").is_dir():
        assert _children_reading(stream)
    t0 = time.monotonic()
    frames.close()
    assert time.monotonic() - t0 < 5
    assert _children_reading(stream) == []


# --- item 8: header fields checked against the stream ----------------------------------------


def test_bottleneck_bitdepth_must_match_the_stream(files: dict[str, Path], tmp_path: Path) -> None:
    """A 10-bit HEVC stream whose header says ``bottleneck_bitdepth`` 8 used to be converted
    to 8 bits silently (exit 0, frames the encoder never measured); now it is refused."""
    wrp = forge(files["x265"], tmp_path / "bb8.wrp", bottleneck_bitdepth=8)
    out = tmp_path / "o.y4m"
    assert_refused(
        lambda: decode_file(str(wrp), str(out)),
        FFmpegError,
        "segment 0 (frames 0-3",
        "at 8 bits",
        "hevc decoded 10-bit frames, expected 8-bit",
    )
    assert not out.exists()


def test_8_bit_stream_under_a_10_bit_header_is_refused(
    files: dict[str, Path], tmp_path: Path
) -> None:
    wrp = forge(files["x264_8"], tmp_path / "bb10.wrp", bottleneck_bitdepth=10)
    assert_refused(
        lambda: decode_file(str(wrp), str(tmp_path / "o.y4m")),
        FFmpegError,
        "h264 decoded 8-bit frames, expected 10-bit",
    )


def _two_streams(first: Path, second: Path, dest: Path) -> Path:
    """``first``'s file with its payload followed by ``second``'s: 8 frames, declared so."""
    header, segments = read_wrp(first)
    both = segments[0].payload + read_wrp(second)[1][0].payload
    segment = replace(segments[0], frame_count=8, payload=both)
    dest.write_bytes(pack(replace(header, frame_count=8), [segment]))
    return dest


def test_bit_depth_change_in_mid_stream_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    """An 8-bit stream followed by a 10-bit one, in one 8-bit segment: ffmpeg converted the
    second half to 8 bits (exit 0); now the change is refused."""
    wrp = _two_streams(files["x264_8"], files["x264"], tmp_path / "mixed.wrp")
    assert_refused(
        lambda: decode_file(str(wrp), str(tmp_path / "o.y4m")),
        FFmpegError,
        "segment 0 (frames 0-7",
        "changes format in mid-stream (to yuv420p10le 192x108)",
    )


def test_size_change_in_mid_stream_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    """A 192x108 stream followed by a 96x54 one: ffmpeg scaled the second half up to the
    first size (exit 0); now the change is refused."""
    wrp = _two_streams(files["x264_8"], files["x264_half"], tmp_path / "mixed.wrp")
    assert_refused(
        lambda: decode_file(str(wrp), str(tmp_path / "o.y4m")),
        FFmpegError,
        "changes format in mid-stream (to yuv420p 96x54)",
    )


def test_coded_size_and_frame_count_must_match(files: dict[str, Path], tmp_path: Path) -> None:
    """The bottleneck size and the segment's frame count are checked against the stream."""
    narrow = forge(files["x264_8"], tmp_path / "narrow.wrp", width=160)
    header, segments = read_wrp(narrow)
    narrow.write_bytes(pack(header, [replace(segments[0], bottleneck_width=160)]))
    assert_refused(
        lambda: decode_file(str(narrow), str(tmp_path / "o.y4m")),
        FFmpegError,
        "h264 decoded 192x108 frames, expected 160x108",
    )
    header, segments = read_wrp(files["x264_8"])
    for count, words in ((3, "more than 3 frames"), (5, "decoded 4 frames, expected 5")):
        wrp = tmp_path / f"n{count}.wrp"
        wrp.write_bytes(
            pack(replace(header, frame_count=count), [replace(segments[0], frame_count=count)])
        )
        call = functools.partial(decode_file, str(wrp), str(tmp_path / "o.y4m"))
        assert_refused(call, FFmpegError, words)


def test_source_bitdepth_is_not_checkable(files: dict[str, Path], tmp_path: Path) -> None:
    """The source bit depth (header byte 9) only scales the output; any value fits any
    stream, so a forged 8 -> 10 decodes (to 10-bit frames) and cannot be refused."""
    wrp = forge(files["x265"], tmp_path / "src10.wrp", bitdepth=10)
    decode_file(str(wrp), str(tmp_path / "o.y4m"))
    assert read_info(tmp_path / "o.y4m").bitdepth == 10


# --- item 10: model bank id, codec id, decoder only ------------------------------------------


def test_model_bank_id_of_a_direct_file_must_be_zero(
    files: dict[str, Path], tmp_path: Path
) -> None:
    wrp = forge(files["x264"], tmp_path / "bank.wrp", model_bank_id=bytes(range(1, 9)))
    out = tmp_path / "o.y4m"
    assert_refused(
        lambda: decode_file(str(wrp), str(out)),
        ContainerError,
        "model_bank_id is 0102030405060708",
        "no segment uses a neural option",
    )
    assert not out.exists()


def test_codec_id_without_backend(files: dict[str, Path], tmp_path: Path) -> None:
    wrp = forge(files["x264"], tmp_path / "c200.wrp", codec_id=200)
    assert_refused(
        lambda: decode_file(str(wrp), str(tmp_path / "o.y4m")),
        BackendError,
        f"{wrp}: no backend installed for codec id 200",
        "1 x264",
    )


@pytest.mark.parametrize(("codec_id", "decoder"), [(2, "hevc"), (3, "vvc")])
def test_codec_id_of_another_codec(
    files: dict[str, Path], tmp_path: Path, codec_id: int, decoder: str
) -> None:
    """An H.264 payload under the id of HEVC or VVC: ffmpeg's bare "Error number
    -1145393733 occurred" used to be the message; now it says what is wrong."""
    wrp = forge(files["x264"], tmp_path / "c.wrp", codec_id=codec_id)
    message = assert_refused(
        lambda: decode_file(str(wrp), str(tmp_path / "o.y4m")),
        FFmpegError,
        f"segment 0 (frames 0-3, codec id {codec_id} = ",
        f"{decoder} decoded no frame",
        f"the payload is not a {decoder} stream",
    )
    assert "Error number" not in message


def test_decoding_needs_only_the_decoder(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend whose encoder this ffmpeg lacks (a decode-only third-party codec, here HEVC
    under id 250 with an encoder ``libx266`` that does not exist) still decodes its files."""
    decode_only = replace(get_backend("x265"), name="hevc-decode-only", codec_id=250)
    decode_only = replace(decode_only, encoder="libx266")
    backend_registry.backends()  # load the entry points first
    monkeypatch.setitem(backend_registry._registry, decode_only.name, decode_only)

    wrp = forge(files["x265"], tmp_path / "c250.wrp", codec_id=250)
    decode_file(str(wrp), str(tmp_path / "a.y4m"))
    decode_file(str(files["x265"]), str(tmp_path / "b.y4m"))
    assert (tmp_path / "a.y4m").read_bytes() == (tmp_path / "b.y4m").read_bytes()
    assert ffmpeg.missing(decode_only) == ["encoder libx266"]  # encoding still needs it
    assert ffmpeg.missing(decode_only, decode_only=True) == []

    no_decoder = replace(decode_only, decoder="hevc_nonexistent")
    monkeypatch.setitem(backend_registry._registry, decode_only.name, no_decoder)
    assert_refused(
        lambda: decode_file(str(wrp), str(tmp_path / "c.y4m")),
        BackendError,
        "cannot decode",
        "has no decoder hevc_nonexistent",
    )
