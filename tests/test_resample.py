"""Numerical properties of the separable resamplers in wrapcodec.resample."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapcodec.resample import Kernel, resample_plane, weight_matrix

KERNELS: tuple[Kernel, ...] = ("bilinear", "lanczos")

# (in, out) sizes: ratios 1/2, 2/3, 1/4, their inverses, odd sizes and extremes.
SIZE_PAIRS = [
    (4, 2),
    (96, 48),
    (96, 64),
    (96, 24),
    (48, 96),
    (64, 96),
    (24, 96),
    (33, 17),
    (17, 33),
    (35, 9),
    (7, 5),
    (5, 7),
    (1, 5),
    (5, 1),
    (300, 7),
]


def smooth_image(height: int, width: int) -> np.ndarray:
    """Low-frequency test pattern with values roughly in 20..180."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    return (
        100.0
        + 50.0 * np.sin(2 * np.pi * 2 * xx / width) * np.cos(2 * np.pi * 1.5 * yy / height)
        + 30.0 * np.cos(2 * np.pi * (xx + yy) / 64.0)
    )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("n_in", "n_out"), SIZE_PAIRS)
def test_rows_sum_to_one(n_in: int, n_out: int, kernel: Kernel) -> None:
    w = weight_matrix(n_in, n_out, kernel)
    assert w.shape == (n_out, n_in)
    assert w.dtype == np.float64
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    n_in=st.integers(1, 200),
    n_out=st.integers(1, 200),
    kernel=st.sampled_from(KERNELS),
)
def test_rows_sum_to_one_property(n_in: int, n_out: int, kernel: Kernel) -> None:
    w = weight_matrix(n_in, n_out, kernel)
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_weight_matrix_is_cached_and_read_only() -> None:
    a = weight_matrix(10, 4, "lanczos")
    assert a is weight_matrix(10, 4, "lanczos")
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    ("shape_in", "shape_out"),
    [
        ((96, 128), (48, 64)),
        ((96, 120), (64, 80)),
        ((96, 128), (24, 32)),
        ((48, 64), (96, 128)),
        ((64, 80), (96, 120)),
        ((24, 32), (96, 128)),
        ((17, 33), (9, 17)),
        ((9, 17), (17, 33)),
        ((17, 33), (17, 12)),
    ],
)
def test_constant_plane_stays_constant(
    shape_in: tuple[int, int], shape_out: tuple[int, int], kernel: Kernel
) -> None:
    plane = np.full(shape_in, 123.456)
    out = resample_plane(plane, *shape_out, kernel)
    assert out.shape == shape_out
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, 123.456, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_identity_when_sizes_equal(kernel: Kernel) -> None:
    np.testing.assert_array_equal(weight_matrix(13, 13, kernel), np.eye(13))
    rng = np.random.default_rng(0)
    plane = rng.uniform(0, 1023, size=(17, 33))
    out = resample_plane(plane, 17, 33, kernel)
    np.testing.assert_array_equal(out, plane)
    assert out is not plane  # a new array, never an alias of the input


@pytest.mark.parametrize("kernel", KERNELS)
def test_one_axis_only(kernel: Kernel) -> None:
    rng = np.random.default_rng(1)
    plane = rng.uniform(0, 255, size=(20, 30))
    out = resample_plane(plane, 20, 15, kernel)
    np.testing.assert_allclose(out, plane @ weight_matrix(30, 15, kernel).T, rtol=0, atol=1e-12)
    out = resample_plane(plane, 10, 30, kernel)
    np.testing.assert_allclose(out, weight_matrix(20, 10, kernel) @ plane, rtol=0, atol=1e-12)


