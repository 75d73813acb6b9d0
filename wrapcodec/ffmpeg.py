"""The one module that runs ffmpeg.

Command lines are built by pure functions (tested as argument lists) with ffmpeg-python kept
behind this module; running them streams frames through pipes, captures stderr to a file
(no pipe deadlock), and checks what came back: exit code, decoded frame count, frame size and
bit depth.

Decoding must finish on any input, a damaged or forged stream included: every wait on ffmpeg
is bounded (:data:`STALL_TIMEOUT_S`, then ffmpeg is killed), its output pipe is closed before
it is waited for, and every failure is an :class:`~wrapcodec.errors.FFmpegError` whose message
is one line.

Every ffmpeg process is registered with :mod:`wrapcodec.interrupt`, so that a SIGTERM kills
it too; its output is decoded tolerantly (an ffmpeg that prints bytes that are not UTF-8 is
refused in one line, not with a traceback), and one killed by SIGXFSZ (the file-size limit)
is said to be a write that failed.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import ffmpeg as ffmpeg_python

from wrapcodec import interrupt
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.errors import BackendError, FFmpegError, InputError, Y4MError
from wrapcodec.streams import StreamFormat
from wrapcodec.y4m import Frame, VideoInfo, Y4MReader

ENV_VAR = "WRAPCODEC_FFMPEG"

STALL_TIMEOUT_S = 60.0
"""Longest a decode waits on ffmpeg at a time (for its next picture, or for it to exit) before
killing it. Time spent post-processing a picture while ffmpeg waits to write does not count."""

_KILL_WAIT_S = 10.0
"""How long to wait for a killed ffmpeg to be reaped before giving up on it."""


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


def _probe(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a short ffmpeg query, killed after :data:`STALL_TIMEOUT_S` (a binary that hangs
    must not hang wrapcodec); its output decoded tolerantly (bytes that are not UTF-8 become
    U+FFFD)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False, timeout=STALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FFmpegError(
            f"'{' '.join(cmd)}' did not answer in {STALL_TIMEOUT_S:g} s", cmd
        ) from None
    return subprocess.CompletedProcess(
        cmd,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def _list(exe: str, what: str) -> str:
    proc = _probe([exe, "-hide_banner", f"-{what}"])
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
    version_out = _probe([exe, "-hide_banner", "-version"]).stdout
    match = re.search(r"ffmpeg version (\S+)", version_out)
    if match is None:
        garbled = " (nor UTF-8 text)" if "\ufffd" in version_out else ""
        raise BackendError(
            f"this ffmpeg ({exe}) is not usable: what '-version' prints is not ffmpeg's"
            f"{garbled}, it lacks 'ffmpeg version'"
        )
    return Capabilities(
        exe=exe,
        version=match.group(1),
        encoders=_names(_list(exe, "encoders"), codec_table=True),
        decoders=_names(_list(exe, "decoders"), codec_table=True),
        muxers=_names(_list(exe, "muxers"), codec_table=False),
        demuxers=_names(_list(exe, "demuxers"), codec_table=False),
    )


def capabilities() -> Capabilities:
    """Encoders, decoders and formats of the configured ffmpeg (cached per binary)."""
    return _capabilities(ffmpeg_exe())


def missing(backend: Backend, *, decode_only: bool = False) -> list[str]:
    """What the configured ffmpeg lacks to run ``backend`` (empty when usable).

    With ``decode_only`` only what decoding a .wrp needs is checked (decoder and demuxer), so
    an ffmpeg that can decode but not encode a codec still decodes its files."""
    caps = capabilities()
    have = {
        "encoder": caps.encoders,
        "decoder": caps.decoders,
        "muxer": caps.muxers,
        "demuxer": caps.demuxers,
    }
    lacks = []
    for kind, name in backend.ffmpeg_needs(decode_only=decode_only):
        if kind == "decoder":  # any decoder of the same bitstream will do (decoder_fallbacks)
            if available_decoder(backend) is None:
                lacks.append("decoder " + " or ".join(backend.decoders))
        elif name not in have[kind]:
            lacks.append(f"{kind} {name}")
    return lacks


def available_decoder(backend: Backend) -> str | None:
    """The first of ``backend.decoders`` the configured ffmpeg has (None if it has none)."""
    have = capabilities().decoders
    return next((name for name in backend.decoders if name in have), None)


def with_available_decoder(backend: Backend) -> Backend:
    """``backend`` decoding with the first of its decoders this ffmpeg has: itself when that is
    its own ``decoder`` or when it has none (decoding then fails naming ``decoder``)."""
    if not backend.decoder_fallbacks:
        return backend
    found = available_decoder(backend)
    return backend if found in (None, backend.decoder) else replace(backend, decoder=found)


def require(backend: Backend, *, decode_only: bool = False) -> None:
    """Raise :class:`BackendError` naming what this ffmpeg lacks for ``backend`` (to decode
    only, with ``decode_only``)."""
    lacks = missing(backend, decode_only=decode_only)
    if lacks:
        raise BackendError(
            f"backend {backend.name} cannot {'decode' if decode_only else 'run'}: this ffmpeg "
            f"({ffmpeg_exe()}) has no " + ", ".join(lacks)
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
    output: StreamFormat | None = None,
) -> list[str]:
    """ffmpeg command that reads raw 4:2:0 frames on stdin and writes an Annex B stream, or
    the file ``output`` says (its muxer, with its arguments for this codec)."""
    stream = ffmpeg_python.input(
        "pipe:",
        format="rawvideo",
        pix_fmt=pix_fmt(settings.bitdepth),
        s=f"{width}x{height}",
        r=fps,
    )
    muxer = backend.stream_format if output is None else output.muxer
    stream = ffmpeg_python.output(stream, out_path, format=muxer, vcodec=backend.encoder, an=None)
    args: list[str] = ffmpeg_python.get_args(stream)
    # Codec options go after -c:v; they are ordered, so they are appended by hand.
    position = args.index(out_path)
    args[position:position] = backend.codec_args(
        backend.codec_qp(settings), settings.preset, settings.threads
    ) + ([] if output is None else output.muxer_args(backend.name))
    return [exe, "-hide_banner", "-nostdin", "-nostats", "-y", *args]


def decode_args(
    exe: str, backend: Backend, in_path: str, bitdepth: int, demuxer: str | None = None
) -> list[str]:
    """ffmpeg command that decodes an Annex B stream to y4m on stdout; or a file of
    ``demuxer``'s format, every picture once (``-fps_mode passthrough``: none dropped or
    repeated by the container's timestamps).

    The pictures keep the stream's own pixel format (no ``-pix_fmt``), so the y4m header
    states the bit depth and size the stream really has and :func:`decode` can refuse a
    stream that does not match its .wrp header instead of converting it silently
    (``bitdepth``, the expected depth, is checked there, not passed to ffmpeg). A size change
    in mid-stream is an ffmpeg error (``-noautoscale``); a pixel-format change is logged at
    ``info`` level ("Reconfiguring filter graph") and refused by :func:`decode`.
    """
    del bitdepth  # checked against the output, never converted to
    stream = ffmpeg_python.input(
        in_path, format=demuxer or backend.stream_format, vcodec=backend.decoder
    )
    stream = ffmpeg_python.output(stream, "pipe:", format="yuv4mpegpipe", strict="-1")
    args: list[str] = ffmpeg_python.get_args(stream)
    at = args.index("pipe:")
    args[at:at] = ["-noautoscale"] + ([] if demuxer is None else ["-fps_mode", "passthrough"])
    return [exe, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", *args]


# ffmpeg's own error for "more frames failed to decode than -max_error_rate allows" (the
# FFERRTAG 'ERED' of fftools), which it prints as a bare number.
_ERROR_NUMBERS = {
    "-1145393733": "too many pictures failed to decode",
}
_ADDRESS = re.compile(r"\[[^\[\]]* @ 0x[0-9a-f]+\] ?")
# Lines that say nothing to a user. Muxing to the pipe fails only when we closed it, having
# seen enough, or after a change in mid-stream that decode() names itself.
_NOISE = re.compile(
    r"Mjpegtools will not work|Terminating thread with return code|muxing overhead|^frame="
    r"|Broken pipe|^Conversion failed!$|Error muxing a packet"
    r"|Error submitting a packet to the muxer"
)
# ffmpeg 7+: "Reconfiguring filter graph because video parameters changed to yuv420p10le(tv),
# 192x108"; ffmpeg 3: "Input stream #0:0 frame changed from size:192x108 fmt:yuv420p to
# size:96x54 fmt:yuv420p".
_RECONFIGURED = re.compile(
    r"video parameters changed to (?P<fmt>\w+).*?(?P<size>\d+x\d+)"
    r"|frame changed from size:\S+ fmt:\S+ to size:(?P<size3>\d+x\d+) fmt:(?P<fmt3>\w+)"
)


def _clean_stderr(text: str) -> str:
    """ffmpeg's log without what says nothing to a user (addresses, thread bookkeeping, the
    y4m "non standard" warning), with its bare error numbers spelled out."""
    lines = []
    for line in text.splitlines():
        line = _ADDRESS.sub("", line).strip()
        if not line or _NOISE.search(line):
            continue
        for number, meaning in _ERROR_NUMBERS.items():
            line = line.replace(f"Error number {number} occurred", meaning)
        lines.append(line)
    return "\n".join(lines)


def _read_log(handle: IO[bytes]) -> tuple[str, str]:
    """ffmpeg's stderr (captured in ``handle``): its tail cleaned for a user, and the first
    change of format in mid-stream it reports, as "yuv420p10le 192x108" ('' if none). The
    whole log is scanned for the change, which a long tail of decoding errors may follow."""
    handle.seek(0)
    change = ""
    tail: collections.deque[bytes] = collections.deque(maxlen=400)
    for line in handle:
        if not change and (found := _RECONFIGURED.search(line.decode("utf-8", "replace"))):
            change = f"{found['fmt'] or found['fmt3']} {found['size'] or found['size3']}"
        tail.append(line)
    return _clean_stderr(b"".join(tail).decode("utf-8", "replace"))[-8192:], change


def _stderr_text(handle: IO[bytes]) -> str:
    """The tail of ffmpeg's stderr (captured in ``handle``), cleaned for a user."""
    return _read_log(handle)[0]


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
    output: StreamFormat | None = None,
) -> int:
    """Encode ``frames`` (already at the coded size) to ``out_path``, an Annex B stream or the
    file ``output`` says; returns the frame count.

    Frames stream through ffmpeg's stdin one at a time, so memory does not grow with length.
    """
    backend.validate(settings)
    cmd = encode_args(ffmpeg_exe(), backend, settings, width, height, fps, str(out_path), output)
    count = 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            interrupt.track(proc)
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
            interrupt.untrack(proc)
        if rc == -signal.SIGXFSZ:  # the file-size limit (ulimit -f) stopped its write
            raise InputError(f"cannot write {out_path}: {os.strerror(errno.EFBIG)}")
        if rc != 0:
            raise FFmpegError(
                f"{backend.encoder} failed (exit {rc}) after {count} frames", cmd, _stderr_text(err)
            )
        if not out_path.exists() or out_path.stat().st_size == 0:
            raise FFmpegError(f"{backend.encoder} wrote no bitstream", cmd, _stderr_text(err))
    return count


