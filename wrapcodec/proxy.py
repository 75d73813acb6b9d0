"""Codec stand-ins for training: the differentiable JPEG proxy and the real codec in the loop.

* :class:`JpegProxy` — Hu et al. §3.3 (Fig. 2). The bottleneck is clipped to ``[0, 2^d − 1]``,
  cut into L×L blocks (L drawn per step from {4, 8, 16, 32}), DCT'd, quantised with a learned
  step ``q`` (straight-through rounding) and inverse-DCT'd. Rate (their eq. 1):
  ``L_R = a · Σ log(1 + |Y|/q)`` with ``a = SG(R / Σ log(1 + |Y|/q))`` where ``R`` is the size in
  bits of a real grayscale JPEG (libjpeg through Pillow) of each bottleneck channel at quality
  ``qf = 100 − (100q − 50)/32``, on the 8 most significant bits when d = 10. ``a`` is one
  scale per batch, so ``L_R`` equals the batch's real JPEG bits while its gradient reaches the
  coefficients and ``q``. ``q`` is in 8-bit sample units, as JPEG's DC step.
* :func:`codec_roundtrip` — the real codec in the forward pass (SCALED, the projection
  view): ``x̂ = x + SG(C(x) − x)``. The bottleneck goes through the backend as a short clip, so
  the network sees exactly what the codec emits; the backward pass is the identity.
"""

from __future__ import annotations

import io
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from wrapcodec import ffmpeg
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.nets import from_unit, unit
from wrapcodec.pipeline import crop_frame, pad_frame, quantize
from wrapcodec.y4m import Frame

BLOCK_SIZES = (4, 8, 16, 32)


def dct_matrix(size: int) -> Tensor:
    """Orthonormal DCT-II matrix (rows are basis vectors); JPEG's scaling for 8×8."""
    n = torch.arange(size, dtype=torch.float64)
    k = n[:, None]
    m = torch.cos(math.pi * (2 * n[None, :] + 1) * k / (2 * size)) * math.sqrt(2 / size)
    m[0] /= math.sqrt(2)
    return m.float()


def jpeg_quality(q: float) -> int:
    """The JPEG quality whose DC step is ``q`` (Hu et al.): ``100 − (100q − 50)/32``, in 1..100."""
    return int(min(100, max(1, round(100 - (100 * q - 50) / 32))))


