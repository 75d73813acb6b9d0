"""Encoder-side rate-distortion optimisation over the wrapper options.

A candidate option coded in full is coded, decoded exactly as the decoder will, and measured;
of those, the one with the lowest Lagrangian cost wins (switchable neural wrappers, §3.3:
options chosen per sequence and signalled in 4 bits):

    J = D + λ(QP) · R

D is the 6:1:1-weighted YUV MSE in 8-bit units averaged over frames, R the bits of the whole
``.wrp`` file (header included) per source luma sample, and λ(QP) = c·2^((QP − 12)/3) the
reference-encoder relation of the codec (c = 0.85 for H.264/JM, 0.57 for HEVC/HM and VVC/VTM),
i.e. ``J · samples = SSE + λ · bits`` as in the reference encoders' mode decisions.

Which candidates are coded in full is the effort level's (:mod:`wrapcodec.effort`):
``exhaustive`` codes all of them; lower levels rule some out by a bound and estimate the rest
on a probe, and code only the best of that ranking. Options that pre-process alike share one
bitstream (:func:`wrapcodec.pipeline.stream_key`).

With a bitrate budget instead of a QP, each option coded in full gets the lowest QP whose rate
fits the budget (a rate model corrected by real encodes, :func:`wrapcodec.effort.next_qp`) and
the best PSNR-YUV among them wins.

Content adaptation (:mod:`wrapcodec.adapt`): a neural candidate coded in full is measured with
the bank's post-processor, with one fitted to the segment's decoded frames (the update's bytes
count in R) and, when the previous segment used the same option with an update, with that
update at no bytes (the segment inherits it); the lowest J wins (with a budget: the highest
PSNR-YUV within it).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from wrapcodec import ffmpeg, metrics
from wrapcodec.adapt import AdaptConfig
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.bank import Bank
from wrapcodec.container import NO_MODEL_BANK, Segment, WrpHeader, overhead_bytes, write_wrp
from wrapcodec.effort import (
    BOUND_FRAMES,
    EFFORTS,
    MODEL_ENCODES,
    QP_PER_OCTAVE,
    Effort,
    estimated_cost,
    next_qp,
    probe_frames,
    spread,
)
from wrapcodec.errors import InputError
from wrapcodec.nets import PRE_ARITHMETICS, default_pre_arithmetic
from wrapcodec.options import OPTIONS, Option, bottleneck_size, skip_reason
from wrapcodec.paths import STDIO, display_name, spool_stdin
from wrapcodec.pipeline import (
    Coded,
    Layout,
    adapt_and_measure,
    encode_stream,
    lossless_mse,
    measure,
    source_frames,
    stream_key,
)
from wrapcodec.rdoreport import (
    AdaptationReport,
    CandidateReport,
    EncodeReport,
    EstimateReport,
    ProbeReport,
    SegmentReport,
)
from wrapcodec.y4m import VideoInfo, Y4MWriter, count_frames, read_info

__all__ = [
    "AdaptationReport",
    "CandidateReport",
    "EncodeReport",
    "ProgressSink",
    "encode_file",
    "kbps",
    "rd_cost",
]


class ProgressSink(Protocol):
    """Where the encoder reports progress (the CLI draws a bar; the library logs nothing)."""

    def start(self, total: int) -> None: ...

    def advance(self, label: str) -> None: ...


class _Silent:
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
class _Clip:
    """Frames ``first`` .. ``first + count − 1`` of a y4m file: what candidates are coded on."""

    path: Path
    first: int
    count: int


@dataclass
class _Trial:
    option: Option
    layout: Layout
    coded: Coded
    qp: int
    bits: int
    cost: float
    update: bytes = b""  # sent with the segment
    inherit: bool = False  # the previous segment's update applies
    in_force: bytes = b""  # the update the decoder applies: its own or the inherited one
    shares: str | None = None  # coded with the bitstream of this option
    qps_tried: list[int] | None = None  # bitrate mode


@dataclass
class _Job:
    backend: Backend
    settings: EncodeSettings
    source: Path
    info: VideoInfo
    workdir: Path
    n_segments: int
    bank: Bank | None
    effort: Effort
    adapt: AdaptConfig | None = None
    jobs: int = 1  # candidates coded at once
    pre_arithmetic: str = "float32"
    encodes: int = 0
    # (clip, stream key, QP, preset) → (stream, encode seconds, the option that coded it)
    streams: dict[tuple[_Clip, str, int, str], tuple[Path, float, str]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _coding: dict[tuple[_Clip, str, int, str], threading.Lock] = field(default_factory=dict)

    @property
    def probe_settings(self) -> EncodeSettings:
        return self.settings.model_copy(
            update={"preset": self.backend.probe_preset(self.settings.preset)}
        )

    def layout(self, opt: Option) -> Layout:
        return Layout.make(
            self.info,
            opt,
            self.backend,
            self.settings.bitdepth,
            self.bank,
            pre_arithmetic=self.pre_arithmetic,
        )

    def trial(self, opt: Option, qp: int, clip: _Clip, *, probe: bool = False) -> _Trial:
        """``opt`` coded at ``qp`` on ``clip`` (at the probe preset when ``probe``) and
        measured; a bitstream already coded for an option that pre-processes alike is reused."""
        settings = (self.probe_settings if probe else self.settings).model_copy(update={"qp": qp})
        layout = self.layout(opt)
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
        coded = measure(self.backend, stream, layout, clip.path, clip.first, clip.count, encode_s)
        trial = self._trial(opt, layout, coded, qp, clip.count)
        trial.shares = shares
        return trial

    def _trial(
        self, opt: Option, layout: Layout, coded: Coded, qp: int, count: int, update: bytes = b""
    ) -> _Trial:
        bits = 8 * (coded.payload_bytes + len(update)) + self.overhead_bits
        cost = rd_cost(coded.mse_8bit, bits, count, self.info, self.backend.qp_to_lambda(qp))
        return _Trial(opt, layout, coded, qp, bits, cost, update, in_force=update)

    @property
    def overhead_bits(self) -> int:
        """Each segment carries its share of the container's fixed overhead."""
        return 8 * math.ceil(overhead_bytes(self.n_segments) / self.n_segments)

    def inherited(self, plain: _Trial, clip: _Clip, update: bytes) -> _Trial:
        """``plain`` post-processed with the previous segment's ``update`` (no bytes sent)."""
        coded = measure(
            self.backend,
            plain.coded.stream,
            plain.layout.with_update(update),
            clip.path,
            clip.first,
            clip.count,
            plain.coded.encode_s,
        )
        trial = self._trial(plain.option, plain.layout, coded, plain.qp, clip.count)
        return dataclasses.replace(trial, inherit=True, in_force=update, shares=plain.shares)

    def adapted(self, plain: _Trial, clip: _Clip) -> tuple[_Trial, AdaptationReport]:
        """``plain`` (a neural trial) with its post-processor fitted to the segment."""
        assert self.adapt is not None
        fitted, coded = adapt_and_measure(
            self.backend,
            plain.coded.stream,
            plain.layout,
            clip.path,
            clip.first,
            clip.count,
            self.adapt,
            plain.coded.encode_s,
        )
        trial = self._trial(plain.option, plain.layout, coded, plain.qp, clip.count, fitted.update)
        trial.shares = plain.shares
        report = AdaptationReport(
            steps=self.adapt.steps,
            params=fitted.params,
            bytes=len(fitted.update),
            gain_db=coded.psnr_yuv - plain.coded.psnr_yuv,
            seconds=fitted.seconds,
        )
        return trial, report

    def fit_budget(
        self, opt: Option, clip: _Clip, budget: float, start: int, capped: bool
    ) -> _Trial | None:
        """The lowest-QP trial of ``opt`` whose rate is within ``budget`` kbps, or None.

        QPs come from :func:`next_qp`, starting at ``start``; ``capped`` (levels below
        exhaustive) stops after :data:`MODEL_ENCODES` encodes once one fits, keeping the lowest
        fitting QP found rather than proving it the lowest."""
        lo, hi = self.backend.qp_range
        trials: dict[int, _Trial] = {}
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


