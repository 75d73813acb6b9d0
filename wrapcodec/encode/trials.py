"""Candidates coded and measured: the encoder's unit of work.

A :class:`Clip` is what candidates are coded on (a segment, or a probe made of some of its
frames). A :class:`Job` holds what one encode shares between its candidates — the backend and
settings, the model bank, a working folder and the bitstreams already coded
(:class:`Streams`: options that pre-process alike share one,
:func:`wrapcodec.pipeline.stream_key`); :meth:`Job.trial` codes one option at one QP on a clip,
decodes it as the decoder will and measures it into a :class:`Trial`. :func:`code_full` codes
one option in full (under a bitrate budget by :mod:`wrapcodec.encode.rate`), :func:`code_all`
several at once.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from wrapcodec import metrics
from wrapcodec.adapt import AdaptConfig
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.bank import Bank
from wrapcodec.container import overhead_bytes
from wrapcodec.encode.cost import keeps_update, rd_cost
from wrapcodec.encode.efforts import AdaptBudget, Effort
from wrapcodec.encode.rate import fit_budget
from wrapcodec.encode.report import ProgressSink
from wrapcodec.options import Option
from wrapcodec.pipeline import (
    Coded,
    InForce,
    Layout,
    encode_stream,
    measure,
    source_frames,
    stream_key,
)
from wrapcodec.y4m import Frame, VideoInfo


def default_jobs() -> int:
    """Candidates coded at once by default: one per core, at most 4 (each encode is itself
    multi-threaded)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class Clip:
    """Frames ``first`` .. ``first + count − 1`` of a y4m file: what candidates are coded on."""

    path: Path
    first: int
    count: int

    def frames(self) -> Iterator[Frame]:
        """The clip's source frames, streamed."""
        return source_frames(self.path, self.first, self.count)

    def encode(
        self, backend: Backend, settings: EncodeSettings, layout: Layout, stream: Path
    ) -> float:
        """The clip pre-processed with ``layout`` and coded to ``stream``; the seconds taken."""
        return encode_stream(backend, settings, self.path, layout, self.first, self.count, stream)

    def measure(
        self,
        backend: Backend,
        stream: Path,
        layout: Layout,
        encode_s: float = 0.0,
        samples: Sequence[tuple[Layout, frozenset[int]]] = (),
    ) -> Coded:
        """``stream`` decoded as the decoder will with ``layout`` and measured against the
        clip, the ``samples`` (other layouts of the same stream) beside it on their frames."""
        return measure(
            backend,
            stream,
            layout,
            self.path,
            self.first,
            self.count,
            encode_s,
            samples=samples,
        )


@dataclass
class Trial:
    """One option coded and measured on a clip, with the figures the RDO compares."""

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


@dataclass(frozen=True)
class Stream:
    """A bitstream coded for a clip: its file, the seconds its encode took and the option that
    coded it."""

    path: Path
    encode_s: float
    coded_by: str


StreamKey = tuple[Clip, str, int, str, int]
"""A bitstream's identity: clip, :func:`~wrapcodec.pipeline.stream_key`, QP, preset and
bottleneck bit depth."""


class Streams:
    """The bitstreams an encode has coded, each coded once however many threads want it."""

    def __init__(self) -> None:
        self.encodes = 0  # encoder runs, probes included
        self._done: dict[StreamKey, Stream] = {}
        self._lock = threading.Lock()
        self._coding: dict[StreamKey, threading.Lock] = {}

    def get(
        self, key: StreamKey, path: Path, code: Callable[[Path], float], by: str
    ) -> tuple[Stream, bool]:
        """The stream of ``key``, and whether it was coded already; if not, ``code`` writes it
        to ``path`` (returning its seconds) on behalf of option ``by``. One thread codes a
        bitstream; the others wanting it wait and reuse it."""
        with self._lock:
            coding = self._coding.setdefault(key, threading.Lock())
        with coding:
            if key in self._done:
                return self._done[key], True
            stream = Stream(path, code(path), by)
            with self._lock:
                self.encodes += 1
            self._done[key] = stream
            return stream, False


