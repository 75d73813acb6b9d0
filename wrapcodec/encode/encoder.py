"""One encode from start to finish: read the source, cut it into segments, choose an option
for each (:mod:`wrapcodec.encode.segments`, handed out by :mod:`wrapcodec.encode.parallel`),
write the ``.wrp`` file and report what was done.

Segments (:func:`segmentation`): by default a clip longer than :data:`LONG_CLIP_SECONDS` is
cut at its scene changes (:mod:`wrapcodec.scenes`), so the option and the update follow the
content; each segment's update builds on the previous one's within a scene, and the scenes'
chains can be coded at once.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wrapcodec import ffmpeg, metrics, scenes
from wrapcodec.container import NO_MODEL_BANK, Segment, WrpHeader, overhead_bytes, write_wrp
from wrapcodec.encode.config import EncodeConfig
from wrapcodec.encode.parallel import Plan, chains_of, code_segments
from wrapcodec.encode.parts import Parts, encode_key, folder_for
from wrapcodec.encode.report import EncodeReport, ProgressSink, SegmentReport, Silent
from wrapcodec.encode.segments import SegmentDone, SegmentTask, chain_after, code_segment
from wrapcodec.errors import BackendError, InputError
from wrapcodec.options import OPTIONS, Option, skip_reason
from wrapcodec.paths import STDIO, display_name, spool_stdin
from wrapcodec.y4m import VideoInfo, Y4MReader, count_frames, read_info

SEGMENT_SECONDS = 3.0
"""Segment length of a long clip when ffmpeg cannot detect scenes (it lacks ``scdet``): long
enough that a segment's update (tens to hundreds of bytes) and container record cost little
against its payload, and that a fit has frames enough to learn from; short enough that the
option and the update follow scene changes, and that each fit's training frames, held in
memory, stay few. Updates after the first are sent as differences or inherited, so shorter
segments cost little rate."""
LONG_CLIP_SECONDS = 2 * SEGMENT_SECONDS
"""Clips up to this long stay one segment (as before): cutting them would leave segments of
a few seconds or less with nothing to amortise an update over."""

Method = Literal["one", "fixed", "scenes"]


@dataclass(frozen=True)
class Segmentation:
    """How a clip was cut: ``one`` segment, ``fixed`` lengths, or at ``scenes`` changes; the
    segments as ``(first frame, frame count)``."""

    method: Method
    ranges: list[tuple[int, int]]
    scenes: tuple[int, ...] = ()
    """The cuts that are scene changes (the others split a long scene)."""

    @property
    def cuts(self) -> list[int]:
        """The first frames of every segment after the first."""
        return [first for first, _ in self.ranges[1:]]

    def chains(self, how: Literal["scenes", "one"]) -> list[list[int]]:
        """The segments' indices grouped into chains (``EncodeConfig.chains``)."""
        return chains_of(self.ranges, self.scenes if how == "scenes" else ())


def default_segment_frames(frames: int, fps_num: int, fps_den: int) -> int | None:
    """Fixed frames per segment for a clip whose scenes cannot be detected: None (one
    segment) for a clip of at most :data:`LONG_CLIP_SECONDS`, else :data:`SEGMENT_SECONDS`
    at the clip's frame rate (at least one frame)."""
    fps = fps_num / fps_den if fps_den > 0 and fps_num > 0 else 25.0
    if frames <= LONG_CLIP_SECONDS * fps:
        return None
    return max(1, round(SEGMENT_SECONDS * fps))


