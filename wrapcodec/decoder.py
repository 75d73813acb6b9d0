"""``wrapcodec decode`` and ``wrapcodec info``: read a .wrp file and rebuild the video.

Decoding checks every header field it can against what it finds: the codec id must name an
installed backend whose decoder this ffmpeg has, a file without neural options must store no
model bank id, and each segment's stream must decode to exactly its frame count of pictures
at the coded bottleneck size and the segment's bottleneck bit depth (its own in a version 4
file, else the header's ``bottleneck_bitdepth``), without changing
format in mid-stream. A mismatch is one line naming the file and the segment, and leaves no
output file. The source bit depth (header byte 9) cannot be checked: any value fits any
stream, it only scales the output. ``-`` as the input is standard input, read whole (as a file
is) and named "standard input" in messages.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from wrapcodec import ffmpeg, metrics
from wrapcodec.backend import Backend, backend_for_codec_id, backends
from wrapcodec.bank import Bank, get_bank
from wrapcodec.container import (
    NO_MODEL_BANK,
    Segment,
    WrpHeader,
    overhead_bytes,
    read_wrp,
    segment_bitdepth,
    unpack_named,
)
from wrapcodec.errors import BackendError, ContainerError, FFmpegError, InputError
from wrapcodec.exact import ARITHMETIC_VERSION
from wrapcodec.options import bottleneck_size, option
from wrapcodec.paths import STDIO, display_name
from wrapcodec.pipeline import InForce, Layout, decode_cropped, reconstruct, segment_layout
from wrapcodec.y4m import ChromaTag, Frame, VideoInfo, Y4MWriter


def video_info(header: WrpHeader) -> VideoInfo:
    """The source video description stored in a .wrp header."""
    return VideoInfo(
        width=header.width,
        height=header.height,
        bitdepth=header.bitdepth,
        fps_num=header.fps_num,
        fps_den=header.fps_den,
        aspect_num=header.aspect_num,
        aspect_den=header.aspect_den,
        chroma=ChromaTag(header.chroma),
        color_range=header.color_range,
    )


class SegmentInfo(BaseModel):
    first_frame: int
    frame_count: int
    option: int
    option_name: str
    bottleneck: str
    bottleneck_bitdepth: int  # the bit depth the codec coded this segment at
    payload_bytes: int
    update_bytes: int  # the post-processor update fitted to this segment (0: none)
    inherits_update: bool  # uses the previous segment's update


class FileInfo(BaseModel):
    """A .wrp header in readable form (``wrapcodec info``)."""

    path: str
    version: int
    codec_id: int
    codec: str
    model_bank_id: str
    arithmetic: str  # of the post-processors: "integer, version 1", "float" or "none"
    width: int
    height: int
    bitdepth: int
    chroma: str
    color_range: str | None  # y4m XCOLORRANGE of the source, when it said one
    bottleneck_bitdepth: int
    fps: str
    aspect: str
    frames: int
    bytes: int
    kbps: float
    segments: list[SegmentInfo]


def read_input(path: str) -> tuple[WrpHeader, list[Segment]]:
    """Read and parse the .wrp file ``path``, or standard input for ``-``; every failure is a
    :class:`ContainerError` naming it ("standard input" for ``-``)."""
    if path != STDIO:
        return read_wrp(path)
    name = display_name(path)
    try:
        data = sys.stdin.buffer.read()
    except OSError as exc:
        raise ContainerError(f"cannot read {name}: {exc.strerror or exc}") from exc
    return unpack_named(data, name)


def file_info(path: str) -> FileInfo:
    """Parse and describe ``path`` (``-``: standard input; raises :class:`ContainerError` on
    a bad file)."""
    header, segments = read_input(path)
    try:
        codec = backend_for_codec_id(header.codec_id).name
    except Exception:
        codec = f"unknown (id {header.codec_id})"
    info = video_info(header)
    size = overhead_bytes(len(segments), version=header.version) + sum(
        len(s.payload) + len(s.update) for s in segments
    )
    return FileInfo(
        path=display_name(path),
        version=header.version,
        codec_id=header.codec_id,
        codec=codec,
        model_bank_id=header.model_bank_id.hex(),
        arithmetic=_arithmetic(header, segments),
        width=header.width,
        height=header.height,
        bitdepth=header.bitdepth,
        chroma=ChromaTag(header.chroma).name,
        color_range=header.color_range,
        bottleneck_bitdepth=header.bottleneck_bitdepth,
        fps=f"{header.fps_num}/{header.fps_den}",
        aspect=f"{header.aspect_num}:{header.aspect_den}",
        frames=header.frame_count,
        bytes=size,
        kbps=metrics.kbps(8 * size, header.frame_count, info.fps_num, info.fps_den),
        segments=[
            SegmentInfo(
                first_frame=s.first_frame,
                frame_count=s.frame_count,
                option=s.option,
                option_name=option(s.option).name,
                bottleneck=f"{s.bottleneck_width}x{s.bottleneck_height}",
                bottleneck_bitdepth=segment_bitdepth(header, s),
                payload_bytes=len(s.payload),
                update_bytes=len(s.update),
                inherits_update=s.inherit,
            )
            for s in segments
        ],
    )


def _arithmetic(header: WrpHeader, segments: list[Segment]) -> str:
    if header.integer:
        return f"integer, version {ARITHMETIC_VERSION}"
    return "float" if any(option(s.option).neural for s in segments) else "none"


def _check_segment(input_path: str, segment: Segment, info: VideoInfo, bank: Bank) -> None:
    """Refuse a segment whose option this bank lacks or whose bottleneck size is not the
    option's on this source size."""
    opt = option(segment.option)
    bank.require(opt)
    expected = bottleneck_size(info.width, info.height, opt.ratio)
    got = (segment.bottleneck_width, segment.bottleneck_height)
    if got != expected:
        raise ContainerError(
            f"{input_path}: segment at frame {segment.first_frame}: bottleneck {got[0]}x{got[1]} "
            f"does not match option {opt.name} on {info.width}x{info.height} "
            f"({expected[0]}x{expected[1]})"
        )


