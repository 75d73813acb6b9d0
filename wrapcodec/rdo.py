"""Encoder-side rate-distortion optimisation over the wrapper options.

Every candidate option is coded, decoded exactly as the decoder will, and measured; the one
with the lowest Lagrangian cost wins (switchable neural wrappers, §3.3: options chosen per
sequence and signalled in 4 bits):

    J = D + λ(QP) · R

D is the 6:1:1-weighted YUV MSE in 8-bit units averaged over frames, R the bits of the whole
``.wrp`` file (header included) per source luma sample, and λ(QP) = c·2^((QP − 12)/3) the
reference-encoder relation of the codec (c = 0.85 for H.264/JM, 0.57 for HEVC/HM and VVC/VTM),
i.e. ``J · samples = SSE + λ · bits`` as in the reference encoders' mode decisions.

With a bitrate budget instead of a QP, each option gets the lowest QP whose rate fits the
budget (binary search; rate falls as QP grows) and the best PSNR-YUV among them wins.

Content adaptation (:mod:`wrapcodec.adapt`): a neural candidate is measured with the bank's
post-processor, with one fitted to the segment's decoded frames (the update's bytes count in
R) and, when the previous segment used the same option with an update, with that update at no
bytes (the segment inherits it); the lowest J wins (with a budget: the highest PSNR-YUV
within it).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from wrapcodec import ffmpeg, metrics
from wrapcodec.adapt import AdaptConfig
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.bank import Bank
from wrapcodec.container import NO_MODEL_BANK, Segment, WrpHeader, overhead_bytes, write_wrp
from wrapcodec.errors import InputError
from wrapcodec.options import OPTIONS, Option, bottleneck_size, skip_reason
from wrapcodec.paths import STDIO, display_name, spool_stdin
from wrapcodec.pipeline import Coded, Layout, adapt_and_measure, code_and_measure, measure
from wrapcodec.y4m import VideoInfo, count_frames, read_info


class ProgressSink(Protocol):
    """Where the encoder reports progress (the CLI draws a bar; the library logs nothing)."""

    def start(self, total: int) -> None: ...

    def advance(self, label: str) -> None: ...


class _Silent:
    def start(self, total: int) -> None:
        pass

    def advance(self, label: str) -> None:
        pass


class AdaptationReport(BaseModel):
    """A neural candidate's post-processor fitted to the segment, against the bank's."""

    steps: int
    params: int  # parameters the update carries
    bytes: int  # of the update, as stored in the container
    gain_db: float  # PSNR-YUV with the update minus without
    seconds: float  # fitting the update
    cost_without: float | None = None  # J of the bank's post-processor (QP mode)
    cost_with: float | None = None
    used: bool = False  # the update is sent with this candidate
    # The update in force for the previous segment (same option), reused at no bytes:
    inherited_gain_db: float | None = None  # None when there is none to inherit
    cost_inherited: float | None = None
    inherited: bool = False  # this candidate reuses it


class CandidateReport(BaseModel):
    """One option coded on one segment, with the figures the RDO compared (those of the
    variant with the update when ``adaptation.used``)."""

    code: int
    name: str
    ratio: str
    bottleneck: str
    qp: int | None = None
    bits: int | None = None
    kbps: float | None = None
    psnr_y: float | None = None
    psnr_u: float | None = None
    psnr_v: float | None = None
    psnr_yuv: float | None = None
    mse: float | None = None
    cost: float | None = None
    encode_s: float | None = None
    decode_s: float | None = None
    skipped: str | None = None
    adaptation: AdaptationReport | None = None
    chosen: bool = False


class SegmentReport(BaseModel):
    first_frame: int
    frame_count: int
    option: int
    option_name: str
    candidates: list[CandidateReport]


class EncodeReport(BaseModel):
    """What ``wrapcodec encode`` did; printed by ``--json``."""

    input: str
    output: str
    codec: str
    preset: str
    bitdepth: int
    qp: int | None
    bitrate_budget_kbps: float | None
    rdo_lambda: float | None
    width: int
    height: int
    frames: int
    fps: str
    option: int
    option_name: str
    ratio: str
    bits: int
    kbps: float
    psnr_y: float
    psnr_yuv: float
    candidates: list[CandidateReport]
    segments: list[SegmentReport]
    timings: dict[str, float]


def kbps(bits: int, frames: int, info: VideoInfo) -> float:
    """Bits over the duration of ``frames`` frames at the source frame rate, in kbit/s."""
    return metrics.kbps(bits, frames, info.fps_num, info.fps_den)


def rd_cost(mse_8bit: float, bits: int, frames: int, info: VideoInfo, lam: float) -> float:
    """``J = D + λ·R``: D the 6:1:1 MSE in 8-bit units, R bits per source luma sample."""
    return mse_8bit + lam * bits / (frames * info.width * info.height)


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


@dataclass
class _Job:
    backend: Backend
    settings: EncodeSettings
    source: Path
    info: VideoInfo
    workdir: Path
    n_segments: int
    bank: Bank | None

    adapt: AdaptConfig | None = None

    def trial(self, opt: Option, qp: int, first: int, count: int) -> _Trial:
        settings = self.settings.model_copy(update={"qp": qp})
        layout = Layout.make(self.info, opt, self.backend, settings.bitdepth, self.bank)
        stream = self.workdir / f"f{first}-o{int(opt.code)}-q{qp}{self.backend.extension}"
        coded = code_and_measure(self.backend, settings, self.source, layout, first, count, stream)
        return self._trial(opt, layout, coded, qp, count)

    def _trial(
        self, opt: Option, layout: Layout, coded: Coded, qp: int, count: int, update: bytes = b""
    ) -> _Trial:
        # Each segment carries its share of the container's fixed overhead.
        overhead = math.ceil(overhead_bytes(self.n_segments) / self.n_segments)
        bits = 8 * (coded.payload_bytes + len(update) + overhead)
        cost = rd_cost(coded.mse_8bit, bits, count, self.info, self.backend.qp_to_lambda(qp))
        return _Trial(opt, layout, coded, qp, bits, cost, update, in_force=update)

    def inherited(self, plain: _Trial, first: int, count: int, update: bytes) -> _Trial:
        """``plain`` post-processed with the previous segment's ``update`` (no bytes sent)."""
        coded = measure(
            self.backend,
            plain.coded.stream,
            plain.layout.with_update(update),
            self.source,
            first,
            count,
            plain.coded.encode_s,
        )
        trial = self._trial(plain.option, plain.layout, coded, plain.qp, count)
        return dataclasses.replace(trial, inherit=True, in_force=update)

    def adapted(self, plain: _Trial, first: int, count: int) -> tuple[_Trial, AdaptationReport]:
        """``plain`` (a neural trial) with its post-processor fitted to the segment."""
        assert self.adapt is not None
        fitted, coded = adapt_and_measure(
            self.backend,
            plain.coded.stream,
            plain.layout,
            self.source,
            first,
            count,
            self.adapt,
            plain.coded.encode_s,
        )
        trial = self._trial(plain.option, plain.layout, coded, plain.qp, count, fitted.update)
        report = AdaptationReport(
            steps=self.adapt.steps,
            params=fitted.params,
            bytes=len(fitted.update),
            gain_db=coded.psnr_yuv - plain.coded.psnr_yuv,
            seconds=fitted.seconds,
        )
        return trial, report


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
    )


