"""One segment coded: the search and content adaptation choose its option
(:func:`choose`), and :func:`code_segment` runs that as one self-contained task, so that a
worker process or a Dask worker can code it from the segment's frames and the model bank
alone. :func:`chain_after` is the update a segment leaves in force for the next one, by the
decoder's own rule.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from wrapcodec.adapt import one_torch_thread, shard_threads
from wrapcodec.container import Segment
from wrapcodec.encode import lagrange
from wrapcodec.encode.adapting import with_adaptation
from wrapcodec.encode.config import EncodeConfig
from wrapcodec.encode.efforts import depth_probe
from wrapcodec.encode.report import (
    AdaptationReport,
    DepthReport,
    LambdaReport,
    ProgressSink,
    SegmentReport,
    Silent,
    bare_report,
    candidate_report,
)
from wrapcodec.encode.rounds import Rounds
from wrapcodec.encode.search import exhaustive, probed, write_probe
from wrapcodec.encode.trials import Clip, Job, Trial, default_jobs
from wrapcodec.errors import InputError
from wrapcodec.options import Option, OptionCode, option, skip_reason
from wrapcodec.pipeline import InForce, Layout, segment_layout
from wrapcodec.workers import release_memory
from wrapcodec.y4m import VideoInfo


@dataclass
class Timings:
    """Where a segment's encode time went."""

    adapt_s: float = 0.0  # content adaptation
    probe_s: float = 0.0  # probing, bound included


@dataclass(frozen=True)
class SegmentTask:
    """What coding one segment needs: the encode, the source's header, the options usable at
    its size, the segment's place in the file, its frames (the source's path, or the
    segment's own frames as the bytes of a y4m file) and the update left in force by the
    segment before it in its chain."""

    config: EncodeConfig
    info: VideoInfo
    usable: tuple[Option, ...]
    n_segments: int
    index: int
    first: int
    count: int
    source: Path | bytes
    in_force: InForce | None
    jobs: int | None = None  # candidates coded at once (None: the default)
    offset: int | None = None  # where the segment starts in ``source`` (None: at ``first``)


@dataclass(frozen=True)
class SegmentDone:
    """A segment coded: its container record and report, the encoder runs it took and
    where its time went."""

    index: int
    segment: Segment
    report: SegmentReport
    encodes: int
    adapt_s: float
    probe_s: float


def code_segment(task: SegmentTask, progress: ProgressSink | None = None) -> SegmentDone:
    """Choose and code the option of ``task``'s segment, in a temporary folder of its own;
    ``progress`` hears of every candidate judged. The memory it used is given back when it
    ends (:func:`~wrapcodec.workers.release_memory`), so that coding segment after segment
    does not grow the process."""
    try:
        return _code_segment(task, progress)
    finally:
        release_memory()


def _code_segment(task: SegmentTask, progress: ProgressSink | None) -> SegmentDone:
    with tempfile.TemporaryDirectory(prefix="wrapcodec-") as tmp:
        workdir = Path(tmp)
        if isinstance(task.source, bytes):
            path = workdir / "segment.y4m"
            path.write_bytes(task.source)
            clip = Clip(path, 0, task.count)
        else:
            start = task.first if task.offset is None else task.offset
            clip = Clip(task.source, start, task.count)
        job = make_job(task.config, task.info, workdir, task.n_segments, task.jobs)
        timings = Timings()
        job, depths, lam = priced_at_best_depth(job, task.config, task.usable, clip, timings)
        best, report = choose(
            job, task.config, task.usable, clip, task.in_force, progress or Silent(), timings
        )
        report = report.model_copy(
            update={"bitdepth": job.settings.bitdepth, "depths": depths, "lam": lam}
        )
        return SegmentDone(
            index=task.index,
            segment=record(best, task.first, task.count),
            report=report.model_copy(update={"first_frame": task.first}),
            encodes=job.streams.encodes,
            adapt_s=timings.adapt_s,
            probe_s=timings.probe_s,
        )


def make_job(
    config: EncodeConfig, info: VideoInfo, workdir: Path, n_segments: int, jobs: int | None
) -> Job:
    """The shared state of ``config``'s candidates on a source of ``info``."""
    return Job(
        config.backend,
        config.settings,
        info,
        workdir,
        n_segments,
        config.bank,
        config.level,
        config.adaptation,
        adapt_budget=config.budget,
        jobs=jobs or default_jobs(),
        pre_arithmetic=config.pre_arithmetic,
    )


