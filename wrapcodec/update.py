"""Post-processor updates: the parameter changes the encoder fitted to one segment, as bytes.

The encoder fine-tunes a subset of a bank model's post-processor on the segment it coded
(:mod:`wrapcodec.adapt`) and sends the change of those parameters with the segment (the
content-adaptive NN post-filter with a weight update, as VVC's NNPFC SEI carries one). Every
tensor travels as a delta from the bank's weights, quantised, and the whole body is
zlib-compressed. Byte layout (``docs/format.md``, "Post-processor update")::

    subset (uint8) | quantisation (uint8) | zlib stream of the body

Body, for each tensor of the subset in the post-processor's parameter order, row-major:

* quantisation 1, float16: ``numel`` little-endian float16 deltas;
* quantisation 2, int8: a little-endian float32 ``scale``, then ``numel`` int8 ``q``; the
  delta is ``scale · q`` computed in float32.

Quantisation 3, rate-distortion (:func:`encode_update_rd`), has no zlib stream: a flags byte
(bit 0: *relative*, the deltas add to the update in force instead of the bank) follows the
preamble, then a range-coded stream (:mod:`wrapcodec.entropy`) of, per tensor, a step index
(or "unchanged") and the integers ``q``; the delta is ``step · q`` in float32. The encoder
chooses each tensor's step by minimising ``Σ w·(δ − step·q)² + μ·bits``, ``w`` the fit's
sensitivity of the segment's distortion to each parameter, ``μ`` the RDO's λ per sample.

The decoder adds the deltas to the bank's float32 weights (:func:`apply_update`), after
:func:`resolve` has added a relative update to the update in force. The encoder measures its
candidate with the very same functions on the parsed bytes, so what it measured is what the
decoder reproduces.
"""

from __future__ import annotations

import copy
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import IntEnum
from functools import partial

import numpy as np
import torch
from torch import Tensor

from wrapcodec.entropy import (
    CONTEXT_SET,
    RangeDecoder,
    RangeEncoder,
    contexts,
    estimate_bits,
    put_int,
)
from wrapcodec.errors import ContainerError
from wrapcodec.nets import PostProcessor

PREAMBLE = struct.Struct("<BB")  # subset, quantisation
SCALE = struct.Struct("<f")
INT8_MAX = 127


class Subset(IntEnum):
    """Which parameters an update carries (byte 0). The ids are stream values; the rungs of
    the capacity ladder, smallest first, are :func:`ladder`'s order, each containing the
    one below it."""

    BIAS_TAIL = 1  # every bias, the last 1×1 conv (tail) and the chroma 3×3 conv
    ALL = 2  # every parameter
    BIAS = 3  # every bias
    DECODER = 4  # BIAS_TAIL and the weights of the UNet's decoder half (up2, dec1, up1, dec0)


class Quant(IntEnum):
    """How the deltas are stored (byte 1)."""

    FLOAT16 = 1
    INT8 = 2  # one float32 scale per tensor
    RD = 3  # a rate-distortion step per tensor, range-coded integers, maybe relative


_DECODER_HALF = ("up2.", "dec1.", "up1.", "dec0.")
_SELECT: dict[Subset, Callable[[str], bool]] = {
    Subset.BIAS: lambda name: name.endswith(".bias"),
    Subset.BIAS_TAIL: lambda name: name.endswith(".bias") or name.startswith(("tail.", "chroma.")),
    Subset.DECODER: lambda name: (
        name.endswith(".bias") or name.startswith(("tail.", "chroma.", *_DECODER_HALF))
    ),
    Subset.ALL: lambda name: True,
}
_LADDER = (Subset.BIAS, Subset.BIAS_TAIL, Subset.DECODER, Subset.ALL)


def ladder() -> tuple[Subset, ...]:
    """The capacity ladder, fewest parameters first; every rung contains the ones below it
    (so an update in force and a relative update on another rung still combine)."""
    return _LADDER


def subset_names(post: PostProcessor, subset: Subset) -> list[str]:
    """Names of the parameters ``subset`` covers, in the post-processor's parameter order."""
    select = _SELECT[subset]
    return [name for name, _ in post.named_parameters() if select(name)]


