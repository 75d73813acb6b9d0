"""The ``.wrp`` container: one fixed header, a segment table, the segment data and a CRC32.

The byte layout is documented in ``docs/format.md`` and pinned by
``tests/data/format_v1_example.wrp`` to ``tests/data/format_v4_example.wrp``. All integers
are little-endian and every struct is packed without padding (``<`` format). Layout::

    version 1: HEADER (42 bytes) | SEGMENT (17 bytes) x segment_count | payloads | CRC32 (uint32)
    version 2: HEADER (42 bytes) | SEGMENT (21 bytes) x segment_count
               | (update, payload) x segment_count | CRC32 (uint32)
    version 3: as version 2
    version 4: HEADER (42 bytes) | SEGMENT (22 bytes) x segment_count
               | (update, payload) x segment_count | CRC32 (uint32)

Version 2 adds to every segment record an ``update_length`` and puts that many opaque update
bytes (the decoder-side neural post-processor's parameter update) right before the segment's
payload; only neural options (codes 1-8) may carry a non-empty update. Version 3 gives bits
3-1 of a segment's option byte, reserved before, to the *prior*: which of the bank's models
for the segment's option (0 its default, 1-7 one trained for an operating point, a QP band of
a codec) the segment uses. Version 4 adds to every segment record its
``bottleneck_bitdepth``, the bit depth the codec coded that segment at (the header's field is
segment 0's). New files are written in :data:`VERSION`, in version 3 where a segment uses a
prior, or in version 4 where segments' bit depths differ; every version in :data:`VERSIONS`
is read and can still be written.

The CRC is ``zlib.crc32`` over every byte before it. ``unpack`` accepts exactly the byte
strings that ``pack`` can produce: anything else raises :class:`ContainerError`.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from wrapcodec.errors import ContainerError, InputError
from wrapcodec.paths import OutputFile
from wrapcodec.y4m import (  # header byte 10 stores the y4m siting tag
    MAX_DIMENSION,
    ChromaTag,
    ColorRange,
)

MAGIC = b"WRPC"
#: The version new files are written in (``WrpHeader.version`` defaults to it).
VERSION = 2
#: Every version this module reads, and writes when ``WrpHeader.version`` asks for it.
VERSIONS = (1, 2, 3, 4)


class CodecId(IntEnum):
    """Built-in codec ids (header byte 8). 0 is invalid; 128-255 belong to third-party backends."""

    X264 = 1
    X265 = 2
    VVENC = 3
    SVTAV1 = 4  # AV1 by SVT-AV1
    AOM = 5  # AV1 by libaom


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


#: Option codes with a neural post-processor (1-8): only these may carry an update (version 2).
NEURAL_OPTIONS = frozenset(
    OptionCode(v) for v in range(OptionCode.POST_1_1, OptionCode.WRAP_1_4 + 1)
)

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

SEGMENT_FIELDS_V1: tuple[tuple[str, str], ...] = (
    ("option", "B"),
    ("first_frame", "I"),
    ("frame_count", "I"),
    ("bottleneck_width", "H"),
    ("bottleneck_height", "H"),
    ("payload_length", "I"),
)

# Version 2 inserts update_length before payload_length: the update bytes precede the payload.
SEGMENT_FIELDS_V2: tuple[tuple[str, str], ...] = (
    *SEGMENT_FIELDS_V1[:-1],
    ("update_length", "I"),
    SEGMENT_FIELDS_V1[-1],
)

# Version 4 inserts bottleneck_bitdepth after bottleneck_height: the segment's own bit depth.
SEGMENT_FIELDS_V4: tuple[tuple[str, str], ...] = (
    *SEGMENT_FIELDS_V2[:5],
    ("bottleneck_bitdepth", "B"),
    *SEGMENT_FIELDS_V2[5:],
)

SEGMENT_FIELDS_BY_VERSION: dict[int, tuple[tuple[str, str], ...]] = {
    1: SEGMENT_FIELDS_V1,
    2: SEGMENT_FIELDS_V2,
    3: SEGMENT_FIELDS_V2,  # the same record; the option byte's bits 3-1 hold the prior
    4: SEGMENT_FIELDS_V4,  # the option byte as in version 3
}
#: Version 1 record layout under its historical name.
SEGMENT_FIELDS = SEGMENT_FIELDS_V1


def _offsets(fields: tuple[tuple[str, str], ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, (name, _) in enumerate(fields):
        out[name] = struct.calcsize("<" + "".join(code for _, code in fields[:i]))
    return out


def _struct(fields: tuple[tuple[str, str], ...]) -> struct.Struct:
    return struct.Struct("<" + "".join(code for _, code in fields))


HEADER = _struct(HEADER_FIELDS)
CRC = struct.Struct("<I")
HEADER_OFFSETS = _offsets(HEADER_FIELDS)
SEGMENT_STRUCTS: dict[int, struct.Struct] = {
    v: _struct(fields) for v, fields in SEGMENT_FIELDS_BY_VERSION.items()
}
SEGMENT_OFFSETS_BY_VERSION: dict[int, dict[str, int]] = {
    v: _offsets(fields) for v, fields in SEGMENT_FIELDS_BY_VERSION.items()
}
# Per-version names; SEGMENT and SEGMENT_OFFSETS keep meaning the version 1 record.
SEGMENT_V1 = SEGMENT = SEGMENT_STRUCTS[1]
SEGMENT_V2 = SEGMENT_STRUCTS[2]
SEGMENT_V4 = SEGMENT_STRUCTS[4]
SEGMENT_OFFSETS_V1 = SEGMENT_OFFSETS = SEGMENT_OFFSETS_BY_VERSION[1]
SEGMENT_OFFSETS_V2 = SEGMENT_OFFSETS_BY_VERSION[2]
SEGMENT_OFFSETS_V4 = SEGMENT_OFFSETS_BY_VERSION[4]

#: Version 2 header ``flags``, bits 1-0: the source's y4m ``XCOLORRANGE`` (0 = not said).
COLOR_RANGE_CODES: dict[ColorRange | None, int] = {None: 0, "LIMITED": 1, "FULL": 2}
FLAGS_COLOR_RANGE_MASK = 0x03
#: Version 2 header ``flags``, bit 2: the post-processors run in wrapcodec's integer
#: arithmetic (``wrapcodec.exact``, version 1), the bank id being the one of that arithmetic;
#: 0: in float arithmetic (files written before it existed).
FLAGS_INTEGER = 0x04

OPTION_CODE_SHIFT = 4
OPTION_RESERVED_MASK = 0x0F  # version 1: the whole low nibble
OPTION_INHERIT = 0x01  # version 2: the segment reuses the previous segment's update
OPTION_RESERVED_MASK_V2 = 0x0E
OPTION_PRIOR_SHIFT = 1  # version 3: bits 3-1, the bank's model the segment uses (0-7)
MAX_PRIOR = 7

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class WrpHeader:
    """Stream-level fields of a ``.wrp`` file (magic, sizes and counts are implicit).

    ``version`` picks the layout ``pack`` writes (one of :data:`VERSIONS`); ``unpack`` fills it
    from the file, so a version 1 file packs back to version 1 bytes.
    """

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
    version: int = VERSION
    color_range: ColorRange | None = None  # y4m XCOLORRANGE of the source (version 2)
    integer: bool = False  # post-processors in integer arithmetic (version 2)


@dataclass(frozen=True)
class Segment:
    """A run of consecutive frames coded with one option; ``payload`` is the codec bitstream.

    ``update`` is the decoder-side neural post-processor's parameter update fitted to this
    segment by the encoder. The container treats it as opaque bytes: it may be non-empty only
    in version 2 files and only for neural options (:data:`NEURAL_OPTIONS`). ``inherit``
    (version 2) says the segment uses the update in force for the previous segment, which must
    have the same option and prior and carry or inherit an update; it carries none of its own.
    ``prior`` (version 3, neural options only) picks one of the bank's models for the option.
    ``bottleneck_bitdepth`` (version 4) is the bit depth the codec coded the segment at; None
    means the header's (:func:`segment_bitdepth`). An update or ``inherit`` may span segments
    of different depths: the network sees samples scaled to [0, 1] at either depth.
    """

    option: int
    first_frame: int
    frame_count: int
    bottleneck_width: int
    bottleneck_height: int
    payload: bytes
    update: bytes = b""
    inherit: bool = False
    prior: int = 0  # version 3: which of the bank's models for the option (0: its default)
    bottleneck_bitdepth: int | None = None  # version 4: the segment's own (None: the header's)


def segment_bitdepth(header: WrpHeader, segment: Segment) -> int:
    """The bit depth the codec coded ``segment`` at: its own, or else the header's."""
    if segment.bottleneck_bitdepth is None:
        return header.bottleneck_bitdepth
    return segment.bottleneck_bitdepth


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