def priced_at_best_depth(
    job: Job, config: EncodeConfig, usable: tuple[Option, ...], clip: Clip, timings: Timings
) -> tuple[Job, list[DepthReport], LambdaReport | None]:
    """``job`` at its best depth (:func:`at_best_depth`, at the codec's λ(QP)), then pricing
    bits at the λ measured on ``clip`` at that depth when ``config`` measures it
    (:mod:`~wrapcodec.encode.lagrange`), so that every candidate is judged as at a fixed
    ``--bitdepth`` of that depth; at the codec's λ(QP), an update's quantisation prices its
    bits at that λ times the codec's :attr:`~wrapcodec.backend.Backend.slope_scale`
    (:attr:`~wrapcodec.encode.trials.Job.update_scale`).

    The depth is chosen at the relation's λ: a measured λ, several times higher, tips near
    ties of direct coding to 10 bits, where the adapted candidates gain less than at 8
    (docs/measurements.md, "λ measured per segment")."""
    job, depths = at_best_depth(job, config, clip)
    if not config.measures_lambda(usable):
        return replace(job, update_scale=job.backend.slope_scale), depths, None
    job, lam = lagrange.measure(job, clip)
    timings.probe_s += lam.seconds
    return job, depths, lam


def at_best_depth(job: Job, config: EncodeConfig, clip: Clip) -> tuple[Job, list[DepthReport]]:
    """``job`` at the bottleneck bit depth of ``config.bitdepths`` whose direct coding has the
    lowest J (the first of equals), and that coding at each depth; ``job`` itself and no report
    where there is one depth.

    Direct coding is measured on the whole of ``clip`` or, where the effort level has a depth
    window and the segment is long enough, on the windows of :func:`depth_probe` (a clip of
    their own, coded at the user's preset): the candidates, direct coding included, are then
    coded at the depth chosen. On the whole clip, the direct bitstream of the depth chosen is
    kept in the job's streams, so the anchor reuses it.

    The choice is direct coding's, made once for every candidate: a codec that codes the
    source better at one depth (x264 codes camera content at 8 bits better at low QPs, at 10
    bits at high ones) codes the pre- and post-processed options' bottlenecks better there
    too, and coding every candidate at each depth would double the encode."""
    if len(config.bitdepths) == 1:
        return job, []
    direct = option(OptionCode.DIRECT)
    jobs = [job.at_depth(depth) for depth in config.bitdepths]
    picks = depth_probe(clip.count, job.effort.depth_window)
    judged = clip if picks is None else write_probe(job, clip, picks, "depth")
    tag = "" if picks is None else "depth-"
    trials = [at.trial(direct, at.settings.qp, judged, tag=tag) for at in jobs]
    reports = [
        DepthReport(
            bitdepth=at.settings.bitdepth,
            kbps=at.kbps(t.bits, judged.count),
            psnr_yuv=t.coded.psnr_yuv,
            cost=t.cost,
            frames=None if picks is None else judged.count,
        )
        for at, t in zip(jobs, trials, strict=True)
    ]
    best = min(range(len(jobs)), key=lambda k: trials[k].cost)  # the first of equals
    return jobs[best], reports


def choose(
    job: Job,
    config: EncodeConfig,
    usable: Sequence[Option],
    clip: Clip,
    in_force: InForce | None,
    progress: ProgressSink,
    timings: Timings,
) -> tuple[Trial, SegmentReport]:
    """The best trial of one segment (the lowest J at a QP, the highest PSNR-YUV within a
    bitrate budget) and the report of every candidate option on it."""
    budget = config.bitrate_kbps
    search = exhaustive if job.effort.verify is None or len(usable) == 1 else probed
    decision = search(job, usable, clip, budget, progress)
    timings.probe_s += decision.probe_s
    trials: list[Trial] = []
    for trial, adaptation in _adapted(job, decision.trials, clip, budget, in_force, timings):
        trials.append(trial)
        report = candidate_report(trial, clip.count, job.info)
        report.adaptation = adaptation
        before = decision.reports.get(int(trial.option.code))
        report.estimate = before.estimate if before is not None else None
        decision.reports[int(trial.option.code)] = report
    if not trials:
        raise InputError(f"no option reaches {budget:g} kbps on a segment of {clip.count} frames")
    if budget is None:
        best = min(trials, key=lambda t: t.cost)
    else:
        best = max(trials, key=lambda t: t.coded.psnr_yuv)
    info = job.info
    reports = [
        decision.reports.get(int(o.code))
        or bare_report(o, info, skipped=skip_reason(o, info.width, info.height))
        for o in config.options
    ]
    for report in reports:
        report.chosen = report.code == int(best.option.code) and report.qp is not None
    return best, SegmentReport(
        first_frame=clip.first,
        frame_count=clip.count,
        option=int(best.option.code),
        option_name=best.option.name,
        probe=decision.probe,
        candidates=reports,
    )


