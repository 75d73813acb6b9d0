"""What the encoder reports: its progress while it works (:class:`ProgressSink`), and what it
did and why, as printed by ``--json`` (:class:`EncodeReport`): every candidate of every
segment, how it was judged (coded in full, estimated on a probe, or ruled out by a bound) and
the figures the choice compared."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from wrapcodec import metrics
from wrapcodec.options import Option, bottleneck_size
from wrapcodec.y4m import VideoInfo

if TYPE_CHECKING:
    from wrapcodec.encode.trials import Trial


class ProgressSink(Protocol):
    """Where the encoder reports progress (the CLI draws a bar; the library logs nothing)."""

    def start(self, total: int) -> None: ...

    def advance(self, label: str) -> None: ...


@runtime_checkable
class SegmentProgress(Protocol):
    """A :class:`ProgressSink` that also follows each segment being coded (the CLI draws a
    bar per segment)."""

    def begin_segment(self, index: int, label: str, total: int) -> None: ...

    def advance_segment(self, index: int) -> None: ...

    def end_segment(self, index: int) -> None: ...


class Silent:
    """A :class:`ProgressSink` that shows nothing."""

    def start(self, total: int) -> None:
        pass

    def advance(self, label: str) -> None:
        pass


class RungReport(BaseModel):
    """One update the encoder fitted and measured for a candidate: a rung of the capacity
    ladder (``wrapcodec.update.ladder``), absolute or relative to the update in force."""

    rung: str  # bias, bias_tail, decoder, all
    relative: bool  # a change to the update in force (else to the bank's weights)
    warm: bool  # fitted from the update in force (else from the bank's weights)
    steps: int
    params: int  # parameters the update carries
    bytes: int
    gain_db: float  # PSNR-YUV with the update minus the bank's post-processor
    cost: float  # J with the update's bytes in R (at the QP found, with a bitrate budget)
    seconds: float  # fitting and encoding it
    # gain_db and cost measured on this many frames spread over the segment only: a long
    # segment's updates are compared there, and the best is measured on every frame
    judged_on: int | None = None


class AdaptationReport(BaseModel):
    """A neural candidate's post-processor fitted to the segment, against the bank's. The
    top-level figures are those of the best update fitted (lowest J), ``tried`` lists all."""

    steps: int
    params: int  # parameters the update carries
    bytes: int  # of the update, as stored in the container
    gain_db: float  # PSNR-YUV with the update minus without
    seconds: float  # fitting every update tried
    cost_without: float | None = None  # J of the bank's post-processor (QP mode)
    cost_with: float | None = None  # None: no update measured on every frame (inheriting won)
    rung: str | None = None  # of the best update fitted
    relative: bool = False  # the best update fitted is relative to the update in force
    budget_s: float | None = None  # the modelled seconds the rungs were planned within
    tried: list[RungReport] = []
    used: bool = False  # the update is sent with this candidate
    # The update in force for the previous segment (same option), reused at no bytes:
    inherited_gain_db: float | None = None  # None when there is none to inherit
    cost_inherited: float | None = None
    # the two above measured on this many frames of a long segment only, where its updates
    # judged better there (only the best of them is measured on every frame)
    inherited_judged_on: int | None = None
    inherited: bool = False  # this candidate reuses it
    # Climbing in rounds beside other candidates, the bar it last compared its projected J
    # with (None: it never compared, or climbed alone):
    bar: float | None = None
    out_of_reach: bool = False  # its climb stopped because it could not reach the bar


class EstimateReport(BaseModel):
    """How a candidate was judged before (or instead of) coding it in full.

    ``bound``: its distortion with the bottleneck left uncoded (``lossless_mse``, on the bound
    frames; for a linear option at a QP plus half the anchor's MSE, the least that coding its
    bottleneck with the same quantiser adds: ``cost``) already reaches the anchor's J, so it
    cannot win (its J adds coding error and rate to that). ``shared``: an option that shares the
    anchor's bitstream (post-1/1), its post-processor run on ``frames`` of the anchor's decoded
    frames; its J estimated as the anchor's rate and the anchor's MSE times ``sample_mse /
    anchor_sample_mse`` (its MSE over the anchor's on those frames). ``probe``: coded on the
    probe frames at the probe preset, its J estimated from the probe's rate and distortion
    scaled by the anchor's full-to-probe ratios. ``family``: a bilinear, post or wrapper option
    not probed because the best estimate of its ratio so far (Lanczos, then bilinear and post;
    direct for r = 1) was more than the effort's margin above the best estimate (``cost``: that
    estimate), or (levels with ``pairs_need_post``) a wrapper whose ratio's post-processor did
    not beat linear upsampling of the same bitstream (``cost``: the post-processor's estimate),
    or (levels with ``ratio_ladder``) a Lanczos option below a milder Lanczos ratio that was
    more than the margin above the best (``cost``: the milder ratio's estimate or bound)."""

    method: Literal["bound", "family", "shared", "probe"]
    frames: list[int] | None = None  # segment frames a bound or shared estimate was made on
    lossless_mse: float | None = None  # 6:1:1 MSE (8-bit units) through an uncoded bottleneck
    sample_mse: float | None = None  # shared: its MSE on the frames
    anchor_sample_mse: float | None = None  # shared: the anchor's MSE on the same frames
    probe_bits: int | None = None  # payload of the probe stream
    probe_mse: float | None = None  # 6:1:1 MSE of the probe frames
    cost: float  # the estimated J (probe) or the lower bound of J (bound)
    rank: int | None = None  # place in the probe's ranking (1 = lowest estimated J)
    coded: bool = False  # then coded in full (its figures are the candidate's)


class CandidateReport(BaseModel):
    """One option on one segment, with the figures the RDO compared (those of the variant
    with the update when ``adaptation.used``). Figures are empty for a candidate that was
    skipped (unusable) or ruled out (``pruned``, see ``estimate``)."""

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
    shares: str | None = None  # coded in full with the bitstream of this option (same pre)
    skipped: str | None = None
    pruned: str | None = None
    estimate: EstimateReport | None = None
    qps_tried: list[int] | None = None  # bitrate mode: the QPs coded in full
    adaptation: AdaptationReport | None = None
    chosen: bool = False


class ProbeReport(BaseModel):
    """The probe of one segment (effort levels below ``exhaustive``)."""

    frames: list[int]  # segment frame indices coded as the probe clip
    preset: str
    anchor: str  # the option coded both in full and on the probe
    anchor_qp: int
    rate_scale: float  # anchor's full bits per frame / probe bits per frame
    distortion_scale: float  # anchor's full MSE / probe MSE
    bound_frames: list[int]  # frames the uncoded-bottleneck bound was measured on
    seconds: float  # probing, bound included


class DepthReport(BaseModel):
    """Direct coding of a segment at one bottleneck bit depth (``--bitdepth auto``)."""

    bitdepth: int
    kbps: float
    psnr_yuv: float
    cost: float  # J at the segment's QP; the lowest one's depth codes every candidate
    frames: int | None = None  # measured on a probe of this many frames (None: the segment)


class LambdaReport(BaseModel):
    """A segment's λ, measured on direct coding at its QP and at ``probe_qp``
    (:mod:`~wrapcodec.encode.lagrange`)."""

    model: float  # the backend's relation at the segment's QP (8-bit SSE per bit)
    scale: float  # the segment's λ over ``model``: the secant slope's ratio, or 1
    measured: bool  # False: the curve did not fall there, the relation's λ is kept
    probe_qp: int
    probe_kbps: float
    probe_psnr_yuv: float
    seconds: float  # the probe's encode and measurement

    @property
    def lam(self) -> float:
        """The λ the segment's decisions used."""
        return self.scale * self.model


class SegmentReport(BaseModel):
    first_frame: int
    frame_count: int
    option: int
    option_name: str
    bitdepth: int | None = None  # of the coded bottleneck (None: reports made before it)
    depths: list[DepthReport] = []  # --bitdepth auto: direct coding at each depth tried
    lam: LambdaReport | None = None  # None: the backend's λ(QP) (--lambda model, one choice)
    probe: ProbeReport | None = None
    candidates: list[CandidateReport]


class EncodeReport(BaseModel):
    """What ``wrapcodec encode`` did; printed by ``--json``."""

    input: str
    output: str
    codec: str
    preset: str
    effort: str
    pre_arithmetic: str  # of the wrappers' pre-processors (nets.PRE_ARITHMETICS)
    bitdepth: int  # of the first segment's bottleneck (segments[k].bitdepth: each one's)
    auto_bitdepth: bool = False  # chosen per segment (--bitdepth auto; segments[k].depths)
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
    encodes: int  # encoder runs, probes included
    segmentation: Literal["one", "fixed", "scenes"] = "one"  # how the clip was cut
    cuts: list[int] = []  # first frames of the segments after the first
    chains: int = 1  # runs of segments whose updates build on each other (restart at scenes)
    resumed: int = 0  # segments taken up from the work folder (--resume), not coded again


def candidate_report(trial: Trial, count: int, info: VideoInfo) -> CandidateReport:
    """The figures of a candidate coded in full on ``count`` frames."""
    c = trial.coded
    bw, bh = trial.layout.bottleneck
    return CandidateReport(
        code=int(trial.option.code),
        name=trial.option.name,
        ratio=trial.option.ratio_text,
        bottleneck=f"{bw}x{bh}",
        qp=trial.qp,
        bits=trial.bits,
        kbps=metrics.kbps(trial.bits, count, info.fps_num, info.fps_den),
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
