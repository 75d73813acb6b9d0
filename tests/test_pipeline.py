import threading
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import pytest

from wrapcodec.backend import get_backend
from wrapcodec.options import OPTIONS
from wrapcodec.pipeline import (
    Layout,
    crop_frame,
    pad_frame,
    postprocess,
    prefetched,
    preprocess,
)
from wrapcodec.y4m import ChromaTag, Frame, VideoInfo


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
