"""Bjøntegaard-delta rate (BD-rate) of wrapper options against an anchor.

A BD-rate is the average relative rate difference between two rate-distortion (RD) curves at
equal quality (G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves",
VCEG-M33, Austin, April 2001). Each curve is turned into a function ``log10(rate) = f(quality)``
by interpolating its points; the BD-rate is::

    BD = (10 ** mean_{Q in I} (f_test(Q) − f_anchor(Q)) − 1) · 100 %

over the integration interval ``I``: the overlap of the two curves' quality ranges. Negative
means the test needs less rate for the same quality.

Interpolation (``interp``) follows the common-test-conditions practice rather than VCEG-M33's
single cubic polynomial fit, which is known to misbehave on some curves:

``"pchip"``
    piecewise cubic Hermite interpolation (``scipy.interpolate.PchipInterpolator``) of
    log10 rate over quality: the piecewise-cubic BD-rate of JCTVC-E137 used by the JCT-VC/JVET
    common-test-conditions spreadsheets (JCTVC-L1100, JVET-K1010). The ``bjontegaard``
    package used here reports that its ``pchip`` matches the JVET spreadsheet to 10 decimals.
``"akima"``
    Akima interpolation (``scipy.interpolate.Akima1DInterpolator``; linear for two points),
    recommended by Herglotz et al., "Beyond Bjøntegaard", ICIP 2022.

Three ways of scoring a set of options (one RD curve per option, each over the same QPs):

:func:`bd_rate` (method ``"curve"``)
    the plain BD-rate of one curve against another, computed by the ``bjontegaard`` package
    (FAU-LMS): exact integration of both interpolants over the overlap interval.
:func:`bd_rate_envelope` (method ``"envelope"``, the primary figure; "continuous RDO")
    every option curve is interpolated on its own, exactly like the anchor, and the test curve
    is at each quality the lowest interpolated log-rate of the options that reach that quality
    (the upper envelope in the RD plane: the best option at each rate). The mean difference is
    integrated numerically (Simpson's rule, 2001 points per interval; error well below
    1e-3 %). With the anchor among the options the envelope is nowhere above the anchor, so
    the result is never positive.
:func:`bd_rate_pareto` (method ``"pareto"``)
    the discrete Pareto frontier of all options' (rate, quality) points, scored as one curve with
    :func:`bd_rate`. Biased by interpolation: the frontier can zig-zag between options (a point
    of a slightly worse option just above an anchor point), and interpolating across those
    zig-zags can score a frontier *worse* than an anchor whose points it contains.

Preparing a curve for interpolation (all methods): points whose quality is not finite (inf PSNR
of a lossless frame, nan) are dropped, and the curve is reduced to its own Pareto front
(:func:`pareto_front`: points needing more rate for no more quality are dropped) so that
quality rises strictly with rate, which interpolation over quality needs. Both are reported in
:attr:`BDResult.warning`. A curve needs two usable points (PCHIP and Akima are linear on two).

The results say how they were computed (:class:`BDResult`): method, interpolation, points used,
the integration interval and how much of the anchor's quality range it covers. When no
BD-rate can be computed (too few points, no quality overlap) ``bd_rate`` is ``None`` and
``warning`` says why; :meth:`BDResult.require` turns that into a :class:`BDRateError`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from wrapcodec.errors import WrapcodecError

Interp = Literal["pchip", "akima"]
INTERPS: tuple[str, ...] = ("pchip", "akima")

#: Points of the Simpson grid on each integration interval of the envelope method (odd).
GRID_POINTS = 2001
#: Overlap (fraction of the anchor's quality range) below which a result carries a warning.
SMALL_OVERLAP = 0.5

_Array = NDArray[np.float64]


class BDRateError(WrapcodecError):
    """RD data unusable for a BD-rate: a malformed curve, too few points, no quality overlap."""


@dataclass(frozen=True)
class Curve:
    """One RD curve: the points of one option (or of the anchor) over the QPs.

    ``rate`` in kbps (finite, > 0); ``quality`` in any metric where higher is better (PSNR dB,
    SSIM, VMAF). Non-finite qualities are allowed here and ignored when computing.
    """

    rate: tuple[float, ...]
    quality: tuple[float, ...]

    def __post_init__(self) -> None:
        rate = tuple(float(r) for r in self.rate)
        quality = tuple(float(q) for q in self.quality)
        if len(rate) != len(quality):
            raise BDRateError(f"RD curve has {len(rate)} rates but {len(quality)} quality values")
        bad = [r for r in rate if not (math.isfinite(r) and r > 0)]
        if bad:
            raise BDRateError(f"RD curve has a rate that is not a positive number: {bad[0]!r}")
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "quality", quality)

    @staticmethod
    def of(rate: Sequence[float], quality: Sequence[float]) -> Curve:
        """The curve through these points, sorted by rate (ties by quality)."""
        if len(rate) != len(quality):
            raise BDRateError(f"RD curve has {len(rate)} rates but {len(quality)} quality values")
        pairs = sorted(zip((float(r) for r in rate), (float(q) for q in quality), strict=True))
        return Curve(tuple(r for r, _ in pairs), tuple(q for _, q in pairs))

    @property
    def points(self) -> list[tuple[float, float]]:
        """The (rate, quality) points, e.g. to pool options for :func:`bd_rate_pareto`."""
        return list(zip(self.rate, self.quality, strict=True))


@dataclass(frozen=True)
class BDResult:
    """A BD-rate and how it was computed.

    ``bd_rate``: percent, negative when the test saves rate; ``None`` when not computable
    (``warning`` says why). ``method``: ``"curve"`` (:func:`bd_rate`), ``"envelope"`` or
    ``"pareto"``. ``interp``: ``"pchip"`` or ``"akima"``. ``anchor_points``: anchor points
    used (after dropping non-finite and dominated ones). ``test_points``: points of the test
    curve used: the test curve's (:func:`bd_rate`), the frontier's (:func:`bd_rate_pareto`),
    or the option points lying on the envelope (:func:`bd_rate_envelope`). ``overlap``: the
    fraction of the anchor's quality range covered by the test's. ``quality_range``: the
    integration interval. ``warning``: small overlap, dropped points, or why there is no value.
    ``options_used``: for the envelope, the indices into ``options`` of the curves that form
    the envelope somewhere on the interval.
    """

    bd_rate: float | None
    method: str
    interp: str
    anchor_points: int
    test_points: int
    overlap: float
    quality_range: tuple[float, float] | None
    warning: str | None
    options_used: tuple[int, ...] = field(default=())

    def require(self) -> float:
        """The BD-rate, or :class:`BDRateError` saying why there is none."""
        if self.bd_rate is None:
            raise BDRateError(f"BD-rate ({self.method}) not computable: {self.warning}")
        return self.bd_rate

    def describe(self) -> str:
        """One line saying what the figure is and how it was obtained."""
        value = "n/a" if self.bd_rate is None else f"{self.bd_rate:+.3f} %"
        span = (
            "no interval"
            if self.quality_range is None
            else f"quality {self.quality_range[0]:g}..{self.quality_range[1]:g}"
        )
        text = (
            f"BD-rate {value} ({self.method}, {self.interp} of log10 rate over quality; "
            f"anchor {self.anchor_points} pts, test {self.test_points} pts; {span}, "
            f"{self.overlap * 100:.0f} % of the anchor's range)"
        )
        return text if self.warning is None else f"{text}: {self.warning}"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated (rate, quality) points, sorted by rate.

    A point is dominated when another has rate <= and quality >=, one of them strictly. Of
    identical points one is kept, so both rate and quality rise strictly along the result.
    Points with a nan coordinate are ignored.
    """
    clean = [(float(r), float(q)) for r, q in points if not (math.isnan(r) or math.isnan(q))]
    clean.sort(key=lambda p: (p[0], -p[1]))
    front: list[tuple[float, float]] = []
    for rate, quality in clean:
        if not front or quality > front[-1][1]:
            front.append((rate, quality))
    return front


