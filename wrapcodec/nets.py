"""The neural pre- and post-processors of the switchable neural wrappers (Hu et al., §3.1–3.2).

Both work on a 4:2:0 picture held as two tensors in the normalised range ``[-1, 1]``::

    y   (N, 1, H,   W)      luma
    uv  (N, 2, H/2, W/2)    chroma

with H and W even (callers pad odd pictures by one replicated row or column, which leaves the
chroma size unchanged). Inside, luma goes space-to-depth so the network sees six channels at
H/2 × W/2: four luma phases, U and V.

* :class:`PostProcessor` — bilinear resample of the decoded bottleneck to H × W, a UNet-like net
  in which every kernel larger than 1×1 is depthwise (followed by 1×1 cross-channel convs)
  predicting a six-channel residual; the luma residual goes depth-to-space and is added to the
  resampled Y, U and V pass a learned 3×3 cross-channel conv before their residuals are added.
  One architecture for every ratio.
* :class:`PreProcessor` — a standard UNet plus a parallel three-layer 1×1 MLP, added to the
  bilinear (antialiased) downsampling of the source; the ratio r = u/d is set by the strides
  of two layers: a stride-d convolution down and a stride-u transposed convolution up.

Both start as the linear option they extend: their last layers are zero and the chroma conv is
the identity, so an untrained post-processor is bilinear upsampling and an untrained
pre-processor is the bilinear downsampling of the pipeline.

:func:`count_macs` counts what a forward pass runs, per output (post) or source (pre) luma
pixel: every convolution's multiply-accumulates (``out elements × in/groups × kh × kw``, as
thop counts them, biases not counted), resampling taps (one MAC per non-zero tap) and one per
element of every residual or skip addition. Activations, padding and pixel shuffles are free.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from wrapcodec.resample import bottleneck_size, weight_matrix

# -- MAC counting ---------------------------------------------------------------------------

_counter: list[float] = []  # the innermost count_macs() tally, empty when not counting


def _tally(n: float) -> None:
    if _counter:
        _counter[-1] += n


def _add(a: Tensor, b: Tensor) -> Tensor:
    """``a + b``, tallied as one operation per output element."""
    out = a + b
    _tally(out[0].numel())
    return out


def _conv_hook(module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
    assert isinstance(module, nn.Conv2d | nn.ConvTranspose2d)
    kh, kw = module.kernel_size
    if isinstance(module, nn.ConvTranspose2d):
        # each input element is multiplied into kh·kw·out/groups outputs
        n_in = _inputs[0][0].numel()
        _tally(n_in * kh * kw * module.out_channels / module.groups)
    else:
        _tally(output[0].numel() * module.in_channels / module.groups * kh * kw)


@contextlib.contextmanager
def _counting(model: nn.Module) -> Iterator[list[float]]:
    handles = [
        m.register_forward_hook(_conv_hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
    ]
    _counter.append(0.0)
    try:
        yield _counter
    finally:
        _counter.pop()
        for h in handles:
            h.remove()


def count_macs(model: PostProcessor | PreProcessor, width: int, height: int) -> float:
    """MACs per luma pixel (output pixel for a post-processor, source pixel for a
    pre-processor) of one forward pass on a ``width``×``height`` picture."""
    ratio = model.ratio
    with torch.no_grad(), _counting(model) as tally:
        if isinstance(model, PostProcessor):
            bw, bh = bottleneck_dims(width, height, ratio)
            y, uv = _zeros(bw, bh)
            model(y, uv, height, width)
        else:
            y, uv = _zeros(width, height)
            model(y, uv)
        total = tally[-1]
    return total / (width * height)


def _zeros(width: int, height: int) -> tuple[Tensor, Tensor]:
    return torch.zeros(1, 1, height, width), torch.zeros(1, 2, height // 2, width // 2)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- helpers --------------------------------------------------------------------------------


def bottleneck_dims(width: int, height: int, ratio: Fraction) -> tuple[int, int]:
    """The pipeline's bottleneck size rule (nearest even, halves up)."""
    return bottleneck_size(width, height, ratio)


def compute_padding(h: int, w: int, multiple: int) -> tuple[tuple[int, int, int, int], tuple]:
    """``(pad, unpad)``: F.pad amounts taking ``h``×``w`` up to multiples of ``multiple``
    (right and bottom), and the slice that undoes it."""
    ph, pw = -h % multiple, -w % multiple
    return (0, pw, 0, ph), (..., slice(0, h), slice(0, w))


def space_to_depth(y: Tensor) -> Tensor:
    return F.pixel_unshuffle(y, 2)  # (N,1,H,W) -> (N,4,H/2,W/2)