def subset_size(post: PostProcessor, subset: Subset) -> int:
    """Number of parameters ``subset`` covers."""
    params = dict(post.named_parameters())
    return sum(params[n].numel() for n in subset_names(post, subset))


@dataclass(frozen=True)
class Update:
    """Dequantised float32 deltas of one segment's post-processor, by parameter name."""

    subset: Subset
    quant: Quant
    deltas: dict[str, Tensor]
    relative: bool = False  # the deltas add to the update in force (:func:`resolve`)


def _quantise_int8(delta: np.ndarray, levels: int) -> tuple[np.float32, np.ndarray]:
    peak = np.float32(np.abs(delta).max()) if delta.size else np.float32(0.0)
    scale = np.float32(peak / np.float32(levels))
    if scale == 0:
        return scale, np.zeros(delta.shape, np.int8)
    q = np.clip(np.rint(delta / scale), -levels, levels).astype(np.int8)
    return scale, q


def encode_update(
    deltas: dict[str, Tensor], subset: Subset, quant: Quant, levels: int = INT8_MAX
) -> bytes:
    """Quantise and compress ``deltas`` (every tensor of ``subset``, in parameter order).

    With int8, each tensor's peak maps to ``levels`` (≤ 127): fewer levels, fewer bytes
    after compression, coarser deltas; the decoder reads any ``q`` the same way."""
    if not 1 <= levels <= INT8_MAX:
        raise ValueError(f"levels must be 1..{INT8_MAX}, got {levels}")
    if quant == Quant.RD:
        raise ValueError("rate-distortion updates are made by encode_update_rd")
    body = bytearray()
    for name, delta in deltas.items():
        d = delta.detach().to(torch.float32).cpu().numpy().ravel()
        if not np.isfinite(d).all():
            raise ValueError(f"update of {name} is not finite")
        if quant == Quant.FLOAT16:
            body += d.astype("<f2").tobytes()
        else:
            scale, q = _quantise_int8(d, levels)
            body += SCALE.pack(float(scale)) + q.tobytes()
    return PREAMBLE.pack(subset, quant) + zlib.compress(bytes(body), 9)


def _shapes(post: PostProcessor, subset: Subset) -> Iterator[tuple[str, torch.Size]]:
    params = dict(post.named_parameters())
    for name in subset_names(post, subset):
        yield name, params[name].shape


def _inflate(data: bytes, limit: int) -> bytes:
    """The zlib body, refusing one that is damaged, longer than ``limit`` or followed by data."""
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ContainerError(f"update body is not a valid zlib stream ({exc})") from None
    if len(body) > limit:
        raise ContainerError(
            "update body is longer than its model's parameters: it was made for another model"
        )
    if not inflater.eof:
        raise ContainerError("update body is truncated")
    if inflater.unused_data:
        raise ContainerError(f"{len(inflater.unused_data)} bytes after the update's zlib stream")
    return body


def decode_update(data: bytes, post: PostProcessor) -> Update:
    """Parse an update made for ``post``'s architecture; anything else is a ContainerError."""
    if len(data) < PREAMBLE.size:
        raise ContainerError(f"update of {len(data)} bytes is shorter than its preamble")
    subset_id, quant_id = PREAMBLE.unpack_from(data, 0)
    try:
        subset = Subset(subset_id)
    except ValueError:
        raise ContainerError(f"unknown update subset {subset_id}") from None
    try:
        quant = Quant(quant_id)
    except ValueError:
        raise ContainerError(f"unknown update quantisation {quant_id}") from None
    shapes = list(_shapes(post, subset))
    if quant == Quant.RD:
        return _decode_rd(data, subset, shapes)
    per_tensor = 0 if quant == Quant.FLOAT16 else SCALE.size
    width = 2 if quant == Quant.FLOAT16 else 1
    expected = sum(per_tensor + width * s.numel() for _, s in shapes)
    body = _inflate(data[PREAMBLE.size :], expected)
    if len(body) != expected:
        raise ContainerError(
            f"update body has {len(body)} bytes, the model's {subset.name.lower()} parameters "
            f"need {expected}: the update was made for another model"
        )
    deltas: dict[str, Tensor] = {}
    at = 0
    for name, shape in shapes:
        n = shape.numel()
        if quant == Quant.FLOAT16:
            values = np.frombuffer(body, "<f2", n, at).astype(np.float32)
        else:
            (scale,) = SCALE.unpack_from(body, at)
            at += SCALE.size
            q = np.frombuffer(body, np.int8, n, at)
            peak = float(np.abs(q.astype(np.float32)).max(initial=0.0))
            if not abs(scale) * peak <= float(np.finfo(np.float32).max):  # NaN fails too
                raise ContainerError(f"update of {name} holds a value that is not finite")
            values = np.float32(scale) * q.astype(np.float32)
        at += width * n
        if not np.isfinite(values).all():
            raise ContainerError(f"update of {name} holds a value that is not finite")
        deltas[name] = torch.from_numpy(values.copy()).reshape(shape)
    return Update(subset, quant, deltas)