@dataclass
class Job:
    """What one encode shares between its candidates and segments."""

    backend: Backend
    settings: EncodeSettings
    info: VideoInfo
    workdir: Path
    n_segments: int
    bank: Bank | None
    effort: Effort
    adapt: AdaptConfig | None = None
    adapt_budget: AdaptBudget | None = None  # per neural candidate and segment (None: none)
    jobs: int = 1  # candidates coded at once
    pre_arithmetic: str = "float32"
    lam_scale: float = 1.0  # the segment's λ over the backend's relation (encode.lagrange)
    # the price of a bit in an update's quantisation over the segment's λ (Backend.slope_scale)
    update_scale: float = 1.0
    streams: Streams = field(default_factory=Streams)

    @property
    def probe_settings(self) -> EncodeSettings:
        """The settings of a probe: the backend's fastest preset for the user's."""
        return self.settings.model_copy(
            update={"preset": self.backend.probe_preset(self.settings.preset)}
        )

    @property
    def overhead_bits(self) -> int:
        """Each segment carries its share of the container's fixed overhead."""
        return 8 * math.ceil(overhead_bytes(self.n_segments) / self.n_segments)

    def layout(self, opt: Option, qp: int | None = None) -> Layout:
        """``opt`` on this source; a post-only option coded at ``qp`` takes the bank's prior
        for this codec and QP where it has one (docs/format.md, "Prior")."""
        prior = 0
        if self.bank is not None and qp is not None:
            prior = self.bank.prior_for(opt, self.backend.name, qp, self.settings.bitdepth)
        return Layout.make(
            self.info,
            opt,
            self.backend,
            self.settings.bitdepth,
            self.bank,
            pre_arithmetic=self.pre_arithmetic,
            prior=prior,
        )

    def at_depth(self, bitdepth: int) -> Job:
        """This job coding its bottleneck at ``bitdepth``, sharing its bitstreams and
        folder."""
        return replace(self, settings=self.settings.model_copy(update={"bitdepth": bitdepth}))

    def lam(self, qp: float) -> float:
        """The price of a bit at ``qp``: the backend's λ(QP) times :attr:`lam_scale`."""
        return self.lam_scale * self.backend.qp_to_lambda(qp)

    def priced(self, scale: float) -> Job:
        """This job pricing bits at ``scale`` times the backend's λ, sharing its bitstreams
        and folder."""
        return replace(self, lam_scale=scale)

    def kbps(self, bits: int, frames: int) -> float:
        """``bits`` over ``frames`` frames of the source, in kbit/s."""
        return metrics.kbps(bits, frames, self.info.fps_num, self.info.fps_den)

    def score(
        self, opt: Option, layout: Layout, coded: Coded, qp: int, count: int, update: bytes = b""
    ) -> Trial:
        """``coded`` (and ``update``) as a trial of ``opt``: its bits, overhead included, and J."""
        bits = 8 * (coded.payload_bytes + len(update)) + self.overhead_bits
        cost = rd_cost(coded.mse_8bit, bits, count, self.info, self.lam(qp))
        return Trial(opt, layout, coded, qp, bits, cost, update)

    def trial(
        self,
        opt: Option,
        qp: int,
        clip: Clip,
        *,
        probe: bool = False,
        sampled: Sequence[Option] = (),
        picks: Sequence[int] = (),
        tag: str = "",
    ) -> Trial:
        """``opt`` coded at ``qp`` on ``clip`` (at the probe preset when ``probe``) and
        measured; a bitstream already coded for an option that pre-processes alike is reused.
        The ``sampled`` options (sharing its bitstream) are measured beside it on the frames
        ``picks`` of the clip (:attr:`Trial.sampled`). ``tag`` begins the bitstream's file
        name: a clip written apart from the segment names its streams with one of its own."""
        settings = (self.probe_settings if probe else self.settings).model_copy(update={"qp": qp})
        layout = self.layout(opt, qp)
        key = (clip, stream_key(opt), qp, settings.preset, settings.bitdepth)
        name = f"{tag}{'p' if probe else 'f'}{clip.first}-{key[1].replace('/', '_')}-q{qp}"
        name += f"-b{settings.bitdepth}"
        path = self.workdir / f"{name}{self.backend.extension}"
        stream, reused = self.streams.get(
            key, path, lambda p: clip.encode(self.backend, settings, layout, p), opt.name
        )
        shares = reused and stream.coded_by != opt.name  # not its own (the depth test's)
        encode_s = 0.0 if shares else stream.encode_s
        coded = self.measure(stream.path, layout, clip, sampled, picks, qp, encode_s)
        trial = self.score(opt, layout, coded, qp, clip.count)
        trial.shares = stream.coded_by if shares else None
        trial.sampled = dict(zip(sampled, coded.sampled, strict=True))
        return trial

    def sample(
        self, trial: Trial, clip: Clip, options: Sequence[Option], picks: Sequence[int]
    ) -> dict[Option, tuple[float, float]]:
        """``options`` (sharing ``trial``'s bitstream) measured beside it on the frames
        ``picks`` of ``clip``: (their MSE, the trial's MSE) on those frames."""
        coded = self.measure(trial.coded.stream, trial.layout, clip, options, picks, trial.qp)
        return dict(zip(options, coded.sampled, strict=True))

    def measure(
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
        return clip.measure(self.backend, stream, layout, encode_s, samples=samples)


def pick(variants: Sequence[Trial], budget: float | None, frames: int, info: VideoInfo) -> Trial:
    """The RDO's choice among variants of one candidate (``variants[0]`` the bank's
    post-processor): at a QP the lowest J, a later variant replacing the best so far only when
    :func:`~wrapcodec.encode.cost.keeps_update` says so (so of equal ones the first, the
    smaller or no update); within a bitrate ``budget`` (kbps) the highest PSNR-YUV of those
    that fit it, ``variants[0]`` if none does."""
    if budget is None:
        best = variants[0]
        for t in variants[1:]:
            if keeps_update(best.cost, t.cost):
                best = t
        return best
    fitting = [
        t for t in variants if metrics.kbps(t.bits, frames, info.fps_num, info.fps_den) <= budget
    ] or [variants[0]]
    return max(fitting, key=lambda t: t.coded.psnr_yuv)


def code_full(
    job: Job, opt: Option, clip: Clip, budget: float | None, start: int | None
) -> Trial | None:
    """``opt`` coded in full on ``clip``: at the job's QP, or under a bitrate ``budget`` (kbps)
    at the lowest QP that fits it from ``start`` [the middle of the range] (None: none fits;
    levels below exhaustive stop at the first fit after a few encodes)."""
    if budget is None:
        return job.trial(opt, job.settings.qp, clip)
    lo, hi = job.backend.qp_range
    found = fit_budget(
        lambda qp: job.trial(opt, qp, clip),
        lambda t: job.kbps(t.bits, clip.count),
        budget,
        (lo + hi) // 2 if start is None else start,
        job.backend.qp_range,
        capped=job.effort.verify is not None,
    )
    if found is None:
        return None
    best, qps = found
    best.qps_tried = qps
    return best


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
