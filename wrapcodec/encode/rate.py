"""The bitrate search: the lowest QP of one option whose rate fits a budget, placed by a rate
model corrected by real encodes (docs/effort.md, "Bitrate budget")."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TypeVar

from wrapcodec.options import Option

QP_PER_OCTAVE = 6.0  # QPs that halve the rate, before two encodes measure it
MODEL_ENCODES = 3  # encodes of one option placed by the rate model; then bisection

T = TypeVar("T")


def next_qp(
    rates: Mapping[int, float], budget: float, qp_range: tuple[int, int], model: bool = True
) -> int | None:
    """The next QP to code in the search for the lowest QP whose rate fits ``budget``, given
    the ``rates`` coded so far (QP → rate, same unit as the budget); None when the answer is
    known: the lowest fitting QP is one above a QP over budget (or the range's bottom), or
    the top of the range is over budget (nothing fits).

    The rate is modelled as ``log2 R`` linear in QP through the two coded QPs nearest the
    budget (one coded QP: slope ``−1/QP_PER_OCTAVE``); the next QP is the model's lowest
    fitting QP, kept strictly between the highest QP over budget and the lowest one within.
    With ``model`` false, two QPs below the lowest fitting one while none is over budget, one
    above the highest over budget while none fits, else the middle of the interval between them
    (bisection); every step narrows the interval, so the search ends."""
    lo, hi = qp_range
    over = [q for q, r in rates.items() if r > budget]
    fits = [q for q, r in rates.items() if r <= budget]
    floor = max(over) + 1 if over else lo  # lowest QP that may fit
    ceiling = min(fits) if fits else hi + 1  # lowest QP known to fit (hi + 1: none yet)
    if floor >= ceiling or (not fits and max(over) >= hi):
        return None
    if not model:
        if not over:  # only fits so far: step down past the boundary
            return max(floor, ceiling - 2)
        if not fits:  # only overs so far: step up past it
            return min(hi, floor + 1)
        return (floor + ceiling - 1) // 2
    known = sorted(rates, key=lambda q: abs(math.log2(rates[q] / budget)))[:2]
    if len(known) == 2 and known[0] != known[1] and rates[known[0]] != rates[known[1]]:
        a, b = known
        slope = (math.log2(rates[b]) - math.log2(rates[a])) / (b - a)
        slope = min(slope, -1.0 / (4 * QP_PER_OCTAVE))  # rates fall with QP
    else:
        slope = -1.0 / QP_PER_OCTAVE
    q0 = known[0]
    guess = math.ceil(q0 + (math.log2(budget) - math.log2(rates[q0])) / slope - 1e-9)
    return min(max(guess, floor), ceiling - 1)


def start_qp(anchor_qp: int, opt: Option) -> int:
    """First QP tried for ``opt`` under a budget the anchor (direct) met at ``anchor_qp``: a
    picture with r² of the samples needs about that much less rate, i.e. lower QP."""
    return anchor_qp - round(0.75 * QP_PER_OCTAVE * math.log2(1 / float(opt.ratio) ** 2))


def estimate_qp(anchor_qp: int, estimated_kbps: float, budget: float) -> int:
    """First QP tried for a finalist whose rate at ``anchor_qp`` is estimated at
    ``estimated_kbps``: the anchor's QP moved by the rate model's slope to ``budget``."""
    return anchor_qp + round(QP_PER_OCTAVE * math.log2(estimated_kbps / budget))


def fit_budget(
    code: Callable[[int], T],
    rate: Callable[[T], float],
    budget: float,
    start: int,
    qp_range: tuple[int, int],
    capped: bool,
) -> tuple[T, list[int]] | None:
    """The lowest-QP result of ``code`` (one option coded at a QP) whose ``rate`` is within
    ``budget``, and the QPs coded on the way; None when none fits.

    QPs come from :func:`next_qp`, starting at ``start``; ``capped`` (levels below
    exhaustive) stops after :data:`MODEL_ENCODES` encodes once one fits, keeping the lowest
    fitting QP found rather than proving it the lowest."""
    lo, hi = qp_range
    results: dict[int, T] = {}
    rates: dict[int, float] = {}
    qp: int | None = min(max(start, lo), hi)
    while qp is not None:
        results[qp] = code(qp)
        rates[qp] = rate(results[qp])
        fits = [q for q, r in rates.items() if r <= budget]
        if capped and fits and len(rates) >= MODEL_ENCODES:
            break
        qp = next_qp(rates, budget, (lo, hi), model=len(rates) < MODEL_ENCODES)
    fits = [q for q, r in rates.items() if r <= budget]
    if not fits:
        return None
    return results[min(fits)], list(rates)