def _check_version(version: object, where: str) -> int:
    """Return ``version`` if this module can write it; pack's counterpart of unpack's check."""
    value = _int_in("version", version, 0, 255, where)
    if value not in VERSIONS:
        raise ContainerError(
            f"unsupported .wrp version {value}{where} (this wrapcodec writes versions 1 to 4)"
        )
    return value


def _check_header(h: WrpHeader, segment_count: int, base: int | None) -> None:
    def at(field: str) -> str:
        return _at(base, HEADER_OFFSETS[field])

    _check_version(h.version, at("version"))
    if h.color_range not in COLOR_RANGE_CODES:
        raise ContainerError(f"colour range {h.color_range!r} is not FULL, LIMITED or None")
    if h.color_range is not None and h.version == 1:
        raise ContainerError("version 1 files carry no colour range (write version 2)")
    if h.integer and h.version == 1:
        raise ContainerError("version 1 files carry no arithmetic flag (write version 2)")
    codec = _int_in("codec_id", h.codec_id, 0, 255, at("codec_id"))
    if codec == 0:
        raise ContainerError(f"invalid codec id 0{at('codec_id')}")
    if codec < THIRD_PARTY_CODEC_MIN and codec not in {c.value for c in CodecId}:
        raise ContainerError(
            f"unknown built-in codec id {codec}{at('codec_id')} "
            f"(built-in: 1 x264, 2 x265, 3 VVenC, 4 SVT-AV1, 5 libaom; 128-255: third-party "
            "backends)"
        )
    if h.version == 1 and codec in (CodecId.SVTAV1, CodecId.AOM):
        raise ContainerError(
            f"codec id {codec} (AV1) exists from version 2 on; a version 1 file cannot carry it"
            f"{at('codec_id')}"
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
    version: int,
    base: int | None,
) -> None:
    """Check segment k; ``option`` is the 4-bit code (the reserved nibble is checked by callers)."""
    offsets = SEGMENT_OFFSETS_BY_VERSION[version]

    def at(field: str) -> str:
        return _at(base, offsets[field])

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