@dataclass(frozen=True)
class _Prepared:
    """A curve ready for interpolation: quality (and rate) strictly increasing."""

    rate: _Array
    quality: _Array
    logr: _Array
    nonfinite: int
    dominated: int

    @property
    def n(self) -> int:
        return len(self.rate)


def _prepare(curve: Curve) -> _Prepared:
    finite = [(r, q) for r, q in zip(curve.rate, curve.quality, strict=True) if math.isfinite(q)]
    front = pareto_front(finite)
    rate = np.array([r for r, _ in front], dtype=np.float64)
    quality = np.array([q for _, q in front], dtype=np.float64)
    return _Prepared(
        rate=rate,
        quality=quality,
        logr=np.log10(rate),
        nonfinite=len(curve.rate) - len(finite),
        dominated=len(finite) - len(front),
    )


def _drop_notes(name: str, nonfinite: int, dominated: int) -> list[str]:
    notes = []
    if nonfinite:
        notes.append(f"{name}: dropped {nonfinite} point(s) with non-finite quality")
    if dominated:
        notes.append(
            f"{name}: dropped {dominated} dominated point(s) (quality not rising with rate)"
        )
    return notes


def _check_interp(interp: str) -> None:
    if interp not in INTERPS:
        raise ValueError(f"interp must be one of {INTERPS}, not {interp!r}")