def _report(trial: _Trial, count: int, info: VideoInfo) -> CandidateReport:
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


def _bare(opt: Option, info: VideoInfo, **fields: object) -> CandidateReport:
    """A candidate not coded in full: skipped, or ruled out."""
    bw, bh = bottleneck_size(info.width, info.height, opt.ratio)
    return CandidateReport(
        code=int(opt.code),
        name=opt.name,
        ratio=opt.ratio_text,
        bottleneck=f"{bw}x{bh}",
        **fields,  # type: ignore[arg-type]
    )


def _segments(frames: int, segment_frames: int | None) -> list[tuple[int, int]]:
    step = segment_frames or frames
    return [(first, min(step, frames - first)) for first in range(0, frames, step)]


def _start_qp(anchor_qp: int, opt: Option) -> int:
    """First QP tried for ``opt`` under a budget the anchor (direct) met at ``anchor_qp``: a
    picture with r² of the samples needs about that much less rate, i.e. lower QP."""
    return anchor_qp - round(0.75 * QP_PER_OCTAVE * math.log2(1 / float(opt.ratio) ** 2))


@dataclass
class _Decision:
    """One segment's candidates coded in full, and the reports of all of them."""

    trials: list[_Trial]
    reports: dict[int, CandidateReport]
    probe: ProbeReport | None = None
    probe_s: float = 0.0


