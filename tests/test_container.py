"""Tests of the .wrp container (wrapcodec.container): layout, validation, atomic writes, fuzz."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wrapcodec import container as c
from wrapcodec.container import (
    MAGIC,
    NEURAL_OPTIONS,
    VERSION,
    VERSIONS,
    CodecId,
    OptionCode,
    Segment,
    WrpHeader,
    overhead_bytes,
    pack,
    read_wrp,
    segment_bitdepth,
    unpack,
    write_wrp,
)
from wrapcodec.errors import ContainerError

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "format_v1_example.wrp"
FIXTURE_V2 = DATA / "format_v2_example.wrp"

# The stored fixtures are exactly pack(EXAMPLE_HEADER, EXAMPLE_SEGMENTS) (format version 1) and
# pack(EXAMPLE_HEADER_V2, EXAMPLE_SEGMENTS_V2) (format version 2). If a fixture test fails, the
# on-disk layout changed: bump VERSION instead of regenerating the file.
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
    version=1,  # the v1 fixture; most byte-offset tests below run on it
)
EXAMPLE_SEGMENTS = [
    Segment(OptionCode.POST_1_2, 0, 3, 240, 135, b"\x00\x00\x01abc"),
    Segment(OptionCode.DIRECT, 3, 2, 480, 270, b"\x00\x00\x01de"),
]
EXAMPLE_HEADER_V2 = WrpHeader(
    codec_id=CodecId.X265,
    model_bank_id=b"MB-00002",
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
    version=2,
)
EXAMPLE_SEGMENTS_V2 = [
    Segment(OptionCode.WRAP_1_2, 0, 3, 240, 135, b"\x00\x00\x01abc", b"\x01\x02xyz"),
    Segment(OptionCode.DIRECT, 3, 2, 480, 270, b"\x00\x00\x01de"),
]

HEADER_SIZE = 42  # hand-computed: 4+1+1+2 + 1+1+1+1 + 8 + 2+2 + 4+4 + 2+2 + 4 + 2
SEGMENT_SIZE = 17  # version 1: 1 + 4 + 4 + 2 + 2 + 4
SEGMENT_SIZE_V2 = 21  # version 2: 1 + 4 + 4 + 2 + 2 + 4 (update_length) + 4
SEGMENT_SIZE_V4 = 22  # version 4: 1 + 4 + 4 + 2 + 2 + 1 (bottleneck_bitdepth) + 4 + 4


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


def _example_v2() -> bytearray:
    return bytearray(pack(EXAMPLE_HEADER_V2, EXAMPLE_SEGMENTS_V2))


def _example_v4() -> bytearray:
    return bytearray(pack(DEPTH_HEADER, DEPTH_SEGMENTS))


def _read_back(header: WrpHeader, segments: list[Segment]) -> list[Segment]:
    """``segments`` as unpack returns them: version 4 states every segment's bit depth,
    versions 1-3 none."""
    return [
        Segment(
            **{
                **s.__dict__,
                "bottleneck_bitdepth": segment_bitdepth(header, s) if header.version == 4 else None,
            }
        )
        for s in segments
    ]


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
    assert c.SEGMENT.size == c.SEGMENT_V1.size == c.SEGMENT_STRUCTS[1].size == SEGMENT_SIZE
    assert c.SEGMENT_V2.size == c.SEGMENT_STRUCTS[2].size == SEGMENT_SIZE_V2
    assert c.SEGMENT_STRUCTS[3].size == SEGMENT_SIZE_V2
    assert c.SEGMENT_V4.size == c.SEGMENT_STRUCTS[4].size == SEGMENT_SIZE_V4
    assert overhead_bytes(1, version=1) == HEADER_SIZE + SEGMENT_SIZE + 4 == 63
    assert overhead_bytes(1, version=2) == HEADER_SIZE + SEGMENT_SIZE_V2 + 4 == 67
    assert overhead_bytes(1, version=4) == HEADER_SIZE + SEGMENT_SIZE_V4 + 4 == 68
    assert overhead_bytes(1) == 67  # the default is the version new files are written in
    assert overhead_bytes(3, version=1) == 42 + 17 * 3 + 4
    assert overhead_bytes(3) == overhead_bytes(3, version=3) == 42 + 21 * 3 + 4
    assert overhead_bytes(3, version=4) == 42 + 22 * 3 + 4
    for version in VERSIONS:
        for n in (1, 2, 3, 7):
            segs = _segments([1] * n)
            data = pack(_header(frame_count=n, version=version), segs)
            assert overhead_bytes(n, version=version) == len(data) - sum(
                len(s.payload) for s in segs
            )


@pytest.mark.parametrize("version", [0, 5, 255, True])
def test_overhead_bytes_rejects_unknown_version(version: int) -> None:
    with pytest.raises(ContainerError):
        overhead_bytes(1, version=version)


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


def test_stored_bytes_match_v2_fixture() -> None:
    data = pack(EXAMPLE_HEADER_V2, EXAMPLE_SEGMENTS_V2)
    assert data == FIXTURE_V2.read_bytes()
    # header 42 + 2 records of 21 + update 5 + payload 6 + payload 5 + CRC 4
    assert len(data) == HEADER_SIZE + 2 * SEGMENT_SIZE_V2 + 5 + 6 + 5 + 4 == 104
    assert data[0:4] == b"WRPC"
    assert data[4] == 2  # version
    assert data[5] == 0  # flags
    assert data[6:8] == (42).to_bytes(2, "little")  # header_size: unchanged in version 2
    assert data[8] == 2  # codec_id x265
    assert data[12:20] == b"MB-00002"
    assert data[36:40] == bytes([5, 0, 0, 0])  # frame_count
    assert data[40:42] == bytes([2, 0])  # segment_count
    # segment 0 at 42: option 6 (WRAP_1_2) in the high nibble, update 5 bytes, payload 6
    assert data[42] == 0x60
    assert data[43:47] == bytes(4)  # first_frame 0
    assert data[47:51] == bytes([3, 0, 0, 0])
    assert data[51:55] == bytes([240, 0, 135, 0])
    assert data[55:59] == bytes([5, 0, 0, 0])  # update_length
    assert data[59:63] == bytes([6, 0, 0, 0])  # payload_length
    # segment 1 at 63 = 42 + 21: direct, no update, payload 5
    assert data[63] == 0x00
    assert data[64:68] == bytes([3, 0, 0, 0])
    assert data[68:72] == bytes([2, 0, 0, 0])
    assert data[72:76] == bytes([0xE0, 0x01, 0x0E, 0x01])  # 480, 270
    assert data[76:80] == bytes(4)  # update_length 0
    assert data[80:84] == bytes([5, 0, 0, 0])
    # data area at 84 = 42 + 2 * 21: update 0, payload 0, (empty update 1), payload 1
    assert data[84:89] == b"\x01\x02xyz"
    assert data[89:95] == b"\x00\x00\x01abc"
    assert data[95:100] == b"\x00\x00\x01de"
    assert data[100:104] == zlib.crc32(data[:100]).to_bytes(4, "little")
    assert data[100:104] == bytes.fromhex("9a81254e")
    assert unpack(FIXTURE_V2.read_bytes()) == (EXAMPLE_HEADER_V2, EXAMPLE_SEGMENTS_V2)


def test_v1_file_still_reads_and_repacks_as_v1() -> None:
    raw = FIXTURE.read_bytes()
    header, segments = unpack(raw)
    assert header.version == 1
    assert all(s.update == b"" for s in segments)
    assert pack(header, segments) == raw
    # the same content written as version 2 is the v2 layout, 4 bytes more per segment
    v2 = pack(WrpHeader(**{**header.__dict__, "version": 2}), segments)
    assert v2[4] == 2 and len(v2) == len(raw) + 2 * 4
    assert unpack(v2)[1] == segments


def test_header_version_defaults_to_2() -> None:
    fields = {k: v for k, v in EXAMPLE_HEADER.__dict__.items() if k != "version"}
    header = WrpHeader(**fields)
    assert header.version == VERSION == 2
    data = pack(header, EXAMPLE_SEGMENTS)
    assert data[4] == 2
    assert Segment(0, 0, 1, 8, 8, b"").update == b""


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
    assert (
        c.SEGMENT_OFFSETS
        == c.SEGMENT_OFFSETS_V1
        == {
            "option": 0,
            "first_frame": 1,
            "frame_count": 5,
            "bottleneck_width": 9,
            "bottleneck_height": 11,
            "payload_length": 13,
        }
    )
    assert (
        c.SEGMENT_OFFSETS_V2
        == c.SEGMENT_OFFSETS_BY_VERSION[2]
        == {
            "option": 0,
            "first_frame": 1,
            "frame_count": 5,
            "bottleneck_width": 9,
            "bottleneck_height": 11,
            "update_length": 13,
            "payload_length": 17,
        }
    )
    assert c.SEGMENT_OFFSETS_BY_VERSION[3] == c.SEGMENT_OFFSETS_V2
    assert (
        c.SEGMENT_OFFSETS_V4
        == c.SEGMENT_OFFSETS_BY_VERSION[4]
        == {
            "option": 0,
            "first_frame": 1,
            "frame_count": 5,
            "bottleneck_width": 9,
            "bottleneck_height": 11,
            "bottleneck_bitdepth": 13,
            "update_length": 14,
            "payload_length": 18,
        }
    )


def test_enums_are_fixed() -> None:
    assert MAGIC == b"WRPC" and VERSION == 2 and VERSIONS == (1, 2, 3, 4)
    assert sorted(NEURAL_OPTIONS) == list(range(1, 9))
    assert OptionCode.POST_1_1 in NEURAL_OPTIONS and OptionCode.WRAP_1_4 in NEURAL_OPTIONS
    assert [(m.name, m.value) for m in CodecId] == [
        ("X264", 1),
        ("X265", 2),
        ("VVENC", 3),
        ("SVTAV1", 4),
        ("AOM", 5),
    ]
    assert [m.value for m in OptionCode] == list(range(16))
    assert OptionCode.WRAP_2_3 == 7 and OptionCode.BILINEAR_1_4 == 14
    assert OptionCode.RESERVED == 15


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3, 4])
@pytest.mark.parametrize("counts", [[5], [2, 1, 2]])
def test_round_trip(counts: list[int], version: int) -> None:
    header = _header(frame_count=sum(counts), model_bank_id=bytes(8), version=version)
    segs = _segments(counts, OptionCode.LANCZOS_2_3)
    header2, segs2 = unpack(pack(header, segs))
    assert header2 == header
    assert segs2 == _read_back(header, segs)
    assert pack(header2, segs2) == pack(header, segs)
    assert all(isinstance(s.payload, bytes) for s in segs2)


@pytest.mark.parametrize("codec", [1, 2, 3, 4, 5, 128, 200, 255])
def test_codec_ids_accepted(codec: int) -> None:
    version = 2 if codec in (4, 5) else 1  # the AV1 ids exist from version 2 on
    header, _ = unpack(pack(_header(codec_id=codec, version=version), EXAMPLE_SEGMENTS))
    assert header.codec_id == codec


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_unknown_aspect_and_all_options_round_trip(version: int) -> None:
    segs = [Segment(op, op, 1, 8, 8, b"") for op in range(15)]
    header = _header(aspect_num=0, aspect_den=0, frame_count=15, bitdepth=10, version=version)
    assert unpack(pack(header, segs)) == (header, _read_back(header, segs))


def test_round_trip_with_updates() -> None:
    # every neural option with an update, every other option without one
    segs = [
        Segment(
            op, op, 1, 8, 8, bytes([op]) * op, bytes([0x80 | op]) * (op if op in range(1, 9) else 0)
        )
        for op in range(15)
    ]
    header = _header(frame_count=15, version=2)
    data = pack(header, segs)
    assert len(data) == overhead_bytes(15) + sum(len(s.payload) + len(s.update) for s in segs)
    header2, segs2 = unpack(data)
    assert (header2, segs2) == (header, segs)
    assert all(isinstance(s.update, bytes) and isinstance(s.payload, bytes) for s in segs2)
    # bytearray updates are accepted and come back as bytes
    ba = [Segment(OptionCode.POST_1_1, 0, 5, 8, 8, bytearray(b"p"), bytearray(b"u"))]  # type: ignore[arg-type]
    _, back = unpack(pack(_header(version=2), ba))
    assert back == [Segment(OptionCode.POST_1_1, 0, 5, 8, 8, b"p", b"u")]
    assert isinstance(back[0].update, bytes)


def test_unpack_accepts_bytearray_and_memoryview() -> None:
    data = _example()
    assert unpack(data) == unpack(memoryview(bytes(data))) == (EXAMPLE_HEADER, EXAMPLE_SEGMENTS)
    data = _example_v2()
    expected = (EXAMPLE_HEADER_V2, EXAMPLE_SEGMENTS_V2)
    assert unpack(data) == unpack(memoryview(bytes(data))) == expected
    data = _example_v4()
    expected = (DEPTH_HEADER, DEPTH_SEGMENTS)
    assert unpack(data) == unpack(memoryview(bytes(data))) == expected


# --- errors: unpack ---------------------------------------------------------------------------


def test_wrong_magic() -> None:
    data = _example()
    data[0:4] = b"RIFF"
    _raises(data, "not a .wrp file (bad magic)")
    _raises(b"hello", "bad magic")


@pytest.mark.parametrize("version", [0, 5, 255])
def test_unknown_version(version: int) -> None:
    for data in (_example(), _example_v2(), _example_v4()):
        data[4] = version
        _raises(data, f"unsupported .wrp version {version} (this wrapcodec reads versions 1 to 4)")
        _raises(_recrc(data), f"unsupported .wrp version {version}")
    _raises(b"WRPC" + bytes([version]), f"unsupported .wrp version {version}")


def test_known_versions_on_a_short_prefix_read_as_truncated() -> None:
    _raises(b"WRPC\x01", "truncated header")
    _raises(b"WRPC\x02", "truncated header")
    _raises(b"WRPC\x04", "truncated header")


@pytest.mark.parametrize(
    ("version", "fragment"),
    [
        (5, "unsupported .wrp version 5 (this wrapcodec writes versions 1 to 4)"),
        (0, "unsupported .wrp version 0"),
        (256, "version 256 out of range 0..255"),
        (True, "version must be an int, got bool"),
        ("2", "version must be an int, got str"),
    ],
)
def test_pack_rejects_unknown_version(version: object, fragment: str) -> None:
    with pytest.raises(ContainerError) as info:
        pack(_header(version=version), EXAMPLE_SEGMENTS)
    assert fragment in str(info.value)


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


def test_truncated_update_and_payload_v2() -> None:
    data = _example_v2()
    _raises(data[:86], "truncated update: segment 0 needs 5 bytes at offset 84, file has 86")
    _raises(data[:84], "truncated update: segment 0 needs 5 bytes at offset 84, file has 84")
    _raises(data[:93], "truncated payload: segment 0 needs 6 bytes at offset 89, file has 93")
    _raises(data[:98], "truncated payload: segment 1 needs 5 bytes at offset 95, file has 98")
    _raises(data[:-2], "truncated file: CRC32 expected at offset 100")
    # an update_length pointing past the end reads as truncated, not as a CRC mismatch
    data[55:59] = (0xFFFFFFFF).to_bytes(4, "little")
    _raises(data, "truncated update: segment 0 needs 4294967295 bytes at offset 84")
    _raises(_recrc(data), "truncated update: segment 0 needs 4294967295 bytes")


@pytest.mark.parametrize("make", [_example, _example_v2, _example_v4])
def test_every_truncation_reports_truncation_not_crc(make: Callable[[], bytearray]) -> None:
    data = bytes(make())
    for n in range(1, len(data)):
        with pytest.raises(ContainerError, match="truncated"):
            unpack(data[:n])


def test_crc_mismatch() -> None:
    data = _example()
    data[78] ^= 0x01  # a payload byte
    _raises(data, "CRC mismatch: stored 0x")
    _raises(data, "the file is corrupted")


def test_crc_mismatch_v2_covers_updates() -> None:
    data = _example_v2()
    data[85] ^= 0x01  # an update byte
    _raises(data, "CRC mismatch")
    data = _example_v2()
    data[55] = 4  # update_length 5 -> 4: the byte moves to the payload, the CRC no longer fits
    data[59] = 7
    _raises(data, "CRC mismatch")


def test_trailing_garbage() -> None:
    _raises(bytes(_example()) + b"\x00", "trailing garbage: 1 bytes after the CRC32 at offset 91")
    _raises(bytes(_example_v2()) + b"ab", "trailing garbage: 2 bytes after the CRC32 at offset 104")


@pytest.mark.parametrize("option", [0, 9, 11, 12, 14])
def test_update_on_non_neural_option_rejected(option: int) -> None:
    seg = Segment(option, 0, 5, 8, 8, b"payload", b"\x01\x02abc")
    with pytest.raises(ContainerError) as info:
        pack(_header(version=2), [seg])
    msg = str(info.value)
    assert f"segment 0 has a 5-byte update, but option code {option}" in msg
    assert OptionCode(option).name in msg and "only option codes 1-8 carry updates" in msg
    assert "offset" not in msg
    # the same record read from a file names the offset of update_length (42 + 13)
    data = _example_v2()
    data[42] = option << 4
    _raises(_recrc(data), f"segment 0 has a 5-byte update, but option code {option}")
    _raises(_recrc(data), "carry updates at offset 55")
    # segment 1 (direct, at 63) with an update_length of 1 taken from its payload
    data = _example_v2()
    data[76] = 1
    data[80] = 4
    _raises(_recrc(data), "segment 1 has a 1-byte update, but option code 0 (DIRECT)")
    _raises(_recrc(data), "at offset 76")


@pytest.mark.parametrize("option", range(1, 9))
def test_update_on_neural_option_accepted(option: int) -> None:
    segs = [Segment(option, 0, 5, 8, 8, b"p", b"\x01")]
    header = _header(version=2)
    assert unpack(pack(header, segs)) == (header, segs)
    data = _example_v2()
    data[42] = option << 4
    assert unpack(_recrc(data))[1][0].option == option


def test_v1_pack_with_update_refused() -> None:
    segs = [Segment(OptionCode.WRAP_1_2, 0, 5, 8, 8, b"p", b"\x01\x02abc")]
    with pytest.raises(ContainerError, match="version 1 files carry no updates") as info:
        pack(_header(version=1), segs)
    assert "segment 0 has a 5-byte update" in str(info.value)
    assert unpack(pack(_header(version=2), segs))[1] == segs
    # an empty update is no update: fine in version 1
    ok = [Segment(OptionCode.WRAP_1_2, 0, 5, 8, 8, b"p", b"")]
    assert unpack(pack(_header(version=1), ok))[1] == ok


class _Huge(bytes):
    """bytes that claim to be 4 GiB long, to reach the size check without allocating it."""

    def __len__(self) -> int:
        return 1 << 32


def test_pack_rejects_bad_update() -> None:
    bad = [Segment(OptionCode.POST_1_1, 0, 5, 8, 8, b"p", "text")]  # type: ignore[arg-type]
    with pytest.raises(ContainerError, match="segment 0 update must be bytes, got str"):
        pack(_header(version=2), bad)
    none = [Segment(OptionCode.DIRECT, 0, 5, 8, 8, b"p", None)]  # type: ignore[arg-type]
    with pytest.raises(ContainerError, match="segment 0 update must be bytes, got NoneType"):
        pack(_header(version=1), none)
    big = [Segment(OptionCode.POST_1_1, 0, 5, 8, 8, b"p", _Huge(b"u"))]
    with pytest.raises(ContainerError, match="segment 0 update of 4294967296 bytes exceeds 4 GiB"):
        pack(_header(version=2), big)


def test_v2_header_and_record_checks_name_v2_offsets() -> None:
    data = _example_v2()
    data[6] = 40
    _raises(_recrc(data), "header_size 40 at offset 6 does not match the version 2 header size 42")
    data = _example_v2()
    data[63] = 0x02  # segment 1's option byte is at 42 + 21; bit 0 is the inherit flag
    _raises(_recrc(data), "segment 1: reserved bits 0x2 of the option byte's low nibble")
    _raises(_recrc(data), "at offset 63")
    data = _example_v2()
    data[64] = 4  # segment 1 first_frame 3 -> 4
    _raises(_recrc(data), "segment 1 starts at frame 4, expected 3 at offset 64")
    data = _example_v2()
    data[42] = 0xF0
    _raises(_recrc(data), "reserved option code 15 in segment 0 at offset 42")
    _raises(_example_v2()[:70], "truncated segment table: 2 segments need 42 bytes at offset 42")


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
    _raises(_recrc(data), "segment 1: reserved bits 0x1 of the option byte's low nibble")


def test_unknown_builtin_codec_id() -> None:
    data = _example()
    data[8] = 6
    _raises(_recrc(data), "unknown built-in codec id 6 at offset 8")
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
    _raises(_recrc(data), "reserved flags 0x80 at offset 5 (version 1: all 0)")
    data[5] = 0x01  # a colour range, which version 1 does not define
    _raises(_recrc(data), "reserved flags 0x01 at offset 5 (version 1: all 0)")


@pytest.mark.parametrize(("color_range", "code"), [(None, 0), ("LIMITED", 1), ("FULL", 2)])
def test_colour_range_in_version_2_flags(color_range: str | None, code: int) -> None:
    header = WrpHeader(**{**EXAMPLE_HEADER_V2.__dict__, "color_range": color_range})
    data = pack(header, EXAMPLE_SEGMENTS_V2)
    assert data[5] == code
    assert unpack(data) == (header, EXAMPLE_SEGMENTS_V2)


def test_colour_range_checks() -> None:
    with pytest.raises(ContainerError, match="version 1 files carry no colour range"):
        pack(WrpHeader(**{**EXAMPLE_HEADER.__dict__, "color_range": "FULL"}), EXAMPLE_SEGMENTS)
    with pytest.raises(ContainerError, match="is not FULL, LIMITED or None"):
        pack(WrpHeader(**{**EXAMPLE_HEADER_V2.__dict__, "color_range": "PC"}), EXAMPLE_SEGMENTS_V2)
    for flags in (0x03, 0x08, 0x80):
        data = _example_v2()
        data[5] = flags
        _raises(_recrc(data), f"reserved flags 0x{flags:02x} at offset 5 (version 2: bits 1-0")


def test_integer_arithmetic_flag() -> None:
    """Header flags bit 2: the post-processors' integer arithmetic (version 2 only)."""
    integer = WrpHeader(**{**EXAMPLE_HEADER_V2.__dict__, "integer": True, "color_range": "FULL"})
    data = pack(integer, EXAMPLE_SEGMENTS_V2)
    assert data[5] == 0x04 | 0x02
    assert unpack(data)[0] == integer
    assert unpack(bytes(_example_v2()))[0].integer is False
    with pytest.raises(ContainerError, match="version 1 files carry no arithmetic flag"):
        pack(WrpHeader(**{**EXAMPLE_HEADER.__dict__, "integer": True}), EXAMPLE_SEGMENTS)
    v1 = bytearray(_example())
    v1[5] = 0x04
    _raises(_recrc(v1), "reserved flags 0x04 at offset 5 (version 1: all 0)")


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
@given(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=512))
def test_fuzz_any_bytes_after_magic(version: int, tail: bytes) -> None:
    _parses_or_container_error(b"WRPC" + bytes([version]) + tail)


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