def segmentation(
    source: Path, frames: int, info: VideoInfo, segment_frames: int | Literal["auto"] | None
) -> Segmentation:
    """Where ``source`` (``frames`` frames) is cut as ``--segment-frames`` says: N frames a
    segment, 0 one segment, ``auto`` at scene changes (:mod:`wrapcodec.scenes`, scored by
    ffmpeg's ``scdet``), None (the default) one segment up to :data:`LONG_CLIP_SECONDS` and
    ``auto`` beyond, or segments of :data:`SEGMENT_SECONDS` when this ffmpeg has no
    ``scdet`` (asked for explicitly, ``auto`` then is a :class:`BackendError`)."""
    fps_num, fps_den = info.fps_num, info.fps_den
    if segment_frames is None:
        fixed = default_segment_frames(frames, fps_num, fps_den)
        if fixed is None:
            return Segmentation("one", [(0, frames)])
        if not ffmpeg.has_filter("scdet"):
            return Segmentation("fixed", scenes.ranges(frames, scenes.fixed_cuts(frames, fixed)))
        segment_frames = "auto"
    if segment_frames == "auto":
        if not ffmpeg.has_filter("scdet"):
            raise BackendError(
                f"--segment-frames auto: this ffmpeg ({ffmpeg.ffmpeg_exe()}) has no scdet filter"
            )
        scores = ffmpeg.scene_scores(source, frames)
        shortest = scenes.seconds_to_frames(scenes.MIN_SECONDS, fps_num, fps_den)
        cuts = scenes.scene_cuts(
            scores, shortest, scenes.seconds_to_frames(scenes.MAX_SECONDS, fps_num, fps_den)
        )
        changes = tuple(scenes.scene_changes(scores, shortest))
        return Segmentation("scenes", scenes.ranges(frames, cuts), changes)
    if segment_frames == 0:
        return Segmentation("one", [(0, frames)])
    return Segmentation("fixed", scenes.ranges(frames, scenes.fixed_cuts(frames, segment_frames)))


def encode_file(
    input_path: str,
    output_path: str,
    config: EncodeConfig,
    progress: ProgressSink | None = None,
) -> EncodeReport:
    """Choose an option for each segment of ``input_path`` by RDO as ``config`` says and
    write ``output_path``; ``progress`` hears of every candidate judged (and, a
    :class:`~wrapcodec.encode.report.SegmentProgress`, of every segment).

    ``input_path`` ``-`` is standard input. With ``--segment-frames N`` it is read a segment
    at a time (:func:`_code_streamed`); otherwise it is spooled to a temporary file and fully
    read and validated up front, since the segments depend on its length and scenes. Messages
    about it say "standard input" rather than the spool's name. With ``config.resume`` the
    segments coded are kept in a work folder beside the output
    (:mod:`wrapcodec.encode.parts`) until it is written."""
    config.backend.validate(config.settings)
    ffmpeg.require(config.backend)
    if config.resume and output_path == STDIO:
        raise InputError("--resume needs an output file, not standard output")
    streamed = input_path == STDIO and _fixed(config.segment_frames)
    if config.resume and streamed:
        raise InputError(
            "--resume needs an input it can read again: standard input read a segment at a "
            "time (--segment-frames N) cannot be; give a file, or --segment-frames auto"
        )
    progress = progress or Silent()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wrapcodec-") as tmp:
        if streamed:
            coded = _code_streamed(config, Path(tmp), progress)
        else:
            coded = _code_source(input_path, output_path, config, Path(tmp), progress)
    segments = [d.segment for d in coded.done]
    header = _header(config, coded.info, coded.frames, segments)
    write_wrp(output_path, header, segments)
    if coded.parts is not None:
        coded.parts.remove()
    total_bits = 8 * (
        overhead_bytes(len(segments), version=header.version)
        + sum(len(s.payload) + len(s.update) for s in segments)
    )
    reports = [d.report for d in coded.done]
    report = _report(input_path, output_path, config, coded.info, coded.frames, reports, total_bits)
    return report.model_copy(
        update={
            "timings": {
                "total_s": time.perf_counter() - t_start,
                "adapt_s": sum(d.adapt_s for d in coded.done),
                "probe_s": sum(d.probe_s for d in coded.done),
            },
            "encodes": sum(d.encodes for d in coded.done),
            "segmentation": coded.cut.method,
            "cuts": coded.cut.cuts,
            "chains": coded.chains,
            "resumed": coded.resumed,
        }
    )


