"""``wrapcodec bench-effort``: what each effort level of the encoder costs and loses.

For every sequence and QP it codes the clip once with the codec alone (option 0's encode: the
pre-processing sample conversion and the codec, as ``encode`` runs it, no decoding or
measuring) and runs ``encode`` at each effort level, all in one process, one after the other,
so that no timing shares the machine with another. Per effort level it reports the wall time
of ``encode`` over that one direct encode, and the BD-rate (PSNR-YUV) of its RD curve (the
chosen options at the QPs) against ``exhaustive``'s, per sequence and as a mean.

Timings are of a warm process: the networks and the integer kernels are loaded by a first,
unmeasured encode; the CLI adds its start-up to every run. Runs go through the bench's cache
and runner (:mod:`wrapcodec.bench.cache`, :mod:`wrapcodec.bench.run`) under the key of their
:class:`EffortSpec` (sequence, QP, effort, settings), so an interrupted run resumes; cached
times are from the run that made them.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from wrapcodec import ffmpeg
from wrapcodec.adapt import REVISION as ADAPT_REVISION
from wrapcodec.adapt import AdaptConfig
from wrapcodec.backend import Backend, EncodeSettings, get_backend
from wrapcodec.bank import Bank, get_bank
from wrapcodec.bdrate import BDRateError, Curve, bd_rate
from wrapcodec.bench.cache import Cache, digest
from wrapcodec.bench.plan import sequences
from wrapcodec.bench.report import versions, write_text_files
from wrapcodec.bench.run import run_cached
from wrapcodec.encode import EncodeConfig, EncodeReport, ProgressSink, encode_file
from wrapcodec.encode.efforts import EFFORTS
from wrapcodec.encode.search import REVISION as SEARCH_REVISION
from wrapcodec.encode.trials import default_jobs as encode_jobs
from wrapcodec.errors import InputError
from wrapcodec.options import OPTIONS
from wrapcodec.paths import sha256_file
from wrapcodec.pipeline import REVISION, Layout, encode_stream
from wrapcodec.y4m import count_frames, read_info

REFERENCE = "exhaustive"


class EffortConfig(BaseModel):
    """A ``bench-effort`` run as the user asked for it."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    codec: str
    qps: list[int] = Field(default_factory=lambda: [22, 27, 32, 37, 42, 47])
    preset: str | None = None
    bitdepth: int = 10
    options: list[int]  # the encoder's candidates
    efforts: list[str]  # the levels measured, exhaustive included (:func:`levels`)
    adapt_steps: int = Field(default=0, ge=0)  # the same for every level, so they compare
    jobs: int | None = None  # candidates each encode codes at once [the encoder's default]
    pre_arithmetic: str = "float32"
    models: str | None = None


class EffortSpec(BaseModel):
    """Everything that determines one ``encode`` of the effort bench (the cache key is its
    hash; ``sequence`` and ``path`` are not part of it)."""

    model_config = ConfigDict(frozen=True)

    sequence: str
    path: str
    source: str  # sha256 of the sequence
    codec: str
    preset: str
    bitdepth: int
    qp: int
    options: list[int]
    bank: str  # the model bank's id
    adapt_steps: int
    revision: int = REVISION
    jobs: int
    pre_arithmetic: str = "float32"
    effort: str

    def key(self) -> str:
        """The cache key; float32 runs keep the keys they had before ``pre_arithmetic``; a run
        that adapts holds the fit's revision (:data:`wrapcodec.adapt.REVISION`)."""
        fields = self.model_dump(exclude={"sequence", "path", "effort", "pre_arithmetic"})
        if self.pre_arithmetic != "float32":
            fields["pre_arithmetic"] = self.pre_arithmetic
        if self.adapt_steps:  # a run that adapts is the fit's too
            fields["adapt_revision"] = ADAPT_REVISION
        return digest({**fields, **_effort_fields(self.effort)})


