"""Streaming YUV4MPEG2 (y4m) reader and writer, restricted to 4:2:0 at 8 and 10 bits.

y4m is the raw-video interchange format between wrapcodec, ffmpeg and the codecs. Only what
the wrapper can process is accepted: progressive 4:2:0 at 8 bits (``C420jpeg``, ``C420``,
``C420mpeg2``, ``C420paldv`` or no C tag) and 10 bits (``C420p10``). Anything else is refused
up front with a :class:`~wrapcodec.errors.Y4MError` naming the file and, where it helps, the
byte offset, so a user never gets a silently wrong decode.

Reading streams: one frame buffer is allocated (lazily, after the first ``FRAME`` marker) and
reused, so memory does not grow with the number of frames. Samples are returned as ``uint16``
planes whatever the bit depth, so downstream code has one dtype to handle.

Header tags: W, H and F are required (the frame rate goes into the ``.wrp`` header and every
bit rate, so none is assumed); I, A and C default to progressive, 1:1 and ``C420jpeg``. A tag
given twice is refused, since which one wins is not defined. ``XCOLORRANGE=FULL|LIMITED`` is
kept in :attr:`VideoInfo.color_range` and written back (another value is refused); other X
parameters are ignored, as the format allows. The F and A terms must fit the ``.wrp`` header
(:data:`MAX_RATE_TERM`, :data:`MAX_ASPECT_TERM`), checked with the header, and a header line
ending in CR LF is refused as such. Header bytes in messages are shown escaped.

Writing follows :mod:`wrapcodec.paths`: a regular file is written to a hidden temporary file
beside it, which replaces it only when :meth:`Y4MWriter.close` succeeds, so a failed or
aborted write leaves an existing destination untouched and no temporary file behind; a device
or FIFO is written in place, ``-`` is standard output. A failed write (a full disk, a reader
that went away) is an :class:`~wrapcodec.errors.InputError` ``cannot write NAME: reason``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType
from typing import IO, Literal, NamedTuple, cast

import numpy as np

from wrapcodec.errors import InputError, Y4MError
from wrapcodec.paths import STDIO, OutputFile, display_name

__all__ = [
    "MAX_DIMENSION",
    "ChromaTag",
    "Frame",
    "VideoInfo",
    "Y4MReader",
    "Y4MWriter",
    "count_frames",
    "format_header",
    "iter_frames",
    "read_info",
]

MAX_DIMENSION = 16384
"""Largest accepted width or height; bigger headers are rejected before any allocation."""

MAX_RATE_TERM = 2**32 - 1
"""Largest numerator or denominator of a frame rate (the ``.wrp`` header stores 32 bits)."""
MAX_ASPECT_TERM = 2**16 - 1
"""Largest numerator or denominator of a pixel aspect (the ``.wrp`` header stores 16 bits)."""

MAGIC = b"YUV4MPEG2"
MAX_HEADER_BYTES = 1024
"""Stream and frame header lines must end with a newline within this many bytes."""

FRAME_MARKER = b"FRAME"

ColorRange = Literal["FULL", "LIMITED"]
COLOR_RANGES: tuple[ColorRange, ...] = ("FULL", "LIMITED")
_COLOR_RANGE_KEY = b"XCOLORRANGE"

BinaryStream = io.BufferedIOBase
"""Type of the streams read: buffered binary files, and standard input's buffer."""

_UINT_RE = re.compile(rb"[0-9]{1,9}")
_RATIO_RE = re.compile(rb"([0-9]{1,10}):([0-9]{1,10})")


class ChromaTag(IntEnum):
    """The y4m chroma-siting family of a 4:2:0 stream.

    The integer values are stored in wrapcodec's own file format, so they must never change.
    ``C420`` and ``C420JPEG`` share the same (centred) siting; 10-bit ``C420p10`` files carry
    no siting information and are read as ``C420``.
    """

    C420JPEG = 0
    C420 = 1
    C420MPEG2 = 2
    C420PALDV = 3


