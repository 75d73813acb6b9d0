"""BD-rate of wrapper options: plain curve, continuous envelope, discrete Pareto frontier."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapcodec.bdrate import (
    BDRateError,
    BDResult,
    Curve,
    bd_rate,
    bd_rate_envelope,
    bd_rate_pareto,
    pareto_front,
)
from wrapcodec.errors import WrapcodecError

# A realistic 5-QP curve: 100..3000 kbps, 30..40 dB, PSNR concave in log-rate.
RATES = [100.0, 250.0, 600.0, 1400.0, 3000.0]
PSNRS = [30.0, 34.2, 37.1, 39.0, 40.0]
ANCHOR = Curve.of(RATES, PSNRS)
INTERPS = ["pchip", "akima"]


def scaled(k: float, curve: Curve = ANCHOR) -> Curve:
    return Curve.of([r * k for r in curve.rate], curve.quality)


def value(result: BDResult) -> float:
    assert result.bd_rate is not None, result.warning
    return result.bd_rate


# ---- curves and the Pareto front ------------------------------------------------------------


def test_curve_of_sorts_by_rate() -> None:
    curve = Curve.of([600, 100, 250], [37.1, 30.0, 34.2])
    assert curve.rate == (100.0, 250.0, 600.0)
    assert curve.quality == (30.0, 34.2, 37.1)
    assert curve.points == [(100.0, 30.0), (250.0, 34.2), (600.0, 37.1)]


@pytest.mark.parametrize("rates", [[100.0, 0.0], [100.0, -5.0], [100.0, math.nan]])
def test_curve_rejects_unusable_rates(rates: list[float]) -> None:
    with pytest.raises(BDRateError, match="positive"):
        Curve.of(rates, [30.0, 31.0])


def test_curve_rejects_mismatched_lengths() -> None:
    with pytest.raises(BDRateError):
        Curve.of([100.0, 200.0], [30.0])
    assert issubclass(BDRateError, WrapcodecError)


def test_pareto_front_drops_dominated_points_and_ties() -> None:
    points = [
        (300.0, 35.0),
        (100.0, 30.0),
        (150.0, 29.0),  # more rate, less quality than (100, 30)
        (200.0, 33.0),
        (200.0, 32.0),  # same rate, less quality
        (250.0, 33.0),  # same quality, more rate
        (300.0, 35.0),  # duplicate: kept once
        (400.0, 34.0),  # more rate, less quality than (300, 35)
    ]
    assert pareto_front(points) == [(100.0, 30.0), (200.0, 33.0), (300.0, 35.0)]
    assert pareto_front([]) == []
    assert pareto_front([(100.0, math.nan), (200.0, 31.0)]) == [(200.0, 31.0)]


@given(
    st.lists(
        st.tuples(st.integers(1, 20).map(float), st.integers(0, 20).map(float)),
        max_size=30,
    )
)
def test_pareto_front_properties(points: list[tuple[float, float]]) -> None:
    front = pareto_front(points)
    assert [p[0] for p in front] == sorted({p[0] for p in front})
    assert all(a[1] < b[1] for a, b in itertools.pairwise(front))
    for r, q in points:  # every point is on the front or dominated by a front point
        assert any(fr <= r and fq >= q for fr, fq in front)
    for fr, fq in front:  # no front point is dominated
        assert not any(r <= fr and q >= fq and (r < fr or q > fq) for r, q in points)


# ---- self-comparison and known rate factors ------------------------------------------------


@pytest.mark.parametrize("interp", INTERPS)
def test_self_comparison_is_zero(interp: str) -> None:
    plain = bd_rate(ANCHOR, ANCHOR, interp)  # type: ignore[arg-type]
    env = bd_rate_envelope(ANCHOR, [ANCHOR], interp)  # type: ignore[arg-type]
    par = bd_rate_pareto(ANCHOR, ANCHOR.points, interp)  # type: ignore[arg-type]
    for result, method in ((plain, "curve"), (env, "envelope"), (par, "pareto")):
        assert value(result) == pytest.approx(0.0, abs=1e-9)
        assert result.method == method
        assert result.interp == interp
        assert result.anchor_points == 5
        assert result.test_points == 5
        assert result.overlap == 1.0
        assert result.quality_range == (30.0, 40.0)
        assert result.warning is None


@pytest.mark.parametrize("interp", INTERPS)
@pytest.mark.parametrize("k", [0.8, 1.25])
def test_rate_factor_gives_known_bd_rate(k: float, interp: str) -> None:
    test = scaled(k)
    expected = (k - 1.0) * 100.0
    for result in (
        bd_rate(ANCHOR, test, interp),  # type: ignore[arg-type]
        bd_rate_envelope(ANCHOR, [test], interp),  # type: ignore[arg-type]
        bd_rate_pareto(ANCHOR, test.points, interp),  # type: ignore[arg-type]
    ):
        assert value(result) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("interp", INTERPS)
def test_envelope_takes_the_better_option(interp: str) -> None:
    better = bd_rate_envelope(ANCHOR, [ANCHOR, scaled(0.8)], interp)  # type: ignore[arg-type]
    assert value(better) == pytest.approx(-20.0, rel=1e-6)
    assert better.options_used == (1,)
    worse = bd_rate_envelope(ANCHOR, [ANCHOR, scaled(1.25)], interp)  # type: ignore[arg-type]
    assert worse.bd_rate == 0.0
    assert worse.options_used == (0,)
    assert worse.test_points == 5


@pytest.mark.parametrize("interp", INTERPS)
def test_single_option_envelope_matches_the_package(interp: str) -> None:
    """The numerical integration agrees with bjontegaard's exact one well below 1e-3 %."""
    for test in (
        Curve.of([90, 260, 700, 1500, 2600], [30.5, 34.0, 37.5, 39.2, 39.8]),
        Curve.of([120, 300, 700, 1500, 2600], [29.0, 32.0, 35.5, 38.2, 41.0]),
        Curve.of([80, 200, 500], [31.0, 34.0, 36.5]),
    ):
        plain = bd_rate(ANCHOR, test, interp)  # type: ignore[arg-type]
        env = bd_rate_envelope(ANCHOR, [test], interp)  # type: ignore[arg-type]
        assert value(env) == pytest.approx(value(plain), abs=1e-5)
        assert env.quality_range == plain.quality_range
        assert env.overlap == pytest.approx(plain.overlap)