def jpeg_bits(plane: np.ndarray, quality: int) -> int:
    """Size in bits of a baseline grayscale JPEG of an 8-bit plane (libjpeg via Pillow)."""
    buf = io.BytesIO()
    Image.fromarray(plane, mode="L").save(buf, format="JPEG", quality=quality, subsampling=0)
    return 8 * buf.tell()


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _blocks(x: Tensor, size: int) -> tuple[Tensor, tuple[int, int]]:
    """(N, C, H, W) → (N, C, H/L, W/L, L, L) after replicate padding to multiples of L."""
    h, w = x.shape[-2:]
    x = F.pad(x, (0, -w % size, 0, -h % size), mode="replicate")
    n, c, hp, wp = x.shape
    x = x.reshape(n, c, hp // size, size, wp // size, size).permute(0, 1, 2, 4, 3, 5)
    return x, (h, w)


def _unblocks(b: Tensor, hw: tuple[int, int]) -> Tensor:
    n, c, bh, bw, size, _ = b.shape
    x = b.permute(0, 1, 2, 4, 3, 5).reshape(n, c, bh * size, bw * size)
    return x[..., : hw[0], : hw[1]]


@dataclass
class ProxyOutput:
    y_hat: Tensor  # (N,1,h,w) reconstructed bottleneck luma, normalised
    uv_hat: Tensor  # (N,2,h/2,w/2)
    rate: Tensor  # scalar: a·Σ log(1+|Y|/q) in bits, equal to real_bits in value
    real_bits: int  # bits of the real JPEGs of the batch (or the bits it was scaled to)
    quality: int


class JpegProxy(nn.Module):
    """Differentiable JPEG stand-in for a codec at bottleneck depth ``bitdepth``."""

    def __init__(self, bitdepth: int = 10, q_init: float = 8.0) -> None:
        super().__init__()
        self.bitdepth = bitdepth
        self.log_q = nn.Parameter(torch.tensor(math.log(q_init)))

    @property
    def q(self) -> Tensor:
        return self.log_q.exp()

    def forward(
        self,
        y: Tensor,
        uv: Tensor,
        block: int = 8,
        q_scale: float = 1.0,
        scale_to: int | None = None,
    ) -> ProxyOutput:
        """Code the normalised bottleneck (y, uv); ``q_scale`` multiplies the learned step.

        ``scale_to``: scale the rate to these bits (a real codec's) instead of real JPEGs'."""
        q = self.q * q_scale
        to8 = 2.0 ** (self.bitdepth - 8)
        d = dct_matrix(block).to(y.device)
        planes, log_terms, bits = [], [], 0
        quality = jpeg_quality(float(q.detach()))
        for x in (y, uv):
            v = from_unit(x, self.bitdepth) / to8 - 128.0  # clipped, 8-bit units, level shift
            b, hw = _blocks(v, block)
            coeffs = d @ b @ d.T
            log_terms.append(torch.log1p(coeffs.abs() / q).sum())
            b_hat = d.T @ (ste_round(coeffs / q) * q) @ d
            planes.append(unit((_unblocks(b_hat, hw) + 128.0) * to8, self.bitdepth))
            if scale_to is None:
                bits += self._real_bits(x, quality)
        bits = bits if scale_to is None else scale_to
        total_log = log_terms[0] + log_terms[1]
        a = bits / total_log.detach().clamp_min(1e-6)
        return ProxyOutput(planes[0], planes[1], a * total_log, bits, quality)

    def _real_bits(self, x: Tensor, quality: int) -> int:
        # the 8 most significant bits of each channel of each picture
        samples = quantize(from_unit(x.detach(), self.bitdepth).cpu().numpy(), self.bitdepth)
        msb = (samples >> (self.bitdepth - 8)).astype(np.uint8)
        return sum(
            jpeg_bits(msb[i, c], quality) for i in range(msb.shape[0]) for c in range(msb.shape[1])
        )


def codec_step(qp: int) -> float:
    """The quantiser step of H.264/HEVC/VVC at ``qp``, in 8-bit sample units (2^((QP−4)/6))."""
    return float(2.0 ** ((qp - 4) / 6))


def codec_roundtrip(
    backend: Backend,
    y: Tensor,
    uv: Tensor,
    qp: int,
    clip_len: int,
    preset: str = "medium",
    bitdepth: int = 10,
) -> tuple[Tensor, Tensor, int]:
    """Code the normalised bottleneck batch with the real codec: ``x + SG(C(x) − x)``.

    The batch is cut into clips of ``clip_len`` consecutive pictures, each coded as its own
    sequence at ``qp`` (so inter prediction works as on video). Returns (y_hat, uv_hat, bits).
    """
    n, _, h, w = y.shape
    samples_y = quantize(from_unit(y.detach(), bitdepth).cpu().numpy(), bitdepth)
    samples_uv = quantize(from_unit(uv.detach(), bitdepth).cpu().numpy(), bitdepth)
    coded = backend.coded_size(w, h)
    settings = EncodeSettings(qp=qp, preset=preset, bitdepth=bitdepth, threads=1)
    out_y = np.empty_like(samples_y)
    out_uv = np.empty_like(samples_uv)
    bits = 0
    with tempfile.TemporaryDirectory(prefix="wrapcodec-loop-") as tmp:
        for start in range(0, n, clip_len):
            idx = range(start, min(n, start + clip_len))
            frames = [
                pad_frame(Frame(samples_y[i, 0], samples_uv[i, 0], samples_uv[i, 1]), coded)
                for i in idx
            ]
            stream = Path(tmp) / f"clip{start}{backend.extension}"
            ffmpeg.encode(backend, settings, iter(frames), *coded, "25/1", stream)
            bits += 8 * stream.stat().st_size
            for i, dec in zip(
                idx, ffmpeg.decode(backend, stream, *coded, bitdepth, len(frames)), strict=True
            ):
                f = crop_frame(dec, w, h)
                out_y[i, 0], out_uv[i, 0], out_uv[i, 1] = f.y, f.u, f.v
    dec_y = unit(torch.from_numpy(out_y.astype(np.float32)), bitdepth).to(y.device)
    dec_uv = unit(torch.from_numpy(out_uv.astype(np.float32)), bitdepth).to(y.device)
    return y + (dec_y - y).detach(), uv + (dec_uv - uv).detach(), bits