def _example_of(version: int) -> bytes:
    """The example file of ``version`` 1, 2 or 4, packed from the constants above."""
    return bytes({1: _example, 2: _example_v2, 4: _example_v4}[version]())


@FUZZ
@given(st.sampled_from([1, 2, 4]), st.data())
def test_fuzz_mutated_valid_file(version: int, data: st.DataObject) -> None:
    _parses_or_container_error(_mutate(_example_of(version), data))


@FUZZ
@given(st.sampled_from([1, 2, 4]), st.data())
def test_fuzz_mutated_header_with_fixed_crc(version: int, data: st.DataObject) -> None:
    # mutate only the header/table and repair the CRC, so the field checks are reached
    base = _example_of(version)
    cut = HEADER_SIZE + base[40] * c.SEGMENT_STRUCTS[version].size
    head = _mutate(base[:cut], data)
    mutated = head + base[cut:]
    _parses_or_container_error(_recrc(mutated) if len(mutated) >= 4 else mutated)


_headers = st.builds(
    WrpHeader,
    codec_id=st.sampled_from([1, 2, 3, 128, 255]),  # AV1 ids: test_av1_codec_ids_need_version_2
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
    version=st.sampled_from(VERSIONS),
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
            st.binary(max_size=16),
            st.sampled_from([None, 8, 10]),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_fuzz_valid_round_trip(
    header: WrpHeader, rows: list[tuple[int, int, int, int, bytes, bytes, int | None]]
) -> None:
    segs: list[Segment] = []
    refused = False  # would the drawn updates have been refused?
    first = 0
    for k, (option, count, bw, bh, payload, update, depth) in enumerate(rows):
        allowed = header.version >= 2 and option in NEURAL_OPTIONS
        refused = refused or (bool(update) and not allowed)
        own = header.version == 4 and k > 0  # may this segment's depth differ from the header's?
        bd = depth if own or depth is None else header.bottleneck_bitdepth
        kept = update if allowed else b""
        segs.append(Segment(option, first, count, bw, bh, payload, kept, bottleneck_bitdepth=bd))
        first += count
    header = WrpHeader(**{**header.__dict__, "frame_count": first})
    data = pack(header, segs)
    assert data[4] == header.version
    assert len(data) == overhead_bytes(len(segs), version=header.version) + sum(
        len(s.payload) + len(s.update) for s in segs
    )
    assert unpack(data) == (header, _read_back(header, segs))
    assert pack(*unpack(data)) == data
    if refused:
        raw = [
            Segment(
                s.option,
                s.first_frame,
                s.frame_count,
                s.bottleneck_width,
                s.bottleneck_height,
                s.payload,
                row[5],
            )
            for s, row in zip(segs, rows, strict=True)
        ]
        with pytest.raises(ContainerError, match="update"):
            pack(header, raw)


# --- inheritance (version 2) ------------------------------------------------------------------

FIXTURE_INHERIT = DATA / "format_v2_inherit_example.wrp"
INHERIT_HEADER = WrpHeader(**{**EXAMPLE_HEADER_V2.__dict__, "frame_count": 6})
INHERIT_SEGMENTS = [
    Segment(OptionCode.POST_1_2, 0, 2, 240, 135, b"\x00\x00\x01a", b"\x01\x02u"),
    Segment(OptionCode.POST_1_2, 2, 2, 240, 135, b"\x00\x00\x01b", inherit=True),
    Segment(OptionCode.POST_1_2, 4, 2, 240, 135, b"\x00\x00\x01c", inherit=True),
]


def test_stored_bytes_match_inherit_fixture() -> None:
    data = pack(INHERIT_HEADER, INHERIT_SEGMENTS)
    assert data == FIXTURE_INHERIT.read_bytes()
    assert len(data) == HEADER_SIZE + 3 * SEGMENT_SIZE_V2 + 3 + 3 * 4 + 4 == 124
    # option bytes: code 2 in the high nibble, the inherit flag in bit 0
    assert [data[HEADER_SIZE + k * SEGMENT_SIZE_V2] for k in range(3)] == [0x20, 0x21, 0x21]
    assert unpack(data) == (INHERIT_HEADER, INHERIT_SEGMENTS)


def _inherit_case(segments: list[Segment], message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        pack(INHERIT_HEADER, segments)


def test_inheritance_needs_a_previous_update_of_the_same_option() -> None:
    s0, s1, s2 = INHERIT_SEGMENTS
    no_update = Segment(**{**s0.__dict__, "update": b""})
    _inherit_case([no_update, s1, s2], "segment 1 inherits an update, but segment 0 has none")
    first = Segment(**{**s0.__dict__, "update": b"", "inherit": True})
    _inherit_case([first, s1, s2], "segment 0 inherits an update but has no previous segment")
    other = Segment(**{**s1.__dict__, "option": OptionCode.WRAP_1_2})
    _inherit_case([s0, other, s2], "option code 2 is not its own 6")
    both = Segment(**{**s1.__dict__, "update": b"\x01\x02v"})
    _inherit_case([s0, both, s2], "segment 1 both inherits an update and carries one")
    direct = Segment(OptionCode.DIRECT, 2, 4, 480, 270, b"d", inherit=True)
    _inherit_case([s0, direct], "option code 0 has no neural post-processor")
    v1 = WrpHeader(**{**INHERIT_HEADER.__dict__, "version": 1})
    with pytest.raises(ContainerError, match="version 1 files carry"):
        pack(v1, [no_update, Segment(**{**s1.__dict__, "update": b""}), s2])


def test_inheritance_is_checked_when_reading() -> None:
    data = bytearray(FIXTURE_INHERIT.read_bytes())
    data[HEADER_SIZE] = 0x21  # segment 0 claims to inherit (and carries an update)
    _raises(_recrc(data), "segment 0 both inherits an update and carries one at offset 42")
    data = bytearray(FIXTURE_INHERIT.read_bytes())
    data[HEADER_SIZE + SEGMENT_SIZE_V2] = 0x61  # segment 1: option 6 inheriting from option 2
    _raises(_recrc(data), "option code 2 is not its own 6 at offset 63")


def test_av1_codec_ids_need_version_2() -> None:
    for codec in (CodecId.SVTAV1, CodecId.AOM):
        v2 = WrpHeader(**{**EXAMPLE_HEADER_V2.__dict__, "codec_id": codec})
        assert unpack(pack(v2, EXAMPLE_SEGMENTS_V2))[0] == v2
        v1 = WrpHeader(**{**EXAMPLE_HEADER.__dict__, "codec_id": codec})
        with pytest.raises(ContainerError, match="exists from version 2 on"):
            pack(v1, EXAMPLE_SEGMENTS)
        data = _example()
        data[8] = codec
        _raises(_recrc(data), f"codec id {codec} (AV1) exists from version 2 on")


# --- version 3: the prior ---------------------------------------------------------------------

FIXTURE_V3 = DATA / "format_v3_example.wrp"
PRIOR_HEADER = WrpHeader(**{**INHERIT_HEADER.__dict__, "version": 3})
PRIOR_SEGMENTS = [
    Segment(OptionCode.POST_1_1, 0, 2, 480, 270, b"\x00\x00\x01a", b"\x01\x02u", prior=1),
    Segment(OptionCode.POST_1_1, 2, 2, 480, 270, b"\x00\x00\x01b", inherit=True, prior=1),
    Segment(OptionCode.DIRECT, 4, 2, 480, 270, b"\x00\x00\x01c"),
]


def test_stored_bytes_match_v3_fixture() -> None:
    data = pack(PRIOR_HEADER, PRIOR_SEGMENTS)
    assert data == FIXTURE_V3.read_bytes()
    assert len(data) == HEADER_SIZE + 3 * SEGMENT_SIZE_V2 + 3 + 3 * 4 + 4 == 124
    assert data[4] == 3
    # option bytes: code in the high nibble, prior in bits 3-1, inherit in bit 0
    assert [data[HEADER_SIZE + k * SEGMENT_SIZE_V2] for k in range(3)] == [0x12, 0x13, 0x00]
    assert unpack(data) == (PRIOR_HEADER, PRIOR_SEGMENTS)


@pytest.mark.parametrize("prior", range(8))
def test_every_prior_round_trips(prior: int) -> None:
    segs = [
        Segment(op, op, 1, 8, 8, b"p", prior=prior if op in NEURAL_OPTIONS else 0)
        for op in range(15)
    ]
    header = _header(frame_count=15, version=3)
    assert unpack(pack(header, segs)) == (header, segs)


def test_a_prior_needs_version_3_and_a_neural_option() -> None:
    s0, s1, s2 = PRIOR_SEGMENTS
    for version in (1, 2):
        header = WrpHeader(**{**PRIOR_HEADER.__dict__, "version": version})
        plain = [Segment(**{**s.__dict__, "update": b"", "inherit": False}) for s in (s0, s1, s2)]
        with pytest.raises(ContainerError, match="only versions 3 and 4 say one"):
            pack(header, plain)
    with pytest.raises(ContainerError, match="option code 0 has no neural post-processor"):
        pack(PRIOR_HEADER, [s0, s1, Segment(**{**s2.__dict__, "prior": 2})])
    for bad in (8, -1):
        with pytest.raises(ContainerError, match="segment 0 prior"):
            pack(PRIOR_HEADER, [Segment(**{**s0.__dict__, "prior": bad}), s1, s2])
    with pytest.raises(ContainerError, match="whose prior 1 is not its own 2"):
        pack(PRIOR_HEADER, [s0, Segment(**{**s1.__dict__, "prior": 2}), s2])


def test_priors_are_checked_when_reading() -> None:
    data = bytearray(FIXTURE_V3.read_bytes())
    data[HEADER_SIZE + 2 * SEGMENT_SIZE_V2] = 0x04  # direct with prior 2
    _raises(_recrc(data), "segment 2 uses prior 2, but option code 0 has no neural")
    data = bytearray(FIXTURE_V3.read_bytes())
    data[HEADER_SIZE + SEGMENT_SIZE_V2] = 0x15  # segment 1 inherits with prior 2
    _raises(_recrc(data), "whose prior 1 is not its own 2 at offset 63")
    data = bytearray(FIXTURE_V3.read_bytes())
    data[4] = 2  # the same bytes read as version 2: the prior bits are reserved there
    _raises(_recrc(data), "reserved bits 0x2 of the option byte's low nibble")


@FUZZ
@given(st.data())
def test_fuzz_mutated_v3_file(data: st.DataObject) -> None:
    _parses_or_container_error(_mutate(FIXTURE_V3.read_bytes(), data))


# --- version 4: a bottleneck bit depth per segment --------------------------------------------

FIXTURE_V4 = DATA / "format_v4_example.wrp"
DEPTH_HEADER = WrpHeader(**{**PRIOR_HEADER.__dict__, "version": 4, "bottleneck_bitdepth": 10})
DEPTH_SEGMENTS = [
    Segment(OptionCode.DIRECT, 0, 2, 480, 270, b"\x00\x00\x01de", bottleneck_bitdepth=10),
    Segment(
        OptionCode.POST_1_1,
        2,
        2,
        480,
        270,
        b"\x00\x00\x01a",
        b"\x01\x02u",
        prior=1,
        bottleneck_bitdepth=8,
    ),
    Segment(
        OptionCode.POST_1_1,
        4,
        2,
        480,
        270,
        b"\x00\x00\x01b",
        inherit=True,
        prior=1,
        bottleneck_bitdepth=8,
    ),
]
# where segment k's bottleneck_bitdepth byte lies in the v4 fixture: 42 + 22·k + 13
DEPTH_AT = [HEADER_SIZE + k * SEGMENT_SIZE_V4 + 13 for k in range(3)]


def test_stored_bytes_match_v4_fixture() -> None:
    data = pack(DEPTH_HEADER, DEPTH_SEGMENTS)
    assert data == FIXTURE_V4.read_bytes()
    # header 42 + 3 records of 22 + payload 5 + update 3 + payload 4 + payload 4 + CRC 4
    assert len(data) == HEADER_SIZE + 3 * SEGMENT_SIZE_V4 + 5 + 3 + 4 + 4 + 4 == 128
    assert data[4] == 4  # version
    assert data[6:8] == (42).to_bytes(2, "little")  # header_size: unchanged in version 4
    assert data[8] == 2  # codec_id x265
    assert data[9] == 8 and data[11] == 10  # bitdepth; bottleneck_bitdepth, segment 0's
    assert data[36:40] == bytes([6, 0, 0, 0])  # frame_count
    assert data[40:42] == bytes([3, 0])  # segment_count
    # option bytes: code in the high nibble, prior in bits 3-1, inherit in bit 0 (as in v3)
    assert [data[HEADER_SIZE + k * SEGMENT_SIZE_V4] for k in range(3)] == [0x00, 0x12, 0x13]
    assert [data[at] for at in DEPTH_AT] == [10, 8, 8]
    # segment 1 at 64 = 42 + 22: first_frame 2, 480x270, depth 8, update 3, payload 4
    assert data[64:86] == bytes.fromhex("12 02000000 02000000 e001 0e01 08 03000000 04000000")
    # data area at 108 = 42 + 3 * 22: payload 0, update 1, payload 1, payload 2
    assert data[108:124] == b"\x00\x00\x01de" + b"\x01\x02u" + b"\x00\x00\x01a\x00\x00\x01b"
    assert data[124:128] == zlib.crc32(data[:124]).to_bytes(4, "little")
    assert data[124:128] == bytes.fromhex("10f89718")
    assert unpack(data) == (DEPTH_HEADER, DEPTH_SEGMENTS)
    assert [segment_bitdepth(DEPTH_HEADER, s) for s in DEPTH_SEGMENTS] == [10, 8, 8]


@pytest.mark.parametrize("first", [8, 10])
@pytest.mark.parametrize("second", [8, 10])
@pytest.mark.parametrize("own", [False, True])
def test_v4_round_trip(first: int, second: int, own: bool) -> None:
    # segment 0's depth is the header's, said again (own) or left None; segment 1's any
    header = _header(frame_count=5, version=4, bottleneck_bitdepth=first)
    depth0 = first if own else None
    segs = [
        Segment(
            OptionCode.WRAP_1_2, 0, 3, 240, 135, b"p", b"\x01\x02u", bottleneck_bitdepth=depth0
        ),
        Segment(
            OptionCode.WRAP_1_2, 3, 2, 480, 270, b"q", inherit=True, bottleneck_bitdepth=second
        ),
    ]
    data = pack(header, segs)
    assert data[4] == 4
    assert len(data) == overhead_bytes(2, version=4) + 1 + 3 + 1
    assert [data[at] for at in DEPTH_AT[:2]] == [first, second]
    header2, segs2 = unpack(data)
    assert header2 == header
    assert segs2 == _read_back(header, segs)
    assert [s.bottleneck_bitdepth for s in segs2] == [first, second]
    assert pack(header2, segs2) == data


def test_segment_bitdepth() -> None:
    seg = Segment(OptionCode.DIRECT, 0, 5, 8, 8, b"")
    assert seg.bottleneck_bitdepth is None
    assert segment_bitdepth(EXAMPLE_HEADER, seg) == 8
    assert segment_bitdepth(DEPTH_HEADER, seg) == 10
    own = Segment(**{**seg.__dict__, "bottleneck_bitdepth": 8})
    assert segment_bitdepth(DEPTH_HEADER, own) == 8


@pytest.mark.parametrize(
    ("depth", "fragment"),
    [
        (9, "segment 1 bottleneck_bitdepth 9 is not 8 or 10"),
        (12, "segment 1 bottleneck_bitdepth 12 is not 8 or 10"),
        (256, "segment 1 bottleneck_bitdepth 256 out of range 0..255"),
        ("8", "segment 1 bottleneck_bitdepth must be an int, got str"),
        (True, "segment 1 bottleneck_bitdepth must be an int, got bool"),
    ],
)
def test_pack_rejects_bad_segment_bitdepth(depth: object, fragment: str) -> None:
    s0, s1, s2 = DEPTH_SEGMENTS
    bad = Segment(**{**s1.__dict__, "bottleneck_bitdepth": depth})
    for version in VERSIONS:  # the value is checked before whether the version may say it
        header = WrpHeader(**{**DEPTH_HEADER.__dict__, "version": version})
        with pytest.raises(ContainerError) as info:
            pack(header, [s0, bad, s2])
        assert fragment in str(info.value) and "offset" not in str(info.value)


@pytest.mark.parametrize("k", range(3))
@pytest.mark.parametrize("depth", [0, 9, 16, 255])
def test_bad_segment_bitdepth_is_checked_when_reading(k: int, depth: int) -> None:
    data = _example_v4()
    data[DEPTH_AT[k]] = depth
    _raises(_recrc(data), f"segment {k} bottleneck_bitdepth {depth} is not 8 or 10")
    _raises(_recrc(data), f"is not 8 or 10 at offset {DEPTH_AT[k]}")


def test_header_bitdepth_is_segment_0s() -> None:
    s0, s1, s2 = DEPTH_SEGMENTS
    header8 = WrpHeader(**{**DEPTH_HEADER.__dict__, "bottleneck_bitdepth": 8})
    with pytest.raises(ContainerError, match="header bottleneck_bitdepth 8 is not segment 0's 10"):
        pack(header8, DEPTH_SEGMENTS)
    s0_8 = Segment(**{**s0.__dict__, "bottleneck_bitdepth": 8})
    with pytest.raises(ContainerError, match="header bottleneck_bitdepth 10 is not segment 0's 8"):
        pack(DEPTH_HEADER, [s0_8, s1, s2])
    assert unpack(pack(header8, [s0_8, s1, s2]))[0] == header8
    # segment 0 without a depth of its own takes the header's, and reads back with it
    s0_none = Segment(**{**s0.__dict__, "bottleneck_bitdepth": None})
    assert pack(DEPTH_HEADER, [s0_none, s1, s2]) == FIXTURE_V4.read_bytes()
    # read: either side changed names segment 0's field, at 42 + 13
    data = _example_v4()
    data[11] = 8
    _raises(_recrc(data), "header bottleneck_bitdepth 8 is not segment 0's 10 at offset 55")
    data = _example_v4()
    data[DEPTH_AT[0]] = 8
    _raises(_recrc(data), "header bottleneck_bitdepth 10 is not segment 0's 8 at offset 55")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_own_segment_bitdepth_needs_version_4(version: int) -> None:
    header = _header(frame_count=5, version=version)  # bottleneck_bitdepth 8
    segs = _segments([3, 2])
    ten = [segs[0], Segment(**{**segs[1].__dict__, "bottleneck_bitdepth": 10})]
    with pytest.raises(ContainerError) as info:
        pack(header, ten)
    msg = str(info.value)
    assert "segment 1 bottleneck_bitdepth 10 differs from the header's 8" in msg
    assert "only version 4 files give a segment its own bit depth" in msg
    # the header's depth said again is no depth of its own: the same bytes, read back as None
    eight = [Segment(**{**s.__dict__, "bottleneck_bitdepth": 8}) for s in segs]
    data = pack(header, eight)
    assert data == pack(header, segs)
    assert unpack(data) == (header, segs)
    assert all(s.bottleneck_bitdepth is None for s in unpack(data)[1])
    v4 = WrpHeader(**{**header.__dict__, "version": 4})
    assert unpack(pack(v4, ten))[1] == _read_back(v4, ten)


@pytest.mark.parametrize("fixture", [FIXTURE, FIXTURE_V2, FIXTURE_INHERIT, FIXTURE_V3])
def test_versions_1_to_3_read_no_segment_bitdepth(fixture: Path) -> None:
    raw = fixture.read_bytes()
    header, segments = unpack(raw)
    assert header.version < 4
    assert all(s.bottleneck_bitdepth is None for s in segments)
    assert all(segment_bitdepth(header, s) == header.bottleneck_bitdepth for s in segments)
    assert pack(header, segments) == raw


def test_updates_and_inheritance_span_bitdepths() -> None:
    # the update is to the network, which sees samples in [0, 1] at either depth
    s0, s1, s2 = DEPTH_SEGMENTS
    for depth in (8, 10):
        s2_depth = Segment(**{**s2.__dict__, "bottleneck_bitdepth": 18 - depth})
        segs = [s0, Segment(**{**s1.__dict__, "bottleneck_bitdepth": depth}), s2_depth]
        assert unpack(pack(DEPTH_HEADER, segs)) == (DEPTH_HEADER, segs)


def test_v4_record_checks_name_v4_offsets() -> None:
    data = _example_v4()
    data[DEPTH_AT[0] + 1] = 1  # segment 0 (direct) with a 1-byte update taken from its payload
    data[DEPTH_AT[0] + 5] = 4
    _raises(_recrc(data), "segment 0 has a 1-byte update, but option code 0 (DIRECT)")
    _raises(_recrc(data), "carry updates at offset 56")
    data = _example_v4()
    data[HEADER_SIZE + SEGMENT_SIZE_V4 + 1] = 3  # segment 1 first_frame 2 -> 3
    _raises(_recrc(data), "segment 1 starts at frame 3, expected 2 at offset 65")
    data = _example_v4()
    data[HEADER_SIZE + 2 * SEGMENT_SIZE_V4] = 0x15  # segment 2 inherits with prior 2
    _raises(_recrc(data), "whose prior 1 is not its own 2 at offset 86")
    _raises(_example_v4()[:100], "truncated segment table: 3 segments need 66 bytes at offset 42")
    _raises(_example_v4()[:110], "truncated payload: segment 0 needs 5 bytes at offset 108")
    _raises(bytes(_example_v4()) + b"x", "trailing garbage: 1 bytes after the CRC32 at offset 128")
    data = _example_v4()
    data[4] = 3  # the same bytes read as version 3: segment 0's depth 10 reads as update_length
    _raises(_recrc(data), "segment 0 has a 10-byte update, but option code 0 (DIRECT)")


@FUZZ
@given(st.data())
def test_fuzz_mutated_v4_file(data: st.DataObject) -> None:
    _parses_or_container_error(_mutate(FIXTURE_V4.read_bytes(), data))