def _check_update(k: int, option: int, update_length: int, version: int, base: int | None) -> None:
    """Check that segment k (valid ``option``) may carry ``update_length`` update bytes.

    An empty update is always allowed. A non-empty one needs version 2 (version 1 records have
    no field for it) and a neural option, the only ones with a post-processor to update.
    """
    if update_length == 0:
        return
    if version == 1:
        raise ContainerError(
            f"segment {k} has a {update_length}-byte update, but version 1 files carry no "
            f"updates (write version 2)"
        )
    if option not in NEURAL_OPTIONS:
        raise ContainerError(
            f"segment {k} has a {update_length}-byte update, but option code {option} "
            f"({OptionCode(option).name}) has no neural post-processor; only option codes "
            f"1-8 carry updates{_at(base, SEGMENT_OFFSETS_BY_VERSION[version]['update_length'])}"
        )


def _check_prior(k: int, option: int, prior: object, version: int, base: int | None) -> int:
    """Segment k's prior: 0, or 1-7 in a version 3 file on a neural option."""
    where = _at(base, SEGMENT_OFFSETS_V2["option"])
    value = _int_in(f"segment {k} prior", prior, 0, MAX_PRIOR, where)
    if value and version < 3:
        raise ContainerError(f"segment {k} uses prior {value}, but only versions 3 and 4 say one")
    if value and option not in NEURAL_OPTIONS:
        raise ContainerError(
            f"segment {k} uses prior {value}, but option code {option} has no neural "
            f"post-processor{where}"
        )
    return value