class EffortRun(BaseModel):
    """One ``encode`` of one sequence at one QP and effort level."""

    sequence: str
    qp: int
    effort: str
    option: str
    kbps: float
    psnr_yuv: float
    seconds: float  # encode_file's wall time
    direct_s: float  # one direct encode of the same clip, measured just before
    encodes: int  # encoder runs, probes included
    jobs: int = 1  # candidates coded at once


class EffortFigures(BaseModel):
    """One effort level over the runs: time over one direct encode (median and range), total
    seconds, encodes per run, BD-rate against ``exhaustive`` per sequence (None: not
    computable), their mean and worst, and how often the choice was exhaustive's."""

    runs: int
    time_ratio_median: float | None
    time_ratio_min: float | None
    time_ratio_max: float | None
    seconds_total: float
    direct_seconds_total: float
    encodes_mean: int | float | None  # statistics.mean keeps a whole mean of counts an int
    bd_rate_vs_exhaustive: dict[str, float | None]
    bd_rate_vs_exhaustive_mean: float | None
    bd_rate_vs_exhaustive_max: float | None
    same_choice: str  # "n/m"


class EffortSummary(BaseModel):
    """The figures of every effort level."""

    sequences: list[str]
    efforts: dict[str, EffortFigures]


class EffortResults(EffortSummary):
    """What ``bench-effort`` found: results.json (``model_dump``)."""

    command: str
    runs: list[EffortRun]


def levels(names: Sequence[str]) -> list[str]:
    """``--efforts`` resolved: the levels named and :data:`REFERENCE`, in :data:`EFFORTS`' order."""
    unknown = [e for e in names if e not in EFFORTS]
    if unknown:
        raise InputError(f"--efforts: unknown level {unknown[0]!r} (known: {', '.join(EFFORTS)})")
    return [e for e in EFFORTS if e in names or e == REFERENCE]


def searches() -> list[str]:
    """The levels whose searches differ when nothing is adapted: of levels that differ only in
    the adaptation's budget (``slow`` and ``medium``), the first."""
    seen: list[Any] = []
    names = []
    for level in EFFORTS.values():
        search = dataclasses.replace(level, name="", description="", adapt_budget=None)
        if search not in seen:
            seen.append(search)
            names.append(level.name)
    return names


def default_levels(adapting: bool) -> list[str]:
    """The levels measured when none are named: every one when the encodes adapt, else only
    those whose searches differ (:func:`searches`: ``slow`` would measure ``medium`` again)."""
    return list(EFFORTS) if adapting else searches()


def _effort_fields(name: str) -> dict[str, Any]:
    """What names an effort level's run in the cache: below exhaustive, its parameters and
    the search's revision too (a run of a level that has since changed is measured again)."""
    level = EFFORTS[name]
    if level.verify is None:  # exhaustive: every option coded in full, as ever
        return {"effort": name}
    params = dataclasses.asdict(level)
    params.pop("description")
    return {"effort": name, "search": {**params, "revision": SEARCH_REVISION}}


def plan(config: EffortConfig, backend: Backend, bank: Bank) -> list[EffortSpec]:
    """Every (sequence, QP, effort) of the run, in that order."""
    jobs = config.jobs or encode_jobs()
    specs = []
    for path in sequences(Path(config.dataset)):
        digest_ = sha256_file(path)
        for qp in config.qps:
            specs += [
                EffortSpec(
                    sequence=path.stem,
                    path=str(path),
                    source=digest_,
                    codec=backend.name,
                    preset=config.preset or backend.default_preset,
                    bitdepth=config.bitdepth,
                    qp=qp,
                    options=config.options,
                    bank=bank.id_for(bank.integer).hex(),
                    adapt_steps=config.adapt_steps,
                    jobs=jobs,
                    pre_arithmetic=config.pre_arithmetic,
                    effort=effort,
                )
                for effort in config.efforts
            ]
    return specs