def _skipped(opt: Option, info: VideoInfo, reason: str) -> CandidateReport:
    bw, bh = bottleneck_size(info.width, info.height, opt.ratio)
    return CandidateReport(
        code=int(opt.code),
        name=opt.name,
        ratio=opt.ratio_text,
        bottleneck=f"{bw}x{bh}",
        skipped=reason,
    )


def _fit_budget(
    job: _Job, opt: Option, first: int, count: int, budget: float, progress: ProgressSink
) -> _Trial | None:
    """Lowest-QP trial of ``opt`` whose rate is within ``budget`` kbps, or None."""
    lo, hi = job.backend.qp_range
    best: _Trial | None = None
    while lo <= hi:
        qp = (lo + hi) // 2
        trial = job.trial(opt, qp, first, count)
        progress.advance(f"{opt.name} QP {qp}")
        if kbps(trial.bits, count, job.info) <= budget:
            best, hi = trial, qp - 1
        else:
            lo = qp + 1
    return best


def _segments(frames: int, segment_frames: int | None) -> list[tuple[int, int]]:
    step = segment_frames or frames
    return [(first, min(step, frames - first)) for first in range(0, frames, step)]


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
) -> EncodeReport:
    """Code ``input_path`` with every option, keep the RDO winner, write ``output_path``.

    Neural options take their networks from ``bank``; its id goes into the header when the
    file uses one. With ``adapt`` (steps > 0) each neural candidate is also tried with its
    post-processor fitted to the segment.

    The arguments are checked before anything is coded. ``input_path`` ``-`` is standard input,
    spooled to a temporary file and fully read and validated up front, so that messages about
    it say "standard input" rather than the spool's name."""
    if bitrate_kbps is not None and not (math.isfinite(bitrate_kbps) and bitrate_kbps > 0):
        raise InputError(f"--bitrate {bitrate_kbps:g}: must be a positive, finite number of kbps")
    if segment_frames is not None and segment_frames < 1:
        raise InputError("--segment-frames must be at least 1")
    if adapt is not None and adapt.steps < 0:
        raise InputError("--adapt-steps must be 0 or more")
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
            adapt if adapt is not None and adapt.steps > 0 else None,
        )
        usable = [o for o in options if skip_reason(o, info.width, info.height) is None]
        if not usable:
            raise InputError(f"{name}: no option is usable at {info.width}x{info.height}")
        steps = len(usable) * (math.ceil(math.log2(backend.qp_range[1] + 2)) if bitrate_kbps else 1)
        progress.start(steps * len(ranges))

        seg_reports: list[SegmentReport] = []
        segments: list[Segment] = []
        adapt_s = 0.0
        in_force: tuple[int, bytes] | None = None  # the last segment's option and update
        for first, count in ranges:
            trials: list[_Trial] = []
            reports: list[CandidateReport] = []
            for opt in options:
                reason = skip_reason(opt, info.width, info.height)
                if reason is not None:
                    reports.append(_skipped(opt, info, reason))
                    continue
                if bitrate_kbps is None:
                    trial: _Trial | None = job.trial(opt, settings.qp, first, count)
                    progress.advance(opt.name)
                else:
                    trial = _fit_budget(job, opt, first, count, bitrate_kbps, progress)
                if trial is None:
                    over = f"over {bitrate_kbps:g} kbps even at QP {backend.qp_range[1]}"
                    reports.append(_skipped(opt, info, over))
                    continue
                adaptation = None
                if job.adapt is not None and opt.neural:
                    t0 = time.perf_counter()
                    inheritable = in_force if in_force and in_force[0] == opt.code else None
                    trial, adaptation = _with_adaptation(
                        job,
                        trial,
                        first,
                        count,
                        bitrate_kbps,
                        inheritable[1] if inheritable else None,
                    )
                    adapt_s += time.perf_counter() - t0
                trials.append(trial)
                reports.append(_report(trial, count, info))
                reports[-1].adaptation = adaptation
            if not trials:
                raise InputError(f"no option reaches {bitrate_kbps:g} kbps on frames {first}..")
            if bitrate_kbps is None:
                best = min(trials, key=lambda t: t.cost)
            else:
                best = max(trials, key=lambda t: t.coded.psnr_yuv)
            for report in reports:
                report.chosen = report.code == int(best.option.code) and report.skipped is None
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
        timings={"total_s": time.perf_counter() - t_start, "adapt_s": adapt_s},
    )


