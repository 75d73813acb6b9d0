"""Candidates coded and measured: the encoder's unit of work.

A :class:`Job` holds what one ``encode`` shares between its candidates — the backend and
settings, the source, the model bank, a working folder and the bitstreams already coded (options
that pre-process alike share one, :func:`wrapcodec.pipeline.stream_key`). :meth:`Job.trial`
codes one option at one QP on a :class:`Clip` (a segment, or a probe made of some of its
frames), decodes it as the decoder will and measures it; :func:`code_all` codes several in
full at once. The search strategies (:mod:`wrapcodec.search`) decide which; the RDO
(:mod:`wrapcodec.rdo`) chooses between the trials and writes the file.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from wrapcodec import metrics
from wrapcodec.adapt import AdaptConfig, ladder_plan
from wrapcodec.adaptation import Segment, Variant, best_rung_index, climb
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.bank import Bank
from wrapcodec.container import overhead_bytes
from wrapcodec.effort import MODEL_ENCODES, QP_PER_OCTAVE, AdaptBudget, Effort, next_qp
from wrapcodec.options import Option, bottleneck_size
from wrapcodec.pipeline import (
    Coded,
    InForce,
    Layout,
    encode_stream,
    measure,
    segment_layout,
    stream_key,
    update_in_force,
)
from wrapcodec.rdoreport import AdaptationReport, CandidateReport, RungReport
from wrapcodec.y4m import VideoInfo


class ProgressSink(Protocol):
    """Where the encoder reports progress (the CLI draws a bar; the library logs nothing)."""

    def start(self, total: int) -> None: ...

    def advance(self, label: str) -> None: ...


class Silent:
    def start(self, total: int) -> None:
        pass

    def advance(self, label: str) -> None:
        pass


def default_jobs() -> int:
    """Candidates coded at once by default: one per core, at most 4 (each encode is itself
    multi-threaded)."""
    return max(1, min(4, os.cpu_count() or 1))


def kbps(bits: int, frames: int, info: VideoInfo) -> float:
    """Bits over the duration of ``frames`` frames at the source frame rate, in kbit/s."""
    return metrics.kbps(bits, frames, info.fps_num, info.fps_den)


def rd_cost(mse_8bit: float, bits: int, frames: int, info: VideoInfo, lam: float) -> float:
    """``J = D + λ·R``: D the 6:1:1 MSE in 8-bit units, R bits per source luma sample."""
    return mse_8bit + lam * bits / (frames * info.width * info.height)


@dataclass(frozen=True)
class Clip:
    """Frames ``first`` .. ``first + count − 1`` of a y4m file: what candidates are coded on."""

    path: Path
    first: int
    count: int


@dataclass
class Trial:
    option: Option
    layout: Layout
    coded: Coded
    qp: int
    bits: int
    cost: float
    update: bytes = b""  # sent with the segment
    inherit: bool = False  # the previous segment's update applies
    chain: InForce | None = None  # the update in force after the segment with this trial
    shares: str | None = None  # coded with the bitstream of this option
    qps_tried: list[int] | None = None  # bitrate mode
    # Options sharing this bitstream, measured on some of its frames: (their MSE, this MSE)
    sampled: dict[Option, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Job:
    backend: Backend
    settings: EncodeSettings
    source: Path
    info: VideoInfo
    workdir: Path
    n_segments: int
    bank: Bank | None
    effort: Effort
    adapt: AdaptConfig | None = None
    adapt_budget: AdaptBudget | None = None  # per neural candidate and segment (None: none)
    jobs: int = 1  # candidates coded at once
    pre_arithmetic: str = "float32"
    encodes: int = 0
    # (clip, stream key, QP, preset) → (stream, encode seconds, the option that coded it)
    streams: dict[tuple[Clip, str, int, str], tuple[Path, float, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _coding: dict[tuple[Clip, str, int, str], threading.Lock] = field(default_factory=dict)

    @property
    def probe_settings(self) -> EncodeSettings:
        return self.settings.model_copy(
            update={"preset": self.backend.probe_preset(self.settings.preset)}
        )

    def layout(self, opt: Option, qp: int | None = None) -> Layout:
        """``opt`` on this source; a post-only option coded at ``qp`` takes the bank's prior
        for this codec and QP where it has one (docs/format.md, "Prior")."""
        prior = 0
        if self.bank is not None and qp is not None:
            prior = self.bank.prior_for(opt, self.backend.name, qp)
        return Layout.make(
            self.info,
            opt,
            self.backend,
            self.settings.bitdepth,
            self.bank,
            pre_arithmetic=self.pre_arithmetic,
            prior=prior,
        )

    def trial(
        self,
        opt: Option,
        qp: int,
        clip: Clip,
        *,
        probe: bool = False,
        sampled: Sequence[Option] = (),
        picks: Sequence[int] = (),
    ) -> Trial:
        """``opt`` coded at ``qp`` on ``clip`` (at the probe preset when ``probe``) and
        measured; a bitstream already coded for an option that pre-processes alike is reused.
        The ``sampled`` options (sharing its bitstream) are measured beside it on the frames
        ``picks`` of the clip (:attr:`Trial.sampled`)."""
        settings = (self.probe_settings if probe else self.settings).model_copy(update={"qp": qp})
        layout = self.layout(opt, qp)
        key = (clip, stream_key(opt), qp, settings.preset)
        shares = None
        with self._lock:
            coding = self._coding.setdefault(key, threading.Lock())
        with coding:  # one thread codes a bitstream; the others wait and reuse it
            if key in self.streams:
                stream, encode_s, shares = self.streams[key]
                encode_s = 0.0
            else:
                tag = "p" if probe else "f"
                name = f"{tag}{clip.first}-{key[1].replace('/', '_')}-q{qp}"
                stream = self.workdir / f"{name}{self.backend.extension}"
                encode_s = encode_stream(
                    self.backend, settings, clip.path, layout, clip.first, clip.count, stream
                )
                with self._lock:
                    self.encodes += 1
                self.streams[key] = (stream, encode_s, opt.name)
        coded = self._measure(stream, layout, clip, sampled, picks, qp, encode_s)
        trial = self._trial(opt, layout, coded, qp, clip.count)
        trial.shares = shares
        trial.sampled = dict(zip(sampled, coded.sampled, strict=True))
        return trial

    def sample(
        self, trial: Trial, clip: Clip, options: Sequence[Option], picks: Sequence[int]
    ) -> dict[Option, tuple[float, float]]:
        """``options`` (sharing ``trial``'s bitstream) measured beside it on the frames
        ``picks`` of ``clip``: (their MSE, the trial's MSE) on those frames."""
        coded = self._measure(trial.coded.stream, trial.layout, clip, options, picks, trial.qp)
        return dict(zip(options, coded.sampled, strict=True))

    def _measure(
        self,
        stream: Path,
        layout: Layout,
        clip: Clip,
        sampled: Sequence[Option],
        picks: Sequence[int],
        qp: int,
        encode_s: float = 0.0,
    ) -> Coded:
        """``stream`` measured with ``layout`` on ``clip``, the ``sampled`` options beside it on
        the frames ``picks``."""
        samples = [(self.layout(o, qp), frozenset(picks)) for o in sampled]
        return measure(
            self.backend,
            stream,
            layout,
            clip.path,
            clip.first,
            clip.count,
            encode_s,
            samples=samples,
        )

    def _trial(
        self, opt: Option, layout: Layout, coded: Coded, qp: int, count: int, update: bytes = b""
    ) -> Trial:
        bits = 8 * (coded.payload_bytes + len(update)) + self.overhead_bits
        cost = rd_cost(coded.mse_8bit, bits, count, self.info, self.backend.qp_to_lambda(qp))
        return Trial(opt, layout, coded, qp, bits, cost, update)

    @property
    def overhead_bits(self) -> int:
        """Each segment carries its share of the container's fixed overhead."""
        return 8 * math.ceil(overhead_bytes(self.n_segments) / self.n_segments)

    def inherited(self, plain: Trial, clip: Clip, previous: InForce) -> Trial:
        """``plain`` post-processed with the update in force after the previous segment (of
        the same option), at no bytes: the segment inherits it."""
        layout, chain = segment_layout(plain.layout, b"", True, previous)
        coded = measure(
            self.backend,
            plain.coded.stream,
            layout,
            clip.path,
            clip.first,
            clip.count,
            plain.coded.encode_s,
        )
        trial = self._trial(plain.option, plain.layout, coded, plain.qp, clip.count)
        return dataclasses.replace(trial, inherit=True, chain=chain, shares=plain.shares)

    def adapted(
        self, plain: Trial, clip: Clip, previous: InForce | None
    ) -> tuple[list[Trial], AdaptationReport]:
        """``plain`` (a neural trial) with updates fitted to the segment, one per rung of the
        ladder the budget pays for (absolute and, warm-started from ``previous`` when it is
        in force for this option, relative too), each measured; the report's top-level
        figures are those of the lowest J."""
        assert self.adapt is not None
        lam = self.backend.qp_to_lambda(plain.qp)
        samples = clip.count * self.info.width * self.info.height
        height, width = (
            self.info.height + self.info.height % 2,
            self.info.width + self.info.width % 2,
        )
        crop = (min(self.adapt.crop, height), min(self.adapt.crop, width))
        budget = None if self.adapt_budget is None else self.adapt_budget.seconds(samples)
        plan = ladder_plan(self.adapt, samples, crop, budget)
        seg = Segment(
            self.backend,
            plain.coded.stream,
            plain.layout,
            clip.path,
            clip.first,
            clip.count,
            plain.coded.encode_s,
        )

        def cost(coded: Coded, update: bytes) -> float:
            return self._trial(plain.option, plain.layout, coded, plain.qp, clip.count, update).cost

        variants = climb(seg, self.adapt, plan, lam, previous, cost)
        trials = [self._variant_trial(plain, clip, v) for v in variants]
        warm = update_in_force(previous, plain.layout) is not None
        tried = [_rung_report(v, plain, warm) for v in variants]
        best = tried[best_rung_index([t.cost for t in tried])]
        report = AdaptationReport(
            steps=best.steps,
            params=best.params,
            bytes=best.bytes,
            gain_db=best.gain_db,
            seconds=sum(v.fitted.seconds for v in variants),
            rung=best.rung,
            relative=best.relative,
            budget_s=budget,
            tried=tried,
        )
        return trials, report

    def _variant_trial(self, plain: Trial, clip: Clip, v: Variant) -> Trial:
        trial = self._trial(
            plain.option, plain.layout, v.coded, plain.qp, clip.count, v.fitted.update
        )
        return dataclasses.replace(trial, chain=v.chain, shares=plain.shares)

    def fit_budget(
        self, opt: Option, clip: Clip, budget: float, start: int, capped: bool
    ) -> Trial | None:
        """The lowest-QP trial of ``opt`` whose rate is within ``budget`` kbps, or None.

        QPs come from :func:`next_qp`, starting at ``start``; ``capped`` (levels below
        exhaustive) stops after :data:`MODEL_ENCODES` encodes once one fits, keeping the lowest
        fitting QP found rather than proving it the lowest."""
        lo, hi = self.backend.qp_range
        trials: dict[int, Trial] = {}
        rates: dict[int, float] = {}
        qp: int | None = min(max(start, lo), hi)
        while qp is not None:
            trials[qp] = self.trial(opt, qp, clip)
            rates[qp] = kbps(trials[qp].bits, clip.count, self.info)
            fits = [q for q, r in rates.items() if r <= budget]
            if capped and fits and len(rates) >= MODEL_ENCODES:
                break
            qp = next_qp(rates, budget, (lo, hi), model=len(rates) < MODEL_ENCODES)
        fits = [q for q, r in rates.items() if r <= budget]
        if not fits:
            return None
        best = trials[min(fits)]
        best.qps_tried = list(rates)
        return best


def pick(variants: Sequence[Trial], budget: float | None, frames: int, info: VideoInfo) -> Trial:
    """The RDO's choice among variants of one candidate (``variants[0]`` the bank's
    post-processor): the lowest J at a QP (the first of equal ones, so the smaller or no
    update); within a bitrate ``budget`` (kbps) the highest PSNR-YUV of those that fit it,
    ``variants[0]`` if none does."""
    if budget is None:
        return min(variants, key=lambda t: t.cost)
    fitting = [t for t in variants if kbps(t.bits, frames, info) <= budget] or [variants[0]]
    return max(fitting, key=lambda t: t.coded.psnr_yuv)


def _rung_report(v: Variant, plain: Trial, warm: bool) -> RungReport:
    return RungReport(
        rung=v.rung.name.lower(),
        relative=v.fitted.relative,
        warm=warm,
        steps=v.fitted.steps,
        params=v.fitted.params,
        bytes=len(v.fitted.update),
        gain_db=v.coded.psnr_yuv - plain.coded.psnr_yuv,
        cost=v.cost,
        seconds=v.fitted.seconds,
    )


def candidate_report(trial: Trial, count: int, info: VideoInfo) -> CandidateReport:
    c = trial.coded
    bw, bh = trial.layout.bottleneck
    return CandidateReport(
        code=int(trial.option.code),
        name=trial.option.name,
        ratio=trial.option.ratio_text,
        bottleneck=f"{bw}x{bh}",
        qp=trial.qp,
        bits=trial.bits,
        kbps=kbps(trial.bits, count, info),
        psnr_y=c.psnr_y,
        psnr_u=c.psnr_u,
        psnr_v=c.psnr_v,
        psnr_yuv=c.psnr_yuv,
        mse=c.mse_8bit,
        cost=trial.cost,
        encode_s=c.encode_s,
        decode_s=c.decode_s,
        shares=trial.shares,
        qps_tried=trial.qps_tried,
    )


def bare_report(opt: Option, info: VideoInfo, **fields: object) -> CandidateReport:
    """A candidate not coded in full: skipped, or ruled out."""
    bw, bh = bottleneck_size(info.width, info.height, opt.ratio)
    return CandidateReport(
        code=int(opt.code),
        name=opt.name,
        ratio=opt.ratio_text,
        bottleneck=f"{bw}x{bh}",
        **fields,  # type: ignore[arg-type]
    )


def start_qp(anchor_qp: int, opt: Option) -> int:
    """First QP tried for ``opt`` under a budget the anchor (direct) met at ``anchor_qp``: a
    picture with r² of the samples needs about that much less rate, i.e. lower QP."""
    return anchor_qp - round(0.75 * QP_PER_OCTAVE * math.log2(1 / float(opt.ratio) ** 2))


def code_full(
    job: Job, opt: Option, clip: Clip, budget: float | None, start: int | None
) -> Trial | None:
    if budget is None:
        return job.trial(opt, job.settings.qp, clip)
    lo, hi = job.backend.qp_range
    first_qp = (lo + hi) // 2 if start is None else start
    return job.fit_budget(opt, clip, budget, first_qp, capped=job.effort.verify is not None)


def over_budget(job: Job, budget: float | None) -> str:
    """Why an option has no trial under ``budget``."""
    return f"over {budget:g} kbps even at QP {job.backend.qp_range[1]}"


def code_all(
    job: Job,
    work: Sequence[tuple[Option, int | None]],
    clip: Clip,
    budget: float | None,
    progress: ProgressSink,
) -> dict[int, Trial | None]:
    """Code each option of ``work`` in full (with its first QP under a budget), on up to
    ``job.jobs`` threads: options that share a bitstream one after the other in one thread,
    so that it is coded once. Every figure is independent of the order and the threads."""
    groups: dict[str, list[tuple[Option, int | None]]] = {}
    for opt, start in work:
        groups.setdefault(stream_key(opt), []).append((opt, start))

    def run(group: list[tuple[Option, int | None]]) -> list[tuple[int, Trial | None]]:
        out = []
        for opt, start in group:
            out.append((int(opt.code), code_full(job, opt, clip, budget, start)))
            progress.advance(opt.name)
        return out

    results: dict[int, Trial | None] = {}
    if job.jobs <= 1 or len(groups) <= 1:
        for group in groups.values():
            results.update(run(group))
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=job.jobs) as pool:
        for done in pool.map(run, groups.values()):
            results.update(done)
    return results
