"""Frontiers and BD-rate tables of a bench run, as typed results (the content of results.json).

Rows follow Table 1 of the switchable neural wrappers paper (HEVC anchor): each row's RD
curve is the frontier of direct coding plus that row's options, against direct coding alone.
The primary BD-rate is the *envelope* (continuous RDO: every option's curve interpolated like
the anchor, best option at each quality); the paper's discrete Pareto-frontier variant is
reported beside it, labelled as such.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, model_serializer

from wrapcodec.bdrate import (
    BDResult,
    Curve,
    Interp,
    bd_rate_envelope,
    bd_rate_envelopes,
    bd_rate_pareto,
)
from wrapcodec.bench.plan import BenchConfig
from wrapcodec.bench.points import Point, curve_of
from wrapcodec.options import OPTIONS

ROWS: dict[str, tuple[int, ...]] = {
    "bilinear": (12, 13, 14),
    "Lanczos": (9, 10, 11),
    "linear": (9, 10, 11, 12, 13, 14),
    "post-only": (1, 2, 3, 4),
    "wrapper": (5, 6, 7, 8),
    "post + wrapper": (1, 2, 3, 4, 5, 6, 7, 8),
    "all options": tuple(range(1, 15)),
}
CurveId = int | str  # an option's code, or a rival's name (points.curve_of)
Row = tuple[tuple[CurveId, ...], tuple[CurveId, ...]]  # (anchor curves, test curves)
ALL_OPTIONS = ROWS["all options"]
CODEC_RESAMPLING = "codec resampling"
AGAINST_CODEC = "all options vs codec resampling"
QUALITY = {"psnr_yuv": "PSNR-YUV", "psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "vmaf": "VMAF"}
AVERAGE = "average"
MEAN = "mean of sequences"
METHODS = ("envelope", "pareto")

METHOD = (
    "Each point is a real encode and decode; bits are those of the whole .wrp file. PSNR is "
    "computed per plane and frame, averaged over frames, PSNR-YUV = (6·Y + U + V)/8 (HM/JVET). "
    "BD-rate (Bjøntegaard, VCEG-M33) interpolates log10(rate) as a function of quality with "
    "piecewise cubic Hermite (PCHIP, as the JVET CTC spreadsheet; Akima on request) and "
    "averages the log-rate difference over the overlap of the quality ranges. Envelope: every "
    "option's curve of a row (direct included) is interpolated that way, and the test curve is, "
    "at each quality, the lowest rate over those curves (the best option at each rate); it is "
    "integrated on a dense grid, so a frontier containing the anchor never scores above 0 %. "
    "Pareto: the non-dominated points of all options and QPs form one curve that goes through "
    "the bjontegaard package like a single codec's curve. Average: rates and qualities averaged "
    "over sequences per option and QP; 'mean of sequences' is the mean of per-sequence BD-rates. "
    "Rivals (--rivals) are the codec's own resampling modes coded at the same QPs, the whole "
    "stream in the .wrp as for direct coding: 'R alone' is rival R's curve against direct "
    "(a loss shows as a positive figure), 'codec resampling' direct plus every rival against "
    "direct, and 'all options vs codec resampling' the envelope of direct and all options "
    "against the envelope of direct and every rival, over direct coding's quality range as "
    "every row (where both reach)."
)


class SequenceBD(BaseModel):
    """A row's BD-rate on one sequence (or the average one), by both methods."""

    envelope: BDResult
    pareto: BDResult


class MeanBD(BaseModel):
    """The mean of a row's per-sequence BD-rates (the average sequence left out), per method."""

    envelope: float | None
    pareto: float | None


class MetricBD(BaseModel):
    """A row's BD-rates on one quality metric: per sequence (the average one last), and their
    mean. Stored flat, as ``{sequence: SequenceBD, ..., MEAN: MeanBD}``."""

    sequences: dict[str, SequenceBD]
    mean: MeanBD

    @model_serializer
    def _flat(self) -> dict[str, Any]:
        return {**self.sequences, MEAN: self.mean}

    def value(self, sequence: str, method: str) -> float | None:
        """A sequence's BD-rate, the average curve's, or (``MEAN``) the mean of sequences;
        None when not computed."""
        if sequence == MEAN:
            return getattr(self.mean, method)
        entry = self.sequences.get(sequence)
        return None if entry is None else getattr(entry, method).bd_rate


