"""One RD point of ``wrapcodec bench``: what determines it, how it is measured, what it holds.

A *point* is a real encode, a real decode with post-processing, the container's bits and
the metrics (PSNR-Y/U/V and PSNR-YUV 6:1:1 in the HM/JVET convention; SSIM and VMAF through
ffmpeg's ``ssim`` and ``libvmaf`` filters on request). Points are independent, so they run
on local processes or on a Dask cluster (:mod:`wrapcodec.bench.run`), and each is cached
under the key of its :class:`PointSpec`: everything that determines it (source content,
frames, option, codec, QP, preset, bit depth, threads, metrics, model hash, adaptation steps,
pipeline revision, and the fit's revision for an adapted point).

With ``adapt_steps`` a neural point also fits its post-processor to its own bitstream (the
encoder's content adaptation) and keeps, as the encoder would, the variant with the lower
``J = D + λ·R``, the update's bytes counted in R.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from wrapcodec import ffmpeg
from wrapcodec.adapt import REVISION as ADAPT_REVISION
from wrapcodec.adapt import AdaptConfig, Fitted, ladder_plan, shard_threads
from wrapcodec.adaptation import Segment, best_rung_index, climb, full
from wrapcodec.backend import Backend, EncodeSettings, get_backend
from wrapcodec.bank import Bank, get_bank, option_for
from wrapcodec.bench.cache import Cache, digest
from wrapcodec.container import overhead_bytes
from wrapcodec.encode.cost import keeps_update, rd_cost
from wrapcodec.encode.efforts import parse_budget
from wrapcodec.errors import InputError
from wrapcodec.metrics import PsnrAccumulator, kbps
from wrapcodec.nets import count_macs
from wrapcodec.options import OPTIONS, bottleneck_size
from wrapcodec.pipeline import (
    REVISION,
    Coded,
    Layout,
    code_and_measure,
    measure,
    plane_sizes,
    reconstruct,
    source_frames,
)
from wrapcodec.resample import weight_matrix
from wrapcodec.y4m import Y4MWriter, read_info

METRICS = ("psnr", "ssim", "vmaf")


class PointSpec(BaseModel):
    """Everything that determines one RD point (the cache key is its hash)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sequence: str
    path: str
    source_sha256: str
    frames: int
    option: int
    codec: str
    qp: int
    preset: str
    bitdepth: int = 10
    threads: int | None = None
    metrics: tuple[str, ...] = ("psnr",)
    model_hash: str = ""  # ModelCard.key of the networks an option uses; empty for linear ones
    models: str | None = None  # the bank folder of a neural option (not part of the key)
    revision: int = REVISION  # of the pipeline's numerics
    adapt_steps: int = Field(default=0, ge=0)  # content adaptation of a neural option; 0: none
    # "": one fit (BIAS_TAIL, int8); else the encoder's ladder within this --adapt-budget
    adapt_budget: str = ""
    rival: str = ""  # a codec's own resolution tool (Backend.rivals), coded as option 0
    pre_arithmetic: str = "float32"  # of a wrapper's pre-processor (nets.PRE_ARITHMETICS)
    lam_scale: float = 1.0  # an adapted point's λ over the codec's λ(QP) (encode.lagrange)
    # the price of a bit in an adapted point's update quantisation over its λ (as encode's
    # Job.update_scale: the codec's slope scale at its λ(QP), 1 at a measured λ)
    update_scale: float = 1.0

    def key(self) -> str:
        """The cache key. ``adapt_steps == 0``, ``rival == ""``, ``pre_arithmetic ==
        "float32"``, ``lam_scale == 1`` and ``update_scale == 1`` are left out of it: such a
        point hashes as if the field did not exist. An adapted point's key holds the fit's
        revision (:data:`wrapcodec.adapt.REVISION`)."""
        exclude = {"path", "sequence", "models"}
        exclude |= {"lam_scale"} if self.lam_scale == 1.0 else set()
        exclude |= {"update_scale"} if self.update_scale == 1.0 else set()
        exclude |= {"pre_arithmetic"} if self.pre_arithmetic == "float32" else set()
        exclude |= set() if self.adapt_steps else {"adapt_steps"}
        exclude |= set() if self.adapt_budget else {"adapt_budget"}
        exclude |= {"rival"} if not self.rival else set()
        fields = self.model_dump(exclude=exclude)
        if self.adapt_steps:  # an adapted point is the fit's too
            fields["adapt_revision"] = ADAPT_REVISION
        return digest(fields)