def _run_to_end(cmd: list[str], stdout: IO[bytes] | int, err: IO[bytes]) -> int:
    """Run ``cmd`` with no input to its end, killed by a signal that stops the program
    (:mod:`wrapcodec.interrupt`); its exit status."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err)
    try:
        interrupt.track(proc)
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        interrupt.untrack(proc)


def filter_args(exe: str, distorted: str, reference: str, graph: str) -> list[str]:
    """The command that runs the two-input filter ``graph`` (a metric: ``ssim``, ``libvmaf``)
    on ``distorted`` against ``reference``, in that order (the one those filters expect), and
    discards the output: the filter writes its figures to the files its options name."""
    return [
        exe, "-hide_banner", "-nostdin", "-i", distorted, "-i", reference,
        "-lavfi", f"[0:v][1:v]{graph}", "-f", "null", "-",
    ]  # fmt: skip


def run_filter(distorted: Path, reference: Path, graph: str) -> None:
    """Run :func:`filter_args`; a failure is an :class:`FFmpegError` with ffmpeg's stderr."""
    cmd = filter_args(ffmpeg_exe(), str(distorted), str(reference), graph)
    with tempfile.TemporaryFile() as err:
        rc = _run_to_end(cmd, subprocess.DEVNULL, err)
        if rc != 0:
            raise FFmpegError(f"metric filter failed (exit {rc})", cmd, _stderr_text(err))


