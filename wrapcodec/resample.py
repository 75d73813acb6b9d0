"""Linear, separable resamplers for single image planes (numpy, float64, deterministic).

Used to scale Y, U and V planes independently (callers resample each plane on its own) with
plain linear filters, so results are reproducible bit for bit on the encoder and decoder side.

Conventions:

* Separable: a plane ``x`` of shape ``(h, w)`` becomes ``Wy @ x @ Wx.T`` where ``Wy`` and ``Wx``
  are the 1-D :func:`weight_matrix` of each axis. An axis whose size does not change is left
  alone (identity).
* Centre-aligned sample grid (pixel-area alignment, as ffmpeg's swscale, PIL and PyTorch with
  ``align_corners=False``): output sample ``i`` sits at input coordinate
  ``(i + 0.5) * n_in / n_out - 0.5``.
* Antialiasing: when downscaling by ``s = n_in / n_out > 1`` the kernel is stretched by ``s``,
  so its support is ``a * max(1, s)`` input samples on each side.
* Edges: tap indices outside ``0..n_in-1`` are clamped (replicate padding) and their weights
  added to the clamped sample. Each row is then normalised to sum to 1, so constant planes
  stay constant.
* Kernels: ``"bilinear"`` is the triangle ``max(0, 1 - |x|)`` (``a = 1``); ``"lanczos"`` is
  Lanczos-4, ``sinc(x) * sinc(x / a)`` for ``|x| < a`` with ``a = LANCZOS_A = 4``, the
  Lanczos order used by the switchable neural wrapper paper.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Literal, get_args

import numpy as np
from scipy import sparse

__all__ = ["LANCZOS_A", "Kernel", "resample_plane", "weight_matrix"]

Kernel = Literal["bilinear", "lanczos"]
LANCZOS_A = 4
"""Lanczos order ("Lanczos-4")."""

_KERNELS: tuple[str, ...] = get_args(Kernel)


def _kernel_radius(kernel: Kernel) -> int:
    """Half-width ``a`` of the unstretched kernel."""
    return 1 if kernel == "bilinear" else LANCZOS_A


def _kernel_values(x: np.ndarray, kernel: Kernel) -> np.ndarray:
    """Evaluate the unstretched kernel at offsets ``x`` (zero outside its support)."""
    ax = np.abs(x)
    if kernel == "bilinear":
        return np.maximum(0.0, 1.0 - ax)
    inside = ax < LANCZOS_A
    return np.where(inside, np.sinc(x) * np.sinc(x / LANCZOS_A), 0.0)


def _check_args(n_in: int, n_out: int, kernel: str) -> None:
    """Reject sizes below 1 and unknown kernels (programming errors, not user input)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be >= 1, got n_in={n_in}, n_out={n_out}")
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {', '.join(_KERNELS)}")


@functools.lru_cache(maxsize=256)
def _cached_weights(n_in: int, n_out: int, kernel: Kernel) -> np.ndarray:
    """Build (once per size pair and kernel) the read-only 1-D resampling matrix."""
    if n_in == n_out:
        weights = np.eye(n_in, dtype=np.float64)
    else:
        weights = _build_weights(n_in, n_out, kernel)
    weights.flags.writeable = False
    return weights


def _build_weights(n_in: int, n_out: int, kernel: Kernel) -> np.ndarray:
    """Dense ``(n_out, n_in)`` matrix following the conventions in the module docstring."""
    scale = n_in / n_out
    stretch = max(1.0, scale)
    support = _kernel_radius(kernel) * stretch
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    first = np.floor(centres - support).astype(np.int64)
    taps = first[:, None] + np.arange(math.ceil(2 * support) + 2)[None, :]
    values = _kernel_values((taps - centres[:, None]) / stretch, kernel)
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(weights, (rows, np.clip(taps, 0, n_in - 1)), values)
    return weights / weights.sum(axis=1, keepdims=True)


def weight_matrix(n_in: int, n_out: int, kernel: Kernel) -> np.ndarray:
    """The ``(n_out, n_in)`` float64 matrix that resamples a length-``n_in`` signal.

    Rows sum to 1. The result is cached and read-only: copy it before modifying.
    """
    _check_args(n_in, n_out, kernel)
    return _cached_weights(n_in, n_out, kernel)


@functools.lru_cache(maxsize=256)
def _sparse(n_in: int, n_out: int, kernel: Kernel) -> sparse.csr_matrix:
    """The weight matrix in CSR form: each row's non-zero taps, in column order."""
    return sparse.csr_matrix(_cached_weights(n_in, n_out, kernel))


def _filter_rows(x: np.ndarray, n_out: int, kernel: Kernel) -> np.ndarray:
    """Resample along axis 0 as a sparse product.

    The CSR product sums each output row's taps in a fixed order on one thread, so it gives
    the same bits on every machine and thread count, unlike a BLAS matrix product whose
    summation order varies: the decoder's output must equal what the encoder measured
    wherever each of them runs.
    """
    return np.asarray(_sparse(x.shape[0], n_out, kernel) @ x)


def resample_plane(x: np.ndarray, out_height: int, out_width: int, kernel: Kernel) -> np.ndarray:
    """Resample a 2-D plane to ``(out_height, out_width)``; float64 in, new float64 array out.

    Equal to ``Wy @ x @ Wx.T`` (vertical pass first), skipping an axis whose size is
    unchanged, and bit-exact across machines (see :func:`_filter_rows`).
    """
    plane = np.asarray(x, dtype=np.float64)
    if plane.ndim != 2:
        raise ValueError(f"expected a 2-D plane, got shape {plane.shape}")
    height, width = plane.shape
    _check_args(height, out_height, kernel)
    _check_args(width, out_width, kernel)
    out = plane.copy() if (height, width) == (out_height, out_width) else plane
    if out_height != height:
        out = _filter_rows(out, out_height, kernel)
    if out_width != width:
        out = np.ascontiguousarray(_filter_rows(np.ascontiguousarray(out.T), out_width, kernel).T)
    return out


def _even_round(x: Fraction) -> int:
    # nearest even integer, halves up: 2·floor(x/2 + 1/2)
    return 2 * int((x / 2 + Fraction(1, 2)) // 1)


def bottleneck_size(width: int, height: int, ratio: Fraction) -> tuple[int, int]:
    """Luma size of the bottleneck for a ``width``×``height`` source at ``ratio``: each side
    times ``ratio``, rounded to the nearest even number (halves up); itself at ratio 1."""
    if ratio == 1:
        return width, height
    return _even_round(width * ratio), _even_round(height * ratio)