def _full(
    job: _Job, opt: Option, clip: _Clip, budget: float | None, start: int | None
) -> _Trial | None:
    if budget is None:
        return job.trial(opt, job.settings.qp, clip)
    lo, hi = job.backend.qp_range
    first_qp = (lo + hi) // 2 if start is None else start
    return job.fit_budget(opt, clip, budget, first_qp, capped=job.effort.verify is not None)


def _over(job: _Job, budget: float | None) -> str:
    """Why an option has no trial under ``budget``."""
    return f"over {budget:g} kbps even at QP {job.backend.qp_range[1]}"


def _exhaustive(
    job: _Job,
    candidates: Sequence[Option],
    clip: _Clip,
    budget: float | None,
    progress: ProgressSink,
) -> _Decision:
    """Every candidate coded in full (the reference). Under a budget direct goes first, so
    that the others start their QP search from its QP."""
    decision = _Decision([], {})
    rest = [o for o in candidates if budget is None or o.code != 0]
    done: dict[int, _Trial | None] = {}
    if len(rest) < len(candidates):
        done = _code_all(job, [(OPTIONS[0], None)], clip, budget, progress)
    anchor = done.get(0)
    work = [(o, None if anchor is None else _start_qp(anchor.qp, o)) for o in rest]
    done |= _code_all(job, work, clip, budget, progress)
    for opt in candidates:
        trial = done[int(opt.code)]
        if trial is None:
            decision.reports[int(opt.code)] = _bare(opt, job.info, skipped=_over(job, budget))
        else:
            decision.trials.append(trial)
    return decision


def _code_all(
    job: _Job,
    work: Sequence[tuple[Option, int | None]],
    clip: _Clip,
    budget: float | None,
    progress: ProgressSink,
) -> dict[int, _Trial | None]:
    """Code each option of ``work`` in full (with its first QP under a budget), on up to
    ``job.jobs`` threads: options that share a bitstream one after the other in one thread,
    so that it is coded once. Every figure is independent of the order and the threads."""
    groups: dict[str, list[tuple[Option, int | None]]] = {}
    for opt, start in work:
        groups.setdefault(stream_key(opt), []).append((opt, start))

    def run(group: list[tuple[Option, int | None]]) -> list[tuple[int, _Trial | None]]:
        out = []
        for opt, start in group:
            out.append((int(opt.code), _full(job, opt, clip, budget, start)))
            progress.advance(opt.name)
        return out

    results: dict[int, _Trial | None] = {}
    if job.jobs <= 1 or len(groups) <= 1:
        for group in groups.values():
            results.update(run(group))
        return results
    with concurrent.futures.ThreadPoolExecutor(max_workers=job.jobs) as pool:
        for done in pool.map(run, groups.values()):
            results.update(done)
    return results