@functools.lru_cache(maxsize=4)
def _filters(exe: str) -> frozenset[str]:
    """Names in ``-filters``, whose lines read " .. scdet   V->V   Detect video scene change"
    (" TSC scdet ..." in older builds)."""
    names = set()
    for line in _list(exe, "filters").splitlines():
        parts = line.split()
        if len(parts) >= 3 and "->" in parts[2]:
            names.add(parts[1])
    return frozenset(names)


def has_filter(name: str) -> bool:
    """Whether the configured ffmpeg has the filter ``name`` (cached per binary)."""
    return name in _filters(ffmpeg_exe())


def scene_args(exe: str, in_path: str) -> list[str]:
    """The command that runs ``scdet`` on the y4m file ``in_path`` and prints every frame's
    scene score on stdout ("frame:N ..." then "lavfi.scd.score=S"), discarding the frames."""
    graph = "scdet,metadata=mode=print:key=lavfi.scd.score:file=-"
    return [
        exe, "-hide_banner", "-nostdin", "-nostats", "-f", "yuv4mpegpipe", "-i", in_path,
        "-vf", graph, "-an", "-f", "null", "-",
    ]  # fmt: skip


def parse_scene_scores(text: str) -> dict[int, float]:
    """Frame number to score, from what :func:`scene_args` prints; lines it does not know
    are passed over."""
    scores: dict[int, float] = {}
    frame = None
    for line in text.splitlines():
        if line.startswith("frame:"):
            with contextlib.suppress(ValueError, IndexError):
                frame = int(line[len("frame:") :].split()[0])
        elif line.startswith("lavfi.scd.score=") and frame is not None:
            with contextlib.suppress(ValueError):
                scores[frame] = float(line.split("=", 1)[1])
    return scores


