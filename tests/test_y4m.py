"""Tests for the streaming y4m reader and atomic writer in wrapcodec.y4m."""

from __future__ import annotations

import inspect
import io
import os
import re
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from wrapcodec.errors import InputError, Y4MError
from wrapcodec.y4m import (
    MAX_DIMENSION,
    ChromaTag,
    Frame,
    VideoInfo,
    Y4MReader,
    Y4MWriter,
    count_frames,
    format_header,
    iter_frames,
    read_info,
)

CLIP = Path(__file__).resolve().parent.parent / "wrapcodec" / "data" / "parkjoy_480x270_10f.y4m"


def random_frames(info: VideoInfo, count: int, seed: int = 0) -> list[Frame]:
    """Frames of uniformly random samples spanning the full range of ``info.bitdepth``."""
    rng = np.random.default_rng(seed)
    top = (1 << info.bitdepth) - 1

    def plane(h: int, w: int) -> np.ndarray:
        return rng.integers(0, top, size=(h, w), endpoint=True).astype(np.uint16)

    ch, cw = info.chroma_height, info.chroma_width
    return [
        Frame(plane(info.height, info.width), plane(ch, cw), plane(ch, cw)) for _ in range(count)
    ]


def write_clip(path: Path, info: VideoInfo, frames: list[Frame]) -> None:
    with Y4MWriter(path, info) as writer:
        for frame in frames:
            writer.write(frame)


def assert_frames_equal(got: list[Frame], want: list[Frame]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        for plane_a, plane_b in zip(a, b, strict=True):
            assert plane_a.dtype == np.uint16
            np.testing.assert_array_equal(plane_a, plane_b)


def header_len(data: bytes) -> int:
    return data.index(b"\n") + 1


# --------------------------------------------------------------------------------------------
# VideoInfo and format_header
# --------------------------------------------------------------------------------------------


def test_video_info_derived_sizes() -> None:
    info = VideoInfo(33, 17, 10, 30000, 1001)
    assert (info.chroma_width, info.chroma_height) == (17, 9)
    assert info.frame_samples == 33 * 17 + 2 * 17 * 9
    assert info.bytes_per_sample == 2
    assert info.frame_bytes == 2 * info.frame_samples
    assert info.fps == pytest.approx(29.97002997)
    smaller = info.with_size(16, 8)
    assert (smaller.width, smaller.height, smaller.fps_num, smaller.bitdepth) == (16, 8, 30000, 10)
    assert VideoInfo(4, 4, 8, 25, 1).frame_bytes == 24


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bitdepth": 9}, "bit depth 9"),
        ({"bitdepth": 12}, "bit depth 12"),
        ({"width": 0}, "width 0 out of range"),
        ({"height": MAX_DIMENSION + 1}, "height 16385 out of range"),
        ({"fps_den": 0}, "frame rate"),
        ({"aspect_num": 0}, "pixel aspect"),
    ],
)
def test_video_info_rejects_bad_values(kwargs: dict[str, int], message: str) -> None:
    fields = {"width": 8, "height": 8, "bitdepth": 8, "fps_num": 25, "fps_den": 1}
    fields.update(kwargs)
    with pytest.raises(Y4MError, match=message):
        VideoInfo(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (
            VideoInfo(480, 270, 8, 50, 1),
            b"YUV4MPEG2 W480 H270 F50:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n",
        ),
        (
            VideoInfo(33, 17, 8, 30000, 1001, 0, 0, ChromaTag.C420MPEG2),
            b"YUV4MPEG2 W33 H17 F30000:1001 Ip A0:0 C420mpeg2 XYSCSS=420MPEG2\n",
        ),
        (VideoInfo(2, 2, 8, 25, 1, 4, 3, ChromaTag.C420), b"YUV4MPEG2 W2 H2 F25:1 Ip A4:3 C420\n"),
        (
            VideoInfo(2, 2, 8, 25, 1, chroma=ChromaTag.C420PALDV),
            b"YUV4MPEG2 W2 H2 F25:1 Ip A1:1 C420paldv XYSCSS=420PALDV\n",
        ),
        (
            VideoInfo(2, 2, 10, 25, 1, chroma=ChromaTag.C420),
            b"YUV4MPEG2 W2 H2 F25:1 Ip A1:1 C420p10 XYSCSS=420P10\n",
        ),
    ],
)
def test_format_header(info: VideoInfo, expected: bytes) -> None:
    assert format_header(info) == expected


