import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.metrics import PsnrAccumulator
from wrapcodec.options import OPTIONS
from wrapcodec.pipeline import (
    Layout,
    crop_frame,
    encode_stream,
    measure,
    pad_frame,
    postprocess,
    prefetched,
    preprocess,
    reconstruct,
    source_frames,
)
from wrapcodec.y4m import ChromaTag, Frame, VideoInfo, count_frames, read_info


def info(w: int, h: int, bitdepth: int = 8) -> VideoInfo:
    return VideoInfo(
        width=w, height=h, bitdepth=bitdepth, fps_num=25, fps_den=1, chroma=ChromaTag.C420
    )


def noise_frame(w: int, h: int, bitdepth: int, seed: int = 0) -> Frame:
    rng = np.random.default_rng(seed)
    top = 1 << bitdepth
    cw, ch = (w + 1) // 2, (h + 1) // 2
    return Frame(
        rng.integers(0, top, (h, w)).astype(np.uint16),
        rng.integers(0, top, (ch, cw)).astype(np.uint16),
        rng.integers(0, top, (ch, cw)).astype(np.uint16),
    )


def test_pad_then_crop_is_identity_for_odd_sizes() -> None:
    f = noise_frame(33, 17, 8)
    padded = pad_frame(f, (64, 64))
    assert padded.y.shape == (64, 64) and padded.u.shape == (32, 32)
    assert np.array_equal(padded.y[:17, 32], f.y[:, 32])  # edge replicated
    back = crop_frame(padded, 33, 17)
    assert all(np.array_equal(a, b) for a, b in zip(back, f, strict=True))


def test_direct_8_bit_through_10_bit_bottleneck_is_lossless() -> None:
    src = info(34, 18)
    layout = Layout.make(src, OPTIONS[0], get_backend("x265"), 10)
    f = noise_frame(34, 18, 8)
    b = preprocess(f, layout)
    assert int(b.y.max()) <= 1023 and np.array_equal(b.y, f.y * 4)
    assert all(np.array_equal(a, c) for a, c in zip(postprocess(b, layout), f, strict=True))


def test_linear_option_sizes_and_constant_preserved() -> None:
    src = info(161, 97, 10)
    layout = Layout.make(src, OPTIONS[10], get_backend("vvenc"), 10)  # Lanczos 2/3
    assert layout.option.ratio == Fraction(2, 3)
    assert layout.bottleneck == (108, 64) and layout.coded == (108, 64)
    flat = Frame(
        np.full((97, 161), 700, np.uint16),
        np.full((49, 81), 300, np.uint16),
        np.full((49, 81), 512, np.uint16),
    )
    b = preprocess(flat, layout)
    assert b.y.shape == (64, 108) and b.u.shape == (32, 54)
    assert int(b.y.min()) == int(b.y.max()) == 700
    up = postprocess(b, layout)
    assert up.y.shape == (97, 161) and up.u.shape == (49, 81)
    assert all(np.array_equal(a, c) for a, c in zip(up, flat, strict=True))


class _Source:
    """A generator of 0 … n−1 that fails at ``fail_at`` and records whether it was closed and on
    which thread it ran."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n, self.fail_at = n, fail_at
        self.closed = False
        self.threads: set[int] = set()

    def __iter__(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                self.threads.add(threading.get_ident())
                if i == self.fail_at:
                    raise ValueError(f"broken at {i}")
                yield i
        finally:
            self.closed = True


def test_prefetched_yields_everything_in_order_from_another_thread() -> None:
    source = _Source(50)
    assert list(prefetched(iter(source), 2)) == list(range(50))
    assert source.closed and threading.get_ident() not in source.threads


def test_prefetched_raises_the_producers_error_after_the_items_before_it() -> None:
    source = _Source(10, fail_at=4)
    got = []
    with pytest.raises(ValueError, match="broken at 4"):
        for item in prefetched(iter(source), 2):
            got.append(item)
    assert got == [0, 1, 2, 3] and source.closed


def test_prefetched_stops_and_closes_the_source_when_the_consumer_stops() -> None:
    source = _Source(1000)
    items = prefetched(iter(source), 2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()  # the consumer stops early: the producer is joined, the source closed
    assert source.closed
    assert not any(t.name == "wrapcodec-prefetch" for t in threading.enumerate())


def test_measure_samples_other_layouts_of_the_same_stream(
    clip8: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    """Options sharing a bitstream are measured on chosen frames from the one decode, with the
    figures a separate decode of each gives on those frames."""
    require_backend("x264")
    backend, bank = get_backend("x264"), get_bank()
    source = read_info(clip8)
    n = count_frames(clip8)
    direct, post = (Layout.make(source, OPTIONS[c], backend, 10, bank) for c in (0, 1))
    stream = tmp_path / "s.264"
    settings = EncodeSettings(qp=37, preset="ultrafast", bitdepth=10)
    encode_stream(backend, settings, clip8, direct, 0, n, stream)
    picks = {0, n - 1}
    coded = measure(backend, stream, direct, clip8, 0, n, samples=[(post, picks)])
    alone = measure(backend, stream, direct, clip8, 0, n)
    assert (coded.mse_8bit, coded.psnr_yuv) == (alone.mse_8bit, alone.psnr_yuv)
    own, base = PsnrAccumulator(source.bitdepth), PsnrAccumulator(source.bitdepth)
    outputs = zip(
        source_frames(clip8, 0, n),
        reconstruct(backend, stream, direct, n),
        reconstruct(backend, stream, post, n),
        strict=True,
    )
    for k, (ref, d, p) in enumerate(outputs):
        if k in picks:
            own.add(ref, p)
            base.add(ref, d)
    assert coded.sampled == ((own.mse_8bit, base.mse_8bit),)
    whole = measure(backend, stream, direct, clip8, 0, n, samples=[(post, range(n))])
    assert whole.sampled == (
        (measure(backend, stream, post, clip8, 0, n).mse_8bit, alone.mse_8bit),
    )
    half = Layout.make(source, OPTIONS[9], backend, 10, bank)  # lanczos-1/2: another stream
    with pytest.raises(ValueError, match="does not share"):
        measure(backend, stream, direct, clip8, 0, n, samples=[(half, picks)])