def scene_scores(in_path: Path, frame_count: int) -> list[float]:
    """The ``scdet`` scene score (0 to 100) of each of the ``frame_count`` frames of the y4m
    file ``in_path``: how much more frame *i* differs from frame *i*-1 than that frame from its
    own predecessor (frame 0 scores 0, frame 1 its plain difference). Scores for another
    number of frames, or a failed run, are an :class:`FFmpegError` with ffmpeg's stderr."""
    cmd = scene_args(ffmpeg_exe(), str(in_path))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rc = _run_to_end(cmd, out, err)
        if rc != 0:
            raise FFmpegError(f"scene detection failed (exit {rc})", cmd, _stderr_text(err))
        out.seek(0)
        scores = parse_scene_scores(out.read().decode("utf-8", "replace"))
        if sorted(scores) != list(range(frame_count)):
            raise FFmpegError(
                f"scene detection scored {len(scores)} frames, expected {frame_count}",
                cmd,
                _stderr_text(err),
            )
    return [scores[i] for i in range(frame_count)]


class _Watchdog:
    """Kills ``proc`` when it keeps its reader waiting more than ``limit`` seconds at a time.

    The reader marks its waits with :meth:`waiting`; time between them (the caller working on
    a picture while ffmpeg blocks on a full pipe) does not count. A thread, not ``select``, so
    that it works on any platform and around any read.
    """

    def __init__(self, proc: subprocess.Popen[bytes], limit: float) -> None:
        self.limit = limit
        self.fired = False
        self._proc = proc
        self._since: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ffmpeg-watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Count the time spent inside this block against ``limit``."""
        self._since = time.monotonic()
        try:
            yield
        finally:
            self._since = None

    def _watch(self) -> None:
        tick = min(0.25, self.limit / 4)
        while not self._done.wait(tick):
            since = self._since
            if since is not None and time.monotonic() - since > self.limit:
                self.fired = True
                with contextlib.suppress(OSError):
                    self._proc.kill()
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _finish(proc: subprocess.Popen[bytes], dog: _Watchdog) -> int:
    """Close ffmpeg's output pipe, then wait (bounded) for it to exit; its exit code.

    Closing first matters: an ffmpeg blocked writing to a pipe nobody reads never exits, and
    it ignores SIGTERM while blocked. A closed pipe makes its write fail, so it ends."""
    if proc.stdout is not None:
        with contextlib.suppress(OSError):
            proc.stdout.close()
    with dog.waiting():
        try:
            return proc.wait(timeout=dog.limit)
        except subprocess.TimeoutExpired:
            dog.fired = True
    _kill(proc)
    return proc.returncode if proc.returncode is not None else -9


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` if it still runs and reap it, waiting at most :data:`_KILL_WAIT_S`."""
    if proc.stdout is not None:
        with contextlib.suppress(OSError):
            proc.stdout.close()
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=_KILL_WAIT_S)