def depth_to_space(x: Tensor) -> Tensor:
    return F.pixel_shuffle(x, 2)  # (N,4,H/2,W/2) -> (N,1,H,W)


def bilinear_up(x: Tensor, height: int, width: int) -> Tensor:
    """Bilinear interpolation to a larger or equal size (centre-aligned), 4 taps per sample."""
    if x.shape[-2:] == (height, width):
        return x
    _tally(4 * x[0].numel() * height * width / (x.shape[-2] * x.shape[-1]))
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


_TAPS: dict[tuple[int, int], tuple[Tensor, Tensor, int]] = {}


def _taps(n_in: int, n_out: int) -> tuple[Tensor, Tensor, int]:
    """The antialiased bilinear weight matrix (:func:`wrapcodec.resample.weight_matrix`) as
    taps: per output index the source indices and weights of its non-zero entries (padded
    with zero weights to the longest row), and the count of non-zero entries."""
    key = (n_in, n_out)
    if key not in _TAPS:
        m = weight_matrix(n_in, n_out, "bilinear")
        rows = [np.flatnonzero(r) for r in m]
        width = max(len(r) for r in rows)
        index = np.zeros((n_out, width), np.int64)
        weight = np.zeros((n_out, width), np.float32)
        for i, cols in enumerate(rows):
            index[i, : len(cols)] = cols
            index[i, len(cols) :] = cols[-1]
            weight[i, : len(cols)] = m[i, cols]
        _TAPS[key] = (torch.from_numpy(index), torch.from_numpy(weight), int((m != 0).sum()))
    return _TAPS[key]


def bilinear_down(x: Tensor, height: int, width: int) -> Tensor:
    """The pipeline's antialiased bilinear downsampling (:mod:`wrapcodec.resample`), rows
    then columns, each output sample a weighted sum of its few non-zero taps; tallied by
    those taps."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    iy, wy, ny = _taps(h, height)
    ix, wx, nx = _taps(w, width)
    channels = x[0].shape[0]
    _tally(channels * (ny * w + height * nx))
    wy, wx = wy.to(x.device, x.dtype), wx.to(x.device, x.dtype)
    rows = (x[..., iy.to(x.device), :] * wy[..., None]).sum(-2)  # (N, C, height, T, w) → sum T
    return (rows[..., ix.to(x.device)] * wx).sum(-1)  # (N, C, height, width, T) → sum T


def bilinear_bottleneck(y: Tensor, uv: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """(y, uv) downsampled by :func:`bilinear_down` to luma ``width``×``height``."""
    return bilinear_down(y, height, width), bilinear_down(uv, height // 2, width // 2)


# -- post-processor -------------------------------------------------------------------------


class PostConfig(BaseModel):
    """Architecture of a :class:`PostProcessor` (stored in every model card)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: tuple[int, int, int] = (12, 24, 32)  # at H/2, H/4, H/8
    blocks: tuple[int, int, int] = (3, 3, 1)  # depthwise-separable blocks per level (enc+dec)