def test_crossing_options_envelope_is_the_pointwise_best() -> None:
    """Option 1 wins at low quality, option 2 at high, the anchor nowhere."""
    low = Curve.of([r * k for r, k in zip(RATES, [0.7, 0.75, 0.85, 0.95, 1.1], strict=True)], PSNRS)
    high = Curve.of(
        [r * k for r, k in zip(RATES, [1.1, 0.95, 0.85, 0.75, 0.7], strict=True)], PSNRS
    )
    result = bd_rate_envelope(ANCHOR, [ANCHOR, low, high])
    assert result.options_used == (1, 2)
    assert value(result) < min(value(bd_rate(ANCHOR, low)), value(bd_rate(ANCHOR, high)))


# ---- the envelope never loses to an anchor it contains; the Pareto variant can ---------------


def _anchor_logr(q: float) -> float:
    return float(np.interp(q, PSNRS, np.log10(RATES)))


@st.composite
def option_curves(draw: st.DrawFn) -> Curve:
    """A random curve near the anchor; mostly monotone, sometimes with a dominated point."""
    n = draw(st.integers(3, 6))
    q = draw(st.floats(27.0, 38.0))
    logr = _anchor_logr(q) + draw(st.floats(-0.3, 0.3))
    rates, qualities = [], []
    for _ in range(n):
        rates.append(10.0**logr)
        qualities.append(q)
        q += draw(st.floats(0.2, 4.0))
        logr += draw(st.floats(-0.05, 0.5))
    return Curve.of(rates, qualities)


@settings(max_examples=100, deadline=None)
@given(st.lists(option_curves(), min_size=2, max_size=6), st.sampled_from(INTERPS))
def test_envelope_containing_the_anchor_never_scores_above_zero(
    others: list[Curve], interp: str
) -> None:
    result = bd_rate_envelope(ANCHOR, [ANCHOR, *others], interp)  # type: ignore[arg-type]
    assert value(result) <= 1e-9
    assert result.overlap == 1.0
    assert result.quality_range == (30.0, 40.0)


