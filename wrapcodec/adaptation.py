"""Content adaptation in the encoder: the frames a fit trains on, and the climb of the
capacity ladder with each rung's update measured as the decoder will apply it.

This is the encoder's side of :mod:`wrapcodec.adapt` (the fit) and :mod:`wrapcodec.update`
(the bytes); the decode path (:mod:`wrapcodec.pipeline`, :mod:`wrapcodec.decoder`) does not
import it. Every variant is measured through :func:`wrapcodec.pipeline.segment_layout`, the
function the decoder applies updates with, so the decoder reproduces the measured frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from wrapcodec.adapt import AdaptConfig, Fitted, fit, fit_forms, held_frames
from wrapcodec.backend import Backend
from wrapcodec.pipeline import (
    Coded,
    InForce,
    Layout,
    decode_bottleneck,
    measure,
    segment_layout,
    source_frames,
    to_tensors,
    update_in_force,
)
from wrapcodec.update import Quant, Subset

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
    cfg = config if isinstance(config, AdaptConfig) else AdaptConfig(max_frames=config)
    picks = set(held_frames(count, layout.source.height, layout.source.width, cfg))
    decoded = [
        to_tensors(f, layout.bitdepth)
        for k, f in enumerate(decode_bottleneck(backend, stream, layout, count))
        if k in picks
    ]
    sources = [
        to_tensors(f, layout.source.bitdepth)
        for k, f in enumerate(source_frames(source, first, count))
        if k in picks
    ]
    return decoded, sources


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
) -> list[Variant]:
    """Fit the rungs of ``plan`` (:func:`wrapcodec.adapt.ladder_plan`) in order and measure
    each update; every variant tried, in order.

    Updates are quantisation 3 at the RDO's ``lam``. When ``previous`` is in force for this
    option, the first rung starts from it (warm start) and every rung is sent both absolute
    and relative (one fit, two encodings). Each rung above the first begins its training
    where the rung below it ended (its float weights; the update is still coded against the
    bank or the update in force), so a larger rung builds on the steps spent below it instead
    of starting over. The climb stops after a rung whose best J (``cost`` of the measured
    output and the update's bytes) is not below the best of the rungs below it: a larger
    rung rarely wins where a smaller one has stopped paying."""
    layout = seg.layout
    if layout.processors is None or not plan:
        return []
    base = update_in_force(previous, layout)
    decoded, sources = training_pictures(
        seg.backend, seg.stream, layout, seg.source, seg.first, seg.count, cfg
    )
    forms = (False, True) if base is not None else (False,)
    variants: list[Variant] = []
    best = math.inf
    below: dict[str, Tensor] | None = None  # where the rung below ended
    for rung, steps in plan:
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
            coded = measure(
                seg.backend, seg.stream, adapted, seg.source, seg.first, seg.count, seg.encode_s
            )
            j = cost(coded, fitted.update)
            variants.append(Variant(rung, fitted, coded, j, chain))
            rung_best = min(rung_best, j)
        if rung_best >= best:
            break
        best = rung_best
    return variants