def check_bank(input_path: str, header: WrpHeader, segments: list[Segment], bank: Bank) -> None:
    """Refuse a file whose neural options were made with other weights than ``bank``'s, and
    a file without neural options that names a model bank (such files store zeros)."""
    if not any(option(s.option).neural for s in segments):
        if header.model_bank_id != NO_MODEL_BANK:
            raise ContainerError(
                f"{input_path}: model_bank_id is {header.model_bank_id.hex()}, but no segment "
                "uses a neural option; files with direct and linear options only store zeros"
            )
        return
    if header.integer and not bank.integer:
        raise InputError(
            f"{input_path}: made with post-processors in integer arithmetic, but the models in "
            f"{bank.folder} have none; pass --models with the bank it was made with"
        )
    ours = bank.id_for(header.integer)
    if header.model_bank_id != ours:
        raise InputError(
            f"{input_path}: made with model bank {header.model_bank_id.hex()}, but the models "
            f"in {bank.folder} are bank {ours.hex()}; pass --models with the bank it was "
            "made with"
        )


def _layout(
    input_path: str,
    k: int,
    segment: Segment,
    header: WrpHeader,
    info: VideoInfo,
    backend: Backend,
    bank: Bank,
    previous: InForce | None,
) -> tuple[Layout, InForce | None]:
    """Segment ``k``'s layout, its update applied by the chain rules of
    :func:`~wrapcodec.pipeline.segment_layout` (the encoder's own), and the update in force
    after it."""
    opt = option(segment.option)
    if segment.prior and (segment.option, segment.prior) not in bank.priors:
        raise ContainerError(
            f"{input_path}: segment {k} uses prior {segment.prior} of {opt.name}, which "
            f"{bank.where} does not have"
        )
    try:
        layout = Layout.make(
            info,
            opt,
            backend,
            segment_bitdepth(header, segment),
            bank,
            header.integer,
            prior=segment.prior,
        )
        return segment_layout(layout, segment.update, segment.inherit, previous)
    except ContainerError as exc:
        raise ContainerError(f"{input_path}: segment {k}: {exc}") from None