def apply_update(post: PostProcessor, update: Update) -> PostProcessor:
    """A copy of ``post`` with the update's deltas added to its weights (float32)."""
    adapted = copy.deepcopy(post)
    params = dict(adapted.named_parameters())
    with torch.no_grad():
        for name, delta in update.deltas.items():
            params[name].add_(delta)
    adapted.eval()
    return adapted


def resolve(update: Update, in_force: Update | None) -> Update:
    """The update to apply to the bank: ``update`` itself, or, when it is relative, the
    update in force (resolved, i.e. absolute) plus its deltas.

    Per tensor of the larger of the two subsets, in its parameter order, in float32:
    ``accumulated = in_force + delta`` (a tensor only one of them carries is that one's).
    A relative update with no update in force, or whose tensors do not match the update in
    force, is a :class:`ContainerError`."""
    if not update.relative:
        return update
    if in_force is None:
        raise ContainerError("a relative update needs an update in force, and there is none")
    if in_force.relative:
        raise ValueError("resolve needs the update in force resolved (absolute)")
    rank = _LADDER.index
    big = update if rank(update.subset) >= rank(in_force.subset) else in_force
    if not set(update.deltas) | set(in_force.deltas) <= set(big.deltas):
        raise ContainerError("a relative update does not fit the update in force's model")
    deltas: dict[str, Tensor] = {}
    for name in big.deltas:
        prev, delta = in_force.deltas.get(name), update.deltas.get(name)
        if prev is not None and delta is not None:
            if prev.shape != delta.shape:
                raise ContainerError(f"a relative update of {name} does not fit the one in force")
            acc = torch.add(prev, delta)
            if not bool(torch.isfinite(acc).all()):
                raise ContainerError(f"relative update of {name} accumulates to a non-finite value")
            deltas[name] = acc
        else:
            deltas[name] = prev if prev is not None else delta  # type: ignore[assignment]
    return Update(big.subset, update.quant, deltas, relative=False)


# -- quantisation 3: rate-distortion steps, range-coded ----------------------------------------

FLAGS = struct.Struct("<B")
FLAG_RELATIVE = 0x01
STEP_COUNT = 255  # step indices 1..255; 0 means the tensor is unchanged
FIRST_STEP_PREDICTION = 40  # the step index the first tensor's is coded relative to
_VALUE_SETS = 6  # context sets of q: (bias, weight) × previous |q| in the tensor (0, 1, ≥ 2)
_STEP_SET = 6  # context set of the step index differences
_SKIP = 7  # context set whose first context codes "tensor unchanged"
_SETS = 8
FINEST_RATIO = 2.0**-13  # the finest step tried: a tensor's peak delta times this


def step_size(index: int) -> np.float32:
    """Quantisation step of ``index`` (1..255): ``(8 − r) · 2^(−3 − e)`` with
    ``index − 1 = 4e + r``, exact in float32: 1, 7/8, 6/8, 5/8, 1/2, 7/16, … (about 4 per
    octave, decreasing)."""
    e, r = divmod(index - 1, 4)
    return np.float32(np.ldexp(np.float32(8 - r), -3 - e))


_STEPS = np.array([0.0] + [step_size(i) for i in range(1, STEP_COUNT + 1)], np.float32)


@dataclass(frozen=True)
class Quantised:
    """One tensor as quantisation 3 stores it: step index (0: unchanged) and the integers."""

    step: int
    q: np.ndarray  # int64, the tensor's shape; all zero when step is 0