@dataclass
class _Coded:
    """Every segment of a source coded, and how the source was cut."""

    info: VideoInfo
    frames: int
    cut: Segmentation
    chains: int
    done: list[SegmentDone]
    resumed: int = 0  # segments taken up from the work folder
    parts: Parts | None = None  # the work folder, removed once the file is written


def _fixed(segment_frames: int | Literal["auto"] | None) -> bool:
    return isinstance(segment_frames, int) and segment_frames > 0


def _code_source(
    input_path: str, output_path: str, config: EncodeConfig, workdir: Path, progress: ProgressSink
) -> _Coded:
    """The segments of a file (standard input spooled into ``workdir``), cut by
    :func:`segmentation` and coded by :func:`~wrapcodec.encode.parallel.code_segments`."""
    source, info, frames = _read_source(input_path, workdir)
    cut = segmentation(source, frames, info, config.segment_frames)
    usable = _usable(config, info, input_path)
    plan = Plan(source, info, usable, cut.ranges, cut.chains(config.chains))
    parts = None
    if config.resume:
        parts = Parts(folder_for(output_path), encode_key(config, source, cut.ranges))
    progress.start(len(usable) * len(cut.ranges))
    kept = parts.load() if parts is not None else {}
    keep = parts.store if parts is not None else (lambda _: None)
    done = code_segments(config, plan, kept, keep, progress)
    resumed = sum(kept.get(d.index) is d for d in done)
    return _Coded(info, frames, cut, len(plan.chains), done, resumed, parts)


def _code_streamed(config: EncodeConfig, workdir: Path, progress: ProgressSink) -> _Coded:
    """The segments of standard input, ``config.segment_frames`` frames each, read, coded and
    dropped one after another: the disk holds one segment's frames, whatever the length. The
    segments make one chain, coded here. As the segment count is not known until the end,
    each segment's candidates carry the container's whole header in their rate (as a clip of
    one segment does), where a file's share it; the choice can differ from that of the same
    frames read from a file only where two candidates' costs are that close."""
    assert isinstance(config.segment_frames, int)
    done: list[SegmentDone] = []
    in_force = None
    first = 0
    with Y4MReader(STDIO, name=display_name(STDIO)) as reader:
        info = reader.info
        usable = _usable(config, info, STDIO)
        part = workdir / "segment.y4m"
        while count := reader.copy_frames(config.segment_frames, part):
            index = len(done)
            task = SegmentTask(
                config, info, usable, 1, index, first, count, part, in_force, config.jobs, 0
            )
            finished = code_segment(task, progress)
            done.append(finished)
            in_force = chain_after(config, info, finished.segment, in_force)
            first += count
    if not done:
        raise InputError(f"{display_name(STDIO)}: no frames")
    cut = Segmentation("fixed", [(d.segment.first_frame, d.segment.frame_count) for d in done])
    return _Coded(info, first, cut, 1, done)


def _usable(config: EncodeConfig, info: VideoInfo, input_path: str) -> tuple[Option, ...]:
    """The options of ``config`` usable at the source's size; none is an InputError."""
    usable = tuple(o for o in config.options if skip_reason(o, info.width, info.height) is None)
    if not usable:
        raise InputError(
            f"{display_name(input_path)}: no option is usable at {info.width}x{info.height}"
        )
    return usable


def _read_source(input_path: str, workdir: Path) -> tuple[Path, VideoInfo, int]:
    """The source's path (standard input spooled into ``workdir``), its stream header and
    frame count; a source without frames is an :class:`InputError`."""
    stdin = input_path == STDIO
    name = display_name(input_path)
    source = spool_stdin(workdir / "input.y4m") if stdin else Path(input_path)
    info = read_info(source, name=name)
    frames = count_frames(source, name=name, validate=stdin)
    if frames == 0:
        raise InputError(f"{name}: no frames")
    return source, info, frames