BDTable = dict[str, dict[str, MetricBD]]
"""BD-rates by row (:func:`all_rows`) and metric; a row none of whose curves was measured is
left out."""


class SpeedRow(BaseModel):
    """Decoder complexity and speeds of one option (or rival), means over its points."""

    option: int | str
    name: str
    post_kmacs_per_pixel: float
    encode_fps: float
    decode_fps: float


class PostGainRow(BaseModel):
    """A neural option's post-processor against Lanczos-4 upsampling of the same bitstream:
    PSNR-YUV difference in dB, mean over QPs per sequence, and the mean of sequences."""

    option: int
    name: str
    sequences: dict[str, float]
    mean: float


class AdaptationMean(BaseModel):
    """Content adaptation figures: mean PSNR-YUV gain of the update (dB), share of points that
    keep it, mean update bytes and fitting seconds."""

    gain_db: float
    used_share: float
    bytes: float
    fit_s: float


class AdaptationFigures(AdaptationMean):
    """:class:`AdaptationMean` of one sequence's points, and how many there are."""

    points: int


class AdaptationRow(BaseModel):
    """Content adaptation of one neural option: per sequence and the mean of sequences."""

    option: int
    name: str
    steps: list[int]
    sequences: dict[str, AdaptationFigures]
    mean: AdaptationMean


class ReportedConfig(BenchConfig):
    """The run's config as results.json stores it: with the quality metrics of the tables."""

    metrics_columns: list[str]


class BenchResults(BaseModel):
    """What ``wrapcodec bench`` found: results.json (``model_dump``) and what reports show."""

    command: str
    config: ReportedConfig
    preset: str
    versions: dict[str, str]
    sequences: list[str]
    method: str
    interp: str
    bd_rate: BDTable
    speed: list[SpeedRow]
    post_gain: list[PostGainRow]
    adaptation: list[AdaptationRow]
    bd_rate_without_update: BDTable = {}  # PSNR-YUV, rows with neural options (adapted runs)
    notes: list[str]
    points: list[Point]
    computed_points: int  # measured by this run (with `auto`, direct at the other depth too)
    cached_points: int = 0  # of ``points``, those read from the cache


def _curve(points: Sequence[Point], metric: str) -> Curve | None:
    pairs = [(p.kbps, getattr(p, metric)) for p in points if getattr(p, metric) is not None]
    if len(pairs) < 2:
        return None
    return Curve.of([r for r, _ in pairs], [q for _, q in pairs])


