"""A codec simulator: what a codec decodes from a clip at a QP, and what it spends on it.

After Qiu et al. (a network trained to map the codec's input to its real decoded output, so
that a network before the codec can be trained through it), with a rate head beside the
picture.

* The **picture head** predicts the decoded clip as a six-channel residual over the codec's
  input (four luma phases, U, V at half resolution, as :mod:`wrapcodec.nets` sees a picture);
  its last layer starts at zero, so an untrained simulator is a lossless codec.
* The **rate head** is a :class:`~wrapcodec.prefilter.RateModel` of its own: every picture
  gets a non-negative bit density on a quarter-resolution grid; a clip's bits are their sum
  plus a learned per-picture constant.

Each picture is seen with its difference from the previous picture of the clip (none for the
first, which is intra coded), an intra flag and the QP
(:func:`~wrapcodec.prefilter.clip_features`). Unlike Qiu et al. it is not given the codec's
own prediction: ffmpeg does not export it, and the simulator is meant to stand in for the
codec, not to run beside it. What it is for: how the decoded picture and the bits move with the
codec's input, differentiable in that input (``train-prefilter --surrogate simulator``).

Clips are ``y (N,T,H,W)``, ``uv (N,T,2,H/2,W/2)`` in ``[-1, 1]``, H and W multiples of 4.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wrapcodec.nets import depth_to_space, space_to_depth
from wrapcodec.prefilter import RateModel, clip_features, yuv_mse

FEATURES = 14  # clip_features' channels


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="replicate")


class CodecSimulator(nn.Module):
    """A clip at a QP → (decoded ``y``, decoded ``uv``, bits ``(N,)``), module docstring."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.stem = nn.Sequential(_conv(FEATURES, width), nn.ReLU(), _conv(width, width), nn.ReLU())
        self.down = nn.Sequential(
            _conv(width, width, stride=2),
            nn.ReLU(),
            _conv(width, width),
            nn.ReLU(),
            _conv(width, width),
            nn.ReLU(),
        )
        self.up = nn.Conv2d(width, 4 * width, 1)
        self.picture = nn.Sequential(nn.ReLU(), _conv(width, width), nn.ReLU(), _conv(width, 6))
        last = self.picture[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.rate = RateModel()

    def forward(self, y: Tensor, uv: Tensor, qp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out_y, out_uv = self.picture_of(y, uv, qp)
        return out_y, out_uv, self.rate(y, uv, qp)

    def picture_of(self, y: Tensor, uv: Tensor, qp: Tensor) -> tuple[Tensor, Tensor]:
        """The decoded clip alone (the rate head not run)."""
        half = self.stem(clip_features(y, uv, qp))
        quarter = self.down(half)
        residual = self.picture(half + F.pixel_shuffle(self.up(quarter), 2))
        x = torch.cat([space_to_depth(y.flatten(0, 1)[:, None]), uv.flatten(0, 1)], dim=1)
        decoded = (x + residual).clamp(-1.0, 1.0)
        out_y = depth_to_space(decoded[:, :4]).view_as(y)
        out_uv = decoded[:, 4:].view_as(uv)
        return out_y, out_uv


def window(y: Tensor, uv: Tensor, top: int, left: int, size: int) -> tuple[Tensor, Tensor]:
    """The ``size``×``size`` window of clips ``y (…,H,W)``, ``uv (…,2,H/2,W/2)`` at luma
    ``top``, ``left`` (even)."""
    half = slice(top // 2, (top + size) // 2), slice(left // 2, (left + size) // 2)
    return y[..., top : top + size, left : left + size], uv[..., half[0], half[1]]


def random_window(
    rng: np.random.Generator, size: int | None, *clips: tuple[Tensor, Tensor]
) -> list[tuple[Tensor, Tensor]]:
    """The same random ``size``×``size`` window (offsets multiples of 4) of each of
    ``clips``; the clips whole where ``size`` is None or not smaller than them."""
    height, width = clips[0][0].shape[-2:]
    if size is None or size >= min(height, width):
        return list(clips)
    top = 4 * int(rng.integers((height - size) // 4 + 1))
    left = 4 * int(rng.integers((width - size) // 4 + 1))
    return [window(y, uv, top, left, size) for y, uv in clips]


def picture_loss(
    net: CodecSimulator, clip: tuple[Tensor, Tensor], qp: Tensor, decoded: tuple[Tensor, Tensor]
) -> Tensor:
    """The share of the codec's error (the 6:1:1 MSE of ``decoded`` against ``clip``, summed
    over the clips) that the simulated pictures leave unexplained: 1 for a simulator that
    passes its input through, 0 for an exact one. Summed, not per clip: the coarse QPs'
    errors, which follow the picture, weigh more than the fine QPs' near-random rounding."""
    sy, suv = net.picture_of(*clip, qp)
    codec = yuv_mse(*clip, *decoded).sum().clamp(min=1e-3)
    return yuv_mse(sy, suv, *decoded).sum() / codec


def rate_loss(net: CodecSimulator, clip: tuple[Tensor, Tensor], qp: Tensor, bits: Tensor) -> Tensor:
    """Per clip: the squared log2 error of the simulated bits of the whole clip."""
    return (net.rate(*clip, qp).log2() - bits.log2()) ** 2
