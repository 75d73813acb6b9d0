import math
from pathlib import Path

import numpy as np
import pytest

from wrapcodec.metrics import MAX_PSNR, PsnrAccumulator, mse, psnr
from wrapcodec.y4m import Frame


def frame(y: int, u: int, v: int) -> Frame:
    return Frame(
        np.full((4, 4), y, np.uint16), np.full((2, 2), u, np.uint16), np.full((2, 2), v, np.uint16)
    )


def test_psnr_values() -> None:
    assert psnr(1.0, 8) == pytest.approx(10 * math.log10(255**2))
    assert psnr(1.0, 10) == pytest.approx(10 * math.log10(1023**2))
    assert psnr(0.0, 8) == MAX_PSNR


def test_per_frame_average_then_611() -> None:
    acc = PsnrAccumulator(8)
    acc.add(frame(10, 10, 10), frame(11, 12, 10))  # MSE 1, 4, 0
    acc.add(frame(10, 10, 10), frame(13, 10, 10))  # MSE 9, 0, 0
    y = (psnr(1, 8) + psnr(9, 8)) / 2  # average of PSNRs, not PSNR of average MSE
    u = (psnr(4, 8) + MAX_PSNR) / 2
    v = MAX_PSNR
    assert acc.psnr_planes == pytest.approx((y, u, v))
    assert acc.psnr_yuv == pytest.approx((6 * y + u + v) / 8)
    assert acc.mse_8bit == pytest.approx((6 * 5 + 2 + 0) / 8)


def test_mse_in_8_bit_units_for_10_bit() -> None:
    acc = PsnrAccumulator(10)
    acc.add(frame(100, 100, 100), frame(102, 100, 100))
    assert acc.mse_8bit == pytest.approx(6 * 4 / 8 / 16)


def test_measure_files_refuses_frame_count_mismatch(tmp_path: Path, parkjoy: Path) -> None:
    from wrapcodec.errors import InputError
    from wrapcodec.metrics import measure_files
    from wrapcodec.y4m import Y4MWriter, iter_frames, read_info

    short = tmp_path / "short.y4m"
    with Y4MWriter(short, read_info(parkjoy)) as w:
        for i, f in enumerate(iter_frames(parkjoy)):
            if i < 9:
                w.write(f)
    assert measure_files(str(parkjoy), str(parkjoy)).psnr_yuv == MAX_PSNR
    with pytest.raises(InputError, match="frame count differs"):
        measure_files(str(parkjoy), str(short))


@pytest.mark.parametrize(
    ("dtype", "top", "shape"),
    [(np.uint8, 255, (7, 5)), (np.uint16, 1023, (270, 480)), (np.uint16, 65535, (2160, 3840))],
)
def test_mse_is_exact(dtype: type, top: int, shape: tuple[int, int]) -> None:
    """The sum of squared differences is the exact integer, also where float64 alone could
    not hold it (16-bit 4K planes with the largest differences)."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, top + 1, shape).astype(dtype)
    b = np.where(rng.random(shape) < 0.5, 0, top).astype(dtype)
    diff = a.astype(object) - b.astype(object)
    exact = int((diff * diff).sum())
    assert mse(a, b) == exact / a.size
    assert mse(a, a) == 0.0