def _value_set(is_bias: bool, previous: int) -> int:
    return (0 if is_bias else 3) + min(abs(previous), 2)


def encode_quantised(subset: Subset, tensors: list[Quantised], relative: bool = False) -> bytes:
    """Quantisation 3's bytes for ``tensors`` (every tensor of ``subset``, in parameter
    order): the preamble, the flags and the range-coded steps and integers."""
    enc, probs, previous_step = RangeEncoder(), contexts(_SETS), FIRST_STEP_PREDICTION
    for t in tensors:
        if not 0 <= t.step <= STEP_COUNT:
            raise ValueError(f"step index {t.step} is not 0..{STEP_COUNT}")
        enc.bit(probs, _SKIP * CONTEXT_SET, int(t.step == 0))
        if t.step == 0:
            continue
        put_int(enc, probs, _STEP_SET, t.step - previous_step)
        previous_step = t.step
        is_bias, previous = t.q.ndim == 1, 0
        for v in t.q.ravel().tolist():
            put_int(enc, probs, _value_set(is_bias, previous), v)
            previous = v
    flags = FLAG_RELATIVE if relative else 0
    return PREAMBLE.pack(subset, Quant.RD) + FLAGS.pack(flags) + enc.finish()


def _decode_tensor(
    dec: RangeDecoder, probs: list[int], name: str, shape: torch.Size, previous_step: int
) -> tuple[Tensor, int]:
    """One tensor of quantisation 3 and the step index the next one is predicted from."""
    if dec.bit(probs, _SKIP * CONTEXT_SET):
        return torch.zeros(shape), previous_step
    index = previous_step + dec.get_int(probs, _STEP_SET)
    if not 1 <= index <= STEP_COUNT:
        raise ContainerError(f"update step index {index} of {name} is out of range: corrupt")
    q, is_bias, previous = [], len(shape) == 1, 0
    for _ in range(shape.numel()):
        previous = dec.get_int(probs, _value_set(is_bias, previous))
        q.append(previous)
    values = _STEPS[index] * np.array(q, np.float32)  # float32 product, q exact in float32
    return torch.from_numpy(values).reshape(shape), index


def _decode_rd(data: bytes, subset: Subset, shapes: list[tuple[str, torch.Size]]) -> Update:
    """Quantisation 3's flags and body; every way they can be wrong is a ContainerError."""
    if len(data) < PREAMBLE.size + FLAGS.size:
        raise ContainerError("update is shorter than its preamble and flags")
    (flags,) = FLAGS.unpack_from(data, PREAMBLE.size)
    if flags & ~FLAG_RELATIVE:
        raise ContainerError(f"update flags {flags:#04x} set reserved bits")
    dec = RangeDecoder(data[PREAMBLE.size + FLAGS.size :])
    probs, previous_step = contexts(_SETS), FIRST_STEP_PREDICTION
    deltas: dict[str, Tensor] = {}
    for name, shape in shapes:
        deltas[name], previous_step = _decode_tensor(dec, probs, name, shape, previous_step)
    dec.finish()
    return Update(subset, Quant.RD, deltas, relative=bool(flags & FLAG_RELATIVE))


def _candidates(peak: float) -> range:
    """Step indices from about twice the peak down to ``FINEST_RATIO`` of it."""
    coarse = int(np.searchsorted(-_STEPS[1:], -2.0 * peak)) + 1
    fine = int(np.searchsorted(-_STEPS[1:], -FINEST_RATIO * peak, side="right")) + 1
    return range(max(coarse, 1), min(fine, STEP_COUNT) + 1)


Distortion = Callable[[str, np.ndarray], float]
"""The increase of the distortion D when tensor ``name`` of the fitted weights is off by
``error`` (float32, the tensor's shape): the encoder's measurement of a candidate."""


def _diagonal_costs(
    d: np.ndarray, w: np.ndarray, mu: float
) -> list[tuple[float, Quantised, np.ndarray]]:
    """(cost by the diagonal estimate, candidate, error) for every candidate step."""
    out = []
    for index in _candidates(float(np.abs(d).max())):
        q = np.rint(d / _STEPS[index]).astype(np.int64)
        if not q.any():
            continue
        error = _STEPS[index] * q.astype(np.float32) - d
        cost = float(np.sum(w * error.astype(np.float64) ** 2))
        out.append((cost + mu * (estimate_bits(q) + 6.0), Quantised(index, q), error))
    return out