class Point(BaseModel):
    """One measured RD point."""

    spec: PointSpec
    option_name: str
    kind: str
    ratio: str
    bottleneck: str
    bits: int
    kbps: float
    psnr_y: float
    psnr_u: float
    psnr_v: float
    psnr_yuv: float
    ssim_y: float | None = None
    vmaf: float | None = None
    encode_s: float  # encoding, plus fitting the update when the point uses it (encoder work)
    decode_s: float
    encode_fps: float
    decode_fps: float
    post_kmacs_per_pixel: float
    psnr_yuv_lanczos_post: float | None = None  # neural options: same bitstream, Lanczos up
    # J = D + λ·R of the point as the encoder computes it (encode.rd_cost) at the point's λ
    # (spec.lam_scale times the codec's λ(QP)), and its D: the 6:1:1 YUV MSE in 8-bit units
    # (None: a point cached before they were recorded)
    cost: float | None = None
    mse: float | None = None
    # Content adaptation (neural options with spec.adapt_steps > 0; None/False otherwise). The
    # figures above are those of the variant with the lower J, as the encoder decides.
    adapt_gain_db: float | None = None  # PSNR-YUV with the update minus without
    adapt_bytes: int | None = None  # of the update (in the bits when adapt_used)
    adapt_s: float | None = None  # fitting the update
    adapt_used: bool = False  # the update lowers J, so the point carries it
    psnr_yuv_without_update: float | None = None  # the bank's post-processor on this bitstream
    adapt_cost_without: float | None = None  # J = D + λ·R of either variant (encode.rd_cost)
    adapt_cost_with: float | None = None


def curve_of(point: Point) -> int | str:
    """Which RD curve a point belongs to: its option's code, or its rival's name."""
    return point.spec.rival or point.spec.option


def post_kmacs_per_pixel(option: int, width: int, height: int, bank: Bank | None = None) -> float:
    """Decoder-side multiply-accumulates per output luma pixel, in thousands.

    For neural options, :func:`wrapcodec.nets.count_macs` of the post-processor at this size.
    For the linear options: the separable up-sampling filter's non-zero taps (vertical pass
    on the bottleneck width, then horizontal pass), for Y, U and V, per source luma pixel.
    Direct coding has no post-processor.
    """
    opt = OPTIONS[option]
    if opt.kind == "direct":
        return 0.0
    if opt.neural:
        assert bank is not None
        return count_macs(bank.processors(opt).post, width, height) / 1000.0
    bw, bh = bottleneck_size(width, height, opt.ratio)
    macs = 0
    for (h_in, w_in), (h_out, w_out) in zip(
        plane_sizes(bw, bh), plane_sizes(width, height), strict=True
    ):
        wy = weight_matrix(h_in, h_out, opt.kind)  # type: ignore[arg-type]
        wx = weight_matrix(w_in, w_out, opt.kind)  # type: ignore[arg-type]
        macs += int((wy != 0).sum()) * w_in + int((wx != 0).sum()) * h_out
    return macs / (width * height) / 1000.0


def _filter_metrics(
    ref: Path, rec: Path, metrics: Sequence[str], workdir: Path
) -> dict[str, float]:
    """SSIM-Y (per-frame mean) and VMAF (mean) of ``rec`` against ``ref`` via ffmpeg."""
    out: dict[str, float] = {}
    if "ssim" in metrics:
        stats = workdir / "ssim.log"
        ffmpeg.run_filter(rec, ref, f"ssim=stats_file={stats}")
        values = [float(m) for m in re.findall(r"\bY:([0-9.]+)", stats.read_text())]
        out["ssim_y"] = sum(values) / len(values)
    if "vmaf" in metrics:
        log = workdir / "vmaf.json"
        ffmpeg.run_filter(rec, ref, f"libvmaf=log_fmt=json:log_path={log}")
        out["vmaf"] = float(json.loads(log.read_text())["pooled_metrics"]["vmaf"]["mean"])
    return out


def trimmed_source(src: Path, frames: int, dest: Path) -> Path:
    """The first ``frames`` frames of ``src`` written to ``dest``."""
    with Y4MWriter(dest, read_info(src)) as writer:
        for frame in source_frames(src, 0, frames):
            writer.write(frame)
    return dest