def decoding_backend(input_path: str, header: WrpHeader) -> Backend:
    """The backend that decodes ``header``'s codec id, usable with this ffmpeg for decoding
    (an ffmpeg without the codec's encoder still decodes its files)."""
    try:
        backend = backend_for_codec_id(header.codec_id)
    except BackendError:
        known = ", ".join(
            f"{b.codec_id} {b.name}" for b in sorted(backends().values(), key=lambda b: b.codec_id)
        )
        raise BackendError(
            f"{input_path}: no backend installed for codec id {header.codec_id} "
            f"(installed: {known})"
        ) from None
    ffmpeg.require(backend, decode_only=True)
    return backend


@contextlib.contextmanager
def bottleneck(
    input_path: str, header: WrpHeader, segment: Segment
) -> Iterator[tuple[Path, Iterator[Frame]]]:
    """Inside the block: ``segment``'s stream, written to a temporary file, and the bottleneck
    pictures it decodes to (at the segment's depth and the bottleneck's size, before any
    post-processing), read as the iterator is consumed. For analyses of what the codec
    delivered to the post-processor; :func:`decode_file` is the decoder."""
    backend = decoding_backend(input_path, header)
    size = (segment.bottleneck_width, segment.bottleneck_height)
    depth = segment_bitdepth(header, segment)
    with tempfile.TemporaryDirectory(prefix="wrapcodec-") as tmp:
        stream = Path(tmp) / f"segment{backend.extension}"
        stream.write_bytes(segment.payload)
        coded = backend.coded_size(*size)
        yield stream, decode_cropped(backend, stream, coded, size, depth, segment.frame_count)


def _where(input_path: str, k: int, segment: Segment, header: WrpHeader, backend: Backend) -> str:
    """Names segment ``k`` of ``input_path`` and what its header says it holds."""
    last = segment.first_frame + segment.frame_count - 1
    return (
        f"{input_path}: segment {k} (frames {segment.first_frame}-{last}, codec id "
        f"{header.codec_id} = {backend.name}, bottleneck {segment.bottleneck_width}x"
        f"{segment.bottleneck_height} at {segment_bitdepth(header, segment)} bits)"
    )


def _in_segment(exc: FFmpegError, where: str) -> FFmpegError:
    """``exc`` with ``where`` (file and segment) in front of its message, same stderr tail."""
    located = FFmpegError(f"{where}: {exc}", exc.cmd)
    located.stderr = exc.stderr
    return located


def decode_file(input_path: str, output_path: str, bank: Bank | None = None) -> WrpHeader:
    """Decode ``input_path`` (.wrp) to ``output_path`` (y4m, ``-`` for stdout), atomically.

    Neural options use the networks of ``bank`` (the shipped bank by default), which must be
    the bank the file was made with. ``input_path`` ``-`` is standard input."""
    header, segments = read_input(input_path)
    input_path = display_name(input_path)  # what messages call it
    backend = decoding_backend(input_path, header)
    info = video_info(header)
    bank = bank or get_bank()
    for segment in segments:
        _check_segment(input_path, segment, info, bank)
    check_bank(input_path, header, segments, bank)
    # Every segment's networks, updates applied, before anything is written.
    layouts: list[Layout] = []
    in_force: InForce | None = None  # the update in force, carried from segment to segment
    for k, s in enumerate(segments):
        layout, in_force = _layout(input_path, k, s, header, info, backend, bank, in_force)
        layouts.append(layout)
    with (
        tempfile.TemporaryDirectory(prefix="wrapcodec-") as tmp,
        Y4MWriter(output_path, info) as writer,
    ):
        for k, (segment, layout) in enumerate(zip(segments, layouts, strict=True)):
            stream = Path(tmp) / f"segment{k}{backend.extension}"
            stream.write_bytes(segment.payload)
            try:
                for frame in reconstruct(backend, stream, layout, segment.frame_count):
                    writer.write(frame)
            except FFmpegError as exc:
                raise _in_segment(exc, _where(input_path, k, segment, header, backend)) from exc
    return header