def _join(notes: list[str]) -> str | None:
    return "; ".join(notes) if notes else None


def _overlap_note(overlap: float) -> list[str]:
    return [f"small overlap ({overlap * 100:.0f} %)"] if overlap < SMALL_OVERLAP else []


def _too_few(name: str, n: int) -> str:
    return f"{name} has {n} usable point(s), need 2"


def _interpolator(quality: _Array, logr: _Array, interp: str) -> Callable[[_Array], _Array]:
    """log10 rate as a function of quality, exactly as the ``bjontegaard`` package builds it."""
    from bjontegaard.interpolation import interpolate

    f: Any = interpolate(quality, logr, interp)
    return lambda q: np.asarray(f(q), dtype=np.float64)


def _plain(
    anchor: _Prepared, test: _Prepared, interp: str, method: str, notes: list[str]
) -> BDResult:
    """BD-rate of two prepared curves through ``bjontegaard.bd_rate``."""

    def result(
        value: float | None, overlap: float, span: tuple[float, float] | None, extra: list[str]
    ) -> BDResult:
        return BDResult(
            value, method, interp, anchor.n, test.n, overlap, span, _join(extra + notes)
        )

    if anchor.n < 2:
        return result(None, 0.0, None, [_too_few("anchor", anchor.n)])
    if test.n < 2:
        return result(None, 0.0, None, [_too_few("test curve", test.n)])
    a_lo, a_hi = float(anchor.quality[0]), float(anchor.quality[-1])
    lo = max(a_lo, float(test.quality[0]))
    hi = min(a_hi, float(test.quality[-1]))
    if hi <= lo:
        return result(None, 0.0, None, ["no quality overlap"])
    overlap = (hi - lo) / (a_hi - a_lo)

    import bjontegaard

    with warnings.catch_warnings():
        # The package warns below its own overlap threshold (relative to the union of the
        # ranges); this module reports the overlap itself.
        warnings.simplefilter("ignore")
        value = float(
            bjontegaard.bd_rate(
                anchor.rate,
                anchor.quality,
                test.rate,
                test.quality,
                method=interp,
                require_matching_points=False,
                min_overlap=0,
            )
        )
    if not math.isfinite(value):
        return result(None, overlap, (lo, hi), ["BD-rate not finite"])
    return result(value, overlap, (lo, hi), _overlap_note(overlap))


def bd_rate(anchor: Curve, test: Curve, interp: Interp = "pchip") -> BDResult:
    """Plain BD-rate of ``test`` against ``anchor`` (method ``"curve"``).

    Computed by ``bjontegaard.bd_rate`` (log10 rate interpolated over quality with ``interp``,
    both interpolants integrated exactly over the overlap of the quality ranges), after
    preparing both curves (non-finite qualities and dominated points dropped).
    """
    _check_interp(interp)
    a, t = _prepare(anchor), _prepare(test)
    notes = _drop_notes("anchor", a.nonfinite, a.dominated)
    notes += _drop_notes("test curve", t.nonfinite, t.dominated)
    return _plain(a, t, interp, "curve", notes)


