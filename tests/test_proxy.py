"""The differentiable JPEG proxy and the real codec in the loop."""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wrapcodec import ffmpeg
from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.dataset import center_crops, load_pictures, to_tensors
from wrapcodec.nets import PreProcessor, bilinear_down, bilinear_up
from wrapcodec.proxy import (
    BLOCK_SIZES,
    JpegProxy,
    codec_roundtrip,
    dct_matrix,
    jpeg_bits,
    jpeg_quality,
    ste_round,
)
from wrapcodec.train import mse_8bit
from wrapcodec.y4m import Frame

IMAGES = Path(__file__).parent / "data" / "images"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def crops() -> tuple[torch.Tensor, torch.Tensor]:
    """The central 64×64 crops of the three test pictures, normalised (y, uv)."""
    return to_tensors(center_crops(load_pictures(IMAGES), 64))


def half(y: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's bilinear 1/2 bottleneck."""
    h, w = y.shape[-2:]
    return bilinear_down(y, h // 2, w // 2), bilinear_down(uv, h // 4, w // 4)


def samples_10bit(x: torch.Tensor) -> np.ndarray:
    """Normalised values → rounded 10-bit samples."""
    return np.clip(np.rint((x.detach().numpy() + 1) * 1023 / 2), 0, 1023).astype(np.uint16)


# -- quality, DCT, rounding ---------------------------------------------------------------------


def test_jpeg_quality_of_the_step() -> None:
    assert jpeg_quality(0.5) == 100
    assert jpeg_quality(8.0) == 77  # 100 − (800 − 50)/32 = 76.56
    assert jpeg_quality(16.0) == 52  # 100 − 1550/32 = 51.56
    assert jpeg_quality(32.5) == 1  # 100 − 3200/32 = 0, clamped
    assert jpeg_quality(1e6) == 1
    assert jpeg_quality(0.01) == 100  # clamped at the top too
    steps = [0.01, 0.5, 2, 8, 16, 20, 31, 40, 1e3]
    qualities = [jpeg_quality(q) for q in steps]
    assert qualities == sorted(qualities, reverse=True)
    assert all(1 <= q <= 100 for q in qualities)


@pytest.mark.parametrize("size", [4, 8, 16, 32])
def test_dct_matrix_is_orthonormal(size: int) -> None:
    d = dct_matrix(size).double()
    assert d.shape == (size, size)
    eye = torch.eye(size, dtype=torch.float64)
    assert torch.allclose(d @ d.T, eye, atol=1e-6)
    assert torch.allclose(d.T @ d, eye, atol=1e-6)
    assert torch.allclose(d[0], torch.full((size,), 1 / math.sqrt(size), dtype=d.dtype))


def test_dct_matrix_is_the_dct_ii() -> None:
    d = dct_matrix(8).double()
    n = torch.arange(8, dtype=torch.float64)
    assert d[3].tolist() == pytest.approx(
        (0.5 * torch.cos(math.pi * (2 * n + 1) * 3 / 16)).tolist(), abs=1e-6
    )


def test_ste_round_rounds_forward_and_passes_gradients() -> None:
    x = torch.tensor([-1.6, -0.4, 0.2, 0.7, 2.5, 3.49], requires_grad=True)
    out = ste_round(x)
    assert torch.equal(out.detach(), torch.round(x.detach()))
    (out * torch.arange(6.0)).sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, torch.arange(6.0))


# -- gradients ----------------------------------------------------------------------------------


def test_gradients_reach_q_and_the_pre_processor(
    crops: tuple[torch.Tensor, torch.Tensor],
) -> None:
    torch.manual_seed(0)
    y, uv = crops
    pre, proxy = PreProcessor(Fraction(1, 2)), JpegProxy()
    yb, uvb = pre(y, uv)
    out = proxy(yb, uvb, block=8)
    y_hat = bilinear_up(out.y_hat, 64, 64)
    uv_hat = bilinear_up(out.uv_hat, 32, 32)
    loss = mse_8bit(y_hat, uv_hat, y, uv) + 16 * out.rate / y[:, 0].numel()
    loss.backward()
    grad_q = proxy.log_q.grad
    assert grad_q is not None and math.isfinite(grad_q.item()) and grad_q.item() != 0
    last = pre.mlp[-1]
    assert isinstance(last, torch.nn.Conv2d)
    for grad in (pre.tail.weight.grad, last.weight.grad):
        assert grad is not None
        assert torch.isfinite(grad).all()
        assert grad.abs().sum().item() > 0


def test_rate_falls_as_the_step_grows(crops: tuple[torch.Tensor, torch.Tensor]) -> None:
    yb, uvb = half(*crops)
    proxy = JpegProxy()
    proxy(yb, uvb, block=8).rate.backward()
    assert proxy.log_q.grad is not None and proxy.log_q.grad.item() < 0
    with torch.no_grad():
        coarse = JpegProxy(q_init=32.0)(yb, uvb, block=8)
        fine = JpegProxy(q_init=2.0)(yb, uvb, block=8)
    assert coarse.real_bits < fine.real_bits


# -- rate -----------------------------------------------------------------------------------------


def reference_bits(y: torch.Tensor, uv: torch.Tensor, quality: int) -> int:
    """Bits of Pillow grayscale JPEGs of the 8 MSBs of every 10-bit Y, U and V plane."""
    total = 0
    for planes in (y, uv):
        msb = (samples_10bit(planes) >> 2).astype(np.uint8)
        for picture in msb:
            for plane in picture:
                buf = io.BytesIO()
                Image.fromarray(plane).save(buf, format="JPEG", quality=quality)
                total += 8 * len(buf.getvalue())
    return total


@pytest.mark.parametrize(("block", "q_scale"), [(8, 1.0), (4, 1.0), (32, 2.0), (16, 0.5)], ids=str)
def test_rate_equals_the_real_jpeg_bits(
    crops: tuple[torch.Tensor, torch.Tensor], block: int, q_scale: float
) -> None:
    yb, uvb = half(*crops)
    proxy = JpegProxy()
    out = proxy(yb, uvb, block=block, q_scale=q_scale)
    assert out.quality == jpeg_quality(8.0 * q_scale)
    assert out.real_bits == reference_bits(yb, uvb, out.quality)
    assert out.rate.item() == pytest.approx(out.real_bits, rel=1e-5)
    assert out.rate.requires_grad


def test_jpeg_bits_is_the_file_size() -> None:
    plane = np.random.default_rng(0).integers(0, 256, (24, 40)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(plane).save(buf, format="JPEG", quality=50)
    assert jpeg_bits(plane, 50) == 8 * len(buf.getvalue())
    assert jpeg_bits(plane, 95) > jpeg_bits(plane, 20)


# -- straight-through reconstruction --------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCK_SIZES)
def test_fine_step_is_near_lossless_for_any_size(block: int) -> None:
    assert block in (4, 8, 16, 32)
    g = torch.Generator().manual_seed(block)
    y = (torch.rand(2, 1, 20, 36, generator=g) * 1.98 - 0.99).requires_grad_()
    uv = (torch.rand(2, 2, 10, 18, generator=g) * 1.98 - 0.99).requires_grad_()
    out = JpegProxy(q_init=0.01)(y, uv, block=block)
    assert out.y_hat.shape == y.shape and out.uv_hat.shape == uv.shape
    assert (out.y_hat - y).abs().max().item() <= 2 / 1023
    assert (out.uv_hat - uv).abs().max().item() <= 2 / 1023
    # the rounding is straight-through: the reconstruction's gradient is the identity
    (out.y_hat.sum() + out.uv_hat.sum()).backward()
    assert y.grad is not None and uv.grad is not None
    assert torch.allclose(y.grad, torch.ones_like(y), atol=1e-4)
    assert torch.allclose(uv.grad, torch.ones_like(uv), atol=1e-4)


def test_coarse_step_loses_detail(crops: tuple[torch.Tensor, torch.Tensor]) -> None:
    yb, uvb = half(*crops)
    with torch.no_grad():
        fine = JpegProxy(q_init=1.0)(yb, uvb, block=8)
        coarse = JpegProxy(q_init=64.0)(yb, uvb, block=8)
    err = lambda o: float(((o.y_hat - yb) ** 2).mean())  # noqa: E731
    assert err(coarse) > 10 * err(fine) > 0


# -- the real codec in the loop -------------------------------------------------------------------


def psnr_8bit(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean()) * (255 / 2) ** 2
    return 10 * math.log10(255**2 / mse)


def test_codec_roundtrip_with_x265(
    require_backend: Callable[[str], None], crops: tuple[torch.Tensor, torch.Tensor]
) -> None:
    require_backend("x265")
    backend = get_backend("x265")
    y0, uv0 = crops
    y = torch.cat([y0, y0[:1].flip(-1)]).requires_grad_()  # 4 pictures, 64×64
    uv = torch.cat([uv0, uv0[:1].flip(-1)]).requires_grad_()
    y_hat, uv_hat, bits = codec_roundtrip(backend, y, uv, qp=37, clip_len=2)
    assert y_hat.shape == y.shape and uv_hat.shape == uv.shape
    assert bits > 0

    # the forward value is the decoded codec output: on the 10-bit grid, lossy, plausible
    samples = (y_hat.detach() + 1) * 1023 / 2
    assert torch.allclose(samples, samples.round(), atol=2e-3)
    assert not torch.allclose(y_hat, y, atol=1e-3)
    for a, b in ((y_hat, y), (uv_hat, uv)):
        assert 20 < psnr_8bit(a.detach(), b.detach()) < 50

    # ... and the same as coding each 2-picture clip with the backend directly
    ys, uvs = samples_10bit(y), samples_10bit(uv)
    settings = EncodeSettings(qp=37, preset="medium", bitdepth=10, threads=1)
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for start in (0, 2):
            frames = [Frame(ys[i, 0], uvs[i, 0], uvs[i, 1]) for i in (start, start + 1)]
            stream = Path(tmp) / f"c{start}{backend.extension}"
            ffmpeg.encode(backend, settings, iter(frames), 64, 64, "25/1", stream)
            total += 8 * stream.stat().st_size
            decoded = ffmpeg.decode(backend, stream, 64, 64, 10, 2)
            for i, dec in zip((start, start + 1), decoded, strict=True):
                assert np.array_equal(samples_10bit(y_hat[i, 0]), dec.y)
                assert np.array_equal(samples_10bit(uv_hat[i, 0]), dec.u)
                assert np.array_equal(samples_10bit(uv_hat[i, 1]), dec.v)
    assert bits == total

    # backward is the identity
    (y_hat.sum() + uv_hat.sum()).backward()
    assert y.grad is not None and uv.grad is not None
    assert torch.equal(y.grad, torch.ones_like(y))
    assert torch.equal(uv.grad, torch.ones_like(uv))
