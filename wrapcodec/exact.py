"""The post-processor in integer arithmetic: the same output bytes on every CPU.

A float network's output depends on the order in which its sums are taken, and that order
depends on the instruction set, the thread count and the library's blocking, so a decoder on
another machine would not reproduce the frames the encoder measured. Here every value is an
integer and every operation exact: 16-bit activations, weights with a power-of-two scale
per output channel and as many bits as the layer's worst case leaves in the accumulator (12
to 15), 32-bit accumulators, and rescaling by rounding shifts (round half up).
:func:`quantize_post` turns a trained :class:`~wrapcodec.nets.PostProcessor` into an
:class:`ExactPost`; its arithmetic is defined by the kernels of this module, which
numba compiles for the CPU at hand. Whatever the compiler vectorises or the threads split,
integer sums do not depend on their order, and no accumulator can overflow: every layer's
worst case is checked when the model is quantised.

Fixed-point formats: a tensor ``t`` stands for ``t · 2^-e``; pictures use ``e = 12`` (P format:
``[-1, 1]`` as ``[-4096, 4096]``), each chain of the UNet's residual levels has one exponent,
and each depthwise convolution's output its own, all fixed per model by :func:`calibrate`
(stored in the model card). Weight exponents follow from the weights themselves, so a content
adaptation update (new float weights) quantises the same way on every machine.

The operations mirror :class:`~wrapcodec.nets.PostProcessor` step for step: bilinear
upsampling (weights of the same geometry in 1/1024ths), luma space-to-depth, replicate padding
to a multiple of 4, the depthwise-separable UNet (zero padding, nearest-neighbour upsampling,
ReLU), the tail's residual and the chroma 3×3 convolution (replicate padding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from numba import njit, prange
from numpy.typing import NDArray

from wrapcodec.nets import PostProcessor, SeparableBlock

#: Version of this arithmetic (model cards and the container name it).
ARITHMETIC_VERSION = 1
P_EXP = 12  # pictures: [-1, 1] ↔ [-2^12, 2^12]
P_MAX = 4096  # largest magnitude of a picture in P format
ACT_MAX = 32767  # int16 activations
WEIGHT_MAX = 32767
ACC_HALF = 2**30  # weights and bias each get half of the int32 accumulator's range
UP_BITS = 10  # bilinear weights in 1/1024ths per axis
HEADROOM = 2.0  # calibrated maxima are given this margin before choosing an exponent
MAX_EXP = 15

I16 = NDArray[np.int16]
I32 = NDArray[np.int32]

# -- kernels ---------------------------------------------------------------------------------
# Channel-planar int16 arrays (C, H, W); rows in parallel. rq(): rounding shift (half up).


@njit(cache=True, inline="always")
def _rq(acc: int, shift: int) -> int:
    if shift > 0:
        return (acc + (1 << (shift - 1))) >> shift
    return acc << -shift


@njit(cache=True, inline="always")
def _sat(v: int) -> int:
    return min(max(v, -32768), 32767)


@njit(cache=True, inline="always")
def _store(acc, shift, floor, out):  # type: ignore[no-untyped-def]
    """``out[:] = clip(rq(acc, shift), floor, 32767)`` without a branch in the loop:
    ``rq`` as ``(acc·2^l + r) >> s`` (l = max(−shift, 0), s = max(shift, 0), r = 2^s / 2)."""
    s = max(shift, 0)
    mul = 1 << max(-shift, 0)
    rnd = (1 << s) >> 1
    for i in range(acc.shape[0]):
        out[i] = min(max((acc[i] * mul + rnd) >> s, floor), 32767)


@njit(cache=True, inline="always")
def _pointwise(rows, w, b, shift, floor, o, acc, out):  # type: ignore[no-untyped-def]
    """Output channel o of a 1×1 convolution of one row of every input channel, ``rows``
    (C, W): four input channels per pass over the accumulator."""
    acc[:] = b[o]
    c_in = rows.shape[0]
    quads = c_in - c_in % 4
    for c in range(0, quads, 4):
        k0, k1, k2, k3 = w[o, c], w[o, c + 1], w[o, c + 2], w[o, c + 3]
        r0, r1, r2, r3 = rows[c], rows[c + 1], rows[c + 2], rows[c + 3]
        for i in range(acc.shape[0]):
            acc[i] += k0 * r0[i] + k1 * r1[i] + k2 * r2[i] + k3 * r3[i]
    for c in range(quads, c_in):
        k = w[o, c]
        row = rows[c]
        for i in range(acc.shape[0]):
            acc[i] += k * row[i]
    _store(acc, shift[o], floor, out[o])


@njit(parallel=True, cache=True, nogil=True)
def _conv1x1(x, w, b, shift, relu, out):  # type: ignore[no-untyped-def]
    c_in, h, wd = x.shape
    floor = 0 if relu else -32768
    for y in prange(h):
        acc = np.empty(wd, np.int32)
        rows = np.empty((c_in, wd), np.int16)  # contiguous rows vectorise; x[:, y] does not
        res = np.empty((w.shape[0], wd), np.int16)
        for c in range(c_in):
            rows[c, :] = x[c, y]
        for o in range(w.shape[0]):
            _pointwise(rows, w, b, shift, floor, o, acc, res)
        for o in range(w.shape[0]):
            out[o, y, :] = res[o]


@njit(cache=True, inline="always")
def _taps3(acc, k0, k1, k2, row):  # type: ignore[no-untyped-def]
    """acc[i] += k0·row[i−1] + k1·row[i] + k2·row[i+1], zero outside ``row``."""
    n = acc.shape[0]
    acc[0] += k1 * row[0] + k2 * row[1]
    for i in range(1, n - 1):
        acc[i] += k0 * row[i - 1] + k1 * row[i] + k2 * row[i + 1]
    acc[n - 1] += k0 * row[n - 2] + k1 * row[n - 1]


@njit(cache=True, inline="always")
def _taps3_stride2(acc, k0, k1, k2, even, odd):  # type: ignore[no-untyped-def]
    """acc[i] += k0·row[2i−1] + k1·row[2i] + k2·row[2i+1] from the even and odd samples of
    a row of even length, zero outside the row."""
    acc[0] += k1 * even[0] + k2 * odd[0]
    for i in range(1, acc.shape[0]):
        acc[i] += k0 * odd[i - 1] + k1 * even[i] + k2 * odd[i]


@njit(parallel=True, cache=True, nogil=True)
def _separable(x, wd, bd, sd, wp, bp, sp, stride, residual, out):  # type: ignore[no-untyped-def]
    """Depthwise 3×3 (zero padding, ``stride`` 1 or 2) → int16 → 1×1 → ReLU (→ + x) →
    int16. Widths of at least 2; with stride 2, even input sizes."""
    c_in, h = x.shape[0], x.shape[1]
    h_out, w_out = out.shape[1], out.shape[2]
    for y_ in prange(h_out):
        y = np.int64(y_)  # prange indices are unsigned: keep the arithmetic signed
        t = np.empty((c_in, w_out), np.int16)
        r = np.empty((out.shape[0], w_out), np.int16)  # the 1×1's output before + x
        acc = np.empty(w_out, np.int32)
        even = np.empty(w_out, np.int16)
        odd = np.empty(w_out, np.int16)
        for c in range(c_in):
            acc[:] = bd[c]
            for dy in range(3):
                yy = stride * y + dy - 1
                if yy < 0 or yy >= h:
                    continue
                row = x[c, yy]
                if stride == 1:
                    _taps3(acc, wd[c, dy, 0], wd[c, dy, 1], wd[c, dy, 2], row)
                else:
                    for i in range(w_out):
                        even[i] = row[2 * i]
                        odd[i] = row[2 * i + 1]
                    _taps3_stride2(acc, wd[c, dy, 0], wd[c, dy, 1], wd[c, dy, 2], even, odd)
            _store(acc, sd[c], -32768, t[c])
        for o in range(wp.shape[0]):
            _pointwise(t, wp, bp, sp, 0, o, acc, r)
        for o in range(wp.shape[0]):
            if residual:
                row = x[o, y]
                src = r[o]
                dst = out[o, y]
                for i in range(w_out):
                    dst[i] = min(max(np.int32(src[i]) + row[i], -32768), 32767)
            else:
                out[o, y, :] = r[o]


@njit(parallel=True, cache=True, nogil=True)
def _up_add(skip, small, out):  # type: ignore[no-untyped-def]
    """skip + nearest-neighbour ×2 upsampling of ``small``, saturated (even sizes)."""
    c_n, h, w = skip.shape
    for y_ in prange(h):
        y = np.int64(y_)
        for c in range(c_n):
            src = small[c, y // 2]
            a = skip[c, y]
            dst = out[c, y]
            for j in range(w // 2):
                v = np.int32(src[j])
                dst[2 * j] = min(max(a[2 * j] + v, -32768), 32767)
                dst[2 * j + 1] = min(max(a[2 * j + 1] + v, -32768), 32767)


@njit(parallel=True, cache=True, nogil=True)
def _upsample(p, iy0, iy1, wy1, ix0, ix1, wx1, bits, out):  # type: ignore[no-untyped-def]
    """Separable two-tap upsampling of a plane: weights (2^bits − w1, w1) per axis."""
    one = 1 << bits
    total = 2 * bits
    w_in = p.shape[1]
    for y in prange(out.shape[0]):
        row = np.empty(w_in, np.int32)
        a0, a1, k1 = iy0[y], iy1[y], wy1[y]
        for i in range(w_in):
            row[i] = (one - k1) * p[a0, i] + k1 * p[a1, i]
        for i in range(out.shape[1]):
            k = wx1[i]
            v = (one - k) * row[ix0[i]] + k * row[ix1[i]]
            out[y, i] = _rq(v, total)


@njit(parallel=True, cache=True, nogil=True)
def _pack(y_up, uv_up, out):  # type: ignore[no-untyped-def]
    """(luma space-to-depth, U, V), replicate-padded to ``out``'s size: the UNet's input."""
    h2, w2 = uv_up.shape[1], uv_up.shape[2]
    for r in prange(out.shape[1]):
        rr = min(np.int64(r), h2 - 1)
        for i in range(out.shape[2]):
            ii = min(i, w2 - 1)
            out[0, r, i] = y_up[2 * rr, 2 * ii]
            out[1, r, i] = y_up[2 * rr, 2 * ii + 1]
            out[2, r, i] = y_up[2 * rr + 1, 2 * ii]
            out[3, r, i] = y_up[2 * rr + 1, 2 * ii + 1]
            out[4, r, i] = uv_up[0, rr, ii]
            out[5, r, i] = uv_up[1, rr, ii]


@njit(cache=True, inline="always")
def _to_sample(p: int, peak: int) -> int:
    """P format → a sample of ``peak`` = 2^B − 1: round((p + 4096)·peak / 8192), clipped."""
    v = ((p + 4096) * peak + 4096) >> 13
    return min(max(v, 0), peak)


@njit(parallel=True, cache=True, nogil=True)
def _finish(y_up, uv_up, res, wc, bc, sc, peak, y_out, uv_out):  # type: ignore[no-untyped-def]
    """y = y_up + depth-to-space(res[:4]); uv = chroma 3×3 (replicate) of uv_up + res[4:];
    both to samples."""
    h2, w2 = uv_up.shape[1], uv_up.shape[2]
    for yy_ in prange(2 * h2):
        yy = np.int64(yy_)
        src = y_up[yy]
        r0 = res[2 * (yy % 2), yy // 2]
        r1 = res[2 * (yy % 2) + 1, yy // 2]
        dst = y_out[yy]
        for i in range(w2):
            dst[2 * i] = _to_sample(np.int32(src[2 * i]) + r0[i], peak)
            dst[2 * i + 1] = _to_sample(np.int32(src[2 * i + 1]) + r1[i], peak)
    for r_ in prange(h2):
        r = np.int64(r_)
        padded = np.empty((2, 3, w2 + 2), np.int32)  # rows r−1, r, r+1, replicated at edges
        for c in range(2):
            for dy in range(3):
                row = uv_up[c, min(max(r + dy - 1, 0), h2 - 1)]
                padded[c, dy, 1 : w2 + 1] = row
                padded[c, dy, 0] = row[0]
                padded[c, dy, w2 + 1] = row[w2 - 1]
        acc = np.empty(w2, np.int32)
        for o in range(2):
            acc[:] = bc[o]
            for c in range(2):
                for dy in range(3):
                    p = padded[c, dy]
                    k0, k1, k2 = wc[o, c, dy, 0], wc[o, c, dy, 1], wc[o, c, dy, 2]
                    for i in range(w2):
                        acc[i] += k0 * p[i] + k1 * p[i + 1] + k2 * p[i + 2]
            s = sc[o]
            extra = res[4 + o, r]
            dst = uv_out[o, r]
            for i in range(w2):
                dst[i] = _to_sample(_rq(acc[i], s) + extra[i], peak)


# -- the integer model -----------------------------------------------------------------------


@dataclass(frozen=True)
class IntConv:
    """A quantised convolution: ``weight · 2^-e_w[o]``, bias at the accumulator's scale,
    and the shift from the accumulator to the output's exponent."""

    weight: I32
    bias: I32
    shift: I32


