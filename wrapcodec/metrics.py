"""PSNR in the HM/JVET convention used everywhere in wrapcodec.

PSNR is computed per plane and per frame, averaged over frames, and combined as
``PSNR_YUV = (6·PSNR_Y + PSNR_U + PSNR_V) / 8``; the peak is ``2^d − 1`` of the *source*
bit depth d. A frame plane identical to its reference is given ``MAX_PSNR`` (as HM caps it)
rather than infinity, so averages stay finite.

The RDO distortion is the matching MSE, ``(6·MSE_Y + MSE_U + MSE_V) / 8``, in 8-bit units
(divided by ``4^(d−8)``), averaged over frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from wrapcodec.errors import InputError
from wrapcodec.y4m import Frame, Y4MReader

MAX_PSNR = 100.0
WEIGHTS = (6.0, 1.0, 1.0)


def kbps(bits: int, frames: int, fps_num: int, fps_den: int) -> float:
    """Bits over the duration of ``frames`` frames at ``fps_num/fps_den``, in kbit/s."""
    return bits / (frames * fps_den / fps_num) / 1000.0


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error of two planes of integer samples (up to 16 bits) of the same shape,
    exact: the squared differences are summed as 64-bit integers."""
    if a.size == 0:
        return float("nan")
    width = a.shape[-1] if a.ndim else 1
    return int(_sse(a.reshape(-1, width), b.reshape(-1, width))) / a.size


@njit(cache=True, nogil=True)
def _sse(a: np.ndarray, b: np.ndarray) -> np.int64:
    """Sum of squared differences of two 2-D integer arrays, in int64 (exact for samples of
    up to 16 bits in planes of up to 2^31 samples)."""
    total = np.int64(0)
    for i in range(a.shape[0]):
        row_a, row_b = a[i], b[i]
        for j in range(row_a.shape[0]):
            d = np.int64(row_a[j]) - np.int64(row_b[j])
            total += d * d
    return total


def psnr(mse_value: float, bitdepth: int) -> float:
    """PSNR in dB for one plane of one frame, capped at ``MAX_PSNR``."""
    peak = float((1 << bitdepth) - 1)
    if mse_value <= 0.0:
        return MAX_PSNR
    return min(MAX_PSNR, 10.0 * math.log10(peak * peak / mse_value))


def weighted(values: tuple[float, float, float]) -> float:
    """6:1:1 combination of per-plane figures."""
    return sum(w * v for w, v in zip(WEIGHTS, values, strict=True)) / sum(WEIGHTS)


@dataclass
class PsnrAccumulator:
    """Running per-frame, per-plane PSNR and MSE of a reconstruction against its source."""

    bitdepth: int
    psnr_sum: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    mse_sum: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    frames: int = 0

    def add(self, ref: Frame, rec: Frame) -> None:
        for i, (a, b) in enumerate(zip(ref, rec, strict=True)):
            if a.shape != b.shape:
                raise ValueError(f"plane {i}: shape {b.shape} differs from {a.shape}")
            m = mse(a, b)
            self.mse_sum[i] += m
            self.psnr_sum[i] += psnr(m, self.bitdepth)
        self.frames += 1

    def _mean(self, sums: list[float]) -> tuple[float, float, float]:
        if self.frames == 0:
            raise ValueError("no frames measured")
        y, u, v = (s / self.frames for s in sums)
        return y, u, v

    @property
    def psnr_planes(self) -> tuple[float, float, float]:
        """Frame-averaged PSNR of Y, U, V."""
        return self._mean(self.psnr_sum)

    @property
    def psnr_yuv(self) -> float:
        """``(6·Y + U + V) / 8`` of the frame-averaged plane PSNRs."""
        return weighted(self.psnr_planes)

    @property
    def mse_8bit(self) -> float:
        """6:1:1-weighted MSE averaged over frames, in 8-bit units."""
        return weighted(self._mean(self.mse_sum)) / float(4 ** (self.bitdepth - 8))