# Measured interior errors (8-sample border excluded), as a fraction of the image's range
# (~149): bilinear 1/2: 0.75 %, 2/3: 0.50 %; lanczos 1/2: 0.17 %, 2/3: 0.11 %. Whole-image
# maxima (edges included, where replicate padding hurts): bilinear 4.3 %, lanczos 2.1 %.
@pytest.mark.parametrize(
    ("kernel", "ratio", "interior_tol"),
    [
        ("bilinear", (1, 2), 0.01),
        ("bilinear", (2, 3), 0.01),
        ("lanczos", (1, 2), 0.003),
        ("lanczos", (2, 3), 0.003),
    ],
)
def test_down_up_is_close_to_identity(
    kernel: Kernel, ratio: tuple[int, int], interior_tol: float
) -> None:
    height, width = 96, 120
    image = smooth_image(height, width)
    num, den = ratio
    small = resample_plane(image, height * num // den, width * num // den, kernel)
    back = resample_plane(small, height, width, kernel)
    err = np.abs(back - image) / np.ptp(image)
    assert err[8:-8, 8:-8].max() < interior_tol
    assert err.max() < 0.05


def test_bilinear_half_of_four_samples() -> None:
    # Triangle stretched to support 2: taps at distances 1.5, 0.5, 0.5, 1.5 weigh 1/8, 3/8,
    # 3/8, 1/8. Output 0 (centre 0.5) clamps tap -1 onto sample 0; output 1 (centre 2.5)
    # clamps tap 4 onto sample 3.
    expected = np.array([[4, 3, 1, 0], [0, 1, 3, 4]]) / 8
    np.testing.assert_array_equal(weight_matrix(4, 2, "bilinear"), expected)
    a, b, c, d = 8.0, 16.0, 32.0, 64.0
    out = resample_plane(np.array([[a, b, c, d]]), 1, 2, "bilinear")
    np.testing.assert_array_equal(out, [[(4 * a + 3 * b + c) / 8, (b + 3 * c + 4 * d) / 8]])
    np.testing.assert_array_equal(out, [[14.0, 46.0]])


def test_bilinear_double_of_two_samples() -> None:
    # Upscaling: output centres at -0.25, 0.25, 0.75, 1.25; the outer ones clamp to the edges.
    np.testing.assert_array_equal(
        weight_matrix(2, 4, "bilinear"),
        np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]),
    )


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("n_in", "n_out"), [(8, 4), (12, 8), (9, 3), (33, 17), (17, 33), (6, 9)])
def test_weights_are_mirror_symmetric(n_in: int, n_out: int, kernel: Kernel) -> None:
    w = weight_matrix(n_in, n_out, kernel)
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=0, atol=1e-12)


def test_lanczos_has_negative_lobes_and_bilinear_does_not() -> None:
    assert weight_matrix(32, 16, "lanczos").min() < 0
    assert weight_matrix(32, 16, "bilinear").min() >= 0


def test_lanczos_support_is_stretched_when_downscaling() -> None:
    # Lanczos-4 at scale 2: taps reach 8 input samples either side of the centre.
    w = weight_matrix(64, 32, "lanczos")
    centre_row = w[16]  # centre at input coordinate 32.5
    nonzero = np.flatnonzero(centre_row)
    assert nonzero.min() == 32 - 7 and nonzero.max() == 33 + 7


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sizes"):
        weight_matrix(0, 4, "bilinear")
    with pytest.raises(ValueError, match="kernel"):
        weight_matrix(4, 2, "bicubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D"):
        resample_plane(np.zeros((2, 2, 2)), 1, 1, "bilinear")


@pytest.mark.parametrize("kernel", ["bilinear", "lanczos"])
@pytest.mark.parametrize(("shape", "out"), [((97, 161), (64, 108)), ((48, 64), (96, 128))])
def test_tap_filter_equals_matrix_product(
    kernel: Kernel, shape: tuple[int, int], out: tuple[int, int]
) -> None:
    """The fixed-order tap sums match Wy @ x @ Wx.T to rounding error."""
    x = np.random.default_rng(3).random(shape) * 1023
    wy = weight_matrix(shape[0], out[0], kernel)
    wx = weight_matrix(shape[1], out[1], kernel)
    np.testing.assert_allclose(resample_plane(x, *out, kernel), wy @ x @ wx.T, atol=1e-9)
