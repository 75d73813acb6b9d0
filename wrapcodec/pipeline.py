"""Pre-processing, coding and post-processing of one option, shared by encoder and decoder.

The encoder measures each candidate by decoding its bitstream through :func:`reconstruct`,
the very function ``wrapcodec decode`` uses, so the decoder's output is the exact frames the
encoder measured. Post-processor updates are applied by :func:`segment_layout`, for both, with
the update in force carried from segment to segment (:class:`InForce`).

Sample scaling between bit depths is a shift: a d-bit sample ``x`` is ``x·2^(d'−d)`` at depth
d', rounded half to even and clipped to ``[0, 2^d' − 1]`` where it lands on integers.
"""

from __future__ import annotations

import functools
import itertools
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from numba import njit

from wrapcodec import ffmpeg
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.bank import Bank, Processors
from wrapcodec.errors import ContainerError
from wrapcodec.exact import ExactPost
from wrapcodec.metrics import PsnrAccumulator
from wrapcodec.nets import PRE_ARITHMETICS, from_unit, pre_arithmetic, unit
from wrapcodec.options import Option, bottleneck_size
from wrapcodec.resample import resample_plane
from wrapcodec.update import Update, apply_update, decode_update, resolve
from wrapcodec.y4m import Frame, VideoInfo, iter_frames

T = TypeVar("T")

REVISION = 4
"""Bumped whenever the numbers this pipeline produces change (cached bench points expire).
4: x264 and x265 tuned for PSNR."""


def quantize(x: np.ndarray, bitdepth: int) -> np.ndarray:
    """Round half to even and clip to the ``bitdepth`` range, as uint16."""
    return np.clip(np.rint(x), 0, (1 << bitdepth) - 1).astype(np.uint16)


def compute_padding(width: int, height: int, coded: tuple[int, int]) -> tuple[int, int]:
    """Luma columns and rows of edge padding that take ``width``×``height`` to ``coded``."""
    return coded[0] - width, coded[1] - height