def _check_segment_bitdepth(
    k: int, depth: object, header: WrpHeader, base: int | None
) -> int | None:
    """Segment k's ``bottleneck_bitdepth`` as ``header.version`` stores it (None: not stored).

    ``depth`` is 8, 10 or None (the header's). Versions 1-3 store none, so it must be the
    header's; in version 4 segment 0's must be the header's, the others may differ.
    """
    where = _at(base, SEGMENT_OFFSETS_V4["bottleneck_bitdepth"])
    value = header.bottleneck_bitdepth
    if depth is not None:
        value = _int_in(f"segment {k} bottleneck_bitdepth", depth, 0, 255, where)
        if value not in BITDEPTHS:
            raise ContainerError(f"segment {k} bottleneck_bitdepth {value} is not 8 or 10{where}")
    if header.version < 4:
        if value != header.bottleneck_bitdepth:
            raise ContainerError(
                f"segment {k} bottleneck_bitdepth {value} differs from the header's "
                f"{header.bottleneck_bitdepth}, but only version 4 files give a segment its own "
                "bit depth"
            )
        return None
    if k == 0 and value != header.bottleneck_bitdepth:
        raise ContainerError(
            f"header bottleneck_bitdepth {header.bottleneck_bitdepth} is not segment 0's "
            f"{value}{where}"
        )
    return value


def _check_inherit(
    k: int,
    option: int,
    inherit: bool,
    update_length: int,
    previous: tuple[int, bool, int] | None,
    version: int,
    base: int | None,
    prior: int = 0,
) -> None:
    """Check that segment k may inherit; ``previous`` is (option, has an update in force,
    prior) of segment k − 1."""
    if not inherit:
        return
    where = _at(base, SEGMENT_OFFSETS_V2["option"])
    if version == 1:
        raise ContainerError(f"segment {k} inherits an update, but version 1 files carry none")
    if option not in NEURAL_OPTIONS:
        raise ContainerError(
            f"segment {k} inherits an update, but option code {option} has no neural "
            f"post-processor{where}"
        )
    if update_length:
        raise ContainerError(f"segment {k} both inherits an update and carries one{where}")
    if previous is None:
        raise ContainerError(f"segment {k} inherits an update but has no previous segment{where}")
    if previous[0] != option:
        raise ContainerError(
            f"segment {k} inherits an update from segment {k - 1}, whose option code "
            f"{previous[0]} is not its own {option}{where}"
        )
    if not previous[1]:
        raise ContainerError(
            f"segment {k} inherits an update, but segment {k - 1} has none in force{where}"
        )
    if previous[2] != prior:
        raise ContainerError(
            f"segment {k} inherits an update from segment {k - 1}, whose prior {previous[2]} "
            f"is not its own {prior}{where}"
        )


def _check_blob(k: int, name: str, value: object) -> bytes:
    """Segment k's ``name`` (update or payload) as bytes; it must be bytes and fit a uint32."""
    if not isinstance(value, bytes | bytearray):
        raise ContainerError(f"segment {k} {name} must be bytes, got {type(value).__name__}")
    if len(value) > _U32:
        raise ContainerError(f"segment {k} {name} of {len(value)} bytes exceeds 4 GiB")
    return bytes(value)


def _check_total_frames(covered: int, frame_count: int, where: str) -> None:
    if covered != frame_count:
        raise ContainerError(
            f"segments cover {covered} frames but the header says frame_count {frame_count}{where}"
        )