def test_chroma_tag_ids_are_stable() -> None:
    # Stored in wrapcodec's own container: these numbers must never change.
    assert [(t.name, int(t)) for t in ChromaTag] == [
        ("C420JPEG", 0),
        ("C420", 1),
        ("C420MPEG2", 2),
        ("C420PALDV", 3),
    ]


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "info",
    [
        VideoInfo(33, 17, 8, 30000, 1001, 0, 0, ChromaTag.C420MPEG2),
        VideoInfo(33, 17, 10, 24, 1, 4, 3, ChromaTag.C420),
        VideoInfo(1, 1, 8, 25, 1, chroma=ChromaTag.C420PALDV),
        VideoInfo(16, 8, 8, 60, 1, 16, 11, ChromaTag.C420),
        VideoInfo(16, 8, 8, 60, 1),
    ],
)
def test_write_read_round_trip(tmp_path: Path, info: VideoInfo) -> None:
    path = tmp_path / "clip.y4m"
    frames = random_frames(info, 3)
    write_clip(path, info, frames)
    assert read_info(path) == info
    assert count_frames(path) == 3
    with Y4MReader(path) as reader:
        assert reader.info == info
        assert_frames_equal(list(reader), frames)
    assert_frames_equal(list(iter_frames(path)), frames)
    assert path.stat().st_size == len(format_header(info)) + 3 * (6 + info.frame_bytes)


def test_ten_bit_is_little_endian_u16(tmp_path: Path) -> None:
    info = VideoInfo(2, 2, 10, 25, 1, chroma=ChromaTag.C420)
    y = np.array([[0, 1], [1023, 256]], dtype=np.uint16)
    c = np.array([[512]], dtype=np.uint16)
    path = tmp_path / "ten.y4m"
    write_clip(path, info, [Frame(y, c, c)])
    data = path.read_bytes()
    assert (
        data[header_len(data) :]
        == b"FRAME\n" + np.array([0, 1, 1023, 256, 512, 512], dtype="<u2").tobytes()
    )


def test_writer_accepts_other_integer_dtypes(tmp_path: Path) -> None:
    info = VideoInfo(3, 3, 8, 25, 1)
    y = np.arange(9, dtype=np.int64).reshape(3, 3)
    c = np.full((2, 2), 255, dtype=np.int32)
    path = tmp_path / "ints.y4m"
    write_clip(path, info, [Frame(y, c, c)])
    (frame,) = list(iter_frames(path))
    np.testing.assert_array_equal(frame.y, y)
    np.testing.assert_array_equal(frame.u, c)


def test_real_clip(tmp_path: Path) -> None:
    info = read_info(CLIP)
    assert info == VideoInfo(480, 270, 8, 50, 1, 1, 1, ChromaTag.C420JPEG, "LIMITED")
    assert count_frames(CLIP) == 10
    frames = list(iter_frames(CLIP))
    assert len(frames) == 10
    for frame in frames:
        assert frame.y.shape == (270, 480)
        assert frame.u.shape == frame.v.shape == (135, 240)
        assert frame.y.dtype == frame.u.dtype == frame.v.dtype == np.uint16
        assert int(frame.y.max()) <= 255
    # Frames own their memory: not views of one reused buffer.
    assert not np.array_equal(frames[0].y, frames[9].y)
    assert not any(np.shares_memory(a, b) for a in frames[0] for b in frames[1])

    # Read -> write preserves the file exactly, XCOLORRANGE=LIMITED included.
    out = tmp_path / "copy.y4m"
    write_clip(out, info, frames)
    assert out.read_bytes() == CLIP.read_bytes()


def test_reader_streams_one_frame_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    info = VideoInfo(8, 4, 8, 25, 1)
    frames = random_frames(info, 4)
    stream = io.BytesIO()
    stream.write(format_header(info))
    for frame in frames:
        stream.write(b"FRAME\n" + b"".join(p.astype(np.uint8).tobytes() for p in frame))
    stream.seek(0)
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=stream))

    hdr = len(format_header(info))
    with Y4MReader("-") as reader:
        iterator = iter(reader)
        lazy = inspect.isgenerator(iterator)  # (kept out of the assert: no type narrowing)
        assert lazy
        assert stream.tell() == hdr  # nothing read beyond the header yet
        for index in range(4):
            got = next(iterator)
            # Exactly one more frame consumed per item: no read-ahead, no list building.
            assert stream.tell() == hdr + (index + 1) * (6 + info.frame_bytes)
            np.testing.assert_array_equal(got.y, frames[index].y)
        assert next(iterator, None) is None
    assert not stream.closed  # standard input is never closed by the reader