def _header_problem(decoder: str, info: VideoInfo, width: int, height: int, depth: int) -> str:
    """What makes the decoded stream's y4m header differ from what was coded ('' if nothing)."""
    if (info.width, info.height) != (width, height):
        return f"{decoder} decoded {info.width}x{info.height} frames, expected {width}x{height}"
    if info.bitdepth != depth:
        return f"{decoder} decoded {info.bitdepth}-bit frames, expected {depth}-bit"
    return ""


def _verdict(decoder: str, got: int, frame_count: int, rc: int, change: str, unusable: str) -> str:
    """What is wrong with a decode that gave ``got`` frames and exit code ``rc`` ('' if
    nothing). A ``change`` of format or size in mid-stream comes first, as the cause of
    whatever failed after it; then ``unusable``, why the output could not be read to its end."""
    if change:
        return f"{decoder} stream changes format in mid-stream (to {change})"
    if unusable:
        return unusable
    if got == 0:
        return (
            f"{decoder} decoded no frame (exit {rc}): the payload is not a {decoder} stream "
            "or is damaged"
        )
    if got > frame_count:
        return f"{decoder} decoded more than {frame_count} frames, expected {frame_count}"
    if rc != 0:
        return f"{decoder} failed (exit {rc}) after {got} of {frame_count} frames"
    if got < frame_count:
        return f"{decoder} decoded {got} frames, expected {frame_count}"
    return ""


def decode(
    backend: Backend,
    stream_path: Path,
    width: int,
    height: int,
    bitdepth: int,
    frame_count: int,
    *,
    stall_timeout: float = STALL_TIMEOUT_S,
    demuxer: str | None = None,
) -> Iterator[Frame]:
    """Decode ``stream_path`` frame by frame, checking it against what was coded.

    The stream must decode to exactly ``frame_count`` 4:2:0 frames of ``width``×``height``
    at ``bitdepth`` bits, without changing format mid-stream; anything else raises
    :class:`FFmpegError` (one line) instead of being converted. The decode always ends: ffmpeg
    is killed when it keeps us waiting more than ``stall_timeout`` seconds at a time, and when
    the caller stops early. The last frame is yielded before the final checks (count, exit
    code), so a caller must consume the iterator to the end before trusting its output.
    """
    backend = with_available_decoder(backend)
    cmd = decode_args(ffmpeg_exe(), backend, str(stream_path), bitdepth, demuxer)
    name = backend.decoder
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            interrupt.track(proc)
        except BaseException:
            _kill(proc)
            raise
        dog = _Watchdog(proc, stall_timeout)
        got = 0
        problem = ""  # the y4m header shows a stream other than the one coded
        unusable = ""  # the output broke off or holds what wrapcodec cannot take
        try:
            assert proc.stdout is not None
            try:
                with dog.waiting():
                    reader = Y4MReader(proc.stdout)
                problem = _header_problem(name, reader.info, width, height, bitdepth)
                frames = iter(() if problem else reader)
                while got <= frame_count:
                    with dog.waiting():
                        frame = next(frames, None)
                    if frame is None:
                        break
                    got += 1
                    if got <= frame_count:
                        yield frame
            except Y4MError as exc:
                # No y4m at all is no frame, which the verdict reports with the exit code.
                if not (got == 0 and str(exc).endswith("empty file")):
                    unusable = f"{name} output unusable after {got} frames: {exc}"
            rc = _finish(proc, dog)
        finally:
            dog.stop()
            _kill(proc)
            interrupt.untrack(proc)
        stderr, change = _read_log(err)
        if dog.fired:
            problem = f"{name} stalled (no output for {stall_timeout:g} s) after {got} frames"
        problem = problem or _verdict(name, got, frame_count, rc, change, unusable)
        if problem:
            raise FFmpegError(problem, cmd, stderr)


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
