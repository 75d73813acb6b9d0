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

The decoder adds the deltas to the bank's float32 weights (:func:`apply_update`). The encoder
measures its candidate with the very same function on the parsed bytes, so what it measured
is what the decoder reproduces.
"""

from __future__ import annotations

import copy
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch
from torch import Tensor

from wrapcodec.errors import ContainerError
from wrapcodec.nets import PostProcessor

PREAMBLE = struct.Struct("<BB")  # subset, quantisation
SCALE = struct.Struct("<f")
INT8_MAX = 127


class Subset(IntEnum):
    """Which parameters an update carries (byte 0)."""

    BIAS_TAIL = 1  # every bias, the last 1×1 conv (tail) and the chroma 3×3 conv
    ALL = 2  # every parameter


class Quant(IntEnum):
    """How the deltas are stored (byte 1)."""

    FLOAT16 = 1
    INT8 = 2  # one float32 scale per tensor


_SELECT: dict[Subset, Callable[[str], bool]] = {
    Subset.BIAS_TAIL: lambda name: name.endswith(".bias") or name.startswith(("tail.", "chroma.")),
    Subset.ALL: lambda name: True,
}


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