def test_frame_parameters_are_ignored(tmp_path: Path) -> None:
    info = VideoInfo(4, 2, 8, 25, 1)
    frames = random_frames(info, 3)
    body = b"".join(
        marker + b"".join(p.astype(np.uint8).tobytes() for p in frame)
        for marker, frame in zip(
            [b"FRAME Ip XFOO=1\n", b"FRAME\n", b"FRAME X\n"], frames, strict=True
        )
    )
    path = tmp_path / "params.y4m"
    path.write_bytes(b"YUV4MPEG2 W4 H2 F25:1 XCOLORRANGE=FULL ZUNKNOWN\n" + body)
    assert count_frames(path) == 3
    assert_frames_equal(list(iter_frames(path)), frames)


def test_header_defaults(tmp_path: Path) -> None:
    path = tmp_path / "minimal.y4m"
    path.write_bytes(b"YUV4MPEG2 W5 H3 F30000:1001 A0:0\n")
    assert read_info(path) == VideoInfo(5, 3, 8, 30000, 1001, 0, 0, ChromaTag.C420JPEG, None)


@pytest.mark.parametrize(
    ("tag", "bitdepth", "chroma"),
    [
        (b"C420jpeg", 8, ChromaTag.C420JPEG),
        (b"C420", 8, ChromaTag.C420),
        (b"C420mpeg2", 8, ChromaTag.C420MPEG2),
        (b"C420paldv", 8, ChromaTag.C420PALDV),
        (b"C420p10", 10, ChromaTag.C420),
    ],
)
def test_supported_chroma_tags(
    tmp_path: Path, tag: bytes, bitdepth: int, chroma: ChromaTag
) -> None:
    path = tmp_path / "tag.y4m"
    path.write_bytes(b"YUV4MPEG2 W4 H4 F25:1 Ip " + tag + b"\n")
    info = read_info(path)
    assert (info.bitdepth, info.chroma) == (bitdepth, chroma)


@pytest.mark.parametrize(
    ("tag", "color_range"),
    [
        (b" XCOLORRANGE=LIMITED", "LIMITED"),
        (b" XCOLORRANGE=FULL", "FULL"),
        (b"", None),
    ],
)
def test_color_range_is_carried(tmp_path: Path, tag: bytes, color_range: str | None) -> None:
    """XCOLORRANGE is read, and written back by the writer; other X tags are left out."""
    src = tmp_path / "src.y4m"
    frames = random_frames(VideoInfo(4, 2, 8, 25, 1), 1)
    body = b"FRAME\n" + b"".join(p.astype(np.uint8).tobytes() for p in frames[0])
    src.write_bytes(b"YUV4MPEG2 W4 H2 F25:1 Ip A1:1 C420jpeg XFOO=1" + tag + b"\n" + body)
    info = read_info(src)
    assert info.color_range == color_range
    copy = tmp_path / "copy.y4m"
    write_clip(copy, info, list(iter_frames(src)))
    expected = b"YUV4MPEG2 W4 H2 F25:1 Ip A1:1 C420jpeg XYSCSS=420JPEG"
    if color_range is not None:
        expected += b" XCOLORRANGE=" + color_range.encode()
    assert copy.read_bytes() == expected + b"\n" + body
    with pytest.raises(Y4MError, match="bad colour range 'STUDIO'"):
        VideoInfo(4, 2, 8, 25, 1, color_range="STUDIO")  # type: ignore[arg-type]


def test_spooled_stdin_is_named_as_told(tmp_path: Path) -> None:
    path = tmp_path / "spool.y4m"
    path.write_bytes(b"YUV4MPEG2 W4 H4 F25:1 C444\n")
    for action in (read_info, count_frames):
        with pytest.raises(Y4MError, match=r"^standard input: unsupported chroma"):
            action(path, name="standard input")


def test_validating_count_checks_ten_bit_samples(tmp_path: Path) -> None:
    path = tmp_path / "high.y4m"
    path.write_bytes(b"YUV4MPEG2 W2 H2 F25:1 C420p10\nFRAME\n" + b"\x00\x04" * 6)
    assert count_frames(path) == 1  # the plain count does not look at the pixels
    with pytest.raises(Y4MError, match="10-bit sample value 1024 > 1023 in frame 0"):
        count_frames(path, validate=True)