def _write_probe(job: _Job, clip: _Clip, picks: Sequence[int]) -> _Clip:
    """The segment's frames ``picks`` (relative to the clip) as a y4m file of their own."""
    path = job.workdir / f"probe-{clip.first}.y4m"
    wanted = set(picks)
    with Y4MWriter(path, job.info) as writer:
        for k, frame in enumerate(source_frames(clip.path, clip.first, clip.count)):
            if k in wanted:
                writer.write(frame)
    return _Clip(path, 0, len(picks))


def _probed(
    job: _Job,
    candidates: Sequence[Option],
    clip: _Clip,
    budget: float | None,
    progress: ProgressSink,
) -> _Decision:
    """Anchor in full; bound and probe the Lanczos options, then the bilinear and post
    options, then the wrappers (the dearest to probe: a network before the codec), each of
    the ratios the estimates so far leave in play; the best of the ranking in full. At a QP
    with ``jobs`` > 1 the Lanczos options are bounded and probed while the anchor is coded."""
    t0 = time.perf_counter()
    direct = OPTIONS[0]
    decision = _Decision([], {})
    bound = _Bound(job, clip, decision)
    prober = _Prober(job, clip, decision)
    lanczos = [o for o in candidates if o.kind == "lanczos"]
    if budget is None and job.jobs > 1:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            coding = pool.submit(_full, job, direct, clip, budget, None)
            bound.measure(lanczos)
            for opt in [direct, *lanczos]:
                prober.code(opt, job.settings.qp)
            anchor = coding.result()
    else:
        anchor = _full(job, direct, clip, budget, None)
    if anchor is None:  # nothing to scale the probe by: code everything
        return _exhaustive(job, candidates, clip, budget, progress)
    if direct in candidates:
        decision.trials.append(anchor)
        progress.advance(direct.name)
    # In QP mode a candidate beats the anchor only with a lower J; under a budget (both
    # within it) only with a lower D. Either way its D through an uncoded bottleneck bounds it.
    bound.limit = anchor.cost if budget is None else anchor.coded.mse_8bit
    bound.what = "J" if budget is None else "MSE"
    prober.attach(anchor)
    for opt in bound.survivors(lanczos):
        prober.estimate(opt)
    for kinds in (("bilinear", "post"), ("wrapper",)):
        stage = [o for o in candidates if o.kind in kinds]
        survivors = bound.survivors(prober.in_play(stage, bound.floors))
        prober.code_all(survivors)
        for opt in survivors:
            prober.estimate(opt)
    if prober.report is not None:
        prober.report.bound_frames = bound.picks
    decision.probe = prober.report

    estimates = sorted(prober.estimates, key=lambda e: (e.cost, int(e.option.code)))
    for rank, e in enumerate(estimates, start=1):
        if e.option.code != 0:
            _estimate_of(decision, e.option).rank = rank
    assert job.effort.verify is not None
    finalists = [e for e in estimates[: job.effort.verify] if e.option.code != 0]
    for e in estimates[job.effort.verify :]:
        if e.option.code != 0:
            decision.reports[
                int(e.option.code)
            ].pruned = f"probe estimate J {e.cost:.3f}, not among the {job.effort.verify} best"
    for report in decision.reports.values():
        if report.pruned is not None:
            progress.advance(report.name)
    decision.probe_s = time.perf_counter() - t0
    if decision.probe is not None:
        decision.probe.seconds = decision.probe_s
    work = []
    for e in finalists:
        start = None
        if budget is not None:
            est_kbps = kbps(round(e.bits), clip.count, job.info)
            start = anchor.qp + round(QP_PER_OCTAVE * math.log2(est_kbps / budget))
        work.append((e.option, start))
    done = _code_all(job, work, clip, budget, progress)
    for e in finalists:
        trial = done[int(e.option.code)]
        if trial is None:
            decision.reports[int(e.option.code)].skipped = _over(job, budget)
            continue
        _estimate_of(decision, e.option).coded = True
        decision.trials.append(trial)
    return decision


