"""The neural pre- and post-processors: budgets, an independent MAC recount, the linear
starting point, the residual and chroma paths, output sizes and determinism."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wrapcodec.nets import (
    PostConfig,
    PostProcessor,
    PreConfig,
    PreProcessor,
    SeparableBlock,
    bilinear_down,
    count_macs,
    count_params,
    from_unit,
    unit,
)
from wrapcodec.options import bottleneck_size

RATIOS = (Fraction(1), Fraction(1, 2), Fraction(2, 3), Fraction(1, 4))
RATIO_IDS = ["1", "1/2", "2/3", "1/4"]


pytestmark = pytest.mark.usefixtures("one_thread")


def picture(n: int, width: int, height: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random normalised 4:2:0 (y, uv) of luma size ``width``×``height``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, 1, height, width, generator=g) * 2 - 1
    uv = torch.rand(n, 2, height // 2, width // 2, generator=g) * 2 - 1
    return y, uv


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Non-zero values in every parameter, so every path of the network is active."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand(p.shape, generator=g) - 0.5) * 0.4)


# -- budgets --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1920, 1080), (960, 540)], ids=["1080p", "540p"])
@pytest.mark.parametrize("ratio", RATIOS, ids=RATIO_IDS)
def test_post_processor_within_mac_and_parameter_budget(
    ratio: Fraction, size: tuple[int, int]
) -> None:
    post = PostProcessor(ratio)
    macs = count_macs(post, *size)
    assert 100 < macs <= 516
    assert count_params(post) <= 8200


@pytest.mark.parametrize("ratio", RATIOS, ids=RATIO_IDS)
def test_pre_processor_macs_are_reported(ratio: Fraction) -> None:
    macs = count_macs(PreProcessor(ratio), 960, 540)
    assert math.isfinite(macs) and macs > 0
    assert count_params(PreProcessor(ratio)) > 0


def test_count_params_counts_every_weight_and_bias() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, groups=4, bias=False))
    assert count_params(model) == (3 * 4 * 9 + 4) + 4 * 9


# -- independent MAC recount ----------------------------------------------------------------

Shape = tuple[int, int, int]  # (channels, height, width) of one picture


def conv_macs(conv: nn.Conv2d, shape: Shape) -> tuple[float, Shape]:
    """MACs of one convolution on a ``shape`` input (out elements × in/groups × kh × kw) and
    its output shape, from the layer's own attributes."""
    cin, h, w = shape
    assert cin == conv.in_channels
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    ph, pw = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
    out = (conv.out_channels, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
    return math.prod(out) * conv.in_channels / conv.groups * kh * kw, out


def blocks_macs(blocks: nn.Module, shape: Shape) -> tuple[float, Shape]:
    """A block or a sequence of them: depthwise, pointwise, plus one add per output element
    when the block keeps the shape (the residual connection)."""
    seq = list(blocks) if isinstance(blocks, nn.Sequential) else [blocks]
    total = 0.0
    for block in seq:
        assert isinstance(block, SeparableBlock)
        m_dw, mid = conv_macs(block.dw, shape)
        m_pw, out = conv_macs(block.pw, mid)
        total += m_dw + m_pw + (math.prod(out) if out == shape else 0)
        shape = out
    return total, shape


def recount_post(post: PostProcessor, width: int, height: int) -> float:
    """Total MACs of one forward pass to a ``width``×``height`` output, counted by hand."""
    bw, bh = bottleneck_size(width, height, post.ratio)
    total = 0.0
    if (bw, bh) != (width, height):  # bilinear up: 4 taps per output sample, Y then U and V
        total += 4 * (width * height + 2 * (width // 2) * (height // 2))
    h2, w2 = height // 2, width // 2
    shape: Shape = (6, -(-h2 // 4) * 4, -(-w2 // 4) * 4)  # space-to-depth, padded to ×4
    macs, shape = conv_macs(post.head, shape)
    total += macs
    macs, e0 = blocks_macs(post.enc0, shape)
    total += macs
    macs, shape = blocks_macs(post.down1, e0)
    total += macs
    macs, e1 = blocks_macs(post.enc1, shape)
    total += macs
    macs, shape = blocks_macs(post.down2, e1)
    total += macs
    macs, shape = blocks_macs(post.mid, shape)
    total += macs
    macs, shape = conv_macs(post.up2, shape)
    total += macs
    shape = (shape[0], 2 * shape[1], 2 * shape[2])  # nearest upsampling is free
    assert shape == e1
    total += math.prod(shape)  # skip addition
    macs, shape = blocks_macs(post.dec1, shape)
    total += macs
    macs, shape = conv_macs(post.up1, shape)
    total += macs
    shape = (shape[0], 2 * shape[1], 2 * shape[2])
    assert shape == e0
    total += math.prod(shape)
    macs, shape = blocks_macs(post.dec0, shape)
    total += macs
    macs, shape = conv_macs(post.tail, shape)
    total += macs
    assert shape[0] == 6
    total += width * height  # luma residual addition (after depth-to-space, cropped)
    macs, shape = conv_macs(post.chroma, (2, h2, w2))
    total += macs
    total += math.prod(shape)  # chroma residual addition
    return total


@pytest.mark.parametrize(
    ("ratio", "width", "height", "config"),
    [
        (Fraction(1, 2), 64, 64, None),
        (Fraction(1), 64, 64, None),
        (Fraction(2, 3), 100, 62, None),
        (Fraction(1, 4), 96, 40, PostConfig(channels=(8, 16, 20), blocks=(4, 2, 2))),
    ],
    ids=["1/2-64x64", "1-64x64", "2/3-100x62-padded", "1/4-other-config"],
)
def test_mac_count_matches_an_independent_recount(
    ratio: Fraction, width: int, height: int, config: PostConfig | None
) -> None:
    post = PostProcessor(ratio, config)
    expected = recount_post(post, width, height)
    assert count_macs(post, width, height) * width * height == pytest.approx(expected, rel=1e-6)


def test_recount_of_the_default_half_ratio_model() -> None:
    """The 64×64 case spelled out for the default channels (12, 24, 32), blocks (3, 3, 1)."""
    post = PostProcessor(Fraction(1, 2))
    assert post.config == PostConfig(channels=(12, 24, 32), blocks=(3, 3, 1))
    s0, s1, s2 = 32 * 32, 16 * 16, 8 * 8
    block = lambda c, s: (9 * c + c * c + c) * s  # noqa: E731  dw + pw + residual add
    expected = (
        4 * 64 * 64 + 4 * 2 * 32 * 32  # bilinear up
        + 6 * 12 * s0  # head
        + 2 * block(12, s0)  # enc0
        + 9 * 12 * s1 + 12 * 24 * s1  # down1
        + 2 * block(24, s1)  # enc1
        + 9 * 24 * s2 + 24 * 32 * s2  # down2
        + block(32, s2)  # mid
        + 32 * 24 * s2 + 24 * s1  # up2 + skip add
        + block(24, s1)  # dec1
        + 24 * 12 * s1 + 12 * s0  # up1 + skip add
        + block(12, s0)  # dec0
        + 12 * 6 * s0  # tail
        + 64 * 64  # luma residual add
        + 2 * 2 * 9 * s0 + 2 * s0  # chroma conv + add
    )  # fmt: skip
    assert recount_post(post, 64, 64) == expected
    assert count_macs(post, 64, 64) * 64 * 64 == pytest.approx(expected, rel=1e-9)


def test_an_extra_block_is_counted() -> None:
    ratio = Fraction(1, 2)
    base = count_macs(PostProcessor(ratio), 64, 64)
    assert count_macs(PostProcessor(ratio, PostConfig(blocks=(3, 3, 2))), 64, 64) > base
    # a block appended after construction is counted too, by exactly its own MACs
    post = PostProcessor(ratio)
    c2 = post.config.channels[2]
    post.mid.append(SeparableBlock(c2, c2))
    added = (9 * c2 + c2 * c2 + c2) * 8 * 8  # at 1/8 of the 64×64 output
    assert count_macs(post, 64, 64) * 64 * 64 == pytest.approx(base * 64 * 64 + added, rel=1e-9)


def test_counting_leaves_no_hooks_behind() -> None:
    post = PostProcessor(Fraction(1, 2))
    count_macs(post, 64, 64)
    assert all(not m._forward_hooks for m in post.modules())


# -- the linear starting point ----------------------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS, ids=RATIO_IDS)
def test_untrained_post_processor_is_bilinear_upsampling(ratio: Fraction) -> None:
    width, height = 96, 64
    bw, bh = bottleneck_size(width, height, ratio)
    y_t, uv_t = picture(2, bw, bh)
    with torch.no_grad():
        y_hat, uv_hat = PostProcessor(ratio)(y_t, uv_t, height, width)
    up = lambda x, h, w: F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)  # noqa: E731
    assert torch.allclose(y_hat, up(y_t, height, width), atol=1e-6, rtol=0)
    assert torch.allclose(uv_hat, up(uv_t, height // 2, width // 2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("ratio", RATIOS, ids=RATIO_IDS)
def test_untrained_pre_processor_is_bilinear_downsampling(ratio: Fraction) -> None:
    width, height = 100, 62
    bw, bh = bottleneck_size(width, height, ratio)
    y, uv = picture(2, width, height)
    with torch.no_grad():
        yb, uvb = PreProcessor(ratio)(y, uv)
    assert torch.allclose(yb, bilinear_down(y, bh, bw), atol=1e-6, rtol=0)
    assert torch.allclose(uvb, bilinear_down(uv, bh // 2, bw // 2), atol=1e-6, rtol=0)
    if ratio == 1:
        assert torch.allclose(yb, y, atol=1e-6, rtol=0)


def test_untrained_pre_processor_keeps_a_flat_picture_flat() -> None:
    y = torch.full((1, 1, 64, 96), 0.25)
    uv = torch.full((1, 2, 32, 48), -0.5)
    with torch.no_grad():
        yb, uvb = PreProcessor(Fraction(2, 3))(y, uv)
    assert yb.shape == (1, 1, 42, 64) and uvb.shape == (1, 2, 21, 32)
    assert torch.allclose(yb, torch.full_like(yb, 0.25), atol=1e-6)
    assert torch.allclose(uvb, torch.full_like(uvb, -0.5), atol=1e-6)


# -- residual and chroma paths ------------------------------------------------------------------

PHASES = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)}  # pixel_shuffle: channel → (row, col)


def set_bias(conv: nn.Conv2d, channel: int, value: float) -> None:
    assert conv.bias is not None
    with torch.no_grad():
        conv.bias[channel] = value


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_luma_residual_channel_lands_on_its_phase(k: int) -> None:
    post = PostProcessor(Fraction(1, 2))
    y_t, uv_t = picture(1, 24, 16)
    with torch.no_grad():
        y0, uv0 = post(y_t, uv_t, 32, 48)
        set_bias(post.tail, k, 0.125)
        y1, uv1 = post(y_t, uv_t, 32, 48)
    diff = y1 - y0
    row, col = PHASES[k]
    mask = torch.zeros_like(diff, dtype=torch.bool)
    mask[..., row::2, col::2] = True
    assert torch.allclose(diff[mask], torch.full_like(diff[mask], 0.125), atol=1e-6)
    assert torch.allclose(diff[~mask], torch.zeros_like(diff[~mask]), atol=1e-6)
    assert torch.equal(uv1, uv0)


@pytest.mark.parametrize("k", [4, 5])
def test_chroma_residual_channel_shifts_its_plane_only(k: int) -> None:
    post = PostProcessor(Fraction(2, 3))
    bw, bh = bottleneck_size(48, 32, post.ratio)
    y_t, uv_t = picture(1, bw, bh)
    with torch.no_grad():
        y0, uv0 = post(y_t, uv_t, 32, 48)
        set_bias(post.tail, k, -0.25)
        y1, uv1 = post(y_t, uv_t, 32, 48)
    assert torch.equal(y1, y0)
    diff = uv1 - uv0
    c = k - 4
    assert torch.allclose(diff[:, c], torch.full_like(diff[:, c], -0.25), atol=1e-6)
    assert torch.allclose(diff[:, 1 - c], torch.zeros_like(diff[:, 1 - c]), atol=1e-6)


def test_chroma_conv_mixes_the_upsampled_planes() -> None:
    post = PostProcessor(Fraction(1, 2))
    y_t, uv_t = picture(2, 24, 16)
    with torch.no_grad():
        post.chroma.weight.zero_()
        post.chroma.weight[0, 1, 1, 1] = 1.0
        post.chroma.weight[1, 0, 1, 1] = 1.0
        _, uv_hat = post(y_t, uv_t, 32, 48)
    up = F.interpolate(uv_t, size=(16, 24), mode="bilinear", align_corners=False)
    assert torch.allclose(uv_hat[:, 0], up[:, 1], atol=1e-6)
    assert torch.allclose(uv_hat[:, 1], up[:, 0], atol=1e-6)


# -- shapes and determinism ---------------------------------------------------------------------


@pytest.mark.parametrize("ratio", RATIOS, ids=RATIO_IDS)
def test_post_processor_output_shapes(ratio: Fraction) -> None:
    width, height = 98, 62
    bw, bh = bottleneck_size(width, height, ratio)
    y_t, uv_t = picture(2, bw, bh)
    post = PostProcessor(ratio)
    randomize(post)
    with torch.no_grad():
        y_hat, uv_hat = post(y_t, uv_t, height, width)
    assert y_hat.shape == (2, 1, height, width)
    assert uv_hat.shape == (2, 2, height // 2, width // 2)
    assert torch.isfinite(y_hat).all() and torch.isfinite(uv_hat).all()


@pytest.mark.parametrize(
    "size", [(256, 256), (100, 62), (98, 62), (62, 100), (130, 74), (34, 18)], ids=str
)
@pytest.mark.parametrize("ratio", RATIOS, ids=RATIO_IDS)
def test_pre_processor_output_is_the_bottleneck_size(
    ratio: Fraction, size: tuple[int, int]
) -> None:
    width, height = size
    bw, bh = bottleneck_size(width, height, ratio)
    pre = PreProcessor(ratio)
    randomize(pre)
    y, uv = picture(1, width, height)
    with torch.no_grad():
        yb, uvb = pre(y, uv)
    assert yb.shape == (1, 1, bh, bw)
    assert uvb.shape == (1, 2, bh // 2, bw // 2)
    assert torch.isfinite(yb).all() and torch.isfinite(uvb).all()


def test_two_thirds_of_256_is_170() -> None:
    assert bottleneck_size(256, 256, Fraction(2, 3)) == (170, 170)
    y, uv = picture(1, 256, 256)
    with torch.no_grad():
        yb, _ = PreProcessor(Fraction(2, 3))(y, uv)
    assert yb.shape[-2:] == (170, 170)


def test_pre_processor_takes_an_explicit_size() -> None:
    y, uv = picture(1, 64, 64)
    with torch.no_grad():
        yb, uvb = PreProcessor(Fraction(1, 2))(y, uv, (30, 26))
    assert yb.shape == (1, 1, 26, 30) and uvb.shape == (1, 2, 13, 15)


@pytest.mark.parametrize("ratio", [Fraction(1, 2), Fraction(2, 3)], ids=["1/2", "2/3"])
def test_forward_passes_are_deterministic(ratio: Fraction) -> None:
    torch.manual_seed(0)
    post, pre = PostProcessor(ratio), PreProcessor(ratio)
    randomize(post, 1)
    randomize(pre, 2)
    y, uv = picture(2, 64, 48)
    with torch.no_grad():
        a = pre(y, uv)
        b = pre(y, uv)
        bw, bh = bottleneck_size(64, 48, ratio)
        c = post(a[0], a[1], 48, 64)
        d = post(b[0], b[1], 48, 64)
    assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))
    assert all(torch.equal(s, t) for s, t in zip(c, d, strict=True))
    assert a[0].shape[-2:] == (bh, bw)
    # the randomized networks really do more than resample
    assert not torch.allclose(a[0], bilinear_down(y, bh, bw), atol=1e-3)


def test_seeded_construction_is_reproducible() -> None:
    torch.manual_seed(3)
    first = PostProcessor(Fraction(1, 4)).state_dict()
    torch.manual_seed(3)
    second = PostProcessor(Fraction(1, 4)).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_configs_are_frozen_and_strict() -> None:
    with pytest.raises(ValueError):
        PostConfig(channels=(8, 16, 24), extra=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        PreConfig(mlp=8).mlp = 4


# -- normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("bitdepth", [8, 10])
def test_unit_and_from_unit_are_inverse(bitdepth: int) -> None:
    top = (1 << bitdepth) - 1
    x = torch.arange(0, top + 1, dtype=torch.float32)
    u = unit(x, bitdepth)
    assert u[0].item() == pytest.approx(-1.0, abs=1e-7)
    assert u[-1].item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(from_unit(u, bitdepth), x, atol=1e-3 * top / 255)
    clipped = from_unit(torch.tensor([-3.0, 3.0]), bitdepth)
    assert clipped.tolist() == pytest.approx([0.0, float(top)])