def _header(
    config: EncodeConfig, info: VideoInfo, frames: int, segments: Sequence[Segment]
) -> WrpHeader:
    """The file's header: the model bank's id only when a segment uses a network; version 4
    where the segments' bottleneck bit depths differ, else 3 where one uses a prior, else 2
    (docs/format.md); the bottleneck bit depth of the first segment."""
    bank = config.bank
    depths = [s.bottleneck_bitdepth or config.settings.bitdepth for s in segments]
    neural = bank is not None and any(OPTIONS[s.option].neural for s in segments)
    return WrpHeader(
        codec_id=config.backend.codec_id,
        model_bank_id=bank.id_for(bank.integer) if bank is not None and neural else NO_MODEL_BANK,
        integer=bank is not None and neural and bank.integer,
        width=info.width,
        height=info.height,
        bitdepth=info.bitdepth,
        chroma=int(info.chroma),
        bottleneck_bitdepth=depths[0],
        fps_num=info.fps_num,
        fps_den=info.fps_den,
        aspect_num=info.aspect_num,
        aspect_den=info.aspect_den,
        frame_count=frames,
        color_range=info.color_range,
        version=_version(segments, depths),
    )


def _lam(config: EncodeConfig, first: SegmentReport) -> float:
    """The λ of the first segment's decisions (each segment's: ``segments[k].lam``)."""
    if first.lam is not None:
        return first.lam.lam
    return config.backend.qp_to_lambda(config.settings.qp)


def _version(segments: Sequence[Segment], depths: Sequence[int]) -> int:
    """The oldest container version that holds ``segments`` coded at ``depths``."""
    if len(set(depths)) > 1:
        return 4
    return 3 if any(s.prior for s in segments) else 2


def _report(
    input_path: str,
    output_path: str,
    config: EncodeConfig,
    info: VideoInfo,
    frames: int,
    seg_reports: Sequence[SegmentReport],
    total_bits: int,
) -> EncodeReport:
    """The encode's report; the first segment's choice stands for the file's, its figures
    averaged over all frames (its timings and encodes left for the caller to fill in)."""
    settings, bitrate = config.settings, config.bitrate_kbps
    chosen = [next(c for c in s.candidates if c.chosen) for s in seg_reports]
    weights = [s.frame_count for s in seg_reports]
    first_choice = seg_reports[0]
    return EncodeReport(
        input=input_path,
        output=output_path,
        codec=config.backend.name,
        preset=settings.preset,
        effort=config.effort,
        pre_arithmetic=config.pre_arithmetic,
        bitdepth=seg_reports[0].bitdepth or settings.bitdepth,
        auto_bitdepth=any(s.depths for s in seg_reports),
        qp=None if bitrate else settings.qp,
        bitrate_budget_kbps=bitrate,
        rdo_lambda=None if bitrate else _lam(config, seg_reports[0]),
        width=info.width,
        height=info.height,
        frames=frames,
        fps=f"{info.fps_num}/{info.fps_den}",
        option=first_choice.option,
        option_name=first_choice.option_name,
        ratio=next(c.ratio for c in first_choice.candidates if c.chosen),
        bits=total_bits,
        kbps=metrics.kbps(total_bits, frames, info.fps_num, info.fps_den),
        psnr_y=_frame_weighted([c.psnr_y for c in chosen], weights),
        psnr_yuv=_frame_weighted([c.psnr_yuv for c in chosen], weights),
        candidates=first_choice.candidates,
        segments=list(seg_reports),
        timings={},
        encodes=0,
    )


def _frame_weighted(values: Sequence[float | None], weights: Sequence[int]) -> float:
    """Per-frame averages of segments combined into the average over all frames."""
    return sum(float(v or 0.0) * w for v, w in zip(values, weights, strict=True)) / sum(weights)
