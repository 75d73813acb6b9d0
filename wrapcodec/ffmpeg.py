"""The one module that runs ffmpeg.

Command lines are built by pure functions (tested as argument lists) with ffmpeg-python kept
behind this module; running them streams frames through pipes, captures stderr to a file
(no pipe deadlock), and checks what came back: exit code, decoded frame count and frame size.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import ffmpeg as ffmpeg_python

from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.errors import BackendError, FFmpegError, Y4MError
from wrapcodec.y4m import Frame, Y4MReader

ENV_VAR = "WRAPCODEC_FFMPEG"


def ffmpeg_exe() -> str:
    """The ffmpeg binary: ``$WRAPCODEC_FFMPEG`` if set, else the one bundled by imageio-ffmpeg."""
    override = os.environ.get(ENV_VAR)
    if override:
        found = shutil.which(override)
        if found is None:
            raise BackendError(f"{ENV_VAR}={override!r} is not an executable")
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BackendError("imageio-ffmpeg is not installed and WRAPCODEC_FFMPEG is unset") from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:
        raise BackendError(f"no ffmpeg binary: {exc}") from exc


@dataclass(frozen=True)
class Capabilities:
    """What one ffmpeg binary can do."""

    exe: str
    version: str
    encoders: frozenset[str]
    decoders: frozenset[str]
    muxers: frozenset[str]
    demuxers: frozenset[str]


def _list(exe: str, what: str) -> str:
    proc = subprocess.run(
        [exe, "-hide_banner", f"-{what}"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise FFmpegError(f"'{exe} -{what}' failed", [exe, f"-{what}"], proc.stderr)
    return proc.stdout


def _names(listing: str, codec_table: bool) -> frozenset[str]:
    """Names in an ffmpeg listing: codec tables read " V....D libx264  ...", format tables
    " E  h264  ..." or " DE matroska,webm  ..."."""
    names: set[str] = set()
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[1] == "=":
            continue
        flags = parts[0]
        if (codec_table and len(flags) == 6) or (not codec_table and set(flags) <= set("DEd")):
            names.update(parts[1].split(","))
    return frozenset(names)


@functools.lru_cache(maxsize=4)
def _capabilities(exe: str) -> Capabilities:
    version_out = subprocess.run(
        [exe, "-hide_banner", "-version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"ffmpeg version (\S+)", version_out)
    return Capabilities(
        exe=exe,
        version=match.group(1) if match else "unknown",
        encoders=_names(_list(exe, "encoders"), codec_table=True),
        decoders=_names(_list(exe, "decoders"), codec_table=True),
        muxers=_names(_list(exe, "muxers"), codec_table=False),
        demuxers=_names(_list(exe, "demuxers"), codec_table=False),
    )


def capabilities() -> Capabilities:
    """Encoders, decoders and formats of the configured ffmpeg (cached per binary)."""
    return _capabilities(ffmpeg_exe())


def missing(backend: Backend) -> list[str]:
    """What the configured ffmpeg lacks to run ``backend`` (empty when usable)."""
    caps = capabilities()
    lacks = []
    if backend.encoder not in caps.encoders:
        lacks.append(f"encoder {backend.encoder}")
    if backend.decoder not in caps.decoders:
        lacks.append(f"decoder {backend.decoder}")
    if backend.stream_format not in caps.muxers:
        lacks.append(f"muxer {backend.stream_format}")
    if backend.stream_format not in caps.demuxers:
        lacks.append(f"demuxer {backend.stream_format}")
    return lacks


def require(backend: Backend) -> None:
    """Raise :class:`BackendError` naming what this ffmpeg lacks for ``backend``."""
    lacks = missing(backend)
    if lacks:
        raise BackendError(
            f"backend {backend.name} cannot run: this ffmpeg ({ffmpeg_exe()}) has no "
            + ", ".join(lacks)
        )


def pix_fmt(bitdepth: int) -> str:
    """ffmpeg pixel format of planar 4:2:0 at ``bitdepth``."""
    return "yuv420p" if bitdepth == 8 else "yuv420p10le"


def encode_args(
    exe: str,
    backend: Backend,
    settings: EncodeSettings,
    width: int,
    height: int,
    fps: str,
    out_path: str,
) -> list[str]:
    """ffmpeg command that reads raw 4:2:0 frames on stdin and writes an Annex B stream."""
    stream = ffmpeg_python.input(
        "pipe:",
        format="rawvideo",
        pix_fmt=pix_fmt(settings.bitdepth),
        s=f"{width}x{height}",
        r=fps,
    )
    stream = ffmpeg_python.output(
        stream, out_path, format=backend.stream_format, vcodec=backend.encoder, an=None
    )
    args: list[str] = ffmpeg_python.get_args(stream)
    # Codec options go after -c:v; they are ordered, so they are appended by hand.
    position = args.index(out_path)
    args[position:position] = backend.codec_args(
        backend.codec_qp(settings), settings.preset, settings.threads
    )
    return [exe, "-hide_banner", "-nostdin", "-nostats", "-y", *args]


def decode_args(exe: str, backend: Backend, in_path: str, bitdepth: int) -> list[str]:
    """ffmpeg command that decodes an Annex B stream to y4m on stdout (size is in its header)."""
    stream = ffmpeg_python.input(in_path, format=backend.stream_format, vcodec=backend.decoder)
    stream = ffmpeg_python.output(
        stream, "pipe:", format="yuv4mpegpipe", pix_fmt=pix_fmt(bitdepth), strict="-1"
    )
    return [exe, "-hide_banner", "-nostdin", "-nostats", *ffmpeg_python.get_args(stream)]


def _stderr_text(handle: IO[bytes]) -> str:
    handle.seek(0)
    return handle.read()[-8192:].decode("utf-8", "replace")


def _frame_bytes(frame: Frame, bitdepth: int) -> bytes:
    dtype = "<u2" if bitdepth > 8 else "u1"
    return b"".join(plane.astype(dtype, copy=False).tobytes() for plane in frame)


def encode(
    backend: Backend,
    settings: EncodeSettings,
    frames: Iterable[Frame],
    width: int,
    height: int,
    fps: str,
    out_path: Path,
) -> int:
    """Encode ``frames`` (already at the coded size) to ``out_path``; returns the frame count.

    Frames stream through ffmpeg's stdin one at a time, so memory does not grow with length.
    """
    backend.validate(settings)
    cmd = encode_args(ffmpeg_exe(), backend, settings, width, height, fps, str(out_path))
    count = 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            assert proc.stdin is not None
            try:
                for frame in frames:
                    proc.stdin.write(_frame_bytes(frame, settings.bitdepth))
                    count += 1
                proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg died; its exit code and stderr say why
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc != 0:
            raise FFmpegError(
                f"{backend.encoder} failed (exit {rc}) after {count} frames", cmd, _stderr_text(err)
            )
        if not out_path.exists() or out_path.stat().st_size == 0:
            raise FFmpegError(f"{backend.encoder} wrote no bitstream", cmd, _stderr_text(err))
    return count


def decode(
    backend: Backend,
    stream_path: Path,
    width: int,
    height: int,
    bitdepth: int,
    frame_count: int,
) -> Iterator[Frame]:
    """Decode ``stream_path`` frame by frame, checking size and count against what was coded."""
    cmd = decode_args(ffmpeg_exe(), backend, str(stream_path), bitdepth)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            assert proc.stdout is not None
            got = 0
            try:
                reader = Y4MReader(proc.stdout)
                if (reader.info.width, reader.info.height) != (width, height):
                    raise FFmpegError(
                        f"{backend.decoder} decoded {reader.info.width}x{reader.info.height}, "
                        f"expected {width}x{height}",
                        cmd,
                        _stderr_text(err),
                    )
                for frame in reader:
                    got += 1
                    if got > frame_count:
                        break
                    yield frame
            except Y4MError as exc:
                proc.wait()
                raise FFmpegError(
                    f"{backend.decoder} output unreadable: {exc}", cmd, _stderr_text(err)
                ) from exc
            proc.stdout.close()
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc != 0 and got <= frame_count:
            raise FFmpegError(f"{backend.decoder} failed (exit {rc})", cmd, _stderr_text(err))
        if got != frame_count:
            raise FFmpegError(
                f"{backend.decoder} decoded {'more than ' if got > frame_count else ''}"
                f"{min(got, frame_count)} frames, expected {frame_count}",
                cmd,
                _stderr_text(err),
            )


def encoder_version(backend: Backend) -> str:
    """The codec library's version, read off a one-frame encode (its log or stream header)."""
    if not backend.version_pattern:
        return "unknown"
    with tempfile.TemporaryDirectory(prefix="wrapcodec-") as tmp:
        out = Path(tmp) / f"probe{backend.extension}"
        size = f"{max(64, backend.min_width)}x{max(64, backend.min_height)}"
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-f", "lavfi", "-i",
            f"testsrc=s={size}:d=0.04", "-pix_fmt", pix_fmt(max(backend.bitdepths)),
            "-c:v", backend.encoder, "-f", backend.stream_format, "-y", str(out),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, check=False)
        text = proc.stderr.decode("utf-8", "replace")
        if out.exists():
            text += out.read_bytes()[:4096].decode("latin-1")
    match = re.search(backend.version_pattern, text)
    return match.group(1) if match else "unknown"