class SeparableBlock(nn.Module):
    """Depthwise 3×3, then 1×1 across channels, ReLU; residual when the width is kept."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.residual = cin == cout and stride == 1

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.pw(self.dw(x)))
        return _add(x, out) if self.residual else out


class PostProcessor(nn.Module):
    """Decoded bottleneck (y, uv) → reconstruction at H × W (Hu et al., Fig. 3)."""

    def __init__(self, ratio: Fraction, config: PostConfig | None = None) -> None:
        super().__init__()
        self.ratio = Fraction(ratio)
        self.config = config or PostConfig()
        c0, c1, c2 = self.config.channels
        n0, n1, n2 = self.config.blocks
        self.head = nn.Conv2d(6, c0, 1)
        self.enc0 = nn.Sequential(*(SeparableBlock(c0, c0) for _ in range(n0 - n0 // 2)))
        self.down1 = SeparableBlock(c0, c1, stride=2)
        self.enc1 = nn.Sequential(*(SeparableBlock(c1, c1) for _ in range(n1 - n1 // 2)))
        self.down2 = SeparableBlock(c1, c2, stride=2)
        self.mid = nn.Sequential(*(SeparableBlock(c2, c2) for _ in range(n2)))
        self.up2 = nn.Conv2d(c2, c1, 1)
        self.dec1 = nn.Sequential(*(SeparableBlock(c1, c1) for _ in range(n1 // 2)))
        self.up1 = nn.Conv2d(c1, c0, 1)
        self.dec0 = nn.Sequential(*(SeparableBlock(c0, c0) for _ in range(n0 // 2)))
        self.tail = nn.Conv2d(c0, 6, 1)
        self.chroma = nn.Conv2d(2, 2, 3, padding=1, padding_mode="replicate")
        with torch.no_grad():  # start as plain bilinear upsampling
            for p in (*self.tail.parameters(), *self.chroma.parameters()):
                p.zero_()
            self.chroma.weight[0, 0, 1, 1] = 1.0
            self.chroma.weight[1, 1, 1, 1] = 1.0

    def unet(self, x: Tensor) -> Tensor:
        """(N, 6, h, w) with h, w multiples of 4 → (N, 6, h, w) residual."""
        e0 = self.enc0(F.relu(self.head(x)))
        e1 = self.enc1(self.down1(e0))
        m = self.mid(self.down2(e1))
        d1 = self.dec1(_add(e1, F.interpolate(self.up2(m), scale_factor=2.0, mode="nearest")))
        d0 = self.dec0(_add(e0, F.interpolate(self.up1(d1), scale_factor=2.0, mode="nearest")))
        return self.tail(d0)

    def forward(
        self, y_tilde: Tensor, uv_tilde: Tensor, height: int, width: int
    ) -> tuple[Tensor, Tensor]:
        """Decoded bottleneck, normalised, → (y_hat, uv_hat) at ``height``×``width`` (even)."""
        return self.restore(*self.upsample(y_tilde, uv_tilde, height, width))

    @staticmethod
    def upsample(
        y_tilde: Tensor, uv_tilde: Tensor, height: int, width: int
    ) -> tuple[Tensor, Tensor]:
        """The parameter-free first stage: bilinear resampling to ``height``×``width``."""
        y = bilinear_up(y_tilde, height, width)  # (N,1,H,W)
        uv = bilinear_up(uv_tilde, height // 2, width // 2)  # (N,2,H/2,W/2)
        return y, uv

    def restore(self, y: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
        """The learned stage on the resampled picture (any even size): residual and chroma
        conv. Crops of the resampled picture can be restored on their own (content
        adaptation trains on them)."""
        height, width = y.shape[-2:]
        x = torch.cat([space_to_depth(y), uv], dim=1)  # (N,6,H/2,W/2)
        pad, unpad = compute_padding(height // 2, width // 2, 4)
        residual = self.unet(F.pad(x, pad, mode="replicate"))[unpad]
        y_hat = _add(y, depth_to_space(residual[:, :4]))
        uv_hat = _add(self.chroma(uv), residual[:, 4:])
        return y_hat, uv_hat


# -- pre-processor --------------------------------------------------------------------------


class PreConfig(BaseModel):
    """Architecture of a :class:`PreProcessor` (stored in every model card)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: tuple[int, int] = (16, 32)  # full convolutions at the top and the inner level
    mlp: int = 16  # hidden width of the parallel 1×1 MLP


