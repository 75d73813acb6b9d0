"""The ``.wrp`` container: one fixed header, a segment table, the payloads and a CRC32.

The byte layout is documented in ``docs/format.md`` and pinned by
``tests/data/format_v1_example.wrp``. All integers are little-endian and every struct is
packed without padding (``<`` format). Layout, version 1::

    HEADER (42 bytes) | SEGMENT (17 bytes) x segment_count | payloads | CRC32 (uint32)

The CRC is ``zlib.crc32`` over every byte before it. ``unpack`` accepts exactly the byte
strings that ``pack`` can produce: anything else raises :class:`ContainerError`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from wrapcodec.errors import ContainerError
from wrapcodec.y4m import MAX_DIMENSION, ChromaTag  # header byte 10 stores the y4m siting tag

MAGIC = b"WRPC"
VERSION = 1


class CodecId(IntEnum):
    """Built-in codec ids (header byte 8). 0 is invalid; 128-255 belong to third-party backends."""

    X264 = 1
    X265 = 2
    VVENC = 3


#: Codec ids from here to 255 are resolved by the decoder's backend registry, not by the container.
THIRD_PARTY_CODEC_MIN = 128


class OptionCode(IntEnum):
    """4-bit wrapper option code stored in the high nibble of a segment's option byte."""

    DIRECT = 0
    POST_1_1 = 1
    POST_1_2 = 2
    POST_2_3 = 3
    POST_1_4 = 4
    WRAP_1_1 = 5
    WRAP_1_2 = 6
    WRAP_2_3 = 7
    WRAP_1_4 = 8
    LANCZOS_1_2 = 9
    LANCZOS_2_3 = 10
    LANCZOS_1_4 = 11
    BILINEAR_1_2 = 12
    BILINEAR_2_3 = 13
    BILINEAR_1_4 = 14
    RESERVED = 15


#: ``model_bank_id`` of files that use no neural model (direct and linear options).
NO_MODEL_BANK = bytes(8)
BITDEPTHS = (8, 10)

# --- struct layouts ---------------------------------------------------------------------------
# (field, struct code) in file order; the Structs and the offset tables below derive from these,
# so the layout is written down exactly once.

HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("magic", "4s"),
    ("version", "B"),
    ("flags", "B"),
    ("header_size", "H"),
    ("codec_id", "B"),
    ("bitdepth", "B"),
    ("chroma", "B"),
    ("bottleneck_bitdepth", "B"),
    ("model_bank_id", "8s"),
    ("width", "H"),
    ("height", "H"),
    ("fps_num", "I"),
    ("fps_den", "I"),
    ("aspect_num", "H"),
    ("aspect_den", "H"),
    ("frame_count", "I"),
    ("segment_count", "H"),
)

SEGMENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("option", "B"),
    ("first_frame", "I"),
    ("frame_count", "I"),
    ("bottleneck_width", "H"),
    ("bottleneck_height", "H"),
    ("payload_length", "I"),
)