def bd_rate_pareto(
    anchor: Curve, points: Sequence[tuple[float, float]], interp: Interp = "pchip"
) -> BDResult:
    """BD-rate of the discrete Pareto frontier of ``points`` against ``anchor`` ("pareto").

    ``points`` are the (rate, quality) points of all options (usually the anchor's included);
    their :func:`pareto_front` is scored as one curve with the ``bjontegaard`` package.
    Biased by interpolation: where the frontier alternates between options it zig-zags, and
    the interpolant across the zig-zags can lie above the anchor curve even though every
    anchor point is on or above the frontier, so the score can be positive. Prefer
    :func:`bd_rate_envelope`.
    """
    _check_interp(interp)
    pooled = Curve.of([p[0] for p in points], [p[1] for p in points])
    a, t = _prepare(anchor), _prepare(pooled)
    notes = _drop_notes("anchor", a.nonfinite, a.dominated)
    if t.nonfinite:
        notes.append(f"points: dropped {t.nonfinite} point(s) with non-finite quality")
    return _plain(a, t, interp, "pareto", notes)


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of closed intervals as disjoint sorted intervals (touching ones joined)."""
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _simpson_mean(values: _Array) -> float:
    """Mean of a function sampled on an odd number of equally spaced points (Simpson)."""
    n = len(values)
    weights = np.full(n, 2.0)
    weights[1::2] = 4.0
    weights[0] = weights[-1] = 1.0
    return float(np.dot(weights, values) / (3.0 * (n - 1)))


_Interpolated = tuple[int, _Prepared, Callable[[_Array], _Array]]


def _envelope(curves: Sequence[_Interpolated], q: _Array) -> tuple[_Array, NDArray[np.intp]]:
    """Lowest log-rate over the curves reaching each quality, and which curve (-1: none)."""
    best = np.full(q.shape, np.inf)
    which = np.full(q.shape, -1, dtype=np.intp)
    for i, p, f in curves:
        reach = (q >= p.quality[0]) & (q <= p.quality[-1])
        values = np.full(q.shape, np.inf)
        values[reach] = f(q[reach])
        better = values < best
        best[better] = values[better]
        which[better] = i
    return best, which


def _spans(curves: Sequence[_Interpolated]) -> list[tuple[float, float]]:
    return _merge([(float(p.quality[0]), float(p.quality[-1])) for _, p, _ in curves])


def _intersect(
    a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The parts of width > 0 that two unions of disjoint sorted intervals share."""
    out = [(max(lo, lo2), min(hi, hi2)) for lo, hi in a for lo2, hi2 in b]
    return [(lo, hi) for lo, hi in out if hi > lo]


def _mean_log_difference(
    intervals: Sequence[tuple[float, float]],
    curves: Sequence[_Interpolated],
    reference: Callable[[_Array], _Array],
) -> tuple[float, float, set[int]]:
    """Mean of ``envelope(curves) − reference`` (log10 rate) over the union of
    ``intervals`` (Simpson's rule, :data:`GRID_POINTS` points per interval, weighted by its
    width), the union's total width, and the curves forming the envelope somewhere."""
    total = 0.0
    weighted = 0.0
    used: set[int] = set()
    for lo, hi in intervals:
        grid = np.linspace(lo, hi, GRID_POINTS)
        best, which = _envelope(curves, grid)
        weighted += (hi - lo) * _simpson_mean(best - reference(grid))
        total += hi - lo
        used.update(int(i) for i in which if i >= 0)
    return weighted / total, total, used


def bd_rate_envelopes(
    anchors: Sequence[Curve], options: Sequence[Curve], interp: Interp = "pchip"
) -> BDResult:
    """BD-rate of the envelope of ``options`` against the envelope of ``anchors``
    ("envelopes"): one family of curves against another, e.g. the wrapper's options against
    a codec's own resampling modes, each family at its best at every quality.

    Both envelopes are built as in :func:`bd_rate_envelope` (each curve interpolated on its
    own quality range, lowest log-rate at each quality); the mean log-rate difference is taken
    over the quality range of ``anchors[0]`` (direct coding, the range every bench row
    integrates over), where both families reach (``overlap``: its share of that range).
    ``anchor_points`` and ``test_points`` count the points on either envelope;
    ``options_used`` lists the options forming the test envelope somewhere."""
    _check_interp(interp)
    families = []
    notes: list[str] = []
    for name, curves in (("anchors", anchors), ("options", options)):
        prepared = [_prepare(c) for c in curves]
        notes += _drop_notes(
            name, sum(p.nonfinite for p in prepared), sum(p.dominated for p in prepared)
        )
        families.append(
            [
                (i, p, _interpolator(p.quality, p.logr, interp))
                for i, p in enumerate(prepared)
                if p.n >= 2
            ]
        )
    a_curves, t_curves = families

    def count(curves: Sequence[_Interpolated]) -> int:
        return sum(
            int(np.sum(p.logr <= _envelope(curves, p.quality)[0] + 1e-12)) for _, p, _ in curves
        )

    def none(reason: str, counted: bool = False) -> BDResult:
        points = (count(a_curves), count(t_curves)) if counted else (0, 0)
        return BDResult(None, "envelopes", interp, *points, 0.0, None, _join([reason, *notes]))

    if not a_curves or not t_curves:
        reason = "no anchor curve" if not a_curves else "no option curve"
        return none(f"{reason} with 2 usable points")
    first = _prepare(anchors[0])
    if first.n < 2:
        return none(_too_few("first anchor", first.n))
    span = (float(first.quality[0]), float(first.quality[-1]))
    shared = _intersect(_intersect([span], _spans(a_curves)), _spans(t_curves))
    if not shared:
        return none("no quality overlap", counted=True)
    mean, total, used = _mean_log_difference(shared, t_curves, lambda q: _envelope(a_curves, q)[0])
    overlap = total / (span[1] - span[0])
    return BDResult(
        bd_rate=(10.0**mean - 1.0) * 100.0,
        method="envelopes",
        interp=interp,
        anchor_points=count(a_curves),
        test_points=count(t_curves),
        overlap=overlap,
        quality_range=(shared[0][0], shared[-1][1]),
        warning=_join(_overlap_note(overlap) + notes),
        options_used=tuple(sorted(used)),
    )


