"""The search's estimates and pruning rules as pure functions of plain numbers: no coding,
no files, no threads. :mod:`wrapcodec.encode.search` measures the numbers and applies these;
docs/effort.md says why each rule is safe to apply."""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

LINEAR_KINDS = ("lanczos", "bilinear")
"""Options whose bottleneck is upsampled linearly: coding it adds to their uncoded floor."""


# --- estimates --------------------------------------------------------------------------------


def estimated_cost(
    probe_mse: float,
    probe_bits_per_frame: float,
    distortion_scale: float,
    rate_scale: float,
    overhead_bits: int,
    frames: int,
    samples_per_frame: int,
    lam: float,
) -> tuple[float, float]:
    """(J, bits) of a candidate coded in full, estimated from its probe: the probe's MSE and
    bits per frame times the anchor's full-to-probe ratios, plus the container overhead."""
    bits = rate_scale * probe_bits_per_frame * frames + overhead_bits
    return distortion_scale * probe_mse + lam * bits / (frames * samples_per_frame), bits


def probe_scales(
    full_bytes: int,
    full_frames: int,
    full_mse: float,
    probe_bytes: int,
    probe_frames: int,
    probe_mse: float,
) -> tuple[float, float]:
    """The anchor's (rate, distortion) full-to-probe ratios: its bytes per frame coded in full
    over those on the probe, and its MSE likewise (1 when the probe is lossless)."""
    rate_scale = (full_bytes / full_frames) / (probe_bytes / probe_frames)
    return rate_scale, full_mse / probe_mse if probe_mse else 1.0


def shared_distortion(anchor_mse: float, sample_mse: float, anchor_sample_mse: float) -> float:
    """The MSE of an option that shares the anchor's bitstream: the anchor's MSE times their
    ratio on the sampled frames (plus the option's when the anchor's sample is lossless)."""
    if anchor_sample_mse > 0:
        return anchor_mse * sample_mse / anchor_sample_mse
    return anchor_mse + sample_mse


# --- pruning rules ----------------------------------------------------------------------------


def coding_added(kind: str, coding: float) -> float:
    """What coding its bottleneck at the anchor's QP adds at least to the MSE of an option of
    ``kind`` through an uncoded bottleneck: ``coding`` for a linear option (its upsampling
    keeps most of the quantisation error), nothing for a neural one."""
    return coding if kind in LINEAR_KINDS else 0.0


def bound_rules_out(least: float, limit: float) -> bool:
    """The bound: an option whose least J (or, under a bitrate budget, MSE) — its MSE through
    an uncoded bottleneck plus :func:`coding_added` — reaches the anchor's ``limit`` cannot
    beat the anchor."""
    return least >= limit


def ladder_stops(milder: float | None, best: float, margin: float) -> bool:
    """The ratio ladder: a stronger Lanczos downscale is not probed once the next milder
    ratio's value (its estimate, or its bound) is more than ``margin`` above the ``best``
    estimate so far (None: no milder ratio yet)."""
    return milder is not None and milder > (1 + margin) * best


def ladder_value(milder: float, bound: float | None) -> float:
    """What a ratio the ladder skipped stands for in the family rule: the milder ratio's value,
    or its own bound (None: not ruled out by one) where that is higher."""
    return max(milder, -math.inf if bound is None else bound)


def best_by_ratio(
    anchor_cost: float, values: Iterable[tuple[Fraction, float]]
) -> dict[Fraction, float]:
    """The lowest value (estimate, bound or ladder value) of each ratio, the anchor's J
    counting for r = 1."""
    best = {Fraction(1): anchor_cost}
    for ratio, value in values:
        best[ratio] = min(value, best.get(ratio, math.inf))
    return best


def family_in_play(ratio_value: float | None, best: float, margin: float | None) -> bool:
    """The family rule: a bilinear, post or wrapper option is probed only while its ratio's
    best value so far (None: none yet) is within ``margin`` of the best estimate (None: no
    margin, always)."""
    return margin is None or ratio_value is None or ratio_value <= (1 + margin) * best


def pair_in_play(post: float | None, linear: float | None) -> bool:
    """The pairs rule: a ratio's wrapper is probed only when that ratio's post-processor beat
    linear upsampling of the same bitstream, or when either was not estimated (None)."""
    return post is None or linear is None or post < linear


def worth_coding(estimate: float, anchor_cost: float, margin: float) -> bool:
    """The verify margin: a finalist is coded in full only when its estimated J is below the
    anchor's by more than ``margin`` (0: any finalist is)."""
    return not margin or estimate < (1 - margin) * anchor_cost


def pair_worth_coding(pair: float, post: float | None) -> bool:
    """The pairs' verify rule: a ratio's wrapper (pre + post) is coded in full only when its
    estimate is below that ratio's post-processor's (None: not estimated). Both are adapted
    alike once coded; adaptation narrowed the wrapper's gap but never closed it where
    measured (docs/effort.md)."""
    return post is None or pair < post
