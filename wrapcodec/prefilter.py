"""The standard-stream networks: a pre-filter that a plain decoder needs nothing for, and the
learned codec models that train it (after Klopp et al., IEEE TIP 2020, a differentiable rate
beside the real codec; after Qiu et al., a codec simulator).

All take a 4:2:0 picture as :mod:`wrapcodec.nets` does (``y (N,1,H,W)``, ``uv (N,2,H/2,W/2)``
in ``[-1, 1]``, luma space-to-depth inside, so the work is at H/2 × W/2) and the codec's QP:

* :class:`PreFilter` — source → the picture the codec codes, at the same size. A small CNN
  predicts a six-channel residual from the picture and the QP; its last layer starts at zero,
  so an untrained pre-filter is the identity (direct coding).
* :class:`RateModel` — a clip (T pictures) at a QP → the bits the codec spends on it. Every
  picture gets a non-negative bit density on a quarter-resolution grid from itself, its
  difference from the previous picture (none for the first, which is intra coded) and the
  QP; the clip's bits are the sum, plus a learned per-picture constant. The error model, its
  twin, predicts the codec's MSE the same way: with the rate, a codec simulator that gives
  what the codec costs and what it loses, differentiable in the pictures, which is all the
  pre-filter's training asks of it.

:func:`ms_ssim` is the torch twin of :func:`wrapcodec.metrics.ms_ssim_plane` (the same
definition, to float rounding), so a pre-filter can be trained for the metric it is judged by.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wrapcodec.nets import depth_to_space, space_to_depth

QP_CENTRE = 34.0
QP_SCALE = 12.0

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_FLOOR = 1e-6


def qp_plane(qp: Tensor, like: Tensor) -> Tensor:
    """The QP as one constant input channel shaped like ``like`` (N, ·, h, w)."""
    q = (qp.to(like.dtype) - QP_CENTRE) / QP_SCALE
    return q.view(-1, 1, 1, 1).expand(like.shape[0], 1, *like.shape[-2:])


class PreFilter(nn.Module):
    """Source → pre-filtered source at r = 1, conditioned on the QP (module docstring)."""

    def __init__(self, width: int = 16, layers: int = 4) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        convs: list[nn.Module] = [nn.Conv2d(7, width, 3, padding=1, padding_mode="replicate")]
        for _ in range(layers - 2):
            convs += [nn.ReLU(), nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate")]
        convs += [nn.ReLU(), nn.Conv2d(width, 6, 3, padding=1, padding_mode="replicate")]
        self.body = nn.Sequential(*convs)
        last = self.body[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def macs_per_pixel(self) -> float:
        """Multiply-accumulates per source luma pixel (convolutions at half resolution, as
        :func:`wrapcodec.nets.count_macs` counts them, and the residual's additions)."""
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        per_site = sum(c.in_channels * c.out_channels * 9 for c in convs) + 6
        return per_site / 4

    def forward(self, y: Tensor, uv: Tensor, qp: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([space_to_depth(y), uv], dim=1)
        r = self.body(torch.cat([x, qp_plane(qp, x)], dim=1))
        out_y = (y + depth_to_space(r[:, :4])).clamp(-1.0, 1.0)
        out_uv = (uv + r[:, 4:]).clamp(-1.0, 1.0)
        return out_y, out_uv


def site_net(width: int) -> nn.Sequential:
    """The codec models' network: :func:`clip_features` (14 channels at half resolution) →
    one value per quarter-resolution site, before the non-negative link."""
    return nn.Sequential(
        nn.Conv2d(14, width, 3, padding=1, padding_mode="replicate"),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1, padding_mode="replicate"),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"),
        nn.ReLU(),
        nn.Conv2d(width, 1, 1),
    )


class RateModel(nn.Module):
    """A clip at a QP → its bits (module docstring). Pictures are a batch of clips:
    ``y (N,T,H,W)``, ``uv (N,T,2,H/2,W/2)``; the result is ``(N,)`` bits."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.width = width
        self.body = site_net(width)
        self.per_picture = nn.Parameter(torch.tensor(6.0))  # log2 bits of headers

    def forward(self, y: Tensor, uv: Tensor, qp: Tensor) -> Tensor:
        n, t = y.shape[:2]
        density = F.softplus(self.body(clip_features(y, uv, qp)))
        # Bits per quarter-resolution site: 16 luma samples (and their chroma).
        bits = density.sum(dim=(1, 2, 3)).view(n, t) * 16.0
        return (bits + 2.0**self.per_picture).sum(dim=1)


class ErrorModel(nn.Module):
    """A clip at a QP → the codec's 6:1:1 MSE (8-bit units) of the decoded clip against it:
    the distortion half of a codec simulator, as :class:`RateModel` is the rate half. Every
    picture gets a non-negative error density on a quarter-resolution grid from the same
    features; the clip's MSE is the mean. Pictures as :class:`RateModel` takes them."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.width = width
        self.body = site_net(width)

    def forward(self, y: Tensor, uv: Tensor, qp: Tensor) -> Tensor:
        n = y.shape[0]
        density = F.softplus(self.body(clip_features(y, uv, qp)))
        return density.view(n, -1).mean(dim=1)


def clip_mse_parts(y: Tensor, uv: Tensor, ty: Tensor, tuv: Tensor) -> tuple[Tensor, Tensor]:
    """Per clip of ``y (N,T,H,W)``, ``uv (N,T,2,H/2,W/2)``: luma MSE and the sum of the two
    chroma MSEs against ``ty``, ``tuv``, in 8-bit units."""
    s = 127.5**2
    mse_y = ((y - ty) ** 2).mean(dim=(1, 2, 3)) * s
    mse_uv = ((uv - tuv) ** 2).mean(dim=(1, 3, 4)).sum(dim=1) * s
    return mse_y, mse_uv


def yuv_mse(y: Tensor, uv: Tensor, ty: Tensor, tuv: Tensor) -> Tensor:
    """Per clip (as :func:`clip_mse_parts` takes them): the 6:1:1 YUV MSE in 8-bit units."""
    mse_y, mse_uv = clip_mse_parts(y, uv, ty, tuv)
    return (6 * mse_y + mse_uv) / 8


def clip_features(y: Tensor, uv: Tensor, qp: Tensor) -> Tensor:
    """Per picture of clips ``y (N,T,H,W)``, ``uv (N,T,2,H/2,W/2)``: the picture (six
    half-resolution channels), its difference from the previous one (zero for the first),
    an intra flag and the QP: ``(N·T, 14, H/2, W/2)``."""
    n, t = y.shape[:2]
    x = torch.cat([space_to_depth(y.flatten(0, 1)[:, None]), uv.flatten(0, 1)], dim=1)
    x = x.view(n, t, 6, *x.shape[-2:])
    previous = torch.cat([x[:, :1], x[:, :-1]], dim=1)
    intra = torch.zeros_like(x[:, :, :1])
    intra[:, 0] = 1.0
    diff = (x - previous) * (1.0 - intra)
    features = torch.cat([x, diff, intra], dim=2).flatten(0, 1)
    q = qp.repeat_interleave(t)
    return torch.cat([features, qp_plane(q, features)], dim=1)


def _gaussian(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(torch.float32)


def _filter(x: Tensor, g: Tensor) -> Tensor:
    """Separable 'valid' Gaussian filtering of (N,1,H,W)."""
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def _ssim_terms(x: Tensor, y: Tensor, peak: float, g: Tensor) -> tuple[Tensor, Tensor]:
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mx, my = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mx * mx
    syy = _filter(y * y, g) - my * my
    sxy = _filter(x * y, g) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return lum.mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def ms_ssim(x: Tensor, y: Tensor, peak: float = 255.0) -> Tensor:
    """MS-SSIM (Wang et al. 2003: five scales, 11-tap Gaussian σ = 1.5, 2×2 averaging) of
    planes ``(N,1,H,W)`` in sample units; ``(N,)``. Contrast-structure terms are floored at
    ``MS_SSIM_FLOOR``, so the product stays real and differentiable. Needs H, W ≥ 176."""
    g = _gaussian().to(x.device)
    weights = torch.tensor(MS_SSIM_WEIGHTS, dtype=x.dtype, device=x.device)
    values = []
    for scale in range(len(MS_SSIM_WEIGHTS)):
        lum, cs = _ssim_terms(x, y, peak, g)
        if scale == len(MS_SSIM_WEIGHTS) - 1:
            values.append((lum * cs).clamp(min=MS_SSIM_FLOOR))
        else:
            values.append(cs.clamp(min=MS_SSIM_FLOOR))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, dim=1)
    return torch.prod(stacked ** weights.view(1, -1), dim=1)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM as ``−10·log10(1 − MS-SSIM)`` dB, the scale RD curves are drawn on."""
    return -10.0 * math.log10(max(1.0 - value, 1e-10))