def run_point(spec: PointSpec) -> Point:
    """Measure one point (a top-level function so processes and Dask workers can run it).

    ``spec.threads`` bounds the encoder's threads and the networks' (torch) threads."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    backend, bank, layout = _set_up(spec)
    settings = EncodeSettings(
        qp=spec.qp, preset=spec.preset, bitdepth=spec.bitdepth, threads=spec.threads
    )
    source = Path(spec.path)
    info, opt = layout.source, layout.option
    extra = [m for m in spec.metrics if m != "psnr"]
    with tempfile.TemporaryDirectory(prefix="wrapcodec-bench-") as tmp:
        workdir = Path(tmp)
        stream = workdir / f"point{backend.extension}"
        rec_path = workdir / "rec.y4m"
        if extra:
            with Y4MWriter(rec_path, info) as writer:
                coded = code_and_measure(
                    backend, settings, source, layout, 0, spec.frames, stream, writer.write
                )
        else:
            coded = code_and_measure(backend, settings, source, layout, 0, spec.frames, stream)
        update = b""
        adaptation: dict[str, Any] = {}
        if bank is not None and spec.adapt_steps > 0:
            coded, update, adaptation = _adapt(backend, spec, layout, source, stream, coded)
            if extra and update:
                # SSIM/VMAF of what the decoder outputs: the reconstruction with the update
                with Y4MWriter(rec_path, info) as writer:
                    measure(
                        backend,
                        stream,
                        layout.with_update(update),
                        source,
                        0,
                        spec.frames,
                        sink=writer.write,
                    )
        if extra:
            ref = trimmed_source(source, spec.frames, workdir / "ref.y4m")
            scores = _filter_metrics(ref, rec_path, extra, workdir)
        else:
            scores = {}
        lanczos_post = _lanczos_post(backend, source, layout, stream, spec.frames) if bank else None
    bits = _bits(coded, update)
    cost = rd_cost(coded.mse_8bit, bits, spec.frames, info, _lam(backend, spec))
    bw, bh = layout.bottleneck
    return Point(
        spec=spec,
        option_name=spec.rival or opt.name,
        kind="rival" if spec.rival else opt.kind,
        ratio=opt.ratio_text,
        bottleneck=f"{bw}x{bh}",
        bits=bits,
        kbps=kbps(bits, spec.frames, info.fps_num, info.fps_den),
        psnr_y=coded.psnr_y,
        psnr_u=coded.psnr_u,
        psnr_v=coded.psnr_v,
        psnr_yuv=coded.psnr_yuv,
        ssim_y=scores.get("ssim_y"),
        vmaf=scores.get("vmaf"),
        encode_s=coded.encode_s,
        decode_s=coded.decode_s,
        encode_fps=spec.frames / coded.encode_s,
        decode_fps=spec.frames / coded.decode_s,
        post_kmacs_per_pixel=post_kmacs_per_pixel(spec.option, info.width, info.height, bank),
        psnr_yuv_lanczos_post=lanczos_post,
        cost=cost,
        mse=coded.mse_8bit,
        **adaptation,
    )


def _set_up(spec: PointSpec) -> tuple[Backend, Bank | None, Layout]:
    """The point's backend (a rival's where it is one), its bank (neural options only; its
    model must be the one the spec was planned with) and its option's layout."""
    backend = get_backend(spec.codec)
    if spec.rival:
        if spec.option != 0:
            raise InputError(f"rival {spec.rival!r} is coded as option 0, not {spec.option}")
        backend = backend.with_rival(spec.rival)
    opt = OPTIONS[spec.option]
    bank = get_bank(spec.models) if opt.neural else None
    prior = bank.prior_for(opt, backend.name, spec.qp, spec.bitdepth) if bank is not None else 0
    if bank is not None and bank.card(opt, prior).key != spec.model_hash:
        raise InputError(f"{spec.models}: the model of option {spec.option} has changed")
    info = read_info(Path(spec.path))
    layout = Layout.make(
        info, opt, backend, spec.bitdepth, bank, pre_arithmetic=spec.pre_arithmetic, prior=prior
    )
    return backend, bank, layout


def _lam(backend: Backend, spec: PointSpec) -> float:
    """The point's λ: the codec's λ(QP) times ``spec.lam_scale``."""
    return spec.lam_scale * backend.qp_to_lambda(spec.qp)


def _bits(coded: Coded, update: bytes = b"") -> int:
    """Bits of a one-segment .wrp file of ``coded`` and ``update``, as the encoder counts them."""
    return 8 * (coded.payload_bytes + len(update) + overhead_bytes(1))