# --- pack / unpack ------------------------------------------------------------------------------


def overhead_bytes(segment_count: int, *, version: int = VERSION) -> int:
    """Bytes of a file with ``segment_count`` segments that are neither payload nor update.

    That is the header, the segment table and the CRC: ``42 + 17·n + 4`` in version 1,
    ``42 + 21·n + 4`` in versions 2 and 3 and ``42 + 22·n + 4`` in version 4.
    """
    version = _check_version(version, "")
    return HEADER.size + segment_count * SEGMENT_STRUCTS[version].size + CRC.size


def pack(header: WrpHeader, segments: Sequence[Segment]) -> bytes:
    """Serialise a header and its segments in ``header.version``'s layout.

    Raises ContainerError on any invalid value, including a non-empty update in a version 1
    file or on a non-neural option, and a segment bit depth other than the header's before
    version 4.
    """
    _check_header(header, len(segments), None)
    version = header.version
    parts: list[bytes] = [
        HEADER.pack(
            MAGIC,
            version,
            COLOR_RANGE_CODES[header.color_range] | (FLAGS_INTEGER if header.integer else 0),
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
    data_area: list[bytes] = []
    next_frame = 0
    previous: tuple[int, bool, int] | None = None
    for k, seg in enumerate(segments):
        _check_segment_fields(
            k,
            seg.option,
            seg.first_frame,
            seg.frame_count,
            seg.bottleneck_width,
            seg.bottleneck_height,
            next_frame,
            version,
            None,
        )
        depth = _check_segment_bitdepth(k, seg.bottleneck_bitdepth, header, None)
        payload = _check_blob(k, "payload", seg.payload)
        update = _check_blob(k, "update", seg.update)
        _check_update(k, seg.option, len(update), version, None)
        if not isinstance(seg.inherit, bool):
            raise ContainerError(f"segment {k} inherit must be a bool")
        prior = _check_prior(k, seg.option, seg.prior, version, None)
        _check_inherit(k, seg.option, seg.inherit, len(update), previous, version, None, prior)
        previous = (seg.option, bool(update) or seg.inherit, prior)
        next_frame += seg.frame_count
        option_byte = (
            seg.option << OPTION_CODE_SHIFT
            | prior << OPTION_PRIOR_SHIFT
            | (OPTION_INHERIT if seg.inherit else 0)
        )
        record = _Record(
            option_byte,
            seg.first_frame,
            seg.frame_count,
            seg.bottleneck_width,
            seg.bottleneck_height,
            depth,
            len(update),
            len(payload),
        )
        parts.append(_pack_record(record, version))
        data_area += (update, payload)
    _check_total_frames(next_frame, header.frame_count, "")
    body = b"".join(parts + data_area)
    return body + CRC.pack(zlib.crc32(body))


class _Record(NamedTuple):
    """One segment record's fields, named as in :data:`SEGMENT_FIELDS_BY_VERSION`; ``option``
    is the whole option byte. A version without a field has 0 (``update_length``) or None
    (``bottleneck_bitdepth``) there."""

    option: int
    first_frame: int
    frame_count: int
    bottleneck_width: int
    bottleneck_height: int
    bottleneck_bitdepth: int | None
    update_length: int
    payload_length: int


def _pack_record(record: _Record, version: int) -> bytes:
    """``record`` in the layout of ``version``, which stores the fields it names."""
    values = record._asdict()
    fields = SEGMENT_FIELDS_BY_VERSION[version]
    return SEGMENT_STRUCTS[version].pack(*(values[name] for name, _ in fields))


def _unpack_record(data: bytes, base: int, version: int) -> _Record:
    """The segment record of ``version`` at ``base``; fields it lacks are 0 or None."""
    fields = SEGMENT_FIELDS_BY_VERSION[version]
    names = [name for name, _ in fields]
    values = dict(zip(names, SEGMENT_STRUCTS[version].unpack_from(data, base), strict=True))
    return _Record(**{"update_length": 0, "bottleneck_bitdepth": None, **values})


class _Row(NamedTuple):
    """One segment-table record as read and checked; ``update_length`` is 0 in version 1 and
    ``bottleneck_bitdepth`` None before version 4."""

    option: int
    first: int
    frames: int
    bottleneck_width: int
    bottleneck_height: int
    update_length: int
    payload_length: int
    inherit: bool
    prior: int
    bottleneck_bitdepth: int | None


def unpack(data: bytes | bytearray | memoryview) -> tuple[WrpHeader, list[Segment]]:
    """Parse a whole ``.wrp`` file of any version in VERSIONS; bad input raises ContainerError.

    In reading order: the header (:func:`_unpack_header`), the segment table
    (:func:`_unpack_table`), the lengths and the CRC (:func:`_check_extent`); only then are the
    updates and payloads sliced out, so that a corrupt file never yields a segment."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ContainerError(f".wrp data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    header, segment_count = _unpack_header(data)
    rows = _unpack_table(data, header, segment_count)
    _check_total_frames(
        sum(row.frames for row in rows),
        header.frame_count,
        f" (offset {HEADER_OFFSETS['frame_count']})",
    )
    table_end = HEADER.size + segment_count * SEGMENT_STRUCTS[header.version].size
    _check_extent(data, rows, table_end)
    segments: list[Segment] = []
    offset = table_end
    for row in rows:
        update = data[offset : offset + row.update_length]
        offset += row.update_length
        payload = data[offset : offset + row.payload_length]
        offset += row.payload_length
        segments.append(
            Segment(
                row.option,
                row.first,
                row.frames,
                row.bottleneck_width,
                row.bottleneck_height,
                payload,
                update,
                row.inherit,
                row.prior,
                row.bottleneck_bitdepth,
            )
        )
    return header, segments


def _unpack_header(data: bytes) -> tuple[WrpHeader, int]:
    """The checked header of ``data`` and its segment count."""
    size = len(data)
    if size == 0:
        raise ContainerError("empty .wrp data (0 bytes)")
    # Magic and version are checked on whatever prefix exists, before the header length: a
    # short non-.wrp file says "bad magic", and a future version (whose header may be shorter
    # or longer) says "unsupported version" rather than "truncated".
    if data[: len(MAGIC)] != MAGIC[: min(size, len(MAGIC))]:
        raise ContainerError("not a .wrp file (bad magic)")
    version_at = HEADER_OFFSETS["version"]
    if size > version_at and data[version_at] not in VERSIONS:
        raise ContainerError(
            f"unsupported .wrp version {data[version_at]} (this wrapcodec reads versions 1 to 4)"
        )
    if size < HEADER.size:
        raise ContainerError(f"truncated header: need {HEADER.size} bytes, file has {size}")
    (
        _magic,
        version,
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
            f"the version {version} header size {HEADER.size}"
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
        version=version,
        color_range=_color_range(flags, version),
        integer=bool(flags & FLAGS_INTEGER),
    )
    _check_header(header, segment_count, 0)
    return header, segment_count


def _color_range(flags: int, version: int) -> ColorRange | None:
    """The colour range named by the header's ``flags``; reserved bits raise ContainerError."""
    allowed = FLAGS_COLOR_RANGE_MASK | FLAGS_INTEGER if version > 1 else 0
    range_code = flags & FLAGS_COLOR_RANGE_MASK
    if flags & ~allowed or range_code not in COLOR_RANGE_CODES.values():
        defined = (
            "bits 1-0 = colour range 0-2, bit 2 = integer arithmetic, the rest 0"
            if version > 1
            else "all 0"
        )
        raise ContainerError(
            f"reserved flags 0x{flags:02x} at offset {HEADER_OFFSETS['flags']} "
            f"(version {version}: {defined})"
        )
    return {code: name for name, code in COLOR_RANGE_CODES.items()}[range_code]


def _unpack_table(data: bytes, header: WrpHeader, segment_count: int) -> list[_Row]:
    """The checked segment table of ``data`` (every record against the one before it)."""
    version = header.version
    size = SEGMENT_STRUCTS[version].size
    table_end = HEADER.size + segment_count * size
    if len(data) < table_end:
        raise ContainerError(
            f"truncated segment table: {segment_count} segments need {table_end - HEADER.size} "
            f"bytes at offset {HEADER.size}, file has {len(data)}"
        )
    rows: list[_Row] = []
    next_frame = 0
    previous: tuple[int, bool, int] | None = None
    for k in range(segment_count):
        base = HEADER.size + k * size
        option_byte, first, count, bw, bh, depth, update_length, length = _unpack_record(
            data, base, version
        )
        mask = {1: OPTION_RESERVED_MASK, 2: OPTION_RESERVED_MASK_V2}.get(version, 0)
        reserved = option_byte & mask
        if reserved:
            raise ContainerError(
                f"segment {k}: reserved bits 0x{reserved:x} of the option byte's low nibble "
                f"(must be 0) at offset {base + SEGMENT_OFFSETS_BY_VERSION[version]['option']}"
            )
        option = option_byte >> OPTION_CODE_SHIFT
        inherit = version > 1 and bool(option_byte & OPTION_INHERIT)
        prior = option_byte >> OPTION_PRIOR_SHIFT & MAX_PRIOR if version > 2 else 0
        _check_segment_fields(k, option, first, count, bw, bh, next_frame, version, base)
        _check_segment_bitdepth(k, depth, header, base)
        _check_update(k, option, update_length, version, base)
        _check_prior(k, option, prior, version, base)
        _check_inherit(k, option, inherit, update_length, previous, version, base, prior)
        previous = (option, update_length > 0 or inherit, prior)
        next_frame += count
        rows.append(
            _Row(option, first, count, bw, bh, update_length, length, inherit, prior, depth)
        )
    return rows


def _check_extent(data: bytes, rows: Sequence[_Row], table_end: int) -> None:
    """Every update and payload must fit before the CRC is looked at, so that a truncated
    file reads as truncated rather than as a CRC mismatch; then the CRC itself."""
    size = len(data)
    offset = table_end
    for k, row in enumerate(rows):
        for what, length in (("update", row.update_length), ("payload", row.payload_length)):
            if offset + length > size:
                raise ContainerError(
                    f"truncated {what}: segment {k} needs {length} bytes at offset {offset}, "
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


# --- files --------------------------------------------------------------------------------------


def write_wrp(path: str | os.PathLike[str], header: WrpHeader, segments: Sequence[Segment]) -> None:
    """Write a ``.wrp`` file, all or nothing where the destination allows it.

    The rule is :func:`wrapcodec.paths.output_target`'s: a regular file (through a symlink, the
    file it points to) gets the bytes in a temporary file beside it (``"." + name + "." +``
    random ``+ ".tmp"``), fsynced and then renamed over it; on any exception, KeyboardInterrupt
    included, the temporary file is removed and an existing file is left untouched. A device
    or FIFO is written in place and ``-`` is standard output. Every write failure is a
    :class:`ContainerError` ``cannot write PATH: reason``.
    """
    data = pack(header, segments)
    try:
        with OutputFile(path, sync=True) as out:
            out.write(data)
    except InputError as exc:
        raise ContainerError(str(exc)) from exc.__cause__


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
    return unpack_named(data, name, "empty file")


def unpack_named(data: bytes, name: str, empty: str = "empty") -> tuple[WrpHeader, list[Segment]]:
    """:func:`unpack` of ``data`` read from ``name``, which every message names; no data at
    all is said as ``NAME: EMPTY (0 bytes), not a .wrp file``."""
    if not data:
        raise ContainerError(f"{name}: {empty} (0 bytes), not a .wrp file")
    try:
        return unpack(data)
    except ContainerError as exc:
        raise ContainerError(f"{name}: {exc}") from exc