@dataclass(frozen=True)
class IntBlock:
    dw: IntConv
    pw: IntConv
    stride: int
    residual: bool


@dataclass(frozen=True)
class ExactPost:
    """A :class:`~wrapcodec.nets.PostProcessor` in integer arithmetic (module docstring)."""

    ratio: Fraction
    head: IntConv
    enc0: tuple[IntBlock, ...]
    down1: IntBlock
    enc1: tuple[IntBlock, ...]
    down2: IntBlock
    mid: tuple[IntBlock, ...]
    up2: IntConv
    dec1: tuple[IntBlock, ...]
    up1: IntConv
    dec0: tuple[IntBlock, ...]
    tail: IntConv
    chroma: IntConv

    def __call__(
        self,
        y: NDArray[np.uint16],
        u: NDArray[np.uint16],
        v: NDArray[np.uint16],
        bitdepth: int,
        height: int,
        width: int,
        out_bitdepth: int,
    ) -> tuple[NDArray[np.uint16], NDArray[np.uint16], NDArray[np.uint16]]:
        """Decoded bottleneck planes (even luma size) → planes of ``width``×``height`` (even)
        at ``out_bitdepth``."""
        y_up = upsample(to_p(y, bitdepth), height, width)
        uv_up = np.stack([upsample(to_p(p, bitdepth), height // 2, width // 2) for p in (u, v)])
        res = self.residual(y_up, uv_up)
        peak = (1 << out_bitdepth) - 1
        y_out = np.empty((height, width), np.uint16)
        uv_out = np.empty((2, height // 2, width // 2), np.uint16)
        c = self.chroma
        _finish(y_up, uv_up, res, c.weight, c.bias, c.shift, peak, y_out, uv_out)
        return y_out, uv_out[0], uv_out[1]

    def residual(self, y_up: I16, uv_up: I16) -> I16:
        """The UNet's six-channel residual in P format, at the padded half resolution."""
        h2, w2 = uv_up.shape[1:]
        x = np.empty((6, h2 + -h2 % 4, w2 + -w2 % 4), np.int16)
        _pack(y_up, uv_up, x)
        e0 = _blocks(_conv(x, self.head, relu=True), self.enc0)
        e1 = _blocks(_block(e0, self.down1), self.enc1)
        m = _blocks(_block(e1, self.down2), self.mid)
        d1 = _blocks(_up(e1, _conv(m, self.up2)), self.dec1)
        d0 = _blocks(_up(e0, _conv(d1, self.up1)), self.dec0)
        return _conv(d0, self.tail)


def _conv(x: I16, conv: IntConv, relu: bool = False) -> I16:
    out = np.empty((conv.weight.shape[0], *x.shape[1:]), np.int16)
    _conv1x1(x, conv.weight[:, :, 0, 0], conv.bias, conv.shift, relu, out)
    return out


def _block(x: I16, b: IntBlock) -> I16:
    c_out = b.pw.weight.shape[0]
    h, w = -(-x.shape[1] // b.stride), -(-x.shape[2] // b.stride)
    out = np.empty((c_out, h, w), np.int16)
    dw = b.dw.weight[:, 0]
    pw = b.pw.weight[:, :, 0, 0]
    _separable(x, dw, b.dw.bias, b.dw.shift, pw, b.pw.bias, b.pw.shift, b.stride, b.residual, out)
    return out


def _blocks(x: I16, blocks: Iterable[IntBlock]) -> I16:
    for b in blocks:
        x = _block(x, b)
    return x


def _up(skip: I16, small: I16) -> I16:
    out = np.empty_like(skip)
    _up_add(skip, small, out)
    return out


def to_p(plane: NDArray[np.uint16], bitdepth: int) -> I16:
    """Samples → P format: round(x · 8192 / (2^d − 1)) − 4096, the normalisation
    :func:`wrapcodec.nets.unit` makes, in integers (a table of the 2^d values)."""
    if bitdepth not in _P_TABLES:
        peak = (1 << bitdepth) - 1
        x = np.arange(1 << bitdepth, dtype=np.int64)
        _P_TABLES[bitdepth] = ((x * 16384 + peak) // (2 * peak) - 4096).astype(np.int16)
    out = np.empty(plane.shape, np.int16)
    _to_p(plane, _P_TABLES[bitdepth], out)
    return out


_P_TABLES: dict[int, I16] = {}


@njit(parallel=True, cache=True, nogil=True)
def _to_p(plane, table, out):  # type: ignore[no-untyped-def]
    top = table.shape[0] - 1
    for y in prange(plane.shape[0]):
        src = plane[y]
        dst = out[y]
        for i in range(src.shape[0]):
            dst[i] = table[min(src[i], top)]


def _taps(n_in: int, n_out: int) -> tuple[I32, I32, I32]:
    """Per output index: the two source indices and the second one's weight in 1/1024ths, of
    centre-aligned bilinear interpolation (``align_corners=False``), computed exactly."""
    i0, i1, w1 = [], [], []
    for d in range(n_out):
        src = max(Fraction(2 * d + 1, 2) * Fraction(n_in, n_out) - Fraction(1, 2), Fraction(0))
        lo = math.floor(src)
        i0.append(min(lo, n_in - 1))
        i1.append(min(lo + 1, n_in - 1))
        w1.append(round((src - lo) * (1 << UP_BITS)))
    return (np.array(i0, np.int32), np.array(i1, np.int32), np.array(w1, np.int32))


_TAPS: dict[tuple[int, int], tuple[I32, I32, I32]] = {}


def upsample(p: I16, height: int, width: int) -> I16:
    """Bilinear upsampling of a P-format plane to ``height``×``width`` (or itself)."""
    if p.shape == (height, width):
        return p
    for key in ((p.shape[0], height), (p.shape[1], width)):
        if key not in _TAPS:
            _TAPS[key] = _taps(*key)
    iy0, iy1, wy1 = _TAPS[(p.shape[0], height)]
    ix0, ix1, wx1 = _TAPS[(p.shape[1], width)]
    out = np.empty((height, width), np.int16)
    _upsample(p, iy0, iy1, wy1, ix0, ix1, wx1, UP_BITS, out)
    return out


# -- quantisation ----------------------------------------------------------------------------


def weight_exponents(weight: NDArray[np.float32], limit: int) -> NDArray[np.int64]:
    """Per output channel, the largest e with max|w|·2^e <= ``limit`` (0 for a zero channel),
    from the float32 weights alone (exact: frexp)."""
    peak = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1).astype(np.float64)
    _, exp = np.frexp(peak / limit)  # peak / limit = m·2^exp with 0.5 <= m < 1
    return np.where(peak == 0, 0, -exp).astype(np.int64)


def quantize_conv(
    weight: torch.Tensor, bias: torch.Tensor | None, e_in: int, e_out: int, k_max: int = ACT_MAX
) -> IntConv:
    """Quantise one convolution whose inputs, of magnitude at most ``k_max``, have exponent
    ``e_in``, into exponent ``e_out``.

    The weights get as many bits as keep ``Σ|w|·k_max`` under 2^30 (at most 15), the bias the
    other half of the int32 accumulator; a channel whose bias would not fit gets a coarser
    weight exponent."""
    w = weight.detach().to(torch.float32).numpy()
    terms = int(np.prod(w.shape[1:]))
    limit = min(WEIGHT_MAX, ACC_HALF // (terms * k_max))
    e_w = weight_exponents(w, limit)
    b = np.zeros(w.shape[0]) if bias is None else bias.detach().to(torch.float64).numpy()
    _, b_exp = np.frexp(np.abs(b) / (ACC_HALF - 1))  # |b|·2^e < 2^30 for e <= -b_exp
    e_w = np.where(b != 0, np.minimum(e_w, -b_exp - e_in), e_w)
    scale = np.ldexp(1.0, e_w).reshape(-1, *([1] * (w.ndim - 1)))
    wq = np.rint(w.astype(np.float64) * scale).astype(np.int64)
    bq = np.rint(np.ldexp(b, e_w + e_in)).astype(np.int64)
    worst = np.abs(wq).reshape(w.shape[0], -1).sum(axis=1) * k_max + np.abs(bq)
    assert (worst < 2**31).all(), "accumulator bound"  # by construction of limit and e_w
    shift = e_w + e_in - e_out
    return IntConv(wq.astype(np.int32), bq.astype(np.int32), shift.astype(np.int32))


def _quantize_block(block: SeparableBlock, e_in: int, e_dw: int, e_out: int) -> IntBlock:
    dw = quantize_conv(block.dw.weight, block.dw.bias, e_in, e_dw)
    pw = quantize_conv(block.pw.weight, block.pw.bias, e_dw, e_out)
    return IntBlock(dw, pw, block.dw.stride[0], block.residual)


def _names(post: PostProcessor) -> Iterator[tuple[str, SeparableBlock, str, str]]:
    """(name, block, input level, output level) of every separable block, in order: a
    strided block goes from one residual level to the next, the others stay on theirs."""
    groups = (
        ("enc0", "level0", "level0"),
        ("down1", "level0", "level1"),
        ("enc1", "level1", "level1"),
        ("down2", "level1", "level2"),
        ("mid", "level2", "level2"),
        ("dec1", "level1", "level1"),
        ("dec0", "level0", "level0"),
    )
    for group, level_in, level in groups:
        module = getattr(post, group)
        if isinstance(module, SeparableBlock):
            yield group, module, level_in, level
        else:
            for i, block in enumerate(module):
                yield f"{group}.{i}", block, level_in, level


def quantize_post(post: PostProcessor, exponents: dict[str, int]) -> ExactPost:
    """``post`` in integer arithmetic with the activation ``exponents`` of
    :func:`calibrate` (``level0..2`` and ``<block>.dw``)."""
    e = exponents
    blocks: dict[str, list[IntBlock]] = {}
    for name, block, level_in, level in _names(post):
        blocks.setdefault(name.split(".")[0], []).append(
            _quantize_block(block, e[level_in], e[f"{name}.dw"], e[level])
        )
    return ExactPost(
        ratio=post.ratio,
        head=quantize_conv(post.head.weight, post.head.bias, P_EXP, e["level0"], P_MAX),
        enc0=tuple(blocks.get("enc0", [])),
        down1=blocks["down1"][0],
        enc1=tuple(blocks.get("enc1", [])),
        down2=blocks["down2"][0],
        mid=tuple(blocks.get("mid", [])),
        up2=quantize_conv(post.up2.weight, post.up2.bias, e["level2"], e["level1"]),
        dec1=tuple(blocks.get("dec1", [])),
        up1=quantize_conv(post.up1.weight, post.up1.bias, e["level1"], e["level0"]),
        dec0=tuple(blocks.get("dec0", [])),
        tail=quantize_conv(post.tail.weight, post.tail.bias, e["level0"], P_EXP),
        chroma=quantize_conv(post.chroma.weight, post.chroma.bias, P_EXP, P_EXP, P_MAX),
    )


def _exponent(peak: float) -> int:
    """The largest exponent at which ``HEADROOM · peak`` still fits an int16."""
    if peak <= 0:
        return MAX_EXP
    return int(min(MAX_EXP, math.floor(math.log2(ACT_MAX / (HEADROOM * peak)))))


def calibrate(
    post: PostProcessor, pictures: Iterable[tuple[torch.Tensor, torch.Tensor, int, int]]
) -> dict[str, int]:
    """Activation exponents of ``post`` from the float network's largest magnitudes on
    ``pictures`` (normalised decoded-bottleneck ``y``, ``uv`` and the output height and
    width): one per residual level, over every tensor of that level's chain (block inputs and
    outputs, the skip sums), and one per depthwise output, each with :data:`HEADROOM`."""
    peaks: dict[str, float] = {}

    def seen(name: str, t: torch.Tensor) -> None:
        peaks[name] = max(peaks.get(name, 0.0), float(t.abs().max()))

    hooks = []
    for name, block, level_in, level in _names(post):
        hooks += [
            block.dw.register_forward_hook(lambda m, i, o, n=f"{name}.dw": seen(n, o)),
            block.register_forward_hook(lambda m, i, o, lv=level: seen(lv, o)),
            block.register_forward_pre_hook(lambda m, i, lv=level_in: seen(lv, i[0])),
        ]
    hooks.append(post.head.register_forward_hook(lambda m, i, o: seen("level0", o.clamp(min=0))))
    for conv, inside, out in ((post.up2, "level2", "level1"), (post.up1, "level1", "level0")):
        hooks += [
            conv.register_forward_pre_hook(lambda m, i, lv=inside: seen(lv, i[0])),
            conv.register_forward_hook(lambda m, i, o, lv=out: seen(lv, o)),
        ]
    hooks.append(post.tail.register_forward_pre_hook(lambda m, i: seen("level0", i[0])))
    try:
        with torch.no_grad():
            for y, uv, height, width in pictures:
                post(y, uv, height, width)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: _exponent(peak) for name, peak in sorted(peaks.items())}