def _adapt(
    backend: Backend, spec: PointSpec, layout: Layout, source: Path, stream: Path, plain: Coded
) -> tuple[Coded, bytes, dict[str, Any]]:
    """The encoder's content adaptation of a neural point: fit the post-processor to
    ``stream``, and keep the update only when it lowers ``J = D + λ·R`` (its bytes in R).

    Returns the chosen variant's figures (``encode_s`` with the fitting time when the update
    is kept: the encoder does that work), the update it carries (empty: none) and the
    :class:`Point`'s adaptation fields. The update is the best of the encoder's ladder
    within ``spec.adapt_budget`` (:func:`_climbed`), as ``encode`` chooses it."""
    fitted, adapted = _climbed(backend, spec, layout, source, stream, plain)
    info = layout.source
    lam = _lam(backend, spec)
    cost_without = rd_cost(plain.mse_8bit, _bits(plain), spec.frames, info, lam)
    cost_with = rd_cost(adapted.mse_8bit, _bits(adapted, fitted.update), spec.frames, info, lam)
    used = keeps_update(cost_without, cost_with)  # the encoder's rule
    fields: dict[str, Any] = {
        "adapt_gain_db": adapted.psnr_yuv - plain.psnr_yuv,
        "adapt_bytes": len(fitted.update),
        "adapt_s": fitted.seconds,
        "adapt_used": used,
        "psnr_yuv_without_update": plain.psnr_yuv,
        "adapt_cost_without": cost_without,
        "adapt_cost_with": cost_with,
    }
    if not used:
        return plain, b"", fields
    chosen = dataclasses.replace(adapted, encode_s=plain.encode_s + fitted.seconds)
    return chosen, fitted.update, fields


def _climbed(
    backend: Backend, spec: PointSpec, layout: Layout, source: Path, stream: Path, plain: Coded
) -> tuple[Fitted, Coded]:
    """The encoder's ladder on a one-segment point: the rungs ``spec.adapt_budget`` pays for
    at ``spec.adapt_steps`` steps each, quantisation 3 at the point's λ times
    ``spec.update_scale``; the lowest J (at the point's λ)."""
    info = layout.source
    lam = _lam(backend, spec)
    cfg = AdaptConfig(steps=spec.adapt_steps)
    samples = spec.frames * info.width * info.height
    crop = (
        min(cfg.crop, info.height + info.height % 2),
        min(cfg.crop, info.width + info.width % 2),
    )
    budget = parse_budget(spec.adapt_budget or "none")
    plan = ladder_plan(cfg, samples, crop, None if budget is None else budget.seconds(samples))
    seg = Segment(backend, stream, layout, source, 0, spec.frames, plain.encode_s)
    with shard_threads(torch.get_num_threads()):
        climbed = climb(
            seg,
            cfg,
            plan,
            lam * spec.update_scale,
            None,
            lambda coded, update: rd_cost(
                coded.mse_8bit, _bits(coded, update), spec.frames, info, lam
            ),
        )
    variants = climbed.variants
    if not variants:
        raise InputError(f"--adapt-budget {spec.adapt_budget}: no time for any update")
    measured = full(variants)
    best = measured[best_rung_index([v.cost for v in measured])]
    return dataclasses.replace(
        best.fitted, seconds=sum(v.fitted.seconds for v in variants)
    ), best.coded


def _lanczos_post(
    backend: Backend, source: Path, layout: Layout, stream: Path, frames: int
) -> float:
    """PSNR-YUV of the same bitstream with Lanczos-4 upsampling instead of the neural post
    (for r = 1: the decoded bottleneck as it is)."""
    opt = layout.option
    linear = OPTIONS[0] if opt.ratio == 1 else option_for("lanczos", opt.ratio)
    plain = dataclasses.replace(layout, option=linear, processors=None, integer=False)
    acc = PsnrAccumulator(layout.source.bitdepth)
    for ref, rec in zip(
        source_frames(source, 0, frames), reconstruct(backend, stream, plain, frames), strict=True
    ):
        acc.add(ref, rec)
    return acc.psnr_yuv


def point_cache(folder: Path) -> Cache[Point]:
    """The cache of RD points in ``folder``: an entry counts for the spec it was measured for."""
    return Cache(folder, Point, key_of=lambda point: point.spec.key())