def direct_encode_seconds(
    backend: Backend, settings: EncodeSettings, path: Path, frames: int, workdir: Path
) -> float:
    """Seconds of one encode of ``path`` by the codec alone, as ``encode`` codes option 0."""
    info = read_info(path)
    layout = Layout.make(info, OPTIONS[0], backend, settings.bitdepth)
    stream = workdir / f"direct{backend.extension}"
    return encode_stream(backend, settings, path, layout, 0, frames, stream)


class _Measure:
    """Runs the effort bench's encodes in this process, one after the other: before the first
    one, an unmeasured encode loads networks and kernels; before the first one of each
    (sequence, QP), one direct encode of the clip is timed."""

    def __init__(self, backend: Backend, bank: Bank, workdir: Path) -> None:
        self.backend = backend
        self.bank = bank
        self.workdir = workdir
        self.warm = False
        self.direct_s: dict[tuple[str, int], float] = {}

    def encode(self, spec: EffortSpec, effort: str) -> EncodeReport:
        config = EncodeConfig(
            backend=self.backend,
            settings=self._settings(spec),
            options=tuple(OPTIONS[c] for c in spec.options),
            bank=self.bank,
            adapt=AdaptConfig(steps=spec.adapt_steps),
            effort=effort,
            jobs=spec.jobs,
            pre_arithmetic=spec.pre_arithmetic,
        )
        return encode_file(spec.path, str(self.workdir / "out.wrp"), config)

    def _settings(self, spec: EffortSpec) -> EncodeSettings:
        return EncodeSettings(qp=spec.qp, preset=spec.preset, bitdepth=spec.bitdepth)

    def __call__(self, spec: EffortSpec) -> EffortRun:
        group = (spec.path, spec.qp)
        if group not in self.direct_s:
            if not self.warm:  # load networks and kernels outside any timing
                self.encode(spec, "fast")
                self.warm = True
            path = Path(spec.path)
            self.direct_s[group] = direct_encode_seconds(
                self.backend, self._settings(spec), path, count_frames(path), self.workdir
            )
        report = self.encode(spec, spec.effort)
        return EffortRun(
            sequence=spec.sequence,
            qp=spec.qp,
            effort=spec.effort,
            option=report.option_name,
            kbps=report.kbps,
            psnr_yuv=report.psnr_yuv,
            seconds=report.timings["total_s"],
            direct_s=self.direct_s[group],
            encodes=report.encodes,
            jobs=spec.jobs,
        )


def run(
    specs: Sequence[EffortSpec],
    backend: Backend,
    bank: Bank,
    cache: Cache[EffortRun],
    progress: ProgressSink | None = None,
) -> list[EffortRun]:
    """Every run of ``specs``, from the cache or measured now (in this process, in order)."""

    def advance(r: EffortRun, _hit: bool) -> None:
        if progress is not None:
            progress.advance(f"{r.sequence[:12]} QP {r.qp} {r.effort}")

    if progress is not None:
        progress.start(len(specs))
    with tempfile.TemporaryDirectory(prefix="wrapcodec-effort-") as tmp:
        measure = _Measure(backend, bank, Path(tmp))
        runs, _ = run_cached(specs, cache, measure, on_result=advance)
    return runs


def summarise(runs: Sequence[EffortRun], efforts: Sequence[str]) -> EffortSummary:
    """Per effort level: time over one direct encode (median and range over the runs) and the
    BD-rate against ``exhaustive`` per sequence and their mean; how often the choice was
    exhaustive's."""
    by: dict[tuple[str, str], list[EffortRun]] = {}
    for r in runs:
        by.setdefault((r.sequence, r.effort), []).append(r)
    seqs = sorted({r.sequence for r in runs})
    figures: dict[str, EffortFigures] = {}
    for effort in efforts:
        mine = [r for r in runs if r.effort == effort]
        ratios = [r.seconds / r.direct_s for r in mine if r.direct_s > 0]
        per_seq: dict[str, float | None] = {}
        same = 0
        for seq in seqs:
            ref = sorted(by.get((seq, REFERENCE), []), key=lambda r: r.qp)
            test = sorted(by.get((seq, effort), []), key=lambda r: r.qp)
            same += sum(a.option == b.option for a, b in zip(ref, test, strict=False))
            per_seq[seq] = _bd_rate(ref, test)
        values = [v for v in per_seq.values() if v is not None]
        figures[effort] = EffortFigures(
            runs=len(mine),
            time_ratio_median=statistics.median(ratios) if ratios else None,
            time_ratio_min=min(ratios, default=None),
            time_ratio_max=max(ratios, default=None),
            seconds_total=sum(r.seconds for r in mine),
            direct_seconds_total=sum(r.direct_s for r in mine),
            encodes_mean=statistics.mean(r.encodes for r in mine) if mine else None,
            bd_rate_vs_exhaustive=per_seq,
            bd_rate_vs_exhaustive_mean=statistics.mean(values) if values else None,
            bd_rate_vs_exhaustive_max=max(values, default=None),
            same_choice=f"{same}/{len(mine)}",
        )
    return EffortSummary(sequences=seqs, efforts=figures)


