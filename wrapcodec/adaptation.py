"""Content adaptation in the encoder: the frames a fit trains on, and the climb of the
capacity ladder with each rung's update measured as the decoder will apply it.

This is the encoder's side of :mod:`wrapcodec.adapt` (the fit) and :mod:`wrapcodec.update`
(the bytes); the decode path (:mod:`wrapcodec.pipeline`, :mod:`wrapcodec.decoder`) does not
import it. Every variant is measured through :func:`wrapcodec.pipeline.segment_layout`, the
function the decoder applies updates with, so the decoder reproduces the measured frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from wrapcodec.adapt import AdaptConfig, Fitted, fit, fit_forms, held_frames, training_frames
from wrapcodec.backend import Backend
from wrapcodec.metrics import PsnrAccumulator
from wrapcodec.pipeline import (
    Coded,
    InForce,
    Layout,
    decode_bottleneck,
    measure,
    postprocess,
    segment_layout,
    source_frames,
    to_tensors,
    update_in_force,
)
from wrapcodec.update import Quant, Subset
from wrapcodec.y4m import Frame

Pictures = list[tuple[torch.Tensor, torch.Tensor]]


def training_pictures(
    backend: Backend,
    stream: Path,
    layout: Layout,
    source: Path,
    first: int,
    count: int,
    config: AdaptConfig | int,
) -> tuple[Pictures, Pictures]:
    """Normalised decoded bottleneck frames of ``stream`` and their source frames: the frames
    :func:`wrapcodec.adapt.held_frames` picks (spread over the whole segment, bounded in
    memory with ``config.grow``; an int is ``max_frames`` of the fixed rule). Frames are read
    one at a time and only the picked ones are kept, so memory does not grow with ``count``."""
    decoded, sources, _ = _held(backend, stream, layout, source, first, count, config, ())
    return decoded, sources


def _held(
    backend: Backend,
    stream: Path,
    layout: Layout,
    source: Path,
    first: int,
    count: int,
    config: AdaptConfig | int,
    judged: Collection[int],
) -> tuple[Pictures, Pictures, Judge]:
    """:func:`training_pictures`, and frames ``judged`` as they are (decoded bottleneck,
    source), from one decoding of ``stream``."""
    cfg = config if isinstance(config, AdaptConfig) else AdaptConfig(max_frames=config)
    picks = set(held_frames(count, layout.source.height, layout.source.width, cfg))
    decoded: Pictures = []
    sources: Pictures = []
    judge = Judge([], [])
    frames = zip(
        decode_bottleneck(backend, stream, layout, count),
        source_frames(source, first, count),
        strict=True,
    )
    for k, (picture, ref) in enumerate(frames):
        if k in picks:
            decoded.append(to_tensors(picture, layout.bitdepth))
            sources.append(to_tensors(ref, layout.source.bitdepth))
        if k in judged:
            judge.pictures.append(picture)
            judge.sources.append(ref)
    return decoded, sources, judge


JUDGE_FRAMES = 16
"""Frames, spread evenly over a segment of more than twice as many, on which the climb
compares its updates (:class:`Judge`); the best is then measured on every frame."""


@dataclass
class Judge:
    """Frames of a segment, decoded and as in the source, held to compare updates on: each
    update's output on them is what the decoder would show on those frames, without decoding
    the stream again or post-processing every frame for each update."""

    pictures: list[Frame]
    sources: list[Frame]

    def coded(self, seg: Segment, layout: Layout) -> Coded:
        """``seg``'s stream with ``layout``, measured on these frames only."""
        acc = PsnrAccumulator(layout.source.bitdepth)
        for picture, ref in zip(self.pictures, self.sources, strict=True):
            acc.add(ref, postprocess(picture, layout))
        return Coded.of(seg.stream, acc, seg.encode_s, 0.0)


def judged_frames(count: int) -> list[int]:
    """The frames the climb compares updates on: :data:`JUDGE_FRAMES` of a segment of more
    than twice as many, none (every frame is measured) in a shorter one."""
    return training_frames(count, JUDGE_FRAMES) if count > 2 * JUDGE_FRAMES else []


def adapt_and_measure(
    backend: Backend,
    stream: Path,
    layout: Layout,
    source: Path,
    first: int,
    count: int,
    config: AdaptConfig,
    encode_s: float = 0.0,
) -> tuple[Fitted, Coded]:
    """Fit ``layout``'s post-processor (one rung, ``config.subset``, from the bank's weights)
    to the decoded ``stream`` of frames ``first``.. of ``source`` and measure the decoder's
    output with the update, applied from its bytes exactly as the decoder applies it."""
    if layout.processors is None:
        raise ValueError(f"option {layout.option.name} has no post-processor to adapt")
    decoded, sources = training_pictures(backend, stream, layout, source, first, count, config)
    fitted = fit(layout.processors.post, decoded, sources, config, segment_frames=count)
    adapted, _ = segment_layout(layout, fitted.update, False, None)
    return fitted, measure(backend, stream, adapted, source, first, count, encode_s)