def by_sequence(points: Sequence[Point]) -> dict[str, dict[CurveId, list[Point]]]:
    """The points by sequence and curve (:func:`~wrapcodec.bench.points.curve_of`)."""
    table: dict[str, dict[CurveId, list[Point]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        table[p.spec.sequence][curve_of(p)].append(p)
    return table


def rival_rows(rivals: Sequence[str]) -> dict[str, Row]:
    """The rows that compare with a codec's own resampling, as (anchors, tests): each rival
    alone against direct, direct plus every rival against direct, and the wrapper's
    frontier (direct and all options) against the codec's (direct and every rival)."""
    if not rivals:
        return {}
    rows: dict[str, Row] = {f"{r} alone": ((0,), (r,)) for r in rivals}
    rows[CODEC_RESAMPLING] = ((0,), (0, *rivals))
    rows[AGAINST_CODEC] = ((0, *rivals), (0, *ALL_OPTIONS))
    return rows


def all_rows(rivals: Sequence[str]) -> dict[str, Row]:
    """Every row of the tables as (anchors, tests): :data:`ROWS` (direct against direct plus
    the row's options), then :func:`rival_rows`."""
    rows = {row: ((0,), (0, *codes)) for row, codes in ROWS.items()}
    return {**rows, **rival_rows(rivals)}


def average_points(points: Sequence[Point]) -> list[Point]:
    """The 'average' sequence: rate and qualities averaged over sequences per (curve, QP),
    for (curve, QP) pairs measured on every sequence."""
    groups: dict[tuple[CurveId, int], list[Point]] = defaultdict(list)
    for p in points:
        groups[(curve_of(p), p.spec.qp)].append(p)
    n = len({p.spec.sequence for p in points})
    out = []
    for group in groups.values():
        if len(group) != n:
            continue
        fields: dict[str, Any] = {}
        for name in ("kbps", "psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "ssim_y", "vmaf"):
            values = [getattr(p, name) for p in group]
            fields[name] = None if None in values else sum(values) / n
        spec = group[0].spec.model_copy(update={"sequence": AVERAGE, "path": ""})
        out.append(group[0].model_copy(update={**fields, "spec": spec}))
    return out


def _row_bd(
    per_curve: dict[CurveId, list[Point]],
    anchors: Sequence[CurveId],
    tests: Sequence[CurveId],
    metric: str,
    interp: Interp,
) -> SequenceBD | None:
    """(envelope, Pareto) BD-rate of the ``tests`` curves against the ``anchors`` curves, or
    None when an anchor or every test beyond the anchors is unmeasured."""
    anchor_curves = [_curve(per_curve.get(a, []), metric) for a in anchors]
    if None in anchor_curves or not any(per_curve.get(t) for t in tests if t not in anchors):
        return None
    curves = [c for c in (_curve(per_curve.get(t, []), metric) for t in tests) if c is not None]
    if not curves:
        return None
    pool = [(p.kbps, getattr(p, metric)) for t in tests for p in per_curve.get(t, [])]
    anchor_pool = [
        (p.kbps, getattr(p, metric))
        for a in anchors
        for p in per_curve[a]
        if getattr(p, metric) is not None
    ]
    anchor = Curve.of([r for r, _ in anchor_pool], [q for _, q in anchor_pool])
    if len(anchors) == 1:
        envelope = bd_rate_envelope(anchor, curves, interp)
    else:
        envelope = bd_rate_envelopes([c for c in anchor_curves if c is not None], curves, interp)
    pareto = bd_rate_pareto(anchor, pool, interp)
    return SequenceBD(envelope=envelope, pareto=pareto)


def _mean(per_sequence: dict[str, SequenceBD]) -> MeanBD:
    """The mean of the per-sequence BD-rates that were computed, the average sequence left out."""
    means: dict[str, float | None] = {}
    for method in METHODS:
        values = [
            value
            for s, r in per_sequence.items()
            if s != AVERAGE and (value := getattr(r, method).bd_rate) is not None
        ]
        means[method] = sum(values) / len(values) if values else None
    return MeanBD(**means)


def analyse(
    points: Sequence[Point], metrics: Sequence[str], interp: Interp, rivals: Sequence[str] = ()
) -> BDTable:
    """BD-rate of every row, sequence (and the average) and metric, both methods."""
    table = by_sequence([*points, *average_points(points)])
    found: dict[str, dict[str, dict[str, SequenceBD]]] = {}
    for sequence, per_curve in table.items():
        for row, (anchors, tests) in all_rows(rivals).items():
            for metric in metrics:
                result = _row_bd(per_curve, anchors, tests, metric, interp)
                if result is not None:
                    found.setdefault(row, {}).setdefault(metric, {})[sequence] = result
    return {
        row: {
            metric: MetricBD(sequences=per_sequence, mean=_mean(per_sequence))
            for metric, per_sequence in per_metric.items()
        }
        for row, per_metric in found.items()
    }


def speed_table(points: Sequence[Point]) -> list[SpeedRow]:
    """Decoder complexity and speeds per option (and rival), averaged over the points."""
    groups: dict[CurveId, list[Point]] = defaultdict(list)
    for p in points:
        groups[curve_of(p)].append(p)
    return [
        SpeedRow(
            option=code,
            name=group[0].kind if isinstance(code, str) else group[0].option_name,
            post_kmacs_per_pixel=sum(p.post_kmacs_per_pixel for p in group) / len(group),
            encode_fps=sum(p.encode_fps for p in group) / len(group),
            decode_fps=sum(p.decode_fps for p in group) / len(group),
        )
        for code, group in sorted(groups.items(), key=lambda item: str(item[0]).zfill(2))
    ]


def post_gain(points: Sequence[Point]) -> list[PostGainRow]:
    """Per neural option: PSNR-YUV of its post-processor minus Lanczos-4 upsampling of the
    same bitstream, averaged over QPs per sequence, and the mean of sequences (dB)."""
    by_option: dict[int, dict[str, list[float]]] = {}
    for p in points:
        if p.psnr_yuv_lanczos_post is None:
            continue
        gains = by_option.setdefault(p.spec.option, {})
        gains.setdefault(p.spec.sequence, []).append(p.psnr_yuv - p.psnr_yuv_lanczos_post)
    rows = []
    for code, per_seq in sorted(by_option.items()):
        means = {seq: sum(v) / len(v) for seq, v in sorted(per_seq.items())}
        rows.append(
            PostGainRow(
                option=code,
                name=OPTIONS[code].name,
                sequences=means,
                mean=sum(means.values()) / len(means),
            )
        )
    return rows


def adaptation(points: Sequence[Point]) -> list[AdaptationRow]:
    """Per neural option with content adaptation: over its points, the mean PSNR-YUV gain of
    the fitted update (dB, whether the point kept it or not), the share of points that keep it
    (lower J), the mean update bytes and fitting seconds; per sequence and the mean of
    sequences."""
    by_option: dict[int, dict[str, list[Point]]] = {}
    for p in points:
        if p.adapt_gain_db is None:
            continue
        by_option.setdefault(p.spec.option, {}).setdefault(p.spec.sequence, []).append(p)
    rows = []
    for code, per_seq in sorted(by_option.items()):
        figures = {seq: _adaptation_figures(group) for seq, group in sorted(per_seq.items())}
        mean = {
            k: sum(getattr(f, k) for f in figures.values()) / len(figures)
            for k in AdaptationMean.model_fields
        }
        rows.append(
            AdaptationRow(
                option=code,
                name=OPTIONS[code].name,
                steps=sorted({p.spec.adapt_steps for g in per_seq.values() for p in g}),
                sequences=figures,
                mean=AdaptationMean(**mean),
            )
        )
    return rows


def without_updates(points: Sequence[Point]) -> list[Point]:
    """The points as they would be without content adaptation: each adapted neural point with
    the bank's post-processor as it is on the same bitstream (its PSNR-YUV without the
    update, its rate without the update's bytes). Only ``psnr_yuv`` is that variant's; the
    other qualities are left as measured, so analyse PSNR-YUV alone."""
    out = []
    for p in points:
        if p.psnr_yuv_without_update is None:
            out.append(p)
            continue
        bits = p.bits - 8 * (p.adapt_bytes or 0) if p.adapt_used else p.bits
        plain = {"bits": bits, "kbps": p.kbps * bits / p.bits, "adapt_used": False}
        out.append(p.model_copy(update={**plain, "psnr_yuv": p.psnr_yuv_without_update}))
    return out


def without_update_table(points: Sequence[Point], interp: Interp) -> BDTable:
    """PSNR-YUV BD-rates of the rows with neural options, every adapted point taken without
    its update (:func:`without_updates`); empty when no point was adapted."""
    if all(p.psnr_yuv_without_update is None for p in points):
        return {}
    table = analyse(without_updates(points), ["psnr_yuv"], interp)
    neural = {row for row, codes in ROWS.items() if any(OPTIONS[c].neural for c in codes)}
    return {row: per for row, per in table.items() if row in neural}


def _adaptation_figures(group: Sequence[Point]) -> AdaptationFigures:
    n = len(group)
    return AdaptationFigures(
        gain_db=sum(p.adapt_gain_db or 0.0 for p in group) / n,
        used_share=sum(p.adapt_used for p in group) / n,
        bytes=sum(p.adapt_bytes or 0 for p in group) / n,
        fit_s=sum(p.adapt_s or 0.0 for p in group) / n,
        points=n,
    )


def assemble(
    config: BenchConfig,
    preset: str,
    points: Sequence[Point],
    notes: Sequence[str],
    command: str,
    versions: dict[str, str],
    computed: int,
    cached: int | None = None,
) -> BenchResults:
    """The results of a run: ``computed`` points measured now, ``cached`` of its ``points``
    read from the cache (default: those not measured now)."""
    metrics = ["psnr_yuv", "psnr_y"]
    if any(p.ssim_y is not None for p in points):
        metrics.append("ssim_y")
    if any(p.vmaf is not None for p in points):
        metrics.append("vmaf")
    interp = config.interp
    return BenchResults(
        command=command,
        config=ReportedConfig(**config.model_dump(), metrics_columns=metrics),
        preset=preset,
        versions=versions,
        sequences=sorted({p.spec.sequence for p in points}),
        method=METHOD,
        interp=interp,
        bd_rate=analyse(points, metrics, interp, config.rivals),
        speed=speed_table(points),
        post_gain=post_gain(points),
        adaptation=adaptation(points),
        bd_rate_without_update=without_update_table(points, interp),
        notes=list(notes),
        points=list(points),
        computed_points=computed,
        cached_points=len(points) - computed if cached is None else cached,
    )