@dataclass
class _Estimate:
    cost: float  # J, estimated (the anchor's: measured)
    bits: float
    option: Option


def _estimate_of(decision: _Decision, opt: Option) -> EstimateReport:
    estimate = decision.reports[int(opt.code)].estimate
    assert estimate is not None
    return estimate


class _Bound:
    """Rules out candidates whose D through an uncoded bottleneck (on :data:`BOUND_FRAMES`
    frames) is :attr:`limit` or more."""

    def __init__(self, job: _Job, clip: _Clip, decision: _Decision) -> None:
        self.job, self.decision = job, decision
        self.limit, self.what = math.inf, "J"
        self.picks = spread(clip.count, BOUND_FRAMES)
        self.frames = [
            f
            for k, f in enumerate(source_frames(clip.path, clip.first, clip.count))
            if k in self.picks
        ]
        self.floors: dict[Option, float] = {}

    def measure(self, candidates: Sequence[Option]) -> None:
        for opt in candidates:
            if opt not in self.floors:
                self.floors[opt] = lossless_mse(self.job.layout(opt), self.frames)

    def survivors(self, candidates: Sequence[Option]) -> list[Option]:
        self.measure(candidates)
        kept: list[Option] = []
        for opt in candidates:
            floor = self.floors[opt]
            estimate = EstimateReport(method="bound", lossless_mse=floor, cost=floor)
            report = _bare(opt, self.job.info, estimate=estimate)
            if floor >= self.limit:
                report.pruned = (
                    f"uncoded-bottleneck MSE {floor:.3f} ≥ {self.what} {self.limit:.3f} of direct"
                )
            else:
                estimate.method, estimate.cost = "probe", math.inf
                kept.append(opt)
            self.decision.reports[int(opt.code)] = report
        return kept