@dataclass
class Variant:
    """One fitted update of a candidate, measured: what the RDO compares."""

    rung: Subset  # the rung fitted (the update may carry more: the update in force's subset)
    fitted: Fitted
    coded: Coded
    cost: float  # J with the update's bytes in R
    chain: InForce | None  # the update in force after the segment if this variant is chosen
    # Measured on these frames of the segment only (:class:`Judge`), not on every frame:
    # the climb's choice is the one variant measured on all of them.
    judged_on: int | None = None
    gain_db: float | None = None  # judged: PSNR-YUV over the bank's post-processor's there


@dataclass
class Inheriting:
    """The update in force after the previous segment, reused at no bytes, judged beside a
    long segment's updates on the same frames (:class:`Judge`)."""

    coded: Coded  # on the judged frames
    cost: float  # J there, no bytes
    gain_db: float  # PSNR-YUV over the bank's post-processor's on the same frames
    judged_on: int
    # Its J is below every update's there: it is measured on every frame, and no update is
    wins: bool


@dataclass
class Climb:
    """What :func:`climb` found: every variant tried, in order, how inheriting the update in
    force compared (None when it was not judged: a short segment, no update in force of this
    option, or no rung to climb), and whether the climb stopped because its :class:`Pace`
    said the candidate could no longer reach the others."""

    variants: list[Variant]
    inheriting: Inheriting | None = None
    out_of_reach: bool = False


class Pace(Protocol):
    """Paces a climb beside the other candidates' (:class:`wrapcodec.encode.rounds.Rounds`):
    told each rung's best J, it says whether the climb stops there because the candidate can
    no longer reach the J the others found."""

    plain: float  # the candidate's J without an update, on every frame

    @property
    def bar(self) -> float | None:
        """The J it last had to stay able to reach (None: none yet)."""
        ...

    def out_of_reach(self, plain_here: float, best_here: float, last: bool) -> bool:
        """After a rung: whether a climb whose best J so far is ``best_here``, against
        ``plain_here`` without an update on the same frames, stops (never after the
        ``last`` rung, whose result is only told)."""
        ...

    def done(self) -> None:
        """The climb fits no more rungs (it may be told twice)."""
        ...


@dataclass(frozen=True)
class Segment:
    """What a climb works on: a coded stream of frames ``first``.. of ``source``."""

    backend: Backend
    stream: Path
    layout: Layout
    source: Path
    first: int
    count: int
    encode_s: float = 0.0


def best_rung_index(costs: Sequence[float]) -> int:
    """Index of the lowest J (the first of equal ones: the smaller update)."""
    return min(range(len(costs)), key=lambda k: (costs[k], k))


def climb(
    seg: Segment,
    cfg: AdaptConfig,
    plan: Sequence[tuple[Subset, int]],
    lam: float,
    previous: InForce | None,
    cost: Callable[[Coded, bytes], float],
    pace: Pace | None = None,
) -> Climb:
    """Fit the rungs of ``plan`` (:func:`wrapcodec.adapt.ladder_plan`) in order and measure
    each update.

    Updates are quantisation 3 at the RDO's ``lam``. When ``previous`` is in force for this
    option, the first rung starts from it (warm start) and every rung is sent both absolute
    and relative (one fit, two encodings). Each rung above the first begins its training
    where the rung below it ended (its float weights; the update is still coded against the
    bank or the update in force), so a larger rung builds on the steps spent below it instead
    of starting over. The climb stops after a rung whose best J (``cost`` of the measured
    output and the update's bytes) is not below the best of the rungs below it: a larger
    rung rarely wins where a smaller one has stopped paying. With a ``pace``, it also stops
    after a rung from which the candidate can no longer reach the other candidates
    (:meth:`Pace.out_of_reach`), and tells the pace as soon as it fits no more rungs
    (:meth:`Pace.done`), before measuring the best of them on every frame; the pace's owner
    tells it again however the climb ends (:meth:`wrapcodec.encode.rounds.Rounds.turn`).

    In a segment of more than twice :data:`JUDGE_FRAMES` frames, the variants, and inheriting
    ``previous`` when it is in force for this option, are compared on that many frames spread
    over it (:class:`Judge`), and only the best of them is measured on every frame: a variant
    (``judged_on`` None; the others keep their judged figures), or, when inheriting wins
    (:attr:`Inheriting.wins`), none, and the caller measures inheriting. A climb the pace
    stopped there measures none: a candidate out of reach competes without an update."""
    layout = seg.layout
    if layout.processors is None or not plan:
        return Climb([])
    judged = judged_frames(seg.count)
    decoded, sources, judge = _held(
        seg.backend, seg.stream, layout, seg.source, seg.first, seg.count, cfg, judged
    )
    plain = judge.coded(seg, layout) if judged else None
    stop = None
    if pace is not None:
        stop = partial(pace.out_of_reach, pace.plain if plain is None else cost(plain, b""))

    def score(adapted: Layout, rung: Subset, fitted: Fitted, chain: InForce | None) -> Variant:
        if plain is None:
            return _measured(seg, adapted, rung, fitted, chain, cost)
        coded = judge.coded(seg, adapted)
        gain = coded.psnr_yuv - plain.psnr_yuv
        return Variant(rung, fitted, coded, cost(coded, fitted.update), chain, len(judged), gain)

    variants, stopped = _rungs(seg, cfg, plan, lam, previous, decoded, sources, score, stop)
    if pace is not None:
        pace.done()
    if plain is None:
        return Climb(variants, out_of_reach=stopped)
    k = best_rung_index([v.cost for v in variants])
    inheriting = _inheriting(seg, judge, plain, previous, cost, variants[k].cost)
    if stopped or (inheriting is not None and inheriting.wins):
        return Climb(variants, inheriting, stopped)
    v = variants[k]
    adapted, _ = segment_layout(layout, v.fitted.update, False, previous)
    variants[k] = _measured(seg, adapted, v.rung, v.fitted, v.chain, cost)
    return Climb(variants, inheriting, stopped)


