"""Adaptive binary range coding of integers, in integer arithmetic only.

The coder of the rate-distortion quantised post-processor updates (:mod:`wrapcodec.update`,
``docs/format.md`` "Range coder"). It is the binary range coder of LZMA: 32-bit range,
11-bit probabilities adapted by a shift of 5 after every bit, bytes out with carry
propagation, and "bypass" bits at probability ½. Integers are binarised as a zero flag, a
unary prefix (the position of the top bit, one adaptive context per position) and the bits
below the top one plus a sign as bypass bits. Every operation is on Python integers, so
encoding and decoding give the same bits on every platform, and the decoder checks that the
stream ends exactly where its last symbol does (the flushed low must match: a 32-bit check
against damage for free).

:func:`estimate_bits` is the encoder's fast estimate of what a tensor's integers cost with
this binarisation (the adaptive-estimator cost of each binary decision), for the
rate-distortion choice of a quantisation step; it never touches the stream.
"""

from __future__ import annotations

import math

import numpy as np

from wrapcodec.errors import ContainerError

PROB_BITS = 11
PROB_ONE = 1 << PROB_BITS
ADAPT_SHIFT = 5
TOP = 1 << 24
MASK32 = (1 << 32) - 1
MAX_PREFIX = 23  # |v| < 2**24: every value is exact in float32
CONTEXT_SET = 1 + MAX_PREFIX  # zero flag, then one context per prefix position


def contexts(sets: int) -> list[int]:
    """``sets`` fresh context sets for :func:`put_int` / :meth:`RangeDecoder.get_int`."""
    return [PROB_ONE // 2] * (sets * CONTEXT_SET)


class RangeEncoder:
    """Binary range encoder (LZMA's); :meth:`finish` returns the bytes."""

    def __init__(self) -> None:
        self.low = 0
        self.range = MASK32
        self.cache = 0
        self.pending = 1
        self.out = bytearray()

    def bit(self, probs: list[int], i: int, bit: int) -> None:
        """Code ``bit`` with the adaptive probability ``probs[i]`` (of a 0), then adapt it."""
        p = probs[i]
        bound = (self.range >> PROB_BITS) * p
        if bit:
            self.low += bound
            self.range -= bound
            probs[i] = p - (p >> ADAPT_SHIFT)
        else:
            self.range = bound
            probs[i] = p + ((PROB_ONE - p) >> ADAPT_SHIFT)
        self._normalise()

    def bypass(self, bit: int) -> None:
        """Code ``bit`` at probability ½, no context."""
        self.range >>= 1
        if bit:
            self.low += self.range
        self._normalise()

    def _normalise(self) -> None:
        while self.range < TOP:
            self.range <<= 8
            self._shift_low()

    def _shift_low(self) -> None:
        if self.low < 0xFF000000 or self.low > MASK32:
            carry = self.low >> 32
            byte = self.cache
            while self.pending:
                self.out.append((byte + carry) & 0xFF)
                byte = 0xFF
                self.pending -= 1
            self.cache = (self.low >> 24) & 0xFF
        self.pending += 1
        self.low = (self.low & 0x00FFFFFF) << 8

    def finish(self) -> bytes:
        """Flush the low end and return the stream, without LZMA's leading zero byte."""
        for _ in range(5):
            self._shift_low()
        assert self.out[0] == 0, "the first byte of a range-coded stream is always 0"
        return bytes(self.out[1:])


class RangeDecoder:
    """Decoder of :class:`RangeEncoder`'s bytes; damage is a :class:`ContainerError`."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.range = MASK32
        self.code = 0
        for _ in range(4):
            self.code = (self.code << 8) | self._byte()

    def _byte(self) -> int:
        if self.pos >= len(self.data):
            raise ContainerError("update body is truncated (the range-coded stream ends early)")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def bit(self, probs: list[int], i: int) -> int:
        """The next bit, coded with the adaptive probability ``probs[i]``."""
        p = probs[i]
        bound = (self.range >> PROB_BITS) * p
        if self.code < bound:
            self.range = bound
            probs[i] = p + ((PROB_ONE - p) >> ADAPT_SHIFT)
            bit = 0
        else:
            self.code -= bound
            self.range -= bound
            probs[i] = p - (p >> ADAPT_SHIFT)
            bit = 1
        self._normalise()
        return bit

    def bypass(self) -> int:
        """The next bit coded at probability ½."""
        self.range >>= 1
        bit = 0
        if self.code >= self.range:
            self.code -= self.range
            bit = 1
        self._normalise()
        return bit

    def _normalise(self) -> None:
        while self.range < TOP:
            self.range <<= 8
            self.code = (self.code << 8) | self._byte()

    def get_int(self, probs: list[int], ctx_set: int) -> int:
        """A signed integer binarised by :func:`put_int` with context set ``ctx_set``."""
        base = ctx_set * CONTEXT_SET
        if not self.bit(probs, base):
            return 0
        n = 0
        while n < MAX_PREFIX and self.bit(probs, base + 1 + n):
            n += 1
        m = 1
        for _ in range(n):
            m = (m << 1) | self.bypass()
        return -m if self.bypass() else m

    def finish(self) -> None:
        """Check that the stream ended exactly with the last symbol (else it is damaged)."""
        if self.pos != len(self.data) or self.code != 0:
            raise ContainerError(
                "update body is corrupt or was made for another model "
                "(its range-coded stream does not end with its last parameter)"
            )


def put_int(enc: RangeEncoder, probs: list[int], ctx_set: int, v: int) -> None:
    """Code the signed integer ``v`` (|v| < 2**24): zero flag, unary top-bit position with
    one context per position (no stop bit at the last one), lower bits and sign bypassed."""
    base = ctx_set * CONTEXT_SET
    enc.bit(probs, base, v != 0)
    if v == 0:
        return
    m = abs(v)
    n = m.bit_length() - 1
    if n > MAX_PREFIX:
        raise ValueError(f"{v} is out of the coder's range (|v| < 2**{MAX_PREFIX + 1})")
    for j in range(n):
        enc.bit(probs, base + 1 + j, 1)
    if n < MAX_PREFIX:
        enc.bit(probs, base + 1 + n, 0)
    for j in range(n - 1, -1, -1):
        enc.bypass((m >> j) & 1)
    enc.bypass(int(v < 0))


def _kt_bits(ones: int, total: int) -> float:
    """Bits of ``total`` binary decisions with ``ones`` ones under an adaptive
    (Krichevsky–Trofimov) estimate: what an adaptive context costs, learning included."""
    if total == 0:
        return 0.0
    ln = (
        math.lgamma(ones + 0.5)
        + math.lgamma(total - ones + 0.5)
        - math.lgamma(total + 1)
        - math.log(math.pi)
    )
    return -ln / math.log(2)


def estimate_bits(q: np.ndarray) -> float:
    """Estimated bits of the integers ``q`` coded with :func:`put_int` (one context set)."""
    m = np.abs(q.astype(np.int64).ravel())
    nonzero = m[m > 0]
    bits = _kt_bits(int(nonzero.size), int(m.size))
    if nonzero.size == 0:
        return bits
    top = np.frexp(nonzero.astype(np.float64))[1] - 1  # position of the top bit
    for j in range(min(int(top.max()), MAX_PREFIX - 1) + 1):
        reach = int(np.count_nonzero(top >= j))
        bits += _kt_bits(int(np.count_nonzero(top > j)), reach)
    return bits + float(top.sum()) + nonzero.size  # lower bits and signs, bypassed