class _Prober:
    """Codes candidates on the probe frames at the probe preset and estimates their J from
    the probe scaled by the anchor's full-to-probe ratios (the probe is made on first use)."""

    def __init__(self, job: _Job, clip: _Clip, decision: _Decision) -> None:
        self.job, self.clip, self.decision = job, clip, decision
        self.picks = probe_frames(clip.count, job.effort.window)
        self.estimates: list[_Estimate] = []
        self.report: ProbeReport | None = None
        self._anchor: _Trial | None = None
        self._probe: _Clip | None = None
        self._trials: dict[tuple[Option, int], _Trial] = {}

    def code(self, opt: Option, qp: int) -> _Trial:
        """``opt`` coded on the probe at ``qp`` (once)."""
        if self._probe is None:
            # A segment no longer than the probe is its own probe (its streams are reused
            # when the probe preset is the user's).
            whole = len(self.picks) == self.clip.count
            self._probe = self.clip if whole else _write_probe(self.job, self.clip, self.picks)
        if (opt, qp) not in self._trials:
            self._trials[opt, qp] = self.job.trial(opt, qp, self._probe, probe=True)
        return self._trials[opt, qp]

    def code_all(self, options: Sequence[Option]) -> None:
        """``options`` coded on the probe at the anchor's QP, ``jobs`` at once."""
        assert self._anchor is not None
        self._scales()  # the probe and the anchor's own probe first, on this thread
        qp = self._anchor.qp
        if self.job.jobs == 1 or len(options) < 2:
            for opt in options:
                self.code(opt, qp)
            return
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.job.jobs) as pool:
            for done in [pool.submit(self.code, opt, qp) for opt in options]:
                done.result()

    def attach(self, anchor: _Trial) -> None:
        """The anchor coded in full: the QP of the estimates and the first of them."""
        self._anchor = anchor
        self.estimates = [_Estimate(anchor.cost, 0.0, OPTIONS[0])]

    def _scales(self) -> ProbeReport:
        anchor = self._anchor
        assert anchor is not None
        if self.report is None:
            base = self.code(OPTIONS[0], anchor.qp)
            assert self._probe is not None
            full_rate = anchor.coded.payload_bytes / self.clip.count
            mse = base.coded.mse_8bit
            self.report = ProbeReport(
                frames=self.picks,
                preset=self.job.probe_settings.preset,
                anchor=OPTIONS[0].name,
                anchor_qp=anchor.qp,
                rate_scale=full_rate / (base.coded.payload_bytes / self._probe.count),
                distortion_scale=anchor.coded.mse_8bit / mse if mse else 1.0,
                bound_frames=[],
                seconds=0.0,
            )
        return self.report

    def estimate(self, opt: Option) -> None:
        scales, anchor, job = self._scales(), self._anchor, self.job
        assert anchor is not None and self._probe is not None
        t = self.code(opt, anchor.qp)
        cost, bits = estimated_cost(
            t.coded.mse_8bit,
            8 * t.coded.payload_bytes / self._probe.count,
            scales.distortion_scale,
            scales.rate_scale,
            job.overhead_bits,
            self.clip.count,
            job.info.width * job.info.height,
            job.backend.qp_to_lambda(anchor.qp),
        )
        est = _estimate_of(self.decision, opt)
        est.probe_bits, est.probe_mse, est.cost = 8 * t.coded.payload_bytes, t.coded.mse_8bit, cost
        self.estimates.append(_Estimate(cost, bits, opt))

    def in_play(self, options: Sequence[Option], floors: dict[Option, float]) -> list[Option]:
        """Those of ``options`` whose ratio's best estimate so far (direct's J counting for
        r = 1, and the bound of an option the bound ruled out as its estimate) is within the
        effort's margin of the best estimate so far; the others are ruled out."""
        margin = self.job.effort.family_margin
        if margin is None:
            return list(options)
        assert self._anchor is not None
        family = {Fraction(1): self._anchor.cost}
        for opt, floor in floors.items():  # a lower bound of the J of one ruled out
            family[opt.ratio] = min(floor, family.get(opt.ratio, math.inf))
        for e in self.estimates:
            if e.option.code != 0:
                family[e.option.ratio] = min(e.cost, family.get(e.option.ratio, math.inf))
        best = min(e.cost for e in self.estimates)
        kept = []
        for opt in options:
            linear = family.get(opt.ratio)
            if linear is None or linear <= (1 + margin) * best:
                kept.append(opt)
                continue
            self.decision.reports[int(opt.code)] = _bare(
                opt,
                self.job.info,
                estimate=EstimateReport(method="family", cost=linear),
                pruned=f"its ratio's best estimate J {linear:.3f} > {1 + margin:g} × "
                f"the best {best:.3f}",
            )
        return kept