def bd_rate_envelope(anchor: Curve, options: Sequence[Curve], interp: Interp = "pchip") -> BDResult:
    """BD-rate of the best option at each quality against ``anchor`` ("envelope").

    Each option curve (the anchor itself is normally among ``options``) is prepared and
    interpolated exactly like the anchor: log10 rate as a function of quality with ``interp``,
    over that curve's own quality range. The test curve is, at each quality, the minimum
    log-rate over the options that reach it (the upper envelope in the RD plane: the best
    option at each rate). The mean of ``logR_test − logR_anchor`` is taken over the part of the
    anchor's quality range covered by the options (Simpson's rule, :data:`GRID_POINTS` points
    per covered interval; if the options leave gaps the mean is over the covered parts only,
    and the warning says so). If the anchor is among ``options`` the envelope is nowhere
    above it and the result is <= 0.

    ``test_points`` counts the option points lying on the envelope; ``options_used`` lists the
    options forming the envelope on some part of the interval. Options with fewer than two
    usable points are skipped (noted in the warning).
    """
    _check_interp(interp)
    a = _prepare(anchor)
    notes = _drop_notes("anchor", a.nonfinite, a.dominated)
    prepared = [_prepare(o) for o in options]
    nonfinite = sum(p.nonfinite for p in prepared)
    dominated = sum(p.dominated for p in prepared)
    notes += _drop_notes("options", nonfinite, dominated)
    usable = [(i, p) for i, p in enumerate(prepared) if p.n >= 2]
    if len(usable) < len(prepared):
        notes.append(f"skipped {len(prepared) - len(usable)} option(s) with < 2 usable points")

    def none(overlap: float, reason: str) -> BDResult:
        return BDResult(None, "envelope", interp, a.n, 0, overlap, None, _join([reason, *notes]))

    if a.n < 2:
        return none(0.0, _too_few("anchor", a.n))
    if not usable:
        return none(0.0, "no option curve with 2 usable points")

    f_anchor = _interpolator(a.quality, a.logr, interp)
    curves = [(i, p, _interpolator(p.quality, p.logr, interp)) for i, p in usable]

    a_lo, a_hi = float(a.quality[0]), float(a.quality[-1])
    covered = _intersect([(a_lo, a_hi)], _spans(curves))
    if not covered:
        return none(0.0, "no quality overlap")

    mean, total, used = _mean_log_difference(covered, curves, f_anchor)
    overlap = total / (a_hi - a_lo)
    span = (covered[0][0], covered[-1][1])

    on_envelope: set[tuple[float, float]] = set()
    for _, p, _ in curves:
        best, _ = _envelope(curves, p.quality)
        for q, lr, b in zip(p.quality, p.logr, best, strict=True):
            if lr <= b + 1e-12:
                on_envelope.add((float(q), float(lr)))

    extra = _overlap_note(overlap)
    if len(covered) > 1:
        gaps = (span[1] - span[0]) - total
        extra.append(f"options leave gaps in the quality range ({gaps:g} not covered)")
    return BDResult(
        bd_rate=(10.0**mean - 1.0) * 100.0,
        method="envelope",
        interp=interp,
        anchor_points=a.n,
        test_points=len(on_envelope),
        overlap=overlap,
        quality_range=span,
        warning=_join(extra + notes),
        options_used=tuple(sorted(used)),
    )
