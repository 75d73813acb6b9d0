import re
from fractions import Fraction

import pytest

from wrapcodec.errors import InputError, OptionError
from wrapcodec.options import (
    LINEAR_CODES,
    OPTIONS,
    bottleneck_size,
    option,
    parse_options,
    parse_qps,
    skip_reason,
)


def test_codes_are_fixed() -> None:
    assert [OPTIONS[c].name for c in range(15)] == [
        "direct",
        "post-1/1",
        "post-1/2",
        "post-2/3",
        "post-1/4",
        "wrapper-1/1",
        "wrapper-1/2",
        "wrapper-2/3",
        "wrapper-1/4",
        "lanczos-1/2",
        "lanczos-2/3",
        "lanczos-1/4",
        "bilinear-1/2",
        "bilinear-2/3",
        "bilinear-1/4",
    ]
    assert all(not OPTIONS[c].neural for c in LINEAR_CODES)


@pytest.mark.parametrize(
    ("size", "ratio", "expected"),
    [
        ((480, 270), Fraction(1, 2), (240, 136)),  # 135 -> nearest even, halves up
        ((480, 270), Fraction(2, 3), (320, 180)),
        ((480, 270), Fraction(1, 4), (120, 68)),  # 67.5 -> 68
        ((720, 576), Fraction(2, 3), (480, 384)),
        ((161, 97), Fraction(1, 2), (80, 48)),  # 80.5 -> 80, 48.5 -> 48
        ((161, 97), Fraction(1), (161, 97)),
    ],
)
def test_bottleneck_size(size: tuple[int, int], ratio: Fraction, expected: tuple[int, int]) -> None:
    bw, bh = bottleneck_size(*size, ratio)
    assert (bw, bh) == expected
    if ratio != 1:
        assert bw % 2 == 0 and bh % 2 == 0


def test_small_bottleneck_is_skipped_with_reason() -> None:
    assert skip_reason(OPTIONS[11], 48, 48) == "bottleneck 12x12 is under the 16x16 minimum"
    assert skip_reason(OPTIONS[9], 48, 48) is None
    assert skip_reason(OPTIONS[0], 2, 2) is None


def test_parse_options() -> None:
    assert [int(o.code) for o in parse_options("all")] == list(LINEAR_CODES)
    assert [int(o.code) for o in parse_options("0, lanczos-2/3,12")] == [0, 10, 12]
    with pytest.raises(OptionError, match="needs neural models"):
        parse_options("5")
    with pytest.raises(OptionError, match="unknown option code 15"):
        parse_options("15")
    with pytest.raises(OptionError, match="unknown option 'bicubic'"):
        parse_options("bicubic")
    with pytest.raises(OptionError, match="unknown option code 16"):
        option(16)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,,9", "entry 2 is empty"),
        ("0,9,", "entry 3 is empty"),
        (",0", "entry 1 is empty"),
        ("0,0", "option 0 (direct) is given twice"),
        ("0,direct", "option 0 (direct) is given twice"),
        ("9, lanczos-1/2", "option 9 (lanczos-1/2) is given twice"),
        ("", "no option given"),
        (" ", "no option given"),
    ],
)
def test_parse_options_refuses_empty_and_repeated_entries(text: str, message: str) -> None:
    with pytest.raises(OptionError, match=re.escape(message)):
        parse_options(text)


def test_parse_qps() -> None:
    assert parse_qps("22, 27,,32", "x264", (0, 51)) == [22, 27, 32]
    with pytest.raises(InputError, match="not a list of integers"):
        parse_qps("30,x", "x264", (0, 51))
    with pytest.raises(InputError, match="at least 2 QPs"):
        parse_qps("30", "x264", (0, 51), minimum=2)
    with pytest.raises(InputError, match=re.escape("--qps 70: x264 takes QPs 0..51")):
        parse_qps("22,70", "x264", (0, 51))