def encode_file(
    input_path: str,
    output_path: str,
    backend: Backend,
    settings: EncodeSettings,
    options: Sequence[Option],
    *,
    bitrate_kbps: float | None = None,
    segment_frames: int | None = None,
    progress: ProgressSink | None = None,
    bank: Bank | None = None,
    adapt: AdaptConfig | None = None,
    effort: str = "exhaustive",
    jobs: int | None = None,
    pre_arithmetic: str | None = None,
) -> EncodeReport:
    """Choose an option for each segment of ``input_path`` by RDO at the given ``effort``
    (:data:`wrapcodec.effort.EFFORTS`) and write ``output_path``.

    Neural options take their networks from ``bank``; its id goes into the header when the
    file uses one. With ``adapt`` (steps > 0) each neural candidate coded in full is also tried
    with its post-processor fitted to the segment. ``jobs`` candidates are coded at once
    [:func:`default_jobs`]; the result does not depend on it. Wrappers pre-process in
    ``pre_arithmetic`` [:func:`~wrapcodec.nets.default_pre_arithmetic`].

    The arguments are checked before anything is coded. ``input_path`` ``-`` is standard input,
    spooled to a temporary file and fully read and validated up front, so that messages about
    it say "standard input" rather than the spool's name."""
    if bitrate_kbps is not None and not (math.isfinite(bitrate_kbps) and bitrate_kbps > 0):
        raise InputError(f"--bitrate {bitrate_kbps:g}: must be a positive, finite number of kbps")
    if segment_frames is not None and segment_frames < 1:
        raise InputError("--segment-frames must be at least 1")
    if adapt is not None and adapt.steps < 0:
        raise InputError("--adapt-steps must be 0 or more")
    if effort not in EFFORTS:
        raise InputError(f"--effort {effort!r}: one of {', '.join(EFFORTS)}")
    pre_arithmetic = pre_arithmetic or default_pre_arithmetic()
    if pre_arithmetic not in PRE_ARITHMETICS:
        raise InputError(
            f"--pre-arithmetic {pre_arithmetic!r}: one of {', '.join(PRE_ARITHMETICS)}"
        )
    level = EFFORTS[effort]
    progress = progress or _Silent()
    backend.validate(settings)
    ffmpeg.require(backend)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wrapcodec-") as tmp:
        workdir = Path(tmp)
        stdin = input_path == STDIO
        name = display_name(input_path)
        source = spool_stdin(workdir / "input.y4m") if stdin else Path(input_path)
        info = read_info(source, name=name)
        frames = count_frames(source, name=name, validate=stdin)
        if frames == 0:
            raise InputError(f"{name}: no frames")
        ranges = _segments(frames, segment_frames)
        job = _Job(
            backend,
            settings,
            source,
            info,
            workdir,
            len(ranges),
            bank,
            level,
            adapt if adapt is not None and adapt.steps > 0 else None,
            jobs=jobs or default_jobs(),
            pre_arithmetic=pre_arithmetic,
        )
        usable = [o for o in options if skip_reason(o, info.width, info.height) is None]
        if not usable:
            raise InputError(f"{name}: no option is usable at {info.width}x{info.height}")
        progress.start(len(usable) * len(ranges))

        seg_reports: list[SegmentReport] = []
        segments: list[Segment] = []
        adapt_s = probe_s = 0.0
        in_force: tuple[int, bytes] | None = None  # the last segment's option and update
        for first, count in ranges:
            clip = _Clip(source, first, count)
            search = _exhaustive if level.verify is None or len(usable) == 1 else _probed
            decision = search(job, usable, clip, bitrate_kbps, progress)
            probe_s += decision.probe_s
            trials: list[_Trial] = []
            for trial in decision.trials:
                adaptation = None
                if job.adapt is not None and trial.option.neural:
                    t0 = time.perf_counter()
                    inheritable = (
                        in_force if in_force and in_force[0] == trial.option.code else None
                    )
                    trial, adaptation = _with_adaptation(
                        job, trial, clip, bitrate_kbps, inheritable[1] if inheritable else None
                    )
                    adapt_s += time.perf_counter() - t0
                trials.append(trial)
                report = _report(trial, count, info)
                report.adaptation = adaptation
                before = decision.reports.get(int(trial.option.code))
                report.estimate = before.estimate if before is not None else None
                decision.reports[int(trial.option.code)] = report
            if not trials:
                raise InputError(f"no option reaches {bitrate_kbps:g} kbps on frames {first}..")
            if bitrate_kbps is None:
                best = min(trials, key=lambda t: t.cost)
            else:
                best = max(trials, key=lambda t: t.coded.psnr_yuv)
            reports = [
                decision.reports.get(int(o.code))
                or _bare(o, info, skipped=skip_reason(o, info.width, info.height))
                for o in options
            ]
            for report in reports:
                report.chosen = report.code == int(best.option.code) and report.qp is not None
            bw, bh = best.layout.bottleneck
            segments.append(
                Segment(
                    option=int(best.option.code),
                    first_frame=first,
                    frame_count=count,
                    bottleneck_width=bw,
                    bottleneck_height=bh,
                    payload=best.coded.stream.read_bytes(),
                    update=best.update,
                    inherit=best.inherit,
                )
            )
            in_force = (int(best.option.code), best.in_force) if best.in_force else None
            seg_reports.append(
                SegmentReport(
                    first_frame=first,
                    frame_count=count,
                    option=int(best.option.code),
                    option_name=best.option.name,
                    probe=decision.probe,
                    candidates=reports,
                )
            )

        neural = bank is not None and any(OPTIONS[s.option].neural for s in segments)
        header = WrpHeader(
            codec_id=backend.codec_id,
            model_bank_id=bank.id_for(bank.integer)
            if bank is not None and neural
            else NO_MODEL_BANK,
            integer=bank is not None and neural and bank.integer,
            width=info.width,
            height=info.height,
            bitdepth=info.bitdepth,
            chroma=int(info.chroma),
            bottleneck_bitdepth=settings.bitdepth,
            fps_num=info.fps_num,
            fps_den=info.fps_den,
            aspect_num=info.aspect_num,
            aspect_den=info.aspect_den,
            frame_count=frames,
            color_range=info.color_range,
        )
        write_wrp(output_path, header, segments)
        total_bits = 8 * (
            overhead_bytes(len(segments)) + sum(len(s.payload) + len(s.update) for s in segments)
        )

    chosen = [next(c for c in s.candidates if c.chosen) for s in seg_reports]
    weights = [s.frame_count for s in seg_reports]
    first_choice = seg_reports[0]
    return EncodeReport(
        input=input_path,
        output=output_path,
        codec=backend.name,
        preset=settings.preset,
        effort=level.name,
        pre_arithmetic=pre_arithmetic,
        bitdepth=settings.bitdepth,
        qp=None if bitrate_kbps else settings.qp,
        bitrate_budget_kbps=bitrate_kbps,
        rdo_lambda=None if bitrate_kbps else backend.qp_to_lambda(settings.qp),
        width=info.width,
        height=info.height,
        frames=frames,
        fps=f"{info.fps_num}/{info.fps_den}",
        option=first_choice.option,
        option_name=first_choice.option_name,
        ratio=next(c.ratio for c in first_choice.candidates if c.chosen),
        bits=total_bits,
        kbps=kbps(total_bits, frames, info),
        psnr_y=_frame_weighted([c.psnr_y for c in chosen], weights),
        psnr_yuv=_frame_weighted([c.psnr_yuv for c in chosen], weights),
        candidates=first_choice.candidates,
        segments=seg_reports,
        timings={
            "total_s": time.perf_counter() - t_start,
            "adapt_s": adapt_s,
            "probe_s": probe_s,
        },
        encodes=job.encodes,
    )