@pytest.mark.parametrize("interp", INTERPS)
def test_pareto_frontier_zig_zag_scores_worse_than_its_own_anchor(interp: str) -> None:
    """An option 5 % dearer but 0.02 dB better at every QP is worse everywhere, yet none of its
    points is dominated: the frontier alternates anchor point, option point, anchor point...
    and the steep little steps interpolate to a curve above the anchor."""
    zig = Curve.of([r * 1.05 for r in RATES], [q + 0.02 for q in PSNRS])
    pooled = ANCHOR.points + zig.points
    assert len(pareto_front(pooled)) == 10
    pareto = bd_rate_pareto(ANCHOR, pooled, interp)  # type: ignore[arg-type]
    assert value(pareto) > 1.0  # about +5 % (pchip), +3.7 % (akima)
    assert pareto.test_points == 10
    envelope = bd_rate_envelope(ANCHOR, [ANCHOR, zig], interp)  # type: ignore[arg-type]
    assert value(envelope) <= 1e-9
    assert envelope.options_used == (0,)


# ---- overlap, warnings, unusable data -------------------------------------------------------


@pytest.mark.parametrize("interp", INTERPS)
def test_small_overlap_is_reported(interp: str) -> None:
    top = Curve.of([1200, 3000, 7000], [37.0, 40.0, 43.0])  # covers 37..40 of 30..40
    for result in (
        bd_rate(ANCHOR, top, interp),  # type: ignore[arg-type]
        bd_rate_envelope(ANCHOR, [top], interp),  # type: ignore[arg-type]
        bd_rate_pareto(ANCHOR, top.points, interp),  # type: ignore[arg-type]
    ):
        assert result.bd_rate is not None
        assert result.overlap == pytest.approx(0.3)
        assert result.quality_range == (37.0, 40.0)
        assert result.warning == "small overlap (30 %)"
        assert "small overlap (30 %)" in result.describe()
    # With the anchor among the options the envelope covers the whole range.
    full = bd_rate_envelope(ANCHOR, [ANCHOR, top], interp)  # type: ignore[arg-type]
    assert full.overlap == 1.0
    assert full.warning is None
    assert value(full) <= 0.0


def test_no_quality_overlap_gives_none() -> None:
    above = Curve.of([4000, 8000], [41.0, 44.0])
    for result in (
        bd_rate(ANCHOR, above),
        bd_rate_envelope(ANCHOR, [above]),
        bd_rate_pareto(ANCHOR, above.points),
    ):
        assert result.bd_rate is None
        assert result.overlap == 0.0
        assert result.quality_range is None
        assert result.warning == "no quality overlap"
        with pytest.raises(BDRateError, match="no quality overlap"):
            result.require()


def test_too_few_points_gives_none() -> None:
    single = Curve.of([500.0], [36.0])
    assert bd_rate(ANCHOR, single).bd_rate is None
    assert "test curve has 1 usable point" in (bd_rate(ANCHOR, single).warning or "")
    assert bd_rate(single, ANCHOR).bd_rate is None
    assert bd_rate_pareto(ANCHOR, single.points).bd_rate is None
    env = bd_rate_envelope(ANCHOR, [single])
    assert env.bd_rate is None
    assert "no option curve" in (env.warning or "")
    skipped = bd_rate_envelope(ANCHOR, [ANCHOR, single])
    assert skipped.bd_rate == 0.0
    assert "skipped 1 option" in (skipped.warning or "")
    assert bd_rate_envelope(ANCHOR, []).bd_rate is None


def test_two_points_are_enough() -> None:
    two = Curve.of([100.0, 3000.0], [30.0, 40.0])
    assert value(bd_rate(two, scaled(0.8, two))) == pytest.approx(-20.0, rel=1e-6)
    assert value(bd_rate(two, scaled(0.8, two), "akima")) == pytest.approx(-20.0, rel=1e-6)
    assert value(bd_rate_envelope(two, [two, scaled(0.8, two)])) == pytest.approx(-20.0)


def test_non_finite_quality_and_dominated_points_are_dropped() -> None:
    messy = Curve.of(
        [*RATES, 5000.0, 2000.0], [*PSNRS, math.inf, 38.5]
    )  # inf PSNR, and 2000 kbps below the 1400 kbps point's quality
    for result in (bd_rate(messy, ANCHOR), bd_rate_envelope(messy, [messy, ANCHOR])):
        assert value(result) == pytest.approx(0.0, abs=1e-9)
        assert result.anchor_points == 5
        assert "1 point(s) with non-finite quality" in (result.warning or "")
        assert "1 dominated point(s)" in (result.warning or "")


def test_unknown_interpolation_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="interp"):
        bd_rate(ANCHOR, ANCHOR, "cubic")  # type: ignore[arg-type]
