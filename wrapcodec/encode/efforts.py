"""The effort levels of the option search as data: what each level codes in full, probes,
adapts and prunes (:class:`Effort`, :data:`EFFORTS`), the content adaptation's time budget
(:class:`AdaptBudget`, :func:`parse_budget`) and the frames a probe and a bound are made on.
How the search uses them is described once, in docs/effort.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from wrapcodec.adapt import AdaptConfig
from wrapcodec.errors import InputError

DIRECT_SECONDS_PER_SAMPLE = 1.0e-7
"""Modelled seconds of one direct encode per source luma sample: the unit of an
``--adapt-budget`` given as a multiple (``2x``). About x265 at its default preset on 1080p
with two cores (5 frames a second). A model, not a clock, so the same input and options give
the same steps and the same bytes on any machine and at any preset."""


@dataclass(frozen=True)
class AdaptBudget:
    """The encode time content adaptation may spend per neural candidate and segment, for
    all the rungs it fits: ``value`` seconds, or ``value`` times the modelled direct encode
    of the segment (:data:`DIRECT_SECONDS_PER_SAMPLE`) when ``per_direct``."""

    value: float
    per_direct: bool = True

    def seconds(self, samples: int) -> float:
        """The budget in modelled seconds for a segment of ``samples`` luma samples."""
        return self.value * (DIRECT_SECONDS_PER_SAMPLE * samples if self.per_direct else 1.0)

    def __str__(self) -> str:
        return f"{self.value:g}{'x' if self.per_direct else 's'}"


_BUDGET = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(x|s)")


def parse_budget(text: str) -> AdaptBudget | None:
    """``2x`` (times a direct encode), ``30s`` (seconds) or ``none`` (no bound: every rung
    at its planned steps); anything else is an :class:`InputError`."""
    t = text.strip().lower()
    if t == "none":
        return None
    m = _BUDGET.fullmatch(t)
    if m is None:
        raise InputError(
            f"--adapt-budget {text!r}: a multiple of a direct encode (2x), seconds (30s) or none"
        )
    value = float(m.group(1))
    if not math.isfinite(value) or value > 1e6:
        raise InputError(f"--adapt-budget {text!r}: at most 1000000")
    return AdaptBudget(value, per_direct=m.group(2) == "x")


ADAPT_REACH = 2.0
"""At ``medium``, a neural candidate stops climbing the ladder when, even if the rungs above
gained twice what its rungs so far gained, its J would not reach below another adapted
candidate's. On the three 120-frame 720p clips (x265, QPs 22–47, post-1/1 and wrapper-1/1)
the rungs above the first gained a median 0.57 times what the first did, more than twice in
4 of 36 climbs (docs/measurements.md, "Adaptation in rounds")."""

SLOW_BUDGET = 20.0
"""``slow``'s adaptation budget (times the modelled direct encode): on a 120-frame 720p segment
it pays for about every parameter's planned 5,000 steps after the first rung, where the fit's
gain on frames it was not fitted on still rose (docs/measurements.md, "What more steps of
every parameter are worth")."""

DEPTH_WINDOW = 16
"""At ``fast``, frames per window of the probe that chooses the bottleneck's bit depth
(:func:`depth_probe`). On the three 120-frame 720p clips (x265, QPs 22–47), 16 frames in the
middle chose the depth of the whole clip at 15 of 18 points, 32 frames at 11, 16 frames spread
over the clip at 14; windows spread over the clip chose x264's depth on cups at 0–2 of 6. A
probe's wrong choice can cost: on cups with SVT-AV1 at QP 22 it took 8 bits, and all options
lost 0.44 points of BD-rate; so ``medium`` measures the whole segment
(docs/measurements.md, "The bottleneck's depth chosen on a probe")."""

DEPTH_SHARE = 4
"""The depth is chosen on a probe only in a segment of at least this many times its frames:
in a shorter one the probe saves too little of coding the segment at each depth."""


@dataclass(frozen=True)
class Effort:
    """One level of the search."""

    name: str
    verify: int | None  # best of the probe's ranking coded in full (anchor counted); None: all
    adapt_steps: int  # content adaptation of neural candidates coded in full, by default
    description: str
    window: int = 8  # consecutive frames per probe window ...
    # ... and at least this many luma samples (small pictures: more frames; 0: no minimum)
    probe_samples: int = 0
    # Bilinear, post and then wrapper options are probed only for ratios whose best estimate
    # so far is within this fraction of the best estimate (None: always)
    family_margin: float | None = None
    # A ratio's wrapper (pre + post pair) is probed only when the ratio's post-processor beat
    # linear upsampling of the same bitstream (direct at r = 1, bilinear below)
    pairs_need_post: bool = False
    # At a QP a finalist is coded in full only when its estimate is below the anchor's J by
    # more than this fraction (the anchor is coded already; a hair's gain is not worth a pass)
    verify_margin: float = 0.0
    # At a QP a ratio's wrapper among the finalists is coded in full only when its estimate
    # is below that ratio's post-only estimate (rules.pair_worth_coding); its place is not
    # given to the next of the ranking
    pairs_beat_post: bool = False
    # Lanczos ratios probed from the mildest downscale to the strongest, a stronger one only
    # while the milder one's estimate (or bound) is within family_margin of the best so far
    ratio_ladder: bool = False
    # Encode time content adaptation may spend per neural candidate and segment (None: every
    # rung of the ladder at its planned steps)
    adapt_budget: AdaptBudget | None = None
    # Neural candidates climb the ladder in rounds, each a rung further only while its J,
    # projected with the rungs above gaining this many times what its rungs so far gained,
    # still reaches below the others' (encode.rounds; at a QP only). None: each climbs alone.
    adapt_reach: float | None = None
    # With --bitdepth auto, direct coding at each depth measured on windows of this many
    # consecutive frames (depth_probe) instead of the whole segment (None: the whole segment)
    depth_window: int | None = None

    def probe_window(self, width: int, height: int) -> int:
        """Consecutive frames per probe window for ``width``×``height`` pictures."""
        return max(self.window, math.ceil(self.probe_samples / (width * height)))


_MEDIUM = Effort(
    "medium",
    3,
    AdaptConfig.steps,
    "anchor in full, bound, 8-frame probe; its best three coded in full (a wrapper only where "
    "it beats its post-processor) and adapted (update rungs within 3x a direct encode, climbed "
    "in rounds)",
    family_margin=0.25,
    pairs_beat_post=True,
    adapt_budget=AdaptBudget(3.0),
    adapt_reach=ADAPT_REACH,
)

EFFORTS: dict[str, Effort] = {
    e.name: e
    for e in (
        Effort(
            "fast",
            1,
            0,
            "anchor in full, bound, 4-frame probe (more below 540p), the bit depth on 16-frame "
            "probes of a long segment, Lanczos ratios mildest first, a ratio's wrapper only "
            "where its post beats linear; the best coded in full if 0.2 % below direct's J; "
            "no adaptation",
            window=4,
            probe_samples=4 * 960 * 540,
            family_margin=0.10,
            pairs_need_post=True,
            verify_margin=0.002,
            ratio_ladder=True,
            depth_window=DEPTH_WINDOW,
        ),
        _MEDIUM,
        replace(
            _MEDIUM,
            name="slow",
            description="as medium, the update rungs within 20x a direct encode",
            adapt_budget=AdaptBudget(SLOW_BUDGET),
        ),
        Effort(
            "exhaustive",
            None,
            AdaptConfig.steps,
            "every option coded in full and adapted (every update rung)",
        ),
    )
}
DEFAULT_EFFORT = "medium"

PROBE_SPACING = 120  # one more window per this many frames of the segment ...
PROBE_WINDOWS = 4  # ... up to this many
BOUND_FRAMES = 2  # frames the uncoded-bottleneck bound is measured on
# A linear option coded at the anchor's QP has at least its uncoded-bottleneck MSE plus this
# share of the anchor's MSE: the bottleneck is quantised with the same step, and upsampling
# leaves most of that error. Measured on the eight test sequences (Lanczos ratios, QPs 22–47):
# its coding added 0.81–2.8 times the anchor's MSE with x265, 0.74–2.7 with x264.
CODING_SHARE = 0.5


def effort(name: str) -> Effort:
    """The effort level called ``name``; ``ValueError`` names the known ones."""
    if name not in EFFORTS:
        raise ValueError(f"unknown effort {name!r} (known: {', '.join(EFFORTS)})")
    return EFFORTS[name]


def probe_frames(count: int, window: int) -> list[int]:
    """Frame indices of a segment's probe: windows of ``window`` consecutive frames
    centred in equal parts of the segment, one per :data:`PROBE_SPACING` frames (at least one,
    at most :data:`PROBE_WINDOWS`); the whole segment when it is that short."""
    length = min(window, count)
    windows = min(PROBE_WINDOWS, max(1, count // PROBE_SPACING))
    picks: set[int] = set()
    for i in range(windows):
        centre = (2 * i + 1) * count / (2 * windows)
        start = min(max(0, round(centre - length / 2)), count - length)
        picks.update(range(start, start + length))
    return sorted(picks)


def depth_probe(count: int, window: int | None) -> list[int] | None:
    """Frames of a segment of ``count`` on which direct coding at each bottleneck depth chooses
    the depth: the :func:`probe_frames` windows of ``window`` frames, or None (the whole
    segment) without a window or where they would be more than 1/:data:`DEPTH_SHARE` of it."""
    if window is None:
        return None
    picks = probe_frames(count, window)
    return picks if DEPTH_SHARE * len(picks) <= count else None


def spread(count: int, n: int) -> list[int]:
    """``n`` frame indices spread evenly over ``count`` (all of them when ``count ≤ n``)."""
    if count <= n:
        return list(range(count))
    return sorted({round((i + 0.5) * count / n - 0.5) for i in range(n)})