def _with_adaptation(
    job: _Job,
    plain: _Trial,
    clip: _Clip,
    budget: float | None,
    inheritable: bytes | None,
) -> tuple[_Trial, AdaptationReport]:
    """The best of ``plain``, ``plain`` with an update fitted to the segment and, when the
    previous segment used this option with an update (``inheritable``), ``plain`` reusing
    that update: lowest J at a QP, or highest PSNR-YUV within a bitrate budget."""
    adapted, report = job.adapted(plain, clip)
    variants = [plain, adapted]
    if inheritable:
        variants.append(job.inherited(plain, clip, inheritable))
        report.inherited_gain_db = variants[-1].coded.psnr_yuv - plain.coded.psnr_yuv
    if budget is None:
        report.cost_without, report.cost_with = plain.cost, adapted.cost
        if inheritable:
            report.cost_inherited = variants[-1].cost
        best = min(variants, key=lambda t: t.cost)
    else:
        fitting = [t for t in variants if kbps(t.bits, clip.count, job.info) <= budget] or [plain]
        best = max(fitting, key=lambda t: t.coded.psnr_yuv)
    report.used = best is adapted
    report.inherited = best.inherit
    best.qps_tried = plain.qps_tried
    return best, report


def _frame_weighted(values: Sequence[float | None], weights: Sequence[int]) -> float:
    """Per-frame averages of segments combined into the average over all frames."""
    return sum(float(v or 0.0) * w for v, w in zip(values, weights, strict=True)) / sum(weights)