def _rungs(
    seg: Segment,
    cfg: AdaptConfig,
    plan: Sequence[tuple[Subset, int]],
    lam: float,
    previous: InForce | None,
    decoded: Pictures,
    sources: Pictures,
    score: Callable[[Layout, Subset, Fitted, InForce | None], Variant],
    stop: Callable[[float, bool], bool] | None = None,
) -> tuple[list[Variant], bool]:
    """The rungs of :func:`climb`, each fitted on ``decoded`` and ``sources`` and its updates
    scored (``score``: measured or judged), until a rung does not lower the best J or
    ``stop`` says the best J so far is out of reach; whether ``stop`` said so."""
    layout = seg.layout
    assert layout.processors is not None
    base = update_in_force(previous, layout)
    forms = (False, True) if base is not None else (False,)
    variants: list[Variant] = []
    best = math.inf
    below: dict[str, Tensor] | None = None  # where the rung below ended
    for n, (rung, steps) in enumerate(plan, 1):
        rung_cfg = replace(
            cfg, subset=rung, steps=steps, grow=False, budget_s=None, quant=Quant.RD, rd_lambda=lam
        )
        fits = fit_forms(
            layout.processors.post,
            decoded,
            sources,
            rung_cfg,
            forms,
            start=base,
            segment_frames=seg.count,
            init=below,
        )
        below = fits[0].weights
        rung_best = math.inf
        for fitted in fits:
            adapted, chain = segment_layout(layout, fitted.update, False, previous)
            variants.append(score(adapted, rung, fitted, chain))
            rung_best = min(rung_best, variants[-1].cost)
        if rung_best >= best:
            break
        best = rung_best
        if stop is not None and stop(best, n == len(plan)):
            return variants, True
    return variants, False


def _inheriting(
    seg: Segment,
    judge: Judge,
    plain: Coded,
    previous: InForce | None,
    cost: Callable[[Coded, bytes], float],
    best: float,
) -> Inheriting | None:
    """Inheriting ``previous`` (when it is in force for ``seg``'s option), judged on the
    judge's frames against the best update's J there (``best``); ``plain`` is the bank's
    post-processor there."""
    if update_in_force(previous, seg.layout) is None:
        return None
    layout, _ = segment_layout(seg.layout, b"", True, previous)
    coded = judge.coded(seg, layout)
    j = cost(coded, b"")
    gain = coded.psnr_yuv - plain.psnr_yuv
    return Inheriting(coded, j, gain, len(judge.pictures), wins=j < best)


def _measured(
    seg: Segment,
    adapted: Layout,
    rung: Subset,
    fitted: Fitted,
    chain: InForce | None,
    cost: Callable[[Coded, bytes], float],
) -> Variant:
    """The variant measured on every frame of the segment, as the decoder will show it."""
    coded = measure(
        seg.backend, seg.stream, adapted, seg.source, seg.first, seg.count, seg.encode_s
    )
    return Variant(rung, fitted, coded, cost(coded, fitted.update), chain)


def full(variants: Sequence[Variant]) -> list[Variant]:
    """The variants measured on every frame of the segment: those a choice may take."""
    return [v for v in variants if v.judged_on is None]