def _offsets(fields: tuple[tuple[str, str], ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, (name, _) in enumerate(fields):
        out[name] = struct.calcsize("<" + "".join(code for _, code in fields[:i]))
    return out


HEADER = struct.Struct("<" + "".join(code for _, code in HEADER_FIELDS))
SEGMENT = struct.Struct("<" + "".join(code for _, code in SEGMENT_FIELDS))
CRC = struct.Struct("<I")
HEADER_OFFSETS = _offsets(HEADER_FIELDS)
SEGMENT_OFFSETS = _offsets(SEGMENT_FIELDS)

OPTION_CODE_SHIFT = 4
OPTION_RESERVED_MASK = 0x0F

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class WrpHeader:
    """Stream-level fields of a ``.wrp`` file (magic, version, sizes and counts are implicit)."""

    codec_id: int
    model_bank_id: bytes  # 8 bytes; NO_MODEL_BANK when no neural model is used
    width: int
    height: int
    bitdepth: int
    chroma: int
    bottleneck_bitdepth: int
    fps_num: int
    fps_den: int
    aspect_num: int
    aspect_den: int
    frame_count: int


@dataclass(frozen=True)
class Segment:
    """A run of consecutive frames coded with one option; ``payload`` is the codec bitstream."""

    option: int
    first_frame: int
    frame_count: int
    bottleneck_width: int
    bottleneck_height: int
    payload: bytes


# --- validation (shared by pack and unpack) --------------------------------------------------


def _at(base: int | None, offset: int) -> str:
    """Suffix naming the byte offset of a field, when validating bytes read from a file."""
    return "" if base is None else f" at offset {base + offset}"


def _int_in(name: str, value: object, lo: int, hi: int, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ContainerError(f"{name} must be an int, got {type(value).__name__}{where}")
    if not lo <= value <= hi:
        raise ContainerError(f"{name} {value} out of range {lo}..{hi}{where}")
    return value


def _check_header(h: WrpHeader, segment_count: int, base: int | None) -> None:
    def at(field: str) -> str:
        return _at(base, HEADER_OFFSETS[field])

    codec = _int_in("codec_id", h.codec_id, 0, 255, at("codec_id"))
    if codec == 0:
        raise ContainerError(f"invalid codec id 0{at('codec_id')}")
    if codec < THIRD_PARTY_CODEC_MIN and codec not in {c.value for c in CodecId}:
        raise ContainerError(
            f"unknown built-in codec id {codec}{at('codec_id')} "
            f"(built-in: 1 x264, 2 x265, 3 VVenC; 128-255: third-party backends)"
        )
    if not isinstance(h.model_bank_id, bytes) or len(h.model_bank_id) != 8:
        raise ContainerError(
            f"model_bank_id must be 8 bytes, got {h.model_bank_id!r}{at('model_bank_id')}"
        )
    _int_in("width", h.width, 1, MAX_DIMENSION, at("width"))
    _int_in("height", h.height, 1, MAX_DIMENSION, at("height"))
    for field in ("bitdepth", "bottleneck_bitdepth"):
        value = getattr(h, field)
        _int_in(field, value, 0, 255, at(field))
        if value not in BITDEPTHS:
            raise ContainerError(f"{field} {value} is not 8 or 10{at(field)}")
    _int_in("chroma tag", h.chroma, 0, len(ChromaTag) - 1, at("chroma"))
    _int_in("fps_num", h.fps_num, 1, _U32, at("fps_num"))
    _int_in("fps_den", h.fps_den, 1, _U32, at("fps_den"))
    num = _int_in("aspect_num", h.aspect_num, 0, _U16, at("aspect_num"))
    den = _int_in("aspect_den", h.aspect_den, 0, _U16, at("aspect_den"))
    if (num == 0) != (den == 0):
        raise ContainerError(
            f"aspect ratio {num}:{den} is invalid (use 0:0 for unknown){at('aspect_num')}"
        )
    _int_in("frame_count", h.frame_count, 1, _U32, at("frame_count"))
    _int_in("segment_count", segment_count, 1, _U16, at("segment_count"))


def _check_segment_fields(
    k: int,
    option: int,
    first_frame: int,
    frame_count: int,
    width: int,
    height: int,
    expected_first: int,
    base: int | None,
) -> None:
    """Check segment k; ``option`` is the 4-bit code (the reserved nibble is checked by callers)."""

    def at(field: str) -> str:
        return _at(base, SEGMENT_OFFSETS[field])

    if option == OptionCode.RESERVED:
        raise ContainerError(f"reserved option code 15 in segment {k}{at('option')}")
    _int_in(f"segment {k} option code", option, 0, OptionCode.RESERVED - 1, at("option"))
    _int_in(f"segment {k} first_frame", first_frame, 0, _U32, at("first_frame"))
    _int_in(f"segment {k} frame_count", frame_count, 1, _U32, at("frame_count"))
    if first_frame != expected_first:
        raise ContainerError(
            f"segments not contiguous: segment {k} starts at frame {first_frame}, "
            f"expected {expected_first}{at('first_frame')}"
        )
    _int_in(f"segment {k} bottleneck_width", width, 1, _U16, at("bottleneck_width"))
    _int_in(f"segment {k} bottleneck_height", height, 1, _U16, at("bottleneck_height"))


def _check_total_frames(covered: int, frame_count: int, where: str) -> None:
    if covered != frame_count:
        raise ContainerError(
            f"segments cover {covered} frames but the header says frame_count {frame_count}{where}"
        )


# --- pack / unpack ------------------------------------------------------------------------------


def overhead_bytes(segment_count: int) -> int:
    """Bytes of a file with ``segment_count`` segments that are not payload (header, table, CRC)."""
    return HEADER.size + segment_count * SEGMENT.size + CRC.size


def pack(header: WrpHeader, segments: Sequence[Segment]) -> bytes:
    """Serialise a header and its segments; raises ContainerError on any invalid value."""
    _check_header(header, len(segments), None)
    parts: list[bytes] = [
        HEADER.pack(
            MAGIC,
            VERSION,
            0,
            HEADER.size,
            header.codec_id,
            header.bitdepth,
            header.chroma,
            header.bottleneck_bitdepth,
            header.model_bank_id,
            header.width,
            header.height,
            header.fps_num,
            header.fps_den,
            header.aspect_num,
            header.aspect_den,
            header.frame_count,
            len(segments),
        )
    ]
    payloads: list[bytes] = []
    next_frame = 0
    for k, seg in enumerate(segments):
        _check_segment_fields(
            k,
            seg.option,
            seg.first_frame,
            seg.frame_count,
            seg.bottleneck_width,
            seg.bottleneck_height,
            next_frame,
            None,
        )
        if not isinstance(seg.payload, bytes | bytearray):
            raise ContainerError(
                f"segment {k} payload must be bytes, got {type(seg.payload).__name__}"
            )
        if len(seg.payload) > _U32:
            raise ContainerError(f"segment {k} payload of {len(seg.payload)} bytes exceeds 4 GiB")
        next_frame += seg.frame_count
        parts.append(
            SEGMENT.pack(
                seg.option << OPTION_CODE_SHIFT,
                seg.first_frame,
                seg.frame_count,
                seg.bottleneck_width,
                seg.bottleneck_height,
                len(seg.payload),
            )
        )
        payloads.append(bytes(seg.payload))
    _check_total_frames(next_frame, header.frame_count, "")
    body = b"".join(parts + payloads)
    return body + CRC.pack(zlib.crc32(body))


def unpack(data: bytes | bytearray | memoryview) -> tuple[WrpHeader, list[Segment]]:
    """Parse a whole ``.wrp`` file; any malformed input raises ContainerError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ContainerError(f".wrp data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    size = len(data)
    if size == 0:
        raise ContainerError("empty .wrp data (0 bytes)")
    # Magic and version are checked on whatever prefix exists, before the header length: a
    # short non-.wrp file says "bad magic", and a future version (whose header may be shorter
    # or longer) says "unsupported version" rather than "truncated".
    if data[: len(MAGIC)] != MAGIC[: min(size, len(MAGIC))]:
        raise ContainerError("not a .wrp file (bad magic)")
    version_at = HEADER_OFFSETS["version"]
    if size > version_at and data[version_at] != VERSION:
        raise ContainerError(
            f"unsupported .wrp version {data[version_at]} (this wrapcodec reads version {VERSION})"
        )
    if size < HEADER.size:
        raise ContainerError(f"truncated header: need {HEADER.size} bytes, file has {size}")
    (
        _magic,
        _version,
        flags,
        header_size,
        codec_id,
        bitdepth,
        chroma,
        bottleneck_bitdepth,
        model_bank_id,
        width,
        height,
        fps_num,
        fps_den,
        aspect_num,
        aspect_den,
        frame_count,
        segment_count,
    ) = HEADER.unpack_from(data, 0)
    if header_size != HEADER.size:
        raise ContainerError(
            f"header_size {header_size} at offset {HEADER_OFFSETS['header_size']} does not match "
            f"the version {VERSION} header size {HEADER.size}"
        )
    if flags != 0:
        raise ContainerError(
            f"reserved flags 0x{flags:02x} at offset {HEADER_OFFSETS['flags']} must be 0"
        )
    header = WrpHeader(
        codec_id=codec_id,
        model_bank_id=model_bank_id,
        width=width,
        height=height,
        bitdepth=bitdepth,
        chroma=chroma,
        bottleneck_bitdepth=bottleneck_bitdepth,
        fps_num=fps_num,
        fps_den=fps_den,
        aspect_num=aspect_num,
        aspect_den=aspect_den,
        frame_count=frame_count,
    )
    _check_header(header, segment_count, 0)

    table_end = HEADER.size + segment_count * SEGMENT.size
    if size < table_end:
        raise ContainerError(
            f"truncated segment table: {segment_count} segments need {table_end - HEADER.size} "
            f"bytes at offset {HEADER.size}, file has {size}"
        )
    rows: list[tuple[int, int, int, int, int, int]] = []
    next_frame = 0
    for k in range(segment_count):
        base = HEADER.size + k * SEGMENT.size
        option_byte, first, count, bw, bh, length = SEGMENT.unpack_from(data, base)
        reserved = option_byte & OPTION_RESERVED_MASK
        if reserved:
            raise ContainerError(
                f"segment {k}: reserved low nibble of the option byte is 0x{reserved:x} "
                f"(must be 0) at offset {base + SEGMENT_OFFSETS['option']}"
            )
        option = option_byte >> OPTION_CODE_SHIFT
        _check_segment_fields(k, option, first, count, bw, bh, next_frame, base)
        next_frame += count
        rows.append((option, first, count, bw, bh, length))
    _check_total_frames(next_frame, frame_count, f" (offset {HEADER_OFFSETS['frame_count']})")

    offset = table_end
    for k, row in enumerate(rows):
        length = row[5]
        if offset + length > size:
            raise ContainerError(
                f"truncated payload: segment {k} needs {length} bytes at offset {offset}, "
                f"file has {size}"
            )
        offset += length
    crc_at = offset
    if size < crc_at + CRC.size:
        raise ContainerError(
            f"truncated file: CRC32 expected at offset {crc_at}, file has {size} bytes"
        )
    if size > crc_at + CRC.size:
        raise ContainerError(
            f"trailing garbage: {size - crc_at - CRC.size} bytes after the CRC32 at offset "
            f"{crc_at + CRC.size}"
        )
    (stored,) = CRC.unpack_from(data, crc_at)
    computed = zlib.crc32(memoryview(data)[:crc_at])
    if stored != computed:
        raise ContainerError(
            f"CRC mismatch: stored 0x{stored:08x}, computed 0x{computed:08x}; the file is corrupted"
        )

    segments: list[Segment] = []
    offset = table_end
    for option, first, count, bw, bh, length in rows:
        segments.append(Segment(option, first, count, bw, bh, data[offset : offset + length]))
        offset += length
    return header, segments


# --- files --------------------------------------------------------------------------------------


def write_wrp(path: str | os.PathLike[str], header: WrpHeader, segments: Sequence[Segment]) -> None:
    """Write a ``.wrp`` file atomically.

    The bytes go to a temporary file in the destination directory (named ``"." + name`` +
    random + ``".tmp"``), which is fsynced and then renamed over ``path``. On any exception,
    KeyboardInterrupt included, the temporary file is removed and an existing ``path`` is left
    untouched.
    """
    data = pack(header, segments)
    target = os.fspath(path)
    directory, name = os.path.split(target)
    tmp = ""
    try:
        fd = -1
        for _ in range(100):
            tmp = os.path.join(directory, f".{name}{secrets.token_hex(4)}.tmp")
            try:
                # 0o666 & ~umask, like an ordinary new file (mkstemp would force 0o600).
                fd = os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
                )
                break
            except FileExistsError:
                tmp = ""
        if fd < 0:
            raise ContainerError(f"cannot create a temporary file next to {target}")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = ""
    except OSError as exc:
        raise ContainerError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def read_wrp(path: str | os.PathLike[str]) -> tuple[WrpHeader, list[Segment]]:
    """Read and parse a ``.wrp`` file; every failure is a ContainerError naming the file."""
    name = os.fspath(path)
    if os.path.isdir(name):
        raise ContainerError(f"{name} is a directory, not a .wrp file")
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ContainerError(f"no such .wrp file: {name}") from None
    except OSError as exc:
        raise ContainerError(f"cannot read {name}: {exc.strerror or exc}") from exc
    if not data:
        raise ContainerError(f"{name}: empty file (0 bytes), not a .wrp file")
    try:
        return unpack(data)
    except ContainerError as exc:
        raise ContainerError(f"{name}: {exc}") from exc