def _adapted(
    job: Job,
    trials: Sequence[Trial],
    clip: Clip,
    budget: float | None,
    in_force: InForce | None,
    timings: Timings,
) -> list[tuple[Trial, AdaptationReport | None]]:
    """Each of ``trials``, a neural one with content adaptation (:func:`with_adaptation`).

    The neural ones are adapted on up to ``job.jobs`` threads at once, one torch thread
    each, and their steps' shards share ``job.jobs`` more (:func:`shard_threads`): every
    fit is seeded and sums its shards in a fixed order, so the figures are those of one
    after the other on one thread. At a QP, where the effort sets a reach, they climb in
    rounds (:func:`_in_rounds`)."""
    neural = [k for k, t in enumerate(trials) if job.adapt is not None and t.option.neural]
    out: list[tuple[Trial, AdaptationReport | None]] = [(t, None) for t in trials]
    if not neural:
        return out
    factor = job.effort.adapt_reach

    def adapt(k: int) -> tuple[Trial, AdaptationReport]:
        return with_adaptation(job, trials[k], clip, budget, in_force)

    t0 = time.perf_counter()
    with shard_threads(job.jobs):
        if factor is not None and budget is None and len(neural) > 1:
            done = _in_rounds(job, trials, neural, clip, in_force, factor)
        elif job.jobs <= 1 or len(neural) == 1:
            done = [adapt(k) for k in neural]
        else:
            with one_torch_thread(), ThreadPoolExecutor(max_workers=job.jobs) as pool:
                done = list(pool.map(adapt, neural))
    timings.adapt_s += time.perf_counter() - t0
    for k, result in zip(neural, done, strict=True):
        out[k] = result
    return out


def _in_rounds(
    job: Job,
    trials: Sequence[Trial],
    neural: Sequence[int],
    clip: Clip,
    in_force: InForce | None,
    factor: float,
) -> list[tuple[Trial, AdaptationReport]]:
    """``trials[k]`` for each ``k`` of ``neural`` with content adaptation, their climbs in
    :class:`~wrapcodec.encode.rounds.Rounds`: each climbs a rung further only while it can
    reach the lowest J of the other neural candidates. One thread per candidate, ``job.jobs``
    of them computing at once."""
    rounds = Rounds([trials[k].cost for k in neural], factor, job.jobs)

    def adapt(i: int) -> tuple[Trial, AdaptationReport]:
        with rounds.turn(i) as pace:
            return with_adaptation(job, trials[neural[i]], clip, None, in_force, pace)

    with one_torch_thread(), ThreadPoolExecutor(max_workers=len(neural)) as pool:
        return list(pool.map(adapt, range(len(neural))))


def record(best: Trial, first: int, count: int) -> Segment:
    """The container's record of ``best`` chosen for frames ``first`` .. ``first + count − 1``."""
    bw, bh = best.layout.bottleneck
    return Segment(
        option=int(best.option.code),
        first_frame=first,
        frame_count=count,
        bottleneck_width=bw,
        bottleneck_height=bh,
        payload=best.coded.stream.read_bytes(),
        update=best.update,
        inherit=best.inherit,
        prior=best.layout.prior,
        bottleneck_bitdepth=best.layout.bitdepth,
    )


def chain_after(
    config: EncodeConfig, info: VideoInfo, segment: Segment, previous: InForce | None
) -> InForce | None:
    """The update in force after ``segment``, ``previous`` the one before it: what the decoder
    derives from the container (:func:`~wrapcodec.pipeline.segment_layout`), and so what the
    next segment of the chain is fitted from and measured with, however it was coded
    (resumed from a work folder, or on another machine)."""
    opt = option(segment.option)
    if not opt.neural:
        return None
    layout = Layout.make(
        info,
        opt,
        config.backend,
        segment.bottleneck_bitdepth or config.settings.bitdepth,
        config.bank,
        pre_arithmetic=config.pre_arithmetic,
        prior=segment.prior,
    )
    return segment_layout(layout, segment.update, segment.inherit, previous)[1]