def quantise_rd(
    delta: np.ndarray, weight: np.ndarray, mu: float, distortion: Callable[[np.ndarray], float]
) -> Quantised:
    """The step (or "unchanged") and integers minimising ``ΔD + μ·bits`` with
    ``q = round(δ / step)``, bits by :func:`wrapcodec.entropy.estimate_bits` plus the step.

    Every candidate step is costed with the diagonal estimate ``ΔD ≈ Σ w·e²``; the best of
    those and its neighbours (finer by up to two octaves, coarser by half of one) and leaving
    the tensor unchanged are then costed with ``distortion(error)``, which sees what the
    diagonal misses: errors that add up coherently across a tensor (rounding many small
    deltas to zero undoes the fit's direction)."""
    d = delta.astype(np.float32)
    unchanged = Quantised(0, np.zeros(d.shape, np.int64))
    if not d.size or not d.any():
        return unchanged
    ranked = _diagonal_costs(d, weight.astype(np.float64), mu)
    best_cost, best = distortion(-d) + mu, unchanged  # about a bit to say "unchanged"
    if not ranked:
        return best
    top = min(range(len(ranked)), key=lambda k: ranked[k][0])
    for k in sorted({max(top - 2, 0), top, *range(top + 2, top + 9, 2)} & set(range(len(ranked)))):
        _, candidate, error = ranked[k]
        cost = distortion(error) + mu * (estimate_bits(candidate.q) + 6.0)
        if cost < best_cost:
            best_cost, best = cost, candidate
    return best


def encode_update_rd(
    deltas: dict[str, Tensor],
    subset: Subset,
    sensitivity: dict[str, Tensor],
    mu: float,
    relative: bool = False,
    distortion: Distortion | None = None,
    *,
    pool: Executor | None = None,
) -> bytes:
    """Quantisation 3 of ``deltas`` (every tensor of ``subset``, in parameter order).

    ``sensitivity[name]`` (same shape, ≥ 0) weighs each parameter's squared quantisation
    error in the distortion D (``ΔD ≈ Σ w·e²``); ``distortion``, when given, measures ΔD of
    a tensor's error for the short list of candidates (else the diagonal estimate decides);
    ``mu`` is the price of a bit in D's units (for the RDO's ``J = D + λ·R`` with R per
    luma sample: :func:`rd_mu`). ``relative``: the deltas are changes to the update in
    force (:func:`resolve`).

    ``pool``: the tensors' steps are searched on its threads, several at once (then
    ``distortion`` must be safe to call from several threads); each tensor's search is
    independent of the others', so the bytes are the same however they ran."""
    if not (np.isfinite(mu) and mu >= 0):
        raise ValueError(f"mu must be finite and ≥ 0, got {mu}")
    searches = []
    for name, delta in deltas.items():
        d = delta.detach().to(torch.float32).cpu().numpy()
        w = sensitivity[name].detach().to(torch.float64).cpu().numpy()
        if not (np.isfinite(d).all() and np.isfinite(w).all()):
            raise ValueError(f"update or sensitivity of {name} is not finite")
        measure = _diagonal(w) if distortion is None else _bind(distortion, name)
        searches.append(partial(quantise_rd, d, w, mu, measure))
    if pool is None:
        tensors = [search() for search in searches]
    else:
        tensors = list(pool.map(lambda search: search(), searches))
    return encode_quantised(subset, tensors, relative)


def _diagonal(w: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda error: float(np.sum(w * error.astype(np.float64) ** 2))


def _bind(distortion: Distortion, name: str) -> Callable[[np.ndarray], float]:
    return lambda error: distortion(name, error)


def rd_mu(lam: float, samples: int) -> float:
    """The price of one update bit in distortion units, for a segment of ``samples`` source
    luma samples (frames × W × H): the RDO's ``J = D + λ·R`` counts R in bits per source
    luma sample, so one bit of the segment's update adds λ / samples to J."""
    return lam / samples