#: Arithmetics the pre-processor runs in. It runs on the encoder only: the decoder never
#: reproduces its output (the encoder codes and measures whatever it gives), so unlike the
#: post-processor it need not be exact, and may trade a few least significant bits for speed.
#: ``bfloat16``: its convolutions in bfloat16 (autocast), everything else in float32 — the
#: bilinear base and the sums it enters, so only the small learned corrections lose precision.
PRE_ARITHMETICS = ("float32", "bfloat16")


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 dot products in hardware (AVX512-BF16 or AMX);
    elsewhere bfloat16 is emulated and slower than float32. (torch's own CPU probes; a torch
    without them counts as no.)"""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def default_pre_arithmetic() -> str:
    """The faster arithmetic on this CPU: ``bfloat16`` where it is native, else ``float32``."""
    return "bfloat16" if native_bfloat16() else "float32"


def pre_arithmetic(name: str) -> contextlib.AbstractContextManager[object]:
    """Context in which a :class:`PreProcessor` called on CPU tensors runs in ``name``
    (one of :data:`PRE_ARITHMETICS`)."""
    if name not in PRE_ARITHMETICS:
        raise ValueError(f"pre-processor arithmetic {name!r}: one of {', '.join(PRE_ARITHMETICS)}")
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bfloat16")


def ratio_strides(ratio: Fraction) -> tuple[int, int]:
    """(d, u) for r = u/d: the stride of the down layer and of the up layer (r = 1 goes
    down and back up by 2, as a plain UNet does)."""
    r = Fraction(ratio)
    return (2, 2) if r == 1 else (r.denominator, r.numerator)


class PreProcessor(nn.Module):
    """Source (y, uv) → bottleneck (y, uv) at ratio r (Hu et al., Fig. 1b; Guleryuz et al.)."""

    def __init__(self, ratio: Fraction, config: PreConfig | None = None) -> None:
        super().__init__()
        self.ratio = Fraction(ratio)
        self.config = config or PreConfig()
        c0, c1 = self.config.channels
        d, u = ratio_strides(self.ratio)
        self.d, self.u = d, u
        self.head = nn.Conv2d(6, c0, 3, padding=1)
        self.enc0 = nn.Conv2d(c0, c0, 3, padding=1)
        # the highlighted layers: down by d, ..., up by u
        self.down = nn.Conv2d(c0, c1, max(3, d), stride=d, padding=max(3, d) // 2 if d < 3 else 0)
        self.enc1 = nn.Conv2d(c1, c1, 3, padding=1)
        self.down2 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(c1, c1, 3, padding=1)
        self.up2 = nn.ConvTranspose2d(c1, c1, 2, stride=2)
        self.dec1 = nn.Conv2d(c1, c1, 3, padding=1)
        self.up = nn.ConvTranspose2d(c1, c0, u, stride=u) if u > 1 else nn.Conv2d(c1, c0, 1)
        self.dec0 = nn.Conv2d(c0, c0, 3, padding=1)
        self.tail = nn.Conv2d(c0, 6, 3, padding=1)
        m = self.config.mlp
        self.mlp = nn.Sequential(
            nn.Conv2d(6, m, 1), nn.ReLU(), nn.Conv2d(m, m, 1), nn.ReLU(), nn.Conv2d(m, 6, 1)
        )
        with torch.no_grad():  # start as the bilinear option
            for layer in (self.tail, self.mlp[-1]):
                assert isinstance(layer, nn.Conv2d)
                layer.weight.zero_()
                assert layer.bias is not None
                layer.bias.zero_()

    @property
    def multiple(self) -> int:
        """Half-resolution sizes are padded to this before the UNet."""
        return 2 * self.d

    def forward(
        self, y: Tensor, uv: Tensor, size: tuple[int, int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Source → bottleneck of luma ``size`` (width, height; even) [the pipeline's rule]."""
        height, width = y.shape[-2:]
        bw, bh = size or bottleneck_dims(width, height, self.ratio)
        x = torch.cat([space_to_depth(y), uv], dim=1)  # (N,6,H/2,W/2)
        y_base, uv_base = bilinear_bottleneck(y, uv, bw, bh)
        base = torch.cat([space_to_depth(y_base), uv_base], dim=1)  # (N,6,bh/2,bw/2)
        pad, _ = compute_padding(x.shape[-2], x.shape[-1], self.multiple)
        # one more multiple, so the strided output covers the bottleneck after its rounding
        pad = (0, pad[1] + self.multiple, 0, pad[3] + self.multiple)
        xp = F.pad(x, pad, mode="replicate")
        e0 = F.relu(self.enc0(F.relu(self.head(xp))))
        e1 = F.relu(self.enc1(F.relu(self.down(e0))))
        m = F.relu(self.mid(F.relu(self.down2(e1))))
        d1 = F.relu(self.dec1(_add(e1, self.up2(m))))
        g = F.relu(self.up(d1))
        if self.d == self.u:
            g = _add(g, e0)  # the top-level skip exists when the resolution is kept
        residual = self.tail(F.relu(self.dec0(g)))[..., : bh // 2, : bw // 2]
        out = _add(_add(base, self.mlp(base)), residual)
        return depth_to_space(out[:, :4]), out[:, 4:]


PEAK_8BIT = 255.0


def mse_8bit(y_hat: Tensor, uv_hat: Tensor, y: Tensor, uv: Tensor) -> Tensor:
    """6:1:1-weighted MSE in 8-bit sample units of normalised pictures."""
    s = (PEAK_8BIT / 2) ** 2
    mse_y = ((y_hat - y) ** 2).mean() * s
    mse_uv = ((uv_hat - uv) ** 2).mean(dim=(0, 2, 3)) * s
    return (6 * mse_y + mse_uv.sum()) / 8


def unit(x: Tensor, bitdepth: int) -> Tensor:
    """Samples at ``bitdepth`` → ``[-1, 1]``."""
    return x * (2.0 / ((1 << bitdepth) - 1)) - 1.0


def from_unit(x: Tensor, bitdepth: int) -> Tensor:
    """``[-1, 1]`` → samples at ``bitdepth`` (float, not rounded)."""
    return (x.clamp(-1.0, 1.0) + 1.0) * (((1 << bitdepth) - 1) / 2.0)