def test_zero_frame_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.y4m"
    write_clip(path, VideoInfo(4, 4, 8, 25, 1), [])
    assert list(iter_frames(path)) == []
    assert count_frames(path) == 0


# --------------------------------------------------------------------------------------------
# Malformed input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt \n", "not a y4m file"),
        (b"\x00" * 4000, "not a y4m file"),
        (b"YUV4MPEG2X W4 H4\n", "not a y4m file"),
        (b"YUV4MPEG2 W4 H4 F25:1 C422\n", "unsupported chroma format 'C422'"),
        (b"YUV4MPEG2 W4 H4 F25:1 C444\n", "unsupported chroma format 'C444'"),
        (b"YUV4MPEG2 W4 H4 F25:1 Cmono\n", "unsupported chroma format 'Cmono'"),
        (b"YUV4MPEG2 W4 H4 F25:1 C420p12\n", "unsupported chroma format 'C420p12'"),
        (b"YUV4MPEG2 W4 H4 F25:1 C420p9\n", "unsupported chroma format 'C420p9'"),
        (b"YUV4MPEG2 W4 H4 F25:1 It\n", "interlaced y4m is not supported"),
        (b"YUV4MPEG2 W4 H4 F25:1 Ib\n", "interlaced y4m is not supported"),
        (b"YUV4MPEG2 W4 H4 F25:1 Im\n", "interlaced y4m is not supported"),
        (b"YUV4MPEG2 W4 H4 F25:1 Ix\n", "bad interlacing"),
        (b"YUV4MPEG2 W0 H4 F25:1\n", "width 0 out of range 1..16384"),
        (b"YUV4MPEG2 W99999 H4 F25:1\n", "width 99999 out of range 1..16384"),
        (b"YUV4MPEG2 W4 H99999999999999\n", "bad height"),
        (b"YUV4MPEG2 W-4 H4\n", "bad width"),
        (b"YUV4MPEG2 H4 F25:1\n", "no W"),
        (b"YUV4MPEG2 W4 F25:1\n", "no H"),
        (b"YUV4MPEG2 W4 H4 F0:1\n", "bad frame rate"),
        (b"YUV4MPEG2 W4 H4 F25\n", "bad frame rate"),
        (b"YUV4MPEG2 W4 H4 A1:0\n", "bad pixel aspect"),
        (b"YUV4MPEG2 W4 H4 F25:1", "truncated y4m header"),
        (b"YUV4MPEG2 W4 H4 Ip C420\n", "no F (frame rate) tag"),
        (b"YUV4MPEG2 W4 H4 F25:1 W8\n", "gives the W tag twice"),
        (b"YUV4MPEG2 W4 H4 H4 F25:1\n", "gives the H tag twice"),
        (b"YUV4MPEG2 W4 H4 F25:1 F30:1\n", "gives the F tag twice"),
        (b"YUV4MPEG2 W4 H4 F25:1 Ip I?\n", "gives the I tag twice"),
        (b"YUV4MPEG2 W4 H4 F25:1 A1:1 A0:0\n", "gives the A tag twice"),
        (b"YUV4MPEG2 W4 H4 F25:1 C420 C420p10\n", "gives the C tag twice"),
        (
            b"YUV4MPEG2 W4 H4 F25:1 XCOLORRANGE=FULL XCOLORRANGE=LIMITED\n",
            "gives the XCOLORRANGE tag twice",
        ),
        (b"YUV4MPEG2 W4 H4 X" + b"a" * 2000 + b"\n", "not terminated within 1024 bytes"),
    ],
)
def test_bad_headers(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.y4m"
    path.write_bytes(content)
    for action in (read_info, count_frames, lambda p: list(iter_frames(p))):
        with pytest.raises(Y4MError, match=re.escape(message)) as excinfo:
            action(path)
        text = str(excinfo.value)
        assert text.startswith(f"{path}: ")
        assert "\n" not in text


def test_huge_dimensions_fail_fast_without_allocating(tmp_path: Path) -> None:
    path = tmp_path / "huge.y4m"
    path.write_bytes(b"YUV4MPEG2 W16384 H16384 F25:1 C420p10\nFRAME\n" + b"\x00" * 100)
    tracemalloc.start()
    try:
        with pytest.raises(Y4MError, match="truncated frame 0 at byte offset"):
            list(iter_frames(path))
        with pytest.raises(Y4MError, match="truncated frame 0"):
            count_frames(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the 805 MB frame buffer was never allocated


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        read_info(tmp_path / "nope.y4m")


def _three_frame_clip(tmp_path: Path, info: VideoInfo) -> tuple[Path, bytes]:
    path = tmp_path / "clip.y4m"
    write_clip(path, info, random_frames(info, 3))
    return path, path.read_bytes()


@pytest.mark.parametrize("bitdepth", [8, 10])
def test_truncated_last_frame(tmp_path: Path, bitdepth: int) -> None:
    info = VideoInfo(33, 17, bitdepth, 25, 1)
    path, data = _three_frame_clip(tmp_path, info)
    path.write_bytes(data[:-10])
    hdr = header_len(data)
    offset = hdr + 2 * (6 + info.frame_bytes) + 6  # data of frame 2 starts here
    expected = (
        f"{path}: truncated frame 2 at byte offset {offset}: "
        f"expected {info.frame_bytes} bytes, got {info.frame_bytes - 10}"
    )
    reader = Y4MReader(path)
    iterator = iter(reader)
    next(iterator), next(iterator)  # the two complete frames are delivered
    with pytest.raises(Y4MError) as excinfo:
        next(iterator)
    reader.close()
    assert str(excinfo.value) == expected
    with pytest.raises(Y4MError) as excinfo:
        count_frames(path)
    assert str(excinfo.value) == expected


def test_truncated_frame_on_a_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = VideoInfo(6, 4, 8, 25, 1)
    _, data = _three_frame_clip(tmp_path, info)
    offset = header_len(data) + 2 * (6 + info.frame_bytes) + 6
    for action in (lambda: list(iter_frames("-")), lambda: count_frames("-")):
        monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data[:-1])))
        with pytest.raises(
            Y4MError, match=rf"^standard input: truncated frame 2 at byte offset {offset}"
        ):
            action()
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(data)))
    assert count_frames("-") == 3