def _with_adaptation(
    job: _Job,
    plain: _Trial,
    first: int,
    count: int,
    budget: float | None,
    inheritable: bytes | None,
) -> tuple[_Trial, AdaptationReport]:
    """The best of ``plain``, ``plain`` with an update fitted to the segment and, when the
    previous segment used this option with an update (``inheritable``), ``plain`` reusing
    that update: lowest J at a QP, or highest PSNR-YUV within a bitrate budget."""
    adapted, report = job.adapted(plain, first, count)
    variants = [plain, adapted]
    if inheritable:
        variants.append(job.inherited(plain, first, count, inheritable))
        report.inherited_gain_db = variants[-1].coded.psnr_yuv - plain.coded.psnr_yuv
    if budget is None:
        report.cost_without, report.cost_with = plain.cost, adapted.cost
        if inheritable:
            report.cost_inherited = variants[-1].cost
        best = min(variants, key=lambda t: t.cost)
    else:
        fitting = [t for t in variants if kbps(t.bits, count, job.info) <= budget] or [plain]
        best = max(fitting, key=lambda t: t.coded.psnr_yuv)
    report.used = best is adapted
    report.inherited = best.inherit
    return best, report


def _frame_weighted(values: Sequence[float | None], weights: Sequence[int]) -> float:
    """Per-frame averages of segments combined into the average over all frames."""
    return sum(float(v or 0.0) * w for v, w in zip(values, weights, strict=True)) / sum(weights)