def pad_frame(frame: Frame, coded: tuple[int, int]) -> Frame:
    """Pad a 4:2:0 frame to the ``coded`` luma size by edge replication (right and bottom)."""
    cw, ch = coded
    planes = []
    for plane, (w, h) in zip(
        frame, ((cw, ch), (cw // 2, ch // 2), (cw // 2, ch // 2)), strict=True
    ):
        pad_w, pad_h = w - plane.shape[1], h - plane.shape[0]
        planes.append(
            np.pad(plane, ((0, pad_h), (0, pad_w)), mode="edge") if pad_w or pad_h else plane
        )
    return Frame(*planes)


def crop_frame(frame: Frame, width: int, height: int) -> Frame:
    """Undo :func:`pad_frame`: keep the top-left ``width``×``height`` picture."""
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return Frame(frame.y[:height, :width], frame.u[:ch, :cw], frame.v[:ch, :cw])


def plane_sizes(width: int, height: int) -> tuple[tuple[int, int], ...]:
    """(height, width) of Y, U, V for a 4:2:0 picture."""
    c = ((height + 1) // 2, (width + 1) // 2)
    return (height, width), c, c


@dataclass(frozen=True)
class Layout:
    """Sizes and depths of one option applied to one source."""

    source: VideoInfo
    option: Option
    bottleneck: tuple[int, int]  # luma width, height
    coded: tuple[int, int]  # after padding for the codec
    bitdepth: int  # of the bottleneck
    processors: Processors | None = None  # the networks of a neural option
    integer: bool = False  # post-process in integer arithmetic (processors.exact)
    pre_arithmetic: str = "float32"  # of the pre-processor (nets.PRE_ARITHMETICS)
    prior: int = 0  # which of the bank's models for the option (0: its default)

    @classmethod
    def make(
        cls,
        source: VideoInfo,
        option: Option,
        backend: Backend,
        bitdepth: int,
        bank: Bank | None = None,
        integer: bool | None = None,
        pre_arithmetic: str = "float32",
        prior: int = 0,
    ) -> Layout:
        """``bank`` is needed for neural options (its networks are loaded once); ``integer``:
        post-process in integer arithmetic [when the bank has it]; ``pre_arithmetic``: that of
        a wrapper's pre-processor (:data:`~wrapcodec.nets.PRE_ARITHMETICS`); ``prior``: the
        bank's model for the option (0: its default; docs/format.md, "Prior")."""
        if pre_arithmetic not in PRE_ARITHMETICS:
            raise ValueError(f"pre-processor arithmetic {pre_arithmetic!r}")
        bw, bh = bottleneck_size(source.width, source.height, option.ratio)
        processors = None
        exact = False
        if option.neural:
            if bank is None:
                raise ValueError(f"{option.name} needs a model bank")
            processors = bank.processors(option, prior)
            exact = bank.integer if integer is None else integer
            if exact and processors.exact is None:
                raise ContainerError(f"the model of {option.name} has no integer arithmetic")
        elif prior:
            raise ContainerError(f"option {option.name} has no model, so no prior {prior}")
        coded = backend.coded_size(bw, bh)
        return cls(
            source, option, (bw, bh), coded, bitdepth, processors, exact, pre_arithmetic, prior
        )

    def with_update(self, update: bytes, in_force: Update | None = None) -> Layout:
        """This layout with a segment's post-processor update applied (no update: itself); a
        relative update resolves against ``in_force`` (:func:`wrapcodec.update.resolve`).

        Raises :class:`ContainerError` for an update that does not fit the model, or a
        relative one without (or not matching) an update in force."""
        return self.updated(update, in_force)[0]

    def updated(
        self, update: bytes, in_force: Update | None = None
    ) -> tuple[Layout, Update | None]:
        """:meth:`with_update`, and the resolved update it applied (None without one)."""
        if not update:
            return self, None
        if self.processors is None:
            raise ContainerError(f"option {self.option.name} takes no post-processor update")
        resolved = resolve(decode_update(update, self.processors.post), in_force)
        return self.applied(resolved), resolved

    def applied(self, resolved: Update) -> Layout:
        """This layout with the resolved (absolute) ``resolved`` added to its post-processor."""
        assert self.processors is not None and not resolved.relative
        adapted = apply_update(self.processors.post, resolved)
        return replace(self, processors=self.processors.with_post(adapted))


@dataclass(frozen=True)
class InForce:
    """The update in force after a segment: the segment's option code and the resolved
    (absolute) update its post-processor ran with. The next segment may inherit it or send
    a relative update on top of it only if it has the same option."""

    option: int
    update: Update
    prior: int = 0


def update_in_force(previous: InForce | None, layout: Layout) -> Update | None:
    """The update ``previous`` leaves in force for a segment of ``layout``: None where there
    is none, or where the option code or the prior changes (the chain breaks)."""
    if previous is None or (previous.option, previous.prior) != (
        int(layout.option.code),
        layout.prior,
    ):
        return None
    return previous.update


def segment_layout(
    layout: Layout, update: bytes, inherit: bool, previous: InForce | None
) -> tuple[Layout, InForce | None]:
    """The layout a segment is post-processed with and the update in force after it.

    ``layout`` is the segment's option with the bank's models, ``update`` and ``inherit`` its
    container fields, ``previous`` the update in force after the segment before. The chain
    rules (docs/format.md, "The update in force"): the update in force continues only while
    the option code and prior stay the same; an inheriting segment reuses it; a segment's own update
    replaces it (absolute) or is added to it (relative); a segment with neither ends it. The
    encoder measures its candidates through this very function, so the decoder applies
    exactly what was measured. Raises :class:`ContainerError` when a relative update or an
    inheriting segment finds no update in force of its option."""
    base = update_in_force(previous, layout)
    if inherit:
        if base is None:
            raise ContainerError("the segment inherits an update, but none is in force")
        return layout.applied(base), previous
    adapted, resolved = layout.updated(update, base)
    if resolved is None:
        return adapted, None
    return adapted, InForce(int(layout.option.code), resolved, layout.prior)


def _convert(
    frame: Frame, kind: str, sizes: tuple[tuple[int, int], ...], scale: float, bitdepth: int
) -> Frame:
    """Rescale sample values by ``scale``, resample each plane to ``sizes`` (linear options)
    and quantise to ``bitdepth``."""
    if kind == "direct":
        table = _rescale_table(scale, bitdepth)
        return Frame(*(_look_up(table, p) for p in frame))
    if kind not in ("lanczos", "bilinear"):
        raise NotImplementedError(f"{kind} options have no processor here")
    return Frame(
        *(
            quantize(resample_plane(p.astype(np.float64) * scale, h, w, kind), bitdepth)  # type: ignore[arg-type]
            for p, (h, w) in zip(frame, sizes, strict=True)
        )
    )


@functools.lru_cache(maxsize=8)
def _rescale_table(scale: float, bitdepth: int) -> np.ndarray:
    """``quantize(x · scale, bitdepth)`` for every 16-bit sample value x: the same function
    of each sample as a lookup."""
    return quantize(np.arange(1 << 16, dtype=np.float64) * scale, bitdepth)


@njit(cache=True, nogil=True)
def _look_up(table: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """``table[plane]`` for a 2-D plane of samples (2.5 times as fast as ``np.take``)."""
    out = np.empty(plane.shape, table.dtype)
    for i in range(plane.shape[0]):
        row, dest = plane[i], out[i]
        for j in range(row.shape[0]):
            dest[j] = table[row[j]]
    return out


def _even(n: int) -> int:
    return n + n % 2


def _even_luma(frame: Frame) -> np.ndarray:
    """The luma plane with an odd size padded by one replicated row or column (the chroma
    size is already ``ceil(n/2)``): what the networks take."""
    h, w = frame.y.shape
    return np.pad(frame.y, ((0, h % 2), (0, w % 2)), mode="edge") if h % 2 or w % 2 else frame.y


def to_tensors(frame: Frame, bitdepth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 4:2:0 frame as normalised (1,1,H,W) and (1,2,H/2,W/2) tensors, the luma by
    :func:`_even_luma`."""
    y = _even_luma(frame).astype(np.float32)
    uv = np.stack([frame.u, frame.v]).astype(np.float32)
    return unit(torch.from_numpy(y)[None, None], bitdepth), unit(
        torch.from_numpy(uv)[None], bitdepth
    )


def from_tensors(
    y: torch.Tensor, uv: torch.Tensor, width: int, height: int, bitdepth: int
) -> Frame:
    """Normalised tensors → a quantised frame of luma size ``width``×``height`` (cropped)."""
    y_s = quantize(from_unit(y[0, 0].float(), bitdepth).numpy().astype(np.float64), bitdepth)
    uv_s = quantize(from_unit(uv[0].float(), bitdepth).numpy().astype(np.float64), bitdepth)
    return crop_frame(Frame(y_s, uv_s[0], uv_s[1]), width, height)


def preprocess(frame: Frame, layout: Layout) -> Frame:
    """Source frame → bottleneck frame at the bottleneck bit depth (before codec padding)."""
    bw, bh = layout.bottleneck
    if layout.option.kind == "wrapper":
        assert layout.processors is not None and layout.processors.pre is not None
        y, uv = to_tensors(frame, layout.source.bitdepth)
        with torch.inference_mode(), pre_arithmetic(layout.pre_arithmetic):
            yb, uvb = layout.processors.pre(y, uv, (_even(bw), _even(bh)))
        return from_tensors(yb, uvb, bw, bh, layout.bitdepth)
    scale = 2.0 ** (layout.bitdepth - layout.source.bitdepth)
    kind = "bilinear" if layout.option.kind == "post" else layout.option.kind
    return _convert(frame, kind, plane_sizes(bw, bh), scale, layout.bitdepth)


def postprocess(frame: Frame, layout: Layout) -> Frame:
    """Decoded bottleneck frame (cropped) → frame at the source size and bit depth."""
    src = layout.source
    if layout.integer:
        assert layout.processors is not None and layout.processors.exact is not None
        return _exact_post(frame, layout, layout.processors.exact)
    if layout.processors is not None:
        y, uv = to_tensors(frame, layout.bitdepth)
        with torch.inference_mode():
            y_hat, uv_hat = layout.processors.post(y, uv, _even(src.height), _even(src.width))
        return from_tensors(y_hat, uv_hat, src.width, src.height, src.bitdepth)
    scale = 2.0 ** (src.bitdepth - layout.bitdepth)
    return _convert(
        frame, layout.option.kind, plane_sizes(src.width, src.height), scale, src.bitdepth
    )


def _exact_post(frame: Frame, layout: Layout, exact: ExactPost) -> Frame:
    """:func:`postprocess` in integer arithmetic, the luma by :func:`_even_luma`, the output
    cropped to the source size."""
    src = layout.source
    y, u, v = _even_luma(frame), frame.u, frame.v
    planes = exact(y, u, v, layout.bitdepth, _even(src.height), _even(src.width), src.bitdepth)
    return crop_frame(Frame(*planes), src.width, src.height)


def decode_bottleneck(
    backend: Backend, stream: Path, layout: Layout, frame_count: int
) -> Iterator[Frame]:
    """Decode ``stream``: the bottleneck frames, cropped to the bottleneck size."""
    return decode_cropped(
        backend, stream, layout.coded, layout.bottleneck, layout.bitdepth, frame_count
    )


def decode_cropped(
    backend: Backend,
    stream: Path,
    coded: tuple[int, int],
    size: tuple[int, int],
    bitdepth: int,
    frame_count: int,
) -> Iterator[Frame]:
    """Decode ``stream`` of pictures coded at ``coded`` (width, height): the frames, cropped
    to ``size``."""
    for decoded in ffmpeg.decode(backend, stream, *coded, bitdepth, frame_count):
        yield crop_frame(decoded, *size)


def reconstruct(
    backend: Backend, stream: Path, layout: Layout, frame_count: int
) -> Iterator[Frame]:
    """Decode ``stream`` and post-process it: the decoder's output, frame by frame. The
    decoded frames are read on a thread of their own, ahead of the post-processor."""
    for picture in _pictures(backend, stream, layout, frame_count, layout.processors is not None):
        yield postprocess(picture, layout)


def _pictures(
    backend: Backend, stream: Path, layout: Layout, frame_count: int, ahead: bool
) -> Iterator[Frame]:
    """The decoded bottleneck frames, read on a thread of their own when ``ahead``."""
    decoded = decode_bottleneck(backend, stream, layout, frame_count)
    return prefetched(decoded, PREFETCH_FRAMES) if ahead else decoded


PREFETCH_FRAMES = 2
_END = object()


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, produced on a thread of its own at most ``depth`` items ahead of the
    consumer. Its exceptions are raised here, in order; when the consumer stops early (or
    raises), the producer stops at its next item and ``items`` is closed on its own thread."""
    ready: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            offer((_END, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name="wrapcodec-prefetch", daemon=True)
    producer.start()
    try:
        while True:
            item, exc = ready.get()
            if exc is not None:
                raise exc
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        producer.join()


def source_frames(path: Path, first: int, count: int) -> Iterator[Frame]:
    """Frames ``first`` .. ``first + count − 1`` of a y4m file, streamed (the frames before
    ``first`` seeked over, not decoded)."""
    return itertools.islice(iter_frames(path, first), count)


@dataclass
class Coded:
    """A coded and measured candidate: its stream on disk and its figures."""

    stream: Path
    payload_bytes: int
    psnr_y: float
    psnr_u: float
    psnr_v: float
    psnr_yuv: float
    mse_8bit: float
    encode_s: float
    decode_s: float  # decoding and post-processing, without reading the source or measuring
    # Per sample of :func:`measure`: (its layout's MSE, this layout's MSE) on its frames
    sampled: tuple[tuple[float, float], ...] = ()

    @classmethod
    def of(
        cls,
        stream: Path,
        acc: PsnrAccumulator,
        encode_s: float,
        decode_s: float,
        sampled: tuple[tuple[float, float], ...] = (),
    ) -> Coded:
        """``stream`` with the figures ``acc`` gathered over the frames measured."""
        y, u, v = acc.psnr_planes
        return cls(
            stream=stream,
            payload_bytes=stream.stat().st_size,
            psnr_y=y,
            psnr_u=u,
            psnr_v=v,
            psnr_yuv=acc.psnr_yuv,
            mse_8bit=acc.mse_8bit,
            encode_s=encode_s,
            decode_s=decode_s,
            sampled=sampled,
        )


def stream_key(option: Option) -> str:
    """Options with the same key pre-process alike and so share one bitstream: direct and
    post-1/1 (bilinear resampling to the same size is the identity), post-r and bilinear-r
    (both bilinear down)."""
    if option.kind == "direct" or (option.kind == "post" and option.ratio == 1):
        return "direct"
    kind = "bilinear" if option.kind == "post" else option.kind
    return f"{kind}-{option.ratio_text}"


def encode_stream(
    backend: Backend,
    settings: EncodeSettings,
    source: Path,
    layout: Layout,
    first: int,
    count: int,
    stream: Path,
) -> float:
    """Pre-process frames ``first``.. of ``source`` with ``layout`` and encode them to
    ``stream``, frame by frame; returns the seconds it took."""
    fps = f"{layout.source.fps_num}/{layout.source.fps_den}"
    t0 = time.perf_counter()
    bottleneck = (
        pad_frame(preprocess(f, layout), layout.coded) for f in source_frames(source, first, count)
    )
    ffmpeg.encode(backend, settings, bottleneck, *layout.coded, fps, stream)
    return time.perf_counter() - t0


def code_and_measure(
    backend: Backend,
    settings: EncodeSettings,
    source: Path,
    layout: Layout,
    first: int,
    count: int,
    stream: Path,
    sink: Callable[[Frame], None] | None = None,
) -> Coded:
    """Encode frames ``first``.. of ``source`` with ``layout``, decode them as the decoder
    will, and measure PSNR against the source; ``sink`` receives each decoded frame."""
    encode_s = encode_stream(backend, settings, source, layout, first, count, stream)
    return measure(backend, stream, layout, source, first, count, encode_s, sink)


def lossless_mse(layout: Layout, frames: Iterable[Frame]) -> float:
    """6:1:1 MSE (8-bit units) of ``frames`` taken through ``layout`` with the bottleneck left
    uncoded: the distortion of its resampling alone."""
    acc = PsnrAccumulator(layout.source.bitdepth)
    for frame in frames:
        acc.add(frame, postprocess(preprocess(frame, layout), layout))
    return acc.mse_8bit


def measure(
    backend: Backend,
    stream: Path,
    layout: Layout,
    source: Path,
    first: int,
    count: int,
    encode_s: float = 0.0,
    sink: Callable[[Frame], None] | None = None,
    samples: Sequence[tuple[Layout, Collection[int]]] = (),
) -> Coded:
    """Decode ``stream`` as the decoder will with ``layout`` and measure PSNR against frames
    ``first``.. of ``source``; ``sink`` receives each decoded frame.

    Each of ``samples`` — another layout of the same bitstream (:func:`stream_key`) and some
    of the segment's frame indices — is measured on those frames from the same decoded
    pictures, beside ``layout`` on the same frames (:attr:`Coded.sampled`)."""
    for other, _ in samples:
        if (other.coded, other.bottleneck, other.bitdepth) != (
            layout.coded,
            layout.bottleneck,
            layout.bitdepth,
        ):
            raise ValueError(f"{other.option.name} does not share {layout.option.name}'s stream")
    t1 = time.perf_counter()
    bitdepth = layout.source.bitdepth
    acc = PsnrAccumulator(bitdepth)
    pairs = [(PsnrAccumulator(bitdepth), PsnrAccumulator(bitdepth)) for _ in samples]
    measuring = 0.0  # reading the source, PSNR and the samples are not decoding
    ahead = layout.processors is not None or bool(samples)
    decoded = _pictures(backend, stream, layout, count, ahead)
    frames = zip(source_frames(source, first, count), decoded, strict=True)
    for k, (ref, picture) in enumerate(frames):
        rec = postprocess(picture, layout)
        t = time.perf_counter()
        acc.add(ref, rec)
        if sink is not None:
            sink(rec)
        for (other, picks), (own, base) in zip(samples, pairs, strict=True):
            if k in picks:
                own.add(ref, postprocess(picture, other))
                base.add(ref, rec)
        measuring += time.perf_counter() - t
    t2 = time.perf_counter() - measuring
    sampled = tuple((own.mse_8bit, base.mse_8bit) for own, base in pairs)
    return Coded.of(stream, acc, encode_s, t2 - t1, sampled)
