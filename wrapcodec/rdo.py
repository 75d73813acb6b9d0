"""Encoder-side rate-distortion optimisation over the wrapper options.

A candidate option coded in full is coded, decoded exactly as the decoder will, and measured;
of those, the one with the lowest Lagrangian cost wins (switchable neural wrappers, §3.3:
options chosen per sequence and signalled in 4 bits):

    J = D + λ(QP) · R

D is the 6:1:1-weighted YUV MSE in 8-bit units averaged over frames, R the bits of the whole
``.wrp`` file (header included) per source luma sample, and λ(QP) = c·2^((QP − 12)/3) the
reference-encoder relation of the codec (c = 0.85 for H.264/JM, 0.57 for HEVC/HM and VVC/VTM),
i.e. ``J · samples = SSE + λ · bits`` as in the reference encoders' mode decisions.

Which candidates are coded in full is the effort level's (:mod:`wrapcodec.effort`, the search
in :mod:`wrapcodec.search`): ``exhaustive`` codes all of them; lower levels rule some out by a
bound, estimate post-1/1 on the direct anchor's own decoded frames and the rest on a probe, and
code only the best of that ranking. Candidates are coded and measured by
:mod:`wrapcodec.trials`; options that pre-process alike share one bitstream
(:func:`wrapcodec.pipeline.stream_key`).

With a bitrate budget instead of a QP, each option coded in full gets the lowest QP whose rate
fits the budget (a rate model corrected by real encodes, :func:`wrapcodec.effort.next_qp`) and
the best PSNR-YUV among them wins.

Content adaptation (:mod:`wrapcodec.adapt`, :mod:`wrapcodec.adaptation`): a neural candidate
coded in full is measured with the bank's post-processor, with updates fitted to the segment's
decoded frames on the rungs of the capacity ladder the adaptation budget pays for (the update's
bytes count in R; quantisation 3 at the RDO's λ, with a bitrate budget the λ of the QP found)
and, when the previous segment used the same option with an update, with that update at no
bytes (the segment inherits it); then each rung starts from that update and is also sent as a
difference to it. The lowest J wins (with a bitrate budget: the highest PSNR-YUV within it).

Segments: by default a clip longer than :data:`LONG_CLIP_SECONDS` is cut into segments of
about :data:`SEGMENT_SECONDS` (:func:`default_segment_frames`), so the option and the update
follow the content and each segment's update builds on the previous one's.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from wrapcodec import ffmpeg
from wrapcodec.adapt import AdaptConfig
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.bank import Bank
from wrapcodec.container import NO_MODEL_BANK, Segment, WrpHeader, overhead_bytes, write_wrp
from wrapcodec.effort import EFFORTS, AdaptBudget
from wrapcodec.errors import InputError
from wrapcodec.nets import PRE_ARITHMETICS, default_pre_arithmetic
from wrapcodec.options import OPTIONS, Option, skip_reason
from wrapcodec.paths import STDIO, display_name, spool_stdin
from wrapcodec.pipeline import InForce, update_in_force
from wrapcodec.rdoreport import (
    AdaptationReport,
    CandidateReport,
    EncodeReport,
    SegmentReport,
)
from wrapcodec.search import exhaustive, probed
from wrapcodec.trials import (
    Clip,
    Job,
    ProgressSink,
    Silent,
    Trial,
    bare_report,
    candidate_report,
    default_jobs,
    kbps,
    pick,
    rd_cost,
)
from wrapcodec.y4m import count_frames, read_info

__all__ = [
    "AdaptationReport",
    "CandidateReport",
    "EncodeReport",
    "ProgressSink",
    "default_jobs",
    "encode_file",
    "kbps",
    "rd_cost",
]


SEGMENT_SECONDS = 3.0
"""Default segment length of a long clip: long enough that a segment's update (tens to
hundreds of bytes) and container record cost little against its payload, and that a fit has
frames enough to learn from; short enough that the option and the update follow scene
changes, and that each fit's training frames, held in memory, stay few. Updates after the
first are sent as differences or inherited, so shorter segments cost little rate."""
LONG_CLIP_SECONDS = 2 * SEGMENT_SECONDS
"""Clips up to this long stay one segment (as before): cutting them would leave segments of
a few seconds or less with nothing to amortise an update over."""


def default_segment_frames(frames: int, fps_num: int, fps_den: int) -> int | None:
    """Frames per segment when ``--segment-frames`` is not given: None (one segment) for a
    clip of at most :data:`LONG_CLIP_SECONDS`, else :data:`SEGMENT_SECONDS` at the clip's
    frame rate (at least one frame)."""
    fps = fps_num / fps_den if fps_den > 0 and fps_num > 0 else 25.0
    if frames <= LONG_CLIP_SECONDS * fps:
        return None
    return max(1, round(SEGMENT_SECONDS * fps))


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
    adapt_budget: AdaptBudget | str | None = "effort",
    effort: str = "exhaustive",
    jobs: int | None = None,
    pre_arithmetic: str | None = None,
) -> EncodeReport:
    """Choose an option for each segment of ``input_path`` by RDO at the given ``effort``
    (:data:`wrapcodec.effort.EFFORTS`) and write ``output_path``.

    Neural options take their networks from ``bank``; its id goes into the header when the
    file uses one. With ``adapt`` (steps > 0) each neural candidate coded in full is also tried
    with its post-processor fitted to the segment, on the rungs ``adapt_budget`` pays for
    (``"effort"``: the effort level's; None: no bound). ``segment_frames`` None: one segment,
    or segments of :data:`SEGMENT_SECONDS` for a clip over :data:`LONG_CLIP_SECONDS`; 0: one
    segment whatever the length. ``jobs`` candidates are coded at once
    [:func:`default_jobs`]; the result does not depend on it. Wrappers pre-process in
    ``pre_arithmetic`` [:func:`~wrapcodec.nets.default_pre_arithmetic`].

    The arguments are checked before anything is coded. ``input_path`` ``-`` is standard input,
    spooled to a temporary file and fully read and validated up front, so that messages about
    it say "standard input" rather than the spool's name."""
    if bitrate_kbps is not None and not (math.isfinite(bitrate_kbps) and bitrate_kbps > 0):
        raise InputError(f"--bitrate {bitrate_kbps:g}: must be a positive, finite number of kbps")
    if segment_frames is not None and segment_frames < 0:
        raise InputError("--segment-frames must be 0 (one segment) or more")
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
    budget = level.adapt_budget if isinstance(adapt_budget, str) else adapt_budget
    if budget is not None and budget.value == 0:
        adapt = None  # no time for adaptation
    progress = progress or Silent()
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
        if segment_frames is None:
            segment_frames = default_segment_frames(frames, info.fps_num, info.fps_den)
        ranges = _segments(frames, segment_frames)
        job = Job(
            backend,
            settings,
            source,
            info,
            workdir,
            len(ranges),
            bank,
            level,
            adapt if adapt is not None and adapt.steps > 0 else None,
            adapt_budget=budget,
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
        in_force: InForce | None = None  # the update in force after the last segment
        for first, count in ranges:
            clip = Clip(source, first, count)
            search = exhaustive if level.verify is None or len(usable) == 1 else probed
            decision = search(job, usable, clip, bitrate_kbps, progress)
            probe_s += decision.probe_s
            trials: list[Trial] = []
            for trial in decision.trials:
                adaptation = None
                if job.adapt is not None and trial.option.neural:
                    t0 = time.perf_counter()
                    trial, adaptation = _with_adaptation(job, trial, clip, bitrate_kbps, in_force)
                    adapt_s += time.perf_counter() - t0
                trials.append(trial)
                report = candidate_report(trial, count, info)
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
                or bare_report(o, info, skipped=skip_reason(o, info.width, info.height))
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
                    prior=best.layout.prior,
                )
            )
            in_force = best.chain
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
            version=3 if any(s.prior for s in segments) else 2,  # files without priors stay v2
        )
        write_wrp(output_path, header, segments)
        total_bits = 8 * (
            overhead_bytes(len(segments), version=header.version)
            + sum(len(s.payload) + len(s.update) for s in segments)
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
    job: Job,
    plain: Trial,
    clip: Clip,
    budget: float | None,
    previous: InForce | None,
) -> tuple[Trial, AdaptationReport]:
    """The best of ``plain``, ``plain`` with each update fitted to the segment and, when the
    update in force after the previous segment (``previous``) is of this option, ``plain``
    reusing it: lowest J at a QP, or highest PSNR-YUV within a bitrate budget."""
    fitted, report = job.adapted(plain, clip, previous)
    variants = [plain, *fitted]
    inheritable = update_in_force(previous, plain.layout) is not None
    if inheritable:
        assert previous is not None
        variants.append(job.inherited(plain, clip, previous))
        report.inherited_gain_db = variants[-1].coded.psnr_yuv - plain.coded.psnr_yuv
    if budget is None:
        report.cost_without = plain.cost
        report.cost_with = min(t.cost for t in fitted)
        if inheritable:
            report.cost_inherited = variants[-1].cost
    best = pick(variants, budget, clip.count, job.info)
    picked = [k for k, t in enumerate(fitted) if t is best]
    if picked:
        chosen = report.tried[picked[0]]
        report.rung, report.relative = chosen.rung, chosen.relative
        report.steps, report.params, report.bytes = chosen.steps, chosen.params, chosen.bytes
        report.gain_db = chosen.gain_db
    report.used = bool(picked)
    report.inherited = best.inherit
    best.qps_tried = plain.qps_tried
    return best, report


def _frame_weighted(values: Sequence[float | None], weights: Sequence[int]) -> float:
    """Per-frame averages of segments combined into the average over all frames."""
    return sum(float(v or 0.0) * w for v, w in zip(values, weights, strict=True)) / sum(weights)