# Header text for each 8-bit tag, and the inverse mapping used by the parser.
_CHROMA_HEADER: dict[ChromaTag, bytes] = {
    ChromaTag.C420JPEG: b"C420jpeg XYSCSS=420JPEG",
    ChromaTag.C420: b"C420",
    ChromaTag.C420MPEG2: b"C420mpeg2 XYSCSS=420MPEG2",
    ChromaTag.C420PALDV: b"C420paldv XYSCSS=420PALDV",
}
_HEADER_10BIT_CHROMA = b"C420p10 XYSCSS=420P10"
_PARSE_CHROMA: dict[bytes, tuple[int, ChromaTag]] = {
    b"420jpeg": (8, ChromaTag.C420JPEG),
    b"420": (8, ChromaTag.C420),
    b"420mpeg2": (8, ChromaTag.C420MPEG2),
    b"420paldv": (8, ChromaTag.C420PALDV),
    b"420p10": (10, ChromaTag.C420),
}


@dataclass(frozen=True)
class VideoInfo:
    """Stream-level properties of a 4:2:0 y4m video.

    ``aspect_num:aspect_den`` is the pixel aspect ratio; ``0:0`` means unknown and is kept as
    such. ``color_range`` is the ``XCOLORRANGE`` the file carried (None: not said). Construction
    validates every field and raises :class:`Y4MError` if one is unusable.
    """

    width: int
    height: int
    bitdepth: int
    fps_num: int
    fps_den: int
    aspect_num: int = 1
    aspect_den: int = 1
    chroma: ChromaTag = ChromaTag.C420JPEG
    color_range: ColorRange | None = None

    def __post_init__(self) -> None:
        """Reject values that cannot describe a y4m stream wrapcodec can process."""
        for name in ("width", "height"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_DIMENSION:
                raise Y4MError(f"{name} {value} out of range 1..{MAX_DIMENSION}")
        if self.bitdepth not in (8, 10):
            raise Y4MError(f"unsupported bit depth {self.bitdepth} (only 8 and 10)")
        if self.fps_num <= 0 or self.fps_den <= 0:
            raise Y4MError(f"bad frame rate {self.fps_num}:{self.fps_den} (both must be > 0)")
        if not _valid_aspect(self.aspect_num, self.aspect_den):
            raise Y4MError(
                f"bad pixel aspect {self.aspect_num}:{self.aspect_den} "
                "(both > 0, or 0:0 for unknown)"
            )
        if not isinstance(self.chroma, ChromaTag):
            raise Y4MError(f"bad chroma tag {self.chroma!r}")
        if self.color_range is not None and self.color_range not in COLOR_RANGES:
            raise Y4MError(f"bad colour range {self.color_range!r} (FULL or LIMITED)")

    @property
    def chroma_width(self) -> int:
        """Width of the U and V planes (rounded up for odd widths)."""
        return (self.width + 1) // 2

    @property
    def chroma_height(self) -> int:
        """Height of the U and V planes (rounded up for odd heights)."""
        return (self.height + 1) // 2

    @property
    def frame_samples(self) -> int:
        """Number of samples in one frame, all three planes."""
        return self.width * self.height + 2 * self.chroma_width * self.chroma_height

    @property
    def bytes_per_sample(self) -> int:
        """1 for 8-bit files, 2 (little-endian) for 10-bit files."""
        return 1 if self.bitdepth == 8 else 2

    @property
    def frame_bytes(self) -> int:
        """Size in bytes of one frame's planar data, excluding the ``FRAME`` line."""
        return self.frame_samples * self.bytes_per_sample

    @property
    def fps(self) -> float:
        """Frame rate as a float (for display and duration estimates only)."""
        return self.fps_num / self.fps_den

    @property
    def max_value(self) -> int:
        """Largest legal sample value at this bit depth."""
        return (1 << self.bitdepth) - 1

    def with_size(self, width: int, height: int) -> VideoInfo:
        """Same stream properties at another resolution (e.g. after resampling)."""
        return dataclasses.replace(self, width=width, height=height)


def _valid_aspect(num: int, den: int) -> bool:
    """Pixel aspect is valid when both terms are positive, or both zero (unknown)."""
    return (num == 0 and den == 0) or (num > 0 and den > 0)


class Frame(NamedTuple):
    """One 4:2:0 picture as three planes; the reader always produces ``uint16`` planes."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray


def format_header(info: VideoInfo) -> bytes:
    """The y4m stream header line (newline included) describing ``info``.

    10-bit streams are written as ``C420p10``, which carries no siting, whatever
    ``info.chroma`` says. A known colour range is written as ``XCOLORRANGE``, as ffmpeg does.
    """
    chroma = _HEADER_10BIT_CHROMA if info.bitdepth == 10 else _CHROMA_HEADER[info.chroma]
    fields = (
        f"W{info.width} H{info.height} F{info.fps_num}:{info.fps_den} Ip "
        f"A{info.aspect_num}:{info.aspect_den} "
    )
    extra = b"" if info.color_range is None else b" XCOLORRANGE=" + info.color_range.encode()
    return MAGIC + b" " + fields.encode("ascii") + chroma + extra + b"\n"


# --------------------------------------------------------------------------------------------
# Header parsing
# --------------------------------------------------------------------------------------------


def _show(token: bytes) -> str:
    """A header token, quoted, for error messages: bytes that are not printable ASCII are
    escaped (``'W\\xff'``, ``'C420jpeg\\r'``)."""
    return repr(bytes(token[:40]))[1:]


def _parse_dimension(name: str, tag: bytes, where: str) -> int:
    """Parse a W or H value, rejecting non-numbers and sizes outside 1..MAX_DIMENSION."""
    if not _UINT_RE.fullmatch(tag[1:]):
        raise Y4MError(f"{where}: bad {name} {_show(tag)} in y4m header")
    value = int(tag[1:])
    if not 1 <= value <= MAX_DIMENSION:
        raise Y4MError(f"{where}: {name} {value} out of range 1..{MAX_DIMENSION}")
    return value


def _parse_ratio(tag: bytes, what: str, where: str) -> tuple[int, int]:
    """Parse an ``n:d`` value of an F or A tag (range checks are up to the caller)."""
    match = _RATIO_RE.fullmatch(tag[1:])
    if match is None:
        raise Y4MError(f"{where}: bad {what} {_show(tag)} in y4m header")
    return int(match.group(1)), int(match.group(2))


def _parse_interlace(tag: bytes, where: str) -> None:
    """Accept progressive (``Ip``) and unknown (``I?``); refuse interlaced or mixed streams."""
    mode = tag[1:]
    if mode in (b"p", b"?"):
        return
    if mode in (b"t", b"b", b"m"):
        raise Y4MError(f"{where}: interlaced y4m is not supported ({_show(tag)})")
    raise Y4MError(f"{where}: bad interlacing {_show(tag)} in y4m header")


def _parse_chroma(tag: bytes, where: str) -> tuple[int, ChromaTag]:
    """Map a C tag to (bitdepth, siting); anything but 4:2:0 at 8 or 10 bits is refused."""
    parsed = _PARSE_CHROMA.get(tag[1:])
    if parsed is None:
        raise Y4MError(
            f"{where}: unsupported chroma format {_show(tag)} (only 4:2:0 8- and 10-bit)"
        )
    return parsed


def _tag_key(tag: bytes) -> bytes:
    """What identifies a header tag for the duplicate check: its letter, or for an X
    parameter its name (``XCOLORRANGE``); b"" for tags that are ignored."""
    key = tag[:1]
    if key == b"X":
        return tag.partition(b"=")[0]
    return key if key in b"WHFIAC" else b""


def _parse_color_range(tag: bytes, where: str) -> ColorRange:
    """``XCOLORRANGE=FULL`` or ``=LIMITED``; another value is refused (ffmpeg would ignore
    it, and the colours would silently be taken as unknown)."""
    value = tag.partition(b"=")[2].decode("ascii", errors="replace")
    found = next((r for r in COLOR_RANGES if r == value), None)
    if found is None:
        raise Y4MError(f"{where}: unknown colour range {_show(tag)} (FULL or LIMITED)")
    return found


def _parse_header_line(line: bytes, where: str) -> VideoInfo:
    """Turn a complete header line (without its newline) into a :class:`VideoInfo`."""
    if line[len(MAGIC) : len(MAGIC) + 1] not in (b" ", b""):
        raise Y4MError(f"{where}: not a y4m file (bad signature)")
    if line.endswith(b"\r"):
        raise Y4MError(f"{where}: y4m header line ends in CR LF; y4m lines end in LF alone")
    width = height = None
    fps: tuple[int, int] | None = None
    aspect = (1, 1)
    bitdepth, chroma = 8, ChromaTag.C420JPEG
    color_range: ColorRange | None = None
    seen: set[bytes] = set()
    for tag in line[len(MAGIC) :].split(b" "):
        key = _tag_key(tag)
        if key in seen:
            raise Y4MError(f"{where}: y4m header gives the {_show(key)[1:-1]} tag twice")
        if key:
            seen.add(key)
        if key == b"W":
            width = _parse_dimension("width", tag, where)
        elif key == b"H":
            height = _parse_dimension("height", tag, where)
        elif key == b"F":
            fps = _parse_ratio(tag, "frame rate", where)
            if fps[0] <= 0 or fps[1] <= 0:
                raise Y4MError(f"{where}: bad frame rate {_show(tag)} (both must be > 0)")
            if max(fps) > MAX_RATE_TERM:
                raise Y4MError(
                    f"{where}: frame rate {_show(tag)} out of range (each term 1..{MAX_RATE_TERM})"
                )
        elif key == b"A":
            aspect = _parse_ratio(tag, "pixel aspect", where)
            if not _valid_aspect(*aspect):
                raise Y4MError(f"{where}: bad pixel aspect {_show(tag)} in y4m header")
            if max(aspect) > MAX_ASPECT_TERM:
                raise Y4MError(
                    f"{where}: pixel aspect {_show(tag)} out of range "
                    f"(each term 0..{MAX_ASPECT_TERM})"
                )
        elif key == b"I":
            _parse_interlace(tag, where)
        elif key == b"C":
            bitdepth, chroma = _parse_chroma(tag, where)
        elif key == _COLOR_RANGE_KEY:
            color_range = _parse_color_range(tag, where)
        # Other X parameters, empty tokens and unknown tags are ignored, as the format allows.
    if width is None or height is None:
        missing = "W (width)" if width is None else "H (height)"
        raise Y4MError(f"{where}: y4m header has no {missing} tag")
    if fps is None:
        raise Y4MError(f"{where}: y4m header has no F (frame rate) tag")
    return VideoInfo(
        width, height, bitdepth, fps[0], fps[1], aspect[0], aspect[1], chroma, color_range
    )


def _read_header(stream: BinaryStream, where: str) -> tuple[VideoInfo, int]:
    """Read and parse the stream header; returns the info and the header's length in bytes."""
    line = stream.readline(MAX_HEADER_BYTES)
    if not line:
        raise Y4MError(f"{where}: empty file")
    if not line.startswith(MAGIC):
        raise Y4MError(f"{where}: not a y4m file (no YUV4MPEG2 signature)")
    if not line.endswith(b"\n"):
        if len(line) < MAX_HEADER_BYTES:
            raise Y4MError(f"{where}: truncated y4m header (no newline before end of file)")
        raise Y4MError(f"{where}: y4m header not terminated within {MAX_HEADER_BYTES} bytes")
    return _parse_header_line(line[:-1], where), len(line)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _display_name(path: str | os.PathLike[str] | IO[bytes]) -> str:
    """How an input is named in messages (``-`` shows as "standard input")."""
    if not isinstance(path, (str, os.PathLike)):
        return "<pipe>"
    return display_name(path)


def _open_input(path: str | os.PathLike[str] | IO[bytes]) -> tuple[BinaryStream, bool]:
    """Open ``path`` for binary reading; returns the stream and whether we own (must close) it.

    An already open binary stream (a pipe from ffmpeg, say) is read as it is and not closed.
    """
    if not isinstance(path, (str, os.PathLike)):
        return cast(BinaryStream, path), False
    if os.fspath(path) == STDIO:
        return cast(BinaryStream, sys.stdin.buffer), False
    try:
        return open(path, "rb"), True  # closed by the reader's close()
    except OSError as exc:
        raise InputError(f"{_display_name(path)}: cannot open: {exc.strerror or exc}") from exc


def _regular_file_size(stream: BinaryStream) -> int | None:
    """Size of the underlying file if it is a regular file (so truncation is known up front)."""
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class Y4MReader:
    """Streaming reader of a 4:2:0 y4m file; iterate it for :class:`Frame` objects.

    The header is parsed on construction (``info``). Iteration reads one frame at a time into
    a single reused buffer, so memory stays constant however long the clip is; each yielded
    :class:`Frame` owns fresh arrays. Byte offsets in error messages count from the start of
    the stream; frame indices count from 0.
    """

    info: VideoInfo

    def __init__(
        self, path: str | os.PathLike[str] | IO[bytes], *, name: str | None = None
    ) -> None:
        """Open ``path`` (``"-"`` for standard input, or an open binary stream) and parse its
        header; ``name`` is what messages call it (default: the path), e.g. "standard input"
        for a spooled copy of stdin."""
        self.name = name or _display_name(path)
        self._stream, self._owned = _open_input(path)
        self._size = _regular_file_size(self._stream)
        self._buffer: np.ndarray | None = None
        self._index = 0
        try:
            self.info, self._pos = _read_header(self._stream, self.name)
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[Frame]:
        """Yield the remaining frames one by one, decoding each only when asked for."""
        while self._read_frame_marker():
            yield self._decode(self._fill_buffer())

    def __enter__(self) -> Y4MReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (never standard input) and release the frame buffer."""
        self._buffer = None
        if self._owned:
            self._owned = False
            self._stream.close()

    def skip(self, frames: int) -> int:
        """Pass over up to ``frames`` frames without decoding them (their data seeked over on
        a regular file, read and discarded otherwise); returns how many there were."""
        skipped = 0
        while skipped < frames and self._read_frame_marker():
            if self._size is None:
                self._fill_buffer()
            else:
                self._check_available()
                self._stream.seek(self.info.frame_bytes, os.SEEK_CUR)
            self._advance()
            skipped += 1
        return skipped

    def copy_frames(self, count: int, dest: str | os.PathLike[str]) -> int:
        """Write the next ``count`` frames (fewer where the stream ends sooner) to ``dest`` as
        a y4m file of their own, each checked as :meth:`__iter__` checks it; returns how many
        there were (0: none, and ``dest`` is not written)."""
        copied = 0
        with open(dest, "wb") as out:
            while copied < count and self._read_frame_marker():
                if copied == 0:
                    out.write(format_header(self.info))
                data = self._fill_buffer()
                self._decode(data)  # the 10-bit range check
                out.write(FRAME_MARKER + b"\n")
                out.write(data.tobytes())
                copied += 1
        if copied == 0:
            os.unlink(dest)
        return copied

    def count_remaining(self, validate: bool = False) -> int:
        """Consume the rest of the stream, counting frames without decoding pixels.

        On a regular file the frame data is seeked over; otherwise it is read and discarded.
        With ``validate`` every frame is read and decoded, so that a 10-bit sample out of range
        is found now rather than by a later reader.
        """
        if not validate:
            return self.skip(sys.maxsize)
        count = 0
        while self._read_frame_marker():
            self._decode(self._fill_buffer())
            count += 1
        return count

    def _read_frame_marker(self) -> bool:
        """Consume the next ``FRAME`` line (parameters ignored); False at a clean end."""
        offset = self._pos
        line = self._stream.readline(MAX_HEADER_BYTES)
        if not line:
            return False
        if FRAME_MARKER.startswith(line) or line == FRAME_MARKER:
            raise Y4MError(
                f"{self.name}: truncated frame {self._index} at byte offset {offset}: "
                "incomplete FRAME line"
            )
        after = line[len(FRAME_MARKER) : len(FRAME_MARKER) + 1]
        if not line.startswith(FRAME_MARKER) or after not in (b" ", b"\n"):
            raise Y4MError(
                f"{self.name}: bad frame marker for frame {self._index} at byte offset "
                f"{offset}: expected 'FRAME', got {bytes(line[:16])!r}"
            )
        if not line.endswith(b"\n"):
            raise Y4MError(
                f"{self.name}: bad frame marker for frame {self._index} at byte offset "
                f"{offset}: FRAME line not terminated within {MAX_HEADER_BYTES} bytes"
            )
        self._pos += len(line)
        return True

    def _truncated(self, got: int) -> Y4MError:
        """The error for a frame whose data stops after ``got`` bytes."""
        return Y4MError(
            f"{self.name}: truncated frame {self._index} at byte offset {self._pos}: "
            f"expected {self.info.frame_bytes} bytes, got {got}"
        )

    def _check_available(self) -> None:
        """On a regular file, fail before reading or allocating if the frame is cut short."""
        if self._size is not None and self._pos + self.info.frame_bytes > self._size:
            raise self._truncated(max(0, self._size - self._pos))

    def _fill_buffer(self) -> np.ndarray:
        """Read exactly one frame's data into the reused buffer, or raise on truncation."""
        self._check_available()
        needed = self.info.frame_bytes
        if self._buffer is None:
            # np.empty does not touch the pages, so even a maximal frame costs nothing until
            # data actually arrives.
            self._buffer = np.empty(needed, dtype=np.uint8)
        view = self._buffer.data
        got = 0
        while got < needed:
            n = self._stream.readinto(view[got:])
            if not n:
                raise self._truncated(got)
            got += n
        return self._buffer

    def _decode(self, data: np.ndarray) -> Frame:
        """Convert one frame's bytes to ``uint16`` planes, checking the 10-bit range."""
        info = self.info
        samples = data if info.bitdepth == 8 else data.view("<u2")
        if info.bitdepth != 8 and int(samples.max()) > info.max_value:
            first = int(np.argmax(samples > info.max_value))
            raise Y4MError(
                f"{self.name}: 10-bit sample value {int(samples[first])} > {info.max_value} "
                f"in frame {self._index} at byte offset {self._pos + 2 * first}"
            )
        frame = _split_planes(samples, info)
        self._advance()
        return frame

    def _advance(self) -> None:
        """Move the position and frame counter past the current frame's data."""
        self._pos += self.info.frame_bytes
        self._index += 1


def _split_planes(samples: np.ndarray, info: VideoInfo) -> Frame:
    """Copy a flat sample buffer into three independent ``uint16`` planes."""
    luma = info.width * info.height
    chroma = info.chroma_width * info.chroma_height
    shape_c = (info.chroma_height, info.chroma_width)
    y = samples[:luma].reshape(info.height, info.width).astype(np.uint16)
    u = samples[luma : luma + chroma].reshape(shape_c).astype(np.uint16)
    v = samples[luma + chroma : luma + 2 * chroma].reshape(shape_c).astype(np.uint16)
    return Frame(y, u, v)


def read_info(path: str | os.PathLike[str], *, name: str | None = None) -> VideoInfo:
    """Parse only the header of a y4m file (``name``: what messages call it)."""
    with Y4MReader(path, name=name) as reader:
        return reader.info


def iter_frames(path: str | os.PathLike[str], first: int = 0) -> Iterator[Frame]:
    """Yield the frames of a y4m file from frame ``first`` on (those before passed over
    undecoded, :meth:`Y4MReader.skip`), closing it when the iteration ends or is abandoned."""
    with Y4MReader(path) as reader:
        reader.skip(first)
        yield from reader


def clip_bytes(path: str | os.PathLike[str], first: int, count: int) -> bytes:
    """Frames ``first`` .. ``first + count − 1`` of a y4m file (fewer where it ends sooner) as
    the bytes of a y4m file of their own: the stream header as :func:`format_header` writes
    it, each frame's data as it is (not decoded)."""
    with Y4MReader(path) as reader:
        reader.skip(first)
        parts = [format_header(reader.info)]
        for _ in range(count):
            if not reader._read_frame_marker():
                break
            parts.append(FRAME_MARKER + b"\n")
            parts.append(reader._fill_buffer().tobytes())
            reader._advance()
        return b"".join(parts)


def count_frames(
    path: str | os.PathLike[str], *, name: str | None = None, validate: bool = False
) -> int:
    """Number of frames in a y4m file, without decoding any pixels.

    For a regular file each ``FRAME`` line is read and the data after it seeked over, the file
    size telling whether the last frame is complete: one small read per frame. FRAME lines may
    carry parameters, which is why the count is not derived from the file size alone. Standard
    input and pipes are read through. Malformed or truncated streams raise the same
    :class:`Y4MError` as the reader (the 10-bit range check, which needs the pixels, is made
    only with ``validate``). ``name`` is what messages call the file.
    """
    with Y4MReader(path, name=name) as reader:
        return reader.count_remaining(validate)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class Y4MWriter:
    """Writes a 4:2:0 y4m file frame by frame, by the rule of :mod:`wrapcodec.paths`.

    A regular file (or a new one; through a symlink, the file it points to) is written to
    ``.<name>.<random>.tmp`` beside it and renamed onto it by :meth:`close`; leaving a ``with``
    block through an exception calls :meth:`abort` instead, which deletes the temporary file and
    leaves any existing destination untouched. A device or FIFO is written in place, and
    ``"-"`` is standard output (flushed, never closed). A failed write is an
    :class:`InputError` ``cannot write NAME: reason``.
    """

    def __init__(self, path: str | os.PathLike[str], info: VideoInfo) -> None:
        """Open the output and write the stream header."""
        self.info = info
        self.name = display_name(path, output=True)
        self._closed = False
        self._out = OutputFile(path)
        try:
            self._out.write(format_header(info))
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> Y4MWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: Frame) -> None:
        """Append one frame; raises :class:`Y4MError` on a wrong shape, dtype or value range
        and :class:`InputError` when the output cannot take it."""
        if self._closed:
            raise ValueError(f"{self.name}: write to a closed Y4MWriter")
        info = self.info
        shapes = (
            (info.height, info.width),
            (info.chroma_height, info.chroma_width),
            (info.chroma_height, info.chroma_width),
        )
        planes = [
            _check_plane(name, np.asarray(plane), shape, info, self.name)
            for name, plane, shape in zip("yuv", frame, shapes, strict=True)
        ]
        self._out.write(FRAME_MARKER + b"\n")
        for plane in planes:
            self._out.write(plane.tobytes())

    def close(self) -> None:
        """Finish the file: flush, then move it into place."""
        if self._closed:
            return
        self._closed = True
        self._out.commit()

    def abort(self) -> None:
        """Give up: delete the temporary file, leaving no trace and the destination untouched."""
        self._closed = True
        self._out.abort()


def _check_plane(
    name: str, plane: np.ndarray, shape: tuple[int, int], info: VideoInfo, where: str
) -> np.ndarray:
    """Validate one plane and return it in the file's sample type (uint8 or little-endian u2)."""
    if plane.shape != shape:
        raise Y4MError(f"{where}: plane {name} has shape {plane.shape}, expected {shape}")
    if not np.issubdtype(plane.dtype, np.integer):
        raise Y4MError(f"{where}: plane {name} has dtype {plane.dtype}, expected integers")
    if plane.size and (int(plane.min()) < 0 or int(plane.max()) > info.max_value):
        raise Y4MError(
            f"{where}: plane {name} values {int(plane.min())}..{int(plane.max())} outside "
            f"0..{info.max_value} for {info.bitdepth}-bit output"
        )
    return plane.astype(np.uint8 if info.bitdepth == 8 else np.dtype("<u2"), copy=False)
