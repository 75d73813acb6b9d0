"""``bench --standard METRIC``: the standard-stream mode against direct coding, in PSNR and in
MS-SSIM, so that a pre-filter trained for one metric is seen in the other too.

Per sequence and QP, two points, each as ``encode --standard`` codes and measures a candidate
(:func:`wrapcodec.encode.standard.code_candidate`: the codec's raw stream, decoded back by
plain ffmpeg): ``direct`` and ``prefilter`` (the bank's pre-filter for the codec and METRIC).
A third curve, ``standard``, is what the encoder writes: at each QP the point of lower J for
METRIC. BD-rates against direct (PSNR-YUV and MS-SSIM dB, ``−10·log10(1 − MS-SSIM)``) per
sequence and their mean. Points are cached by everything that determines them (the source's
hash, frames, codec, QP, preset, candidate, the filter's sha256), so a rerun resumes.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from wrapcodec.backend import get_backend
from wrapcodec.bank import bank_folder, load_prefilter, prefilter_card
from wrapcodec.bdrate import Curve, bd_rate
from wrapcodec.bench.cache import Cache, digest
from wrapcodec.bench.plan import sequences
from wrapcodec.bench.points import trimmed_source
from wrapcodec.encode.cost import rd_cost
from wrapcodec.encode.standard import (
    Measured,
    Metric,
    StandardConfig,
    check_standard,
    code_candidate,
    distortion,
    exchange_rate,
)
from wrapcodec.errors import InputError
from wrapcodec.metrics import MS_SSIM_MIN_SIDE, kbps
from wrapcodec.paths import atomic_write, sha256_file
from wrapcodec.streams import FORMATS
from wrapcodec.y4m import VideoInfo, count_frames, read_info

REVISION = 2
"""Bumped whenever a point's numbers change (cached points expire). 2: x264 and x265 tuned
for PSNR."""


class StandardPointSpec(BaseModel):
    """What determines one point."""

    model_config = ConfigDict(frozen=True)

    sequence: str
    source_sha256: str
    frames: int
    codec: str
    qp: int
    preset: str
    candidate: str
    filter_sha256: str = ""
    revision: int = REVISION

    def key(self) -> str:
        return digest(self.model_dump(exclude={"sequence"}))


class StandardPoint(BaseModel):
    """One measured point; ``mse`` per plane in 8-bit units (what J needs)."""

    spec: StandardPointSpec
    bits: int
    kbps: float
    psnr_yuv: float
    psnr_y: float
    mse: tuple[float, float, float]
    ms_ssim: float
    ms_ssim_db: float
    seconds: float


class StandardRow(BaseModel):
    """BD-rates of one curve against direct on one sequence (None: not computable)."""

    sequence: str
    curve: str
    bd_psnr: float | None
    bd_ms_ssim: float | None
    chosen: list[str] = []


class StandardBench(BaseModel):
    codec: str
    metric: Metric
    qps: list[int]
    prefilter: str
    points: list[StandardPoint]
    rows: list[StandardRow]


def _measure(spec: StandardPointSpec, source: Path, cfg: StandardConfig) -> StandardPoint:
    started = time.monotonic()
    info = check_standard(source, cfg)
    raw = next(f for f in FORMATS if f.muxer == cfg.backend.stream_format)
    with tempfile.TemporaryDirectory(prefix="wrapcodec-bench-standard-") as tmp:
        m: Measured = code_candidate(source, info, spec.frames, cfg, raw, spec.candidate, Path(tmp))
    assert m.ms is not None
    y, u, v = m.mse_planes()
    return StandardPoint(
        spec=spec,
        bits=m.bits,
        kbps=kbps(m.bits, spec.frames, info.fps_num, info.fps_den),
        psnr_yuv=m.psnr.psnr_yuv,
        psnr_y=m.psnr.psnr_planes[0],
        mse=(y, u, v),
        ms_ssim=m.ms.ms_ssim,
        ms_ssim_db=m.ms.db,
        seconds=time.monotonic() - started,
    )


def _trim(src: Path, frames: int | None, folder: Path) -> tuple[Path, int]:
    total = count_frames(src)
    if frames is None or frames >= total:
        return src, total
    dest = folder / src.name
    return (dest if dest.exists() else trimmed_source(src, frames, dest)), frames


def _bd(anchor: list[StandardPoint], test: list[StandardPoint], quality: str) -> float | None:
    def curve(points: list[StandardPoint]) -> Curve:
        return Curve.of([p.kbps for p in points], [getattr(p, quality) for p in points])

    return bd_rate(curve(anchor), curve(test)).bd_rate


def _cost(p: StandardPoint, metric: Metric, exchange: float | None, info: VideoInfo) -> float:
    """J of a point as ``encode --standard`` computes it."""
    lam = get_backend(p.spec.codec).qp_to_lambda(p.spec.qp)
    d = distortion(p.mse, p.ms_ssim, metric, exchange)
    return rd_cost(d, p.bits, p.spec.frames, info, lam)


def run_standard_bench(
    dataset: Path,
    codec: str,
    qps: Sequence[int],
    metric: Metric,
    out: Path,
    frames: int | None = None,
    preset: str | None = None,
    models: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> StandardBench:
    """Measure (or take from ``out``'s cache) every point and compute the BD-rates."""
    backend = get_backend(codec)
    folder = bank_folder(models)
    card = prefilter_card(folder, backend.name, metric)
    if card is None:
        raise InputError(f"bench --standard: the bank has no {codec} pre-filter for {metric}")
    net = load_prefilter(folder, card)
    preset = preset or backend.default_preset
    found = sequences(dataset)
    for src in found:  # refused before anything is written
        info = read_info(src)
        if min(info.width, info.height) < MS_SSIM_MIN_SIDE:
            raise InputError(
                f"bench --standard measures MS-SSIM, which needs pictures of at least "
                f"{MS_SSIM_MIN_SIDE}x{MS_SSIM_MIN_SIDE}: {src.stem} is {info.width}x{info.height}"
            )
    cache: Cache[StandardPoint] = Cache(out / "points", StandardPoint, lambda p: p.spec.key())
    points: list[StandardPoint] = []
    rows: list[StandardRow] = []
    trimmed = out / "sources"
    trimmed.mkdir(parents=True, exist_ok=True)
    for src in found:
        source, n = _trim(src, frames, trimmed)
        base = StandardPointSpec(
            sequence=src.stem,
            source_sha256=sha256_file(source),
            frames=n,
            codec=codec,
            qp=0,
            preset=preset,
            candidate="direct",
        )
        by: dict[str, list[StandardPoint]] = {"direct": [], "prefilter": []}
        for qp in qps:
            cfg = StandardConfig(backend, qp, preset, metric, prefilter=net)
            for candidate in by:
                sha = card.sha256 if candidate == "prefilter" else ""
                spec = base.model_copy(
                    update={"qp": qp, "candidate": candidate, "filter_sha256": sha}
                )
                point = cache.get(spec)
                if point is None:
                    if progress is not None:
                        progress(f"{src.stem} QP {qp} {candidate}")
                    point = _measure(spec, source, cfg)
                    cache.put(spec, point)
                by[candidate].append(point)
        points += by["direct"] + by["prefilter"]
        rows += _rows(src.stem, by, metric, read_info(source))
    result = StandardBench(
        codec=codec, metric=metric, qps=list(qps), prefilter=card.name, points=points, rows=rows
    )
    text = result.model_dump_json(indent=1)
    atomic_write(out / "results.json", lambda p: p.write_text(text))
    atomic_write(out / "report.md", lambda p: p.write_text(report_md(result)))
    return result


def _rows(
    sequence: str, by: dict[str, list[StandardPoint]], metric: Metric, info: VideoInfo
) -> list[StandardRow]:
    """BD-rates of the pre-filter and of the encoder's per-QP choice against direct."""
    chosen = []
    for d, f in zip(by["direct"], by["prefilter"], strict=True):
        rate = exchange_rate(d.mse[0], d.ms_ssim)
        better = _cost(f, metric, rate, info) < _cost(d, metric, rate, info)
        chosen.append(f if better else d)
    return [
        StandardRow(
            sequence=sequence,
            curve=curve,
            bd_psnr=_bd(by["direct"], test, "psnr_yuv"),
            bd_ms_ssim=_bd(by["direct"], test, "ms_ssim_db"),
            chosen=[p.spec.candidate for p in test] if curve == "standard" else [],
        )
        for curve, test in (("prefilter", by["prefilter"]), ("standard", chosen))
    ]


def _mean(values: list[float | None]) -> str:
    found = [v for v in values if v is not None and math.isfinite(v)]
    return "–" if not found else f"{sum(found) / len(found):+.2f} %"


def report_md(result: StandardBench) -> str:
    """The BD-rate table: per sequence, then the mean, for each curve and metric."""
    lines = [
        f"# Standard streams: {result.codec}, pre-filter `{result.prefilter}`",
        "",
        f"QPs {', '.join(map(str, result.qps))}. BD-rate against direct coding (negative: "
        "less rate for the same quality); `standard` is what `encode --standard` writes "
        f"(per QP, the point of lower J for {result.metric}).",
        "",
        "| sequence | curve | BD-rate PSNR-YUV | BD-rate MS-SSIM | chosen per QP |",
        "|---|---|---:|---:|---|",
    ]

    def cell(v: float | None) -> str:
        return "–" if v is None else f"{v:+.2f} %"

    for row in result.rows:
        lines.append(
            f"| {row.sequence} | {row.curve} | {cell(row.bd_psnr)} | {cell(row.bd_ms_ssim)} | "
            f"{' '.join(row.chosen)} |"
        )
    for curve in ("prefilter", "standard"):
        rows = [r for r in result.rows if r.curve == curve]
        lines.append(
            f"| **mean** | {curve} | {_mean([r.bd_psnr for r in rows])} | "
            f"{_mean([r.bd_ms_ssim for r in rows])} | |"
        )
    return "\n".join(lines) + "\n"