@pytest.mark.parametrize(
    ("cut", "message"),
    [(3, "truncated frame 1 at byte offset"), (5, "truncated frame 1 at byte offset")],
)
def test_truncated_frame_marker(tmp_path: Path, cut: int, message: str) -> None:
    info = VideoInfo(4, 4, 8, 25, 1)
    path, data = _three_frame_clip(tmp_path, info)
    marker_1 = header_len(data) + 6 + info.frame_bytes
    path.write_bytes(data[: marker_1 + cut])
    with pytest.raises(Y4MError, match=f"{message} {marker_1}: incomplete FRAME line"):
        list(iter_frames(path))


@pytest.mark.parametrize(
    "marker", [b"FRAMX\n", b"frame\n", b"FRAMES\n", b"\x00\x01\x02\x03\x04\x05"]
)
def test_bad_frame_marker(tmp_path: Path, marker: bytes) -> None:
    info = VideoInfo(4, 4, 8, 25, 1)
    path, data = _three_frame_clip(tmp_path, info)
    marker_1 = header_len(data) + 6 + info.frame_bytes
    path.write_bytes(data[:marker_1] + marker + data[marker_1 + 6 :])
    pattern = rf"bad frame marker for frame 1 at byte offset {marker_1}: expected 'FRAME'"
    with pytest.raises(Y4MError, match=pattern):
        list(iter_frames(path))
    with pytest.raises(Y4MError, match=pattern):
        count_frames(path)


def test_frame_size_mismatch_shows_as_bad_marker(tmp_path: Path) -> None:
    # A header that lies about the size makes the next marker land in pixel data.
    info = VideoInfo(4, 4, 8, 25, 1)
    _, data = _three_frame_clip(tmp_path, info)
    path = tmp_path / "lie.y4m"
    path.write_bytes(data.replace(b"W4 H4", b"W4 H2", 1))
    with pytest.raises(Y4MError, match="bad frame marker for frame 1"):
        list(iter_frames(path))