def _bd_rate(ref: Sequence[EffortRun], test: Sequence[EffortRun]) -> float | None:
    """BD-rate (PSNR-YUV) of ``test``'s RD curve against ``ref``'s; None when not computable."""
    if len(ref) < 2 or len(test) < 2:
        return None
    try:
        return bd_rate(
            Curve.of([r.kbps for r in ref], [r.psnr_yuv for r in ref]),
            Curve.of([r.kbps for r in test], [r.psnr_yuv for r in test]),
        ).bd_rate
    except BDRateError:
        return None


def markdown(summary: EffortSummary, command: str, versions: dict[str, str]) -> str:
    """The summary as a report."""
    lines = [
        "# Effort levels",
        "",
        f"`{command}`",
        "",
        *(f"- {k}: {v}" for k, v in versions.items()),
        "",
        "Time: `encode`'s wall time over one direct encode of the same clip (median, min–max "
        "over sequences × QPs). BD-rate: PSNR-YUV, the effort's curve against exhaustive's.",
        "",
        "| effort | time × direct | min–max | encodes | BD-rate vs exhaustive (mean) | worst "
        "sequence | same choice |",
        "|---|---|---|---|---|---|---|",
    ]
    for effort, e in summary.efforts.items():
        lines.append(
            f"| {effort} | {_f(e.time_ratio_median, '.2f')} | "
            f"{_f(e.time_ratio_min, '.2f')}–{_f(e.time_ratio_max, '.2f')} | "
            f"{_f(e.encodes_mean, '.1f')} | {_f(e.bd_rate_vs_exhaustive_mean, '+.3f')} % | "
            f"{_f(e.bd_rate_vs_exhaustive_max, '+.3f')} % | {e.same_choice} |"
        )
    lines += ["", "| sequence | " + " | ".join(summary.efforts) + " |"]
    lines.append("|---|" + "---|" * len(summary.efforts))
    for seq in summary.sequences:
        cells = [_f(e.bd_rate_vs_exhaustive.get(seq), "+.3f") for e in summary.efforts.values()]
        lines.append(f"| {seq} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _f(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def run_effort_bench(
    config: EffortConfig, folder: Path, command: str, progress: ProgressSink | None = None
) -> tuple[EffortResults, str]:
    """``wrapcodec bench-effort``: every run of ``config`` (from ``folder``'s cache or measured
    now), summarised; writes results.json and report.md to ``folder``.

    ``command`` is the command line as resolved. Returns the results and the report."""
    backend = get_backend(config.codec)
    ffmpeg.require(backend)
    bank = get_bank(config.models)
    specs = plan(config, backend, bank)
    runs = run(specs, backend, bank, Cache(folder / "cache", EffortRun), progress)
    summary = summarise(runs, config.efforts)
    results = EffortResults(**dict(summary), command=command, runs=runs)
    report = markdown(summary, command, versions(backend, bank))
    text = json.dumps(results.model_dump(), indent=1)
    write_text_files(folder, [("results.json", text), ("report.md", report)])
    return results, report