def measure_files(reference: str, reconstruction: str) -> PsnrAccumulator:
    """PSNR of one y4m file against another of the same format, frame by frame."""
    with Y4MReader(reference) as ref, Y4MReader(reconstruction) as rec:
        if (ref.info.width, ref.info.height, ref.info.bitdepth) != (
            rec.info.width,
            rec.info.height,
            rec.info.bitdepth,
        ):
            raise InputError(f"{reconstruction}: size or bit depth differs from {reference}")
        acc = PsnrAccumulator(ref.info.bitdepth)
        try:
            for a, b in zip(ref, rec, strict=True):
                acc.add(a, b)
        except ValueError:  # zip(strict=True): one file ran out of frames first
            raise InputError(
                f"{reconstruction}: frame count differs from {reference} (after {acc.frames})"
            ) from None
    return acc


# -- MS-SSIM --------------------------------------------------------------------------------

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_FLOOR = 1e-6
MS_SSIM_MIN_SIDE = 11 * 2 ** (len(MS_SSIM_WEIGHTS) - 1)


def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _valid_filter(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D plane with the taps ``g`` (rows, then columns)."""
    n = len(g)
    rows = sum(g[k] * x[:, k : x.shape[1] - n + 1 + k] for k in range(n))
    return sum(g[k] * rows[k : rows.shape[0] - n + 1 + k, :] for k in range(n))


def ms_ssim_plane(reference: np.ndarray, distorted: np.ndarray, bitdepth: int) -> float:
    """MS-SSIM of one plane (Wang, Simoncelli and Bovik 2003): five scales, an 11-tap Gaussian
    window of σ = 1.5, 2×2 averaging between scales, K1 = 0.01, K2 = 0.03, the 2003 weights;
    contrast-structure terms floored at ``MS_SSIM_FLOOR``. Planes need both sides at least
    ``MS_SSIM_MIN_SIDE`` (176) samples. :func:`wrapcodec.prefilter.ms_ssim` is its torch twin."""
    if min(reference.shape) < MS_SSIM_MIN_SIDE:
        raise InputError(
            f"MS-SSIM needs pictures of at least {MS_SSIM_MIN_SIDE}×{MS_SSIM_MIN_SIDE} samples"
        )
    peak = float((1 << bitdepth) - 1)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    g = _gaussian_taps()
    x, y = reference.astype(np.float64), distorted.astype(np.float64)
    result = 1.0
    for scale, weight in enumerate(MS_SSIM_WEIGHTS):
        mx, my = _valid_filter(x, g), _valid_filter(y, g)
        sxx = _valid_filter(x * x, g) - mx * mx
        syy = _valid_filter(y * y, g) - my * my
        sxy = _valid_filter(x * y, g) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        if scale == len(MS_SSIM_WEIGHTS) - 1:
            lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
            term = float((lum * cs).mean())
        else:
            term = float(cs.mean())
            h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
            x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            y = y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        result *= max(term, MS_SSIM_FLOOR) ** weight
    return result


@dataclass
class MsSsimAccumulator:
    """Running luma MS-SSIM of a reconstruction against its source, averaged over frames."""

    bitdepth: int
    total: float = 0.0
    frames: int = 0

    def add(self, ref: Frame, rec: Frame) -> None:
        self.total += ms_ssim_plane(ref.y, rec.y, self.bitdepth)
        self.frames += 1

    @property
    def ms_ssim(self) -> float:
        """Frame-averaged luma MS-SSIM."""
        if self.frames == 0:
            raise ValueError("no frames measured")
        return self.total / self.frames

    @property
    def db(self) -> float:
        """``−10·log10(1 − MS-SSIM)``, the scale its RD curves and BD-rates use."""
        return -10.0 * math.log10(max(1.0 - self.ms_ssim, 1e-10))