def test_ten_bit_sample_out_of_range(tmp_path: Path) -> None:
    info = VideoInfo(5, 3, 10, 25, 1, chroma=ChromaTag.C420)
    path, data = _three_frame_clip(tmp_path, info)
    frame_1_data = header_len(data) + 2 * 6 + info.frame_bytes
    bad_offset = frame_1_data + 2 * 7
    patched = bytearray(data)
    patched[bad_offset : bad_offset + 2] = (1024).to_bytes(2, "little")
    path.write_bytes(bytes(patched))
    frames = iter_frames(path)
    next(frames)
    with pytest.raises(
        Y4MError, match=rf"10-bit sample value 1024 > 1023 in frame 1 at byte offset {bad_offset}$"
    ):
        next(frames)


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


def _dir_listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writer_is_atomic_on_exception(tmp_path: Path) -> None:
    info = VideoInfo(4, 4, 8, 25, 1)
    dest = tmp_path / "out.y4m"
    with pytest.raises(RuntimeError, match="boom"), Y4MWriter(dest, info) as writer:
        writer.write(random_frames(info, 1)[0])
        assert len(_dir_listing(tmp_path)) == 1  # only the hidden temp file so far
        assert not dest.exists()
        raise RuntimeError("boom")
    assert _dir_listing(tmp_path) == []


def test_writer_leaves_existing_destination_untouched(tmp_path: Path) -> None:
    info = VideoInfo(4, 4, 8, 25, 1)
    dest = tmp_path / "out.y4m"
    dest.write_bytes(b"previous content")
    with pytest.raises(Y4MError, match="shape"), Y4MWriter(dest, info) as writer:
        writer.write(random_frames(info, 1)[0])
        writer.write(Frame(np.zeros((3, 4), np.uint16), *random_frames(info, 1)[0][1:]))
    assert dest.read_bytes() == b"previous content"
    assert _dir_listing(tmp_path) == ["out.y4m"]


def test_writer_replaces_destination_on_success(tmp_path: Path) -> None:
    info = VideoInfo(4, 4, 8, 25, 1)
    dest = tmp_path / "out.y4m"
    dest.write_bytes(b"previous content")
    frames = random_frames(info, 2)
    write_clip(dest, info, frames)
    assert _dir_listing(tmp_path) == ["out.y4m"]
    assert_frames_equal(list(iter_frames(dest)), frames)
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's 0600


def test_writer_abort_and_close_are_idempotent(tmp_path: Path) -> None:
    info = VideoInfo(4, 4, 8, 25, 1)
    dest = tmp_path / "out.y4m"
    writer = Y4MWriter(dest, info)
    writer.abort()
    writer.abort()
    writer.close()
    assert _dir_listing(tmp_path) == []
    with pytest.raises(ValueError, match="closed"):
        writer.write(random_frames(info, 1)[0])


def test_writer_to_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot write .*out\.y4m: No such file or directory"):
        Y4MWriter(tmp_path / "missing" / "out.y4m", VideoInfo(4, 4, 8, 25, 1))


def test_writer_to_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    info = VideoInfo(2, 2, 8, 25, 1)
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(buffer=buffer))
    y = np.array([[1, 2], [3, 4]], dtype=np.uint16)
    c = np.array([[5]], dtype=np.uint16)
    with Y4MWriter("-", info) as writer:
        writer.write(Frame(y, c, c))
    assert buffer.getvalue() == format_header(info) + b"FRAME\n\x01\x02\x03\x04\x05\x05"
    assert not buffer.closed


@pytest.mark.parametrize(
    ("bitdepth", "planes", "message"),
    [
        (8, {"y": np.zeros((4, 5), np.uint16)}, r"plane y has shape \(4, 5\), expected \(4, 4\)"),
        (8, {"u": np.zeros((2, 3), np.uint16)}, "plane u has shape"),
        (8, {"v": np.zeros((2, 2), np.float32)}, "plane v has dtype float32"),
        (8, {"y": np.full((4, 4), 256, np.uint16)}, r"values 256\.\.256 outside 0\.\.255"),
        (8, {"u": np.full((2, 2), -1, np.int16)}, "outside 0..255"),
        (10, {"y": np.full((4, 4), 1024, np.uint16)}, "outside 0..1023"),
    ],
)
def test_writer_rejects_bad_frames(
    tmp_path: Path, bitdepth: int, planes: dict[str, np.ndarray], message: str
) -> None:
    info = VideoInfo(4, 4, bitdepth, 25, 1)
    frame = random_frames(info, 1)[0]._replace(**planes)
    dest = tmp_path / "out.y4m"
    with pytest.raises(Y4MError, match=message), Y4MWriter(dest, info) as writer:
        writer.write(frame)
    assert _dir_listing(tmp_path) == []
