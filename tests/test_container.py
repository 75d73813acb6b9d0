"""Tests of the .wrp container (wrapcodec.container): layout, validation, atomic writes, fuzz."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wrapcodec import container as c
from wrapcodec.container import (
    MAGIC,
    VERSION,
    CodecId,
    OptionCode,
    Segment,
    WrpHeader,
    overhead_bytes,
    pack,
    read_wrp,
    unpack,
    write_wrp,
)
from wrapcodec.errors import ContainerError

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "format_v1_example.wrp"

# The stored fixture is exactly pack(EXAMPLE_HEADER, EXAMPLE_SEGMENTS) as written by format
# version 1. If this test fails, the on-disk layout changed: bump VERSION instead of
# regenerating the file.
EXAMPLE_HEADER = WrpHeader(
    codec_id=CodecId.X265,
    model_bank_id=b"MB-00001",
    width=480,
    height=270,
    bitdepth=8,
    chroma=1,
    bottleneck_bitdepth=8,
    fps_num=25,
    fps_den=1,
    aspect_num=1,
    aspect_den=1,
    frame_count=5,
)
EXAMPLE_SEGMENTS = [
    Segment(OptionCode.POST_1_2, 0, 3, 240, 135, b"\x00\x00\x01abc"),
    Segment(OptionCode.DIRECT, 3, 2, 480, 270, b"\x00\x00\x01de"),
]

HEADER_SIZE = 42  # hand-computed: 4+1+1+2 + 1+1+1+1 + 8 + 2+2 + 4+4 + 2+2 + 4 + 2
SEGMENT_SIZE = 17  # 1 + 4 + 4 + 2 + 2 + 4


def _header(**kw: object) -> WrpHeader:
    fields = {**EXAMPLE_HEADER.__dict__, **kw}
    return WrpHeader(**fields)


def _segments(counts: list[int], option: int = OptionCode.DIRECT) -> list[Segment]:
    out: list[Segment] = []
    first = 0
    for k, n in enumerate(counts):
        out.append(Segment(option, first, n, 64, 36, bytes([k]) * (k + 3)))
        first += n
    return out


def _example() -> bytearray:
    return bytearray(pack(EXAMPLE_HEADER, EXAMPLE_SEGMENTS))


def _recrc(data: bytes | bytearray) -> bytes:
    """Fix the trailing CRC so a test reaches the field checks behind it."""
    body = bytes(data[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def _raises(data: bytes | bytearray, fragment: str) -> None:
    with pytest.raises(ContainerError) as info:
        unpack(bytes(data))
    assert fragment in str(info.value), str(info.value)


# --- layout ---------------------------------------------------------------------------------


def test_struct_sizes_and_overhead() -> None:
    assert c.HEADER.size == HEADER_SIZE
    assert c.SEGMENT.size == SEGMENT_SIZE
    assert overhead_bytes(1) == HEADER_SIZE + SEGMENT_SIZE + 4 == 63
    for n in (1, 2, 3, 7):
        segs = _segments([1] * n)
        data = pack(_header(frame_count=n), segs)
        assert overhead_bytes(n) == len(data) - sum(len(s.payload) for s in segs)


def test_stored_bytes_match_fixture() -> None:
    data = pack(EXAMPLE_HEADER, EXAMPLE_SEGMENTS)
    assert data == FIXTURE.read_bytes()
    assert len(data) == HEADER_SIZE + 2 * SEGMENT_SIZE + 6 + 5 + 4 == 91
    # header, offsets counted by hand from docs/format.md
    assert data[0:4] == b"WRPC"
    assert data[4] == 1  # version
    assert data[5] == 0  # flags
    assert data[6:8] == (42).to_bytes(2, "little")  # header_size
    assert data[8] == 2  # codec_id x265
    assert data[9] == 8 and data[10] == 1 and data[11] == 8  # bitdepth, chroma, bottleneck bd
    assert data[12:20] == b"MB-00001"
    assert data[20:24] == bytes([0xE0, 0x01, 0x0E, 0x01])  # 480, 270
    assert data[24:32] == bytes([25, 0, 0, 0, 1, 0, 0, 0])  # fps 25/1
    assert data[32:36] == bytes([1, 0, 1, 0])  # aspect 1:1
    assert data[36:40] == bytes([5, 0, 0, 0])  # frame_count
    assert data[40:42] == bytes([2, 0])  # segment_count
    # segment 0 at 42: option 2 in the HIGH nibble
    assert data[42] == 0x20
    assert data[43:47] == bytes(4)  # first_frame 0
    assert data[47:51] == bytes([3, 0, 0, 0])
    assert data[51:55] == bytes([240, 0, 135, 0])
    assert data[55:59] == bytes([6, 0, 0, 0])
    # segment 1 at 59
    assert data[59] == 0x00
    assert data[60:64] == bytes([3, 0, 0, 0])
    assert data[72:76] == bytes([5, 0, 0, 0])
    # payloads at 76, then CRC over everything before it
    assert data[76:87] == b"\x00\x00\x01abc\x00\x00\x01de"
    assert data[87:91] == zlib.crc32(data[:87]).to_bytes(4, "little") == bytes.fromhex("ef894c8d")
    assert unpack(FIXTURE.read_bytes()) == (EXAMPLE_HEADER, EXAMPLE_SEGMENTS)


def test_offset_tables_match_hand_layout() -> None:
    assert c.HEADER_OFFSETS == {
        "magic": 0,
        "version": 4,
        "flags": 5,
        "header_size": 6,
        "codec_id": 8,
        "bitdepth": 9,
        "chroma": 10,
        "bottleneck_bitdepth": 11,
        "model_bank_id": 12,
        "width": 20,
        "height": 22,
        "fps_num": 24,
        "fps_den": 28,
        "aspect_num": 32,
        "aspect_den": 34,
        "frame_count": 36,
        "segment_count": 40,
    }
    assert c.SEGMENT_OFFSETS == {
        "option": 0,
        "first_frame": 1,
        "frame_count": 5,
        "bottleneck_width": 9,
        "bottleneck_height": 11,
        "payload_length": 13,
    }


def test_enums_are_fixed() -> None:
    assert MAGIC == b"WRPC" and VERSION == 1
    assert [(m.name, m.value) for m in CodecId] == [("X264", 1), ("X265", 2), ("VVENC", 3)]
    assert [m.value for m in OptionCode] == list(range(16))
    assert OptionCode.WRAP_2_3 == 7 and OptionCode.BILINEAR_1_4 == 14
    assert OptionCode.RESERVED == 15


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("counts", [[5], [2, 1, 2]])
def test_round_trip(counts: list[int]) -> None:
    header = _header(frame_count=sum(counts), model_bank_id=bytes(8))
    segs = _segments(counts, OptionCode.LANCZOS_2_3)
    header2, segs2 = unpack(pack(header, segs))
    assert header2 == header
    assert segs2 == segs
    assert all(isinstance(s.payload, bytes) for s in segs2)


@pytest.mark.parametrize("codec", [1, 2, 3, 128, 200, 255])
def test_codec_ids_accepted(codec: int) -> None:
    header, _ = unpack(pack(_header(codec_id=codec), EXAMPLE_SEGMENTS))
    assert header.codec_id == codec


def test_unknown_aspect_and_all_options_round_trip() -> None:
    segs = [Segment(op, op, 1, 8, 8, b"") for op in range(15)]
    header = _header(aspect_num=0, aspect_den=0, frame_count=15, bitdepth=10)
    assert unpack(pack(header, segs)) == (header, segs)


def test_unpack_accepts_bytearray_and_memoryview() -> None:
    data = _example()
    assert unpack(data) == unpack(memoryview(bytes(data))) == (EXAMPLE_HEADER, EXAMPLE_SEGMENTS)


# --- errors: unpack ---------------------------------------------------------------------------


def test_wrong_magic() -> None:
    data = _example()
    data[0:4] = b"RIFF"
    _raises(data, "not a .wrp file (bad magic)")
    _raises(b"hello", "bad magic")


def test_unknown_version() -> None:
    data = _example()
    data[4] = 2
    _raises(data, "unsupported .wrp version 2 (this wrapcodec reads version 1)")
    _raises(b"WRPC\x02", "unsupported .wrp version 2")


def test_truncated_header() -> None:
    _raises(_example()[:20], "truncated header: need 42 bytes, file has 20")
    _raises(b"WRP", "truncated header")


def test_truncated_segment_table() -> None:
    _raises(_example()[:50], "truncated segment table")


def test_truncated_payload() -> None:
    data = _example()
    _raises(data[:-6], "truncated payload: segment 1 needs 5 bytes at offset 82, file has 85")
    _raises(data[:80], "truncated payload: segment 0 needs 6 bytes at offset 76, file has 80")
    _raises(data[:-2], "truncated file: CRC32 expected at offset 87")


def test_every_truncation_reports_truncation_not_crc() -> None:
    data = bytes(_example())
    for n in range(1, len(data)):
        with pytest.raises(ContainerError, match="truncated"):
            unpack(data[:n])


def test_crc_mismatch() -> None:
    data = _example()
    data[78] ^= 0x01  # a payload byte
    _raises(data, "CRC mismatch: stored 0x")
    _raises(data, "the file is corrupted")


def test_trailing_garbage() -> None:
    _raises(bytes(_example()) + b"\x00", "trailing garbage: 1 bytes after the CRC32 at offset 91")


def test_empty_bytes() -> None:
    _raises(b"", "empty")


def test_reserved_option_code_15() -> None:
    data = _example()
    data[42] = 0xF0
    _raises(_recrc(data), "reserved option code 15 in segment 0 at offset 42")
    with pytest.raises(ContainerError, match="reserved option code 15"):
        pack(EXAMPLE_HEADER, [Segment(15, 0, 5, 8, 8, b"x")])


def test_nonzero_reserved_nibble() -> None:
    data = _example()
    data[59] = 0x01
    _raises(_recrc(data), "segment 1: reserved low nibble of the option byte is 0x1")


def test_unknown_builtin_codec_id() -> None:
    data = _example()
    data[8] = 5
    _raises(_recrc(data), "unknown built-in codec id 5 at offset 8")
    with pytest.raises(ContainerError, match="unknown built-in codec id 127"):
        pack(_header(codec_id=127), EXAMPLE_SEGMENTS)


def test_codec_id_zero() -> None:
    data = _example()
    data[8] = 0
    _raises(_recrc(data), "invalid codec id 0")
    with pytest.raises(ContainerError, match="invalid codec id 0"):
        pack(_header(codec_id=0), EXAMPLE_SEGMENTS)


def test_segments_not_contiguous() -> None:
    data = _example()
    data[60] = 4  # segment 1 first_frame 3 -> 4
    _raises(_recrc(data), "segments not contiguous: segment 1 starts at frame 4, expected 3")
    gap = [EXAMPLE_SEGMENTS[0], Segment(0, 4, 1, 8, 8, b"")]
    with pytest.raises(ContainerError, match="segments not contiguous"):
        pack(EXAMPLE_HEADER, gap)


def test_zero_frame_count() -> None:
    data = _example()
    data[36:40] = bytes(4)
    _raises(_recrc(data), "frame_count 0 out of range 1..4294967295 at offset 36")
    with pytest.raises(ContainerError, match="frame_count 0 out of range"):
        pack(_header(frame_count=0), EXAMPLE_SEGMENTS)
    with pytest.raises(ContainerError, match="segment 1 frame_count 0 out of range"):
        pack(_header(frame_count=3), [EXAMPLE_SEGMENTS[0], Segment(0, 3, 0, 8, 8, b"")])


def test_segments_must_sum_to_frame_count() -> None:
    with pytest.raises(ContainerError, match="segments cover 5 frames but the header says frame"):
        pack(_header(frame_count=6), EXAMPLE_SEGMENTS)
    data = _example()
    data[36] = 6
    _raises(_recrc(data), "segments cover 5 frames")


def test_header_size_and_flags() -> None:
    data = _example()
    data[6] = 40
    _raises(_recrc(data), "header_size 40 at offset 6")
    data = _example()
    data[5] = 0x80
    _raises(_recrc(data), "reserved flags 0x80 at offset 5 must be 0")


def test_zero_segments() -> None:
    data = bytearray(_example()[:42]) + bytes(4)
    data[40:42] = bytes(2)
    _raises(_recrc(data), "segment_count 0 out of range")
    with pytest.raises(ContainerError, match="segment_count 0"):
        pack(EXAMPLE_HEADER, [])


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("width", 0, "width 0 out of range 1..16384"),
        ("height", 16385, "height 16385 out of range"),
        ("bitdepth", 12, "bitdepth 12 is not 8 or 10"),
        ("bottleneck_bitdepth", 9, "bottleneck_bitdepth 9 is not 8 or 10"),
        ("chroma", 4, "chroma tag 4 out of range 0..3"),
        ("fps_num", 0, "fps_num 0"),
        ("fps_den", 0, "fps_den 0"),
        ("aspect_num", 0, "aspect ratio 0:1 is invalid"),
        ("model_bank_id", b"short", "model_bank_id must be 8 bytes"),
        ("width", 480.0, "width must be an int, got float"),
        ("fps_num", 1 << 32, "fps_num 4294967296 out of range"),
    ],
)
def test_pack_rejects_bad_header(field: str, value: object, fragment: str) -> None:
    with pytest.raises(ContainerError) as info:
        pack(_header(**{field: value}), EXAMPLE_SEGMENTS)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("seg", "fragment"),
    [
        (Segment(16, 0, 5, 8, 8, b""), "segment 0 option code 16 out of range 0..14"),
        (Segment(-1, 0, 5, 8, 8, b""), "option code -1"),
        (Segment(0, 0, 5, 0, 8, b""), "segment 0 bottleneck_width 0 out of range"),
        (Segment(0, 0, 5, 8, 70000, b""), "bottleneck_height 70000"),
        (Segment(0, 0, 5, 8, 8, "text"), "segment 0 payload must be bytes, got str"),  # type: ignore[arg-type]
        (Segment(0, 1, 5, 8, 8, b""), "segment 0 starts at frame 1, expected 0"),
    ],
)
def test_pack_rejects_bad_segment(seg: Segment, fragment: str) -> None:
    with pytest.raises(ContainerError) as info:
        pack(EXAMPLE_HEADER, [seg])
    assert fragment in str(info.value)


# --- files ------------------------------------------------------------------------------------


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_read_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "clip.wrp"
    write_wrp(out, EXAMPLE_HEADER, EXAMPLE_SEGMENTS)
    assert out.read_bytes() == FIXTURE.read_bytes()
    assert read_wrp(out) == (EXAMPLE_HEADER, EXAMPLE_SEGMENTS)
    assert read_wrp(str(out)) == (EXAMPLE_HEADER, EXAMPLE_SEGMENTS)
    assert _leftovers(tmp_path) == []


def test_write_failure_in_pack_leaves_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "clip.wrp"
    out.write_bytes(b"previous")
    bad = [Segment(0, 0, 5, 8, 8, None)]  # type: ignore[arg-type]
    with pytest.raises(ContainerError, match="payload must be bytes"):
        write_wrp(out, EXAMPLE_HEADER, bad)
    assert out.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []
    with pytest.raises(ContainerError):
        write_wrp(tmp_path / "new.wrp", _header(width=0), EXAMPLE_SEGMENTS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wrp"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_write_interrupted_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException | type[BaseException]
) -> None:
    out = tmp_path / "clip.wrp"
    out.write_bytes(b"previous")
    seen: list[str] = []

    def boom(fd: int) -> None:
        seen.extend(_leftovers(tmp_path))
        raise exc

    monkeypatch.setattr(c.os, "fsync", boom)
    expected = KeyboardInterrupt if exc is KeyboardInterrupt else ContainerError
    with pytest.raises(expected):
        write_wrp(out, EXAMPLE_HEADER, EXAMPLE_SEGMENTS)
    assert len(seen) == 1 and seen[0].startswith(".clip.wrp") and seen[0].endswith(".tmp")
    assert out.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []


def test_write_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="cannot write"):
        write_wrp(tmp_path / "nope" / "clip.wrp", EXAMPLE_HEADER, EXAMPLE_SEGMENTS)


def test_read_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "empty.wrp"
    out.write_bytes(b"")
    with pytest.raises(ContainerError, match="empty file") as info:
        read_wrp(out)
    assert "empty.wrp" in str(info.value)


def test_read_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match=r"no such \.wrp file") as info:
        read_wrp(tmp_path / "missing.wrp")
    assert "missing.wrp" in str(info.value)
    with pytest.raises(ContainerError, match="is a directory"):
        read_wrp(tmp_path)


def test_read_names_file_on_parse_error(tmp_path: Path) -> None:
    out = tmp_path / "bad.wrp"
    out.write_bytes(bytes(_example())[:-1])
    with pytest.raises(ContainerError, match=r"bad\.wrp: truncated"):
        read_wrp(out)


# --- fuzz ---------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parses_or_container_error(data: bytes) -> None:
    try:
        header, segments = unpack(data)
    except ContainerError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg
        return
    # whatever parses is canonical: packing it again gives the same bytes
    assert pack(header, segments) == data


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_any_bytes(data: bytes) -> None:
    _parses_or_container_error(data)


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_any_bytes_after_magic(tail: bytes) -> None:
    _parses_or_container_error(b"WRPC\x01" + tail)


def _mutate(data: bytes, draw: st.DataObject) -> bytes:
    buf = bytearray(data)
    for _ in range(draw.draw(st.integers(0, 4), label="edits")):
        kind = draw.draw(st.sampled_from(["set", "flip", "insert", "delete"]), label="kind")
        at = draw.draw(st.integers(0, max(len(buf) - 1, 0)), label="at")
        if kind == "insert" or not buf:
            buf[at:at] = draw.draw(st.binary(min_size=1, max_size=8), label="ins")
        elif kind == "set":
            buf[at] = draw.draw(st.integers(0, 255), label="byte")
        elif kind == "flip":
            buf[at] ^= 1 << draw.draw(st.integers(0, 7), label="bit")
        else:
            del buf[at : at + draw.draw(st.integers(1, 8), label="n")]
    if draw.draw(st.booleans(), label="truncate"):
        buf = buf[: draw.draw(st.integers(0, len(buf)), label="len")]
    return bytes(buf)


@FUZZ
@given(st.data())
def test_fuzz_mutated_valid_file(data: st.DataObject) -> None:
    _parses_or_container_error(_mutate(bytes(_example()), data))


@FUZZ
@given(st.data())
def test_fuzz_mutated_header_with_fixed_crc(data: st.DataObject) -> None:
    # mutate only the header/table and repair the CRC, so the field checks are reached
    base = bytes(_example())
    cut = HEADER_SIZE + 2 * SEGMENT_SIZE
    head = _mutate(base[:cut], data)
    mutated = head + base[cut:]
    _parses_or_container_error(_recrc(mutated) if len(mutated) >= 4 else mutated)


_headers = st.builds(
    WrpHeader,
    codec_id=st.sampled_from([1, 2, 3, 128, 255]),
    model_bank_id=st.binary(min_size=8, max_size=8),
    width=st.integers(1, 16384),
    height=st.integers(1, 16384),
    bitdepth=st.sampled_from([8, 10]),
    chroma=st.integers(0, 3),
    bottleneck_bitdepth=st.sampled_from([8, 10]),
    fps_num=st.integers(1, 2**32 - 1),
    fps_den=st.integers(1, 2**32 - 1),
    aspect_num=st.just(0),
    aspect_den=st.just(0),
    frame_count=st.just(1),  # replaced below
)


@settings(max_examples=150, deadline=None)
@given(
    _headers,
    st.lists(
        st.tuples(
            st.integers(0, 14),
            st.integers(1, 1000),
            st.integers(1, 65535),
            st.integers(1, 65535),
            st.binary(max_size=32),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_fuzz_valid_round_trip(
    header: WrpHeader, rows: list[tuple[int, int, int, int, bytes]]
) -> None:
    segs: list[Segment] = []
    first = 0
    for option, count, bw, bh, payload in rows:
        segs.append(Segment(option, first, count, bw, bh, payload))
        first += count
    header = WrpHeader(**{**header.__dict__, "frame_count": first})
    data = pack(header, segs)
    assert len(data) == overhead_bytes(len(segs)) + sum(len(s.payload) for s in segs)
    assert unpack(data) == (header, segs)
