"""``encode --standard``: a plain stream any player decodes, with a pre-filter where it pays.

No wrapcodec decoder is needed, so only options without a post-processor are candidates:
``direct`` (the codec on the source) and ``prefilter`` (the bank's pre-filter of the codec
and metric, :class:`~wrapcodec.prefilter.PreFilter`, at r = 1). Each candidate is coded into
the requested file format (:mod:`wrapcodec.streams`), decoded back by plain ffmpeg from that
very file, and measured; the RDO keeps the one of lowest

    J = D + λ(QP) · R

R the file's bits per source luma sample and D, for ``psnr``, the 6:1:1 YUV MSE in 8-bit
units (as :mod:`wrapcodec.encode.cost`); for ``ms-ssim``, luma ``1 − MS-SSIM`` converted to
MSE units at direct coding's exchange rate (its luma MSE over its ``1 − MS-SSIM``) beside the
chroma MSE, so that λ keeps its meaning. The choice is made once for the whole clip, at the
source's bit depth and size. The report gives every candidate's rate, PSNR and MS-SSIM and
the MD5 of the pictures the chosen file decodes to.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel

from wrapcodec import ffmpeg
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.encode.cost import rd_cost
from wrapcodec.errors import InputError, OptionError
from wrapcodec.metrics import (
    MS_SSIM_MIN_SIDE,
    MsSsimAccumulator,
    PsnrAccumulator,
    kbps,
)
from wrapcodec.nets import from_unit, unit
from wrapcodec.options import OPTIONS
from wrapcodec.paths import atomic_write, spool_stdin
from wrapcodec.prefilter import PreFilter
from wrapcodec.streams import StreamFormat, stream_format
from wrapcodec.y4m import Frame, VideoInfo, count_frames, iter_frames, read_info

Metric = Literal["psnr", "ms-ssim"]
CANDIDATES = ("direct", "prefilter")


def parse_standard_options(text: str) -> tuple[str, ...]:
    """``--options`` under ``--standard``: ``all`` or names among :data:`CANDIDATES` (``0``
    is direct). An option that needs wrapcodec's decoder is refused in one line."""
    if text.strip() == "all":
        return CANDIDATES
    chosen: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        name = "direct" if item in ("0", "direct") else item
        if name not in CANDIDATES:
            found = [o for o in OPTIONS.values() if item in (o.name, str(int(o.code)))]
            what = f"option {int(found[0].code)} ({found[0].name})" if found else repr(item)
            raise OptionError(
                f"--standard: {what} needs wrapcodec's decoder; a standard stream takes "
                "direct or prefilter"
            )
        if name in chosen:
            raise OptionError(f"--options {text!r}: {name} is given twice")
        chosen.append(name)
    return tuple(chosen)


@dataclass(frozen=True)
class StandardConfig:
    """A standard-stream encode: the codec at its QP, the metric, the candidates, and the
    pre-filter (None when the bank has none for this codec and metric)."""

    backend: Backend
    qp: int
    preset: str
    metric: Metric = "psnr"
    candidates: tuple[str, ...] = CANDIDATES
    prefilter: PreFilter | None = None
    prefilter_name: str | None = None

    def settings(self, bitdepth: int) -> EncodeSettings:
        """The codec's settings for a source of ``bitdepth`` bits, coded at that depth."""
        return EncodeSettings(qp=self.qp, preset=self.preset, bitdepth=bitdepth)


class StandardCandidate(BaseModel):
    """One candidate as the chosen file's decoder shows it."""

    name: str
    bytes: int
    kbps: float
    psnr_y: float
    psnr_u: float
    psnr_v: float
    psnr_yuv: float
    ms_ssim: float | None
    ms_ssim_db: float | None
    distortion: float
    cost: float
    decoded_md5: str


class StandardReport(BaseModel):
    """What ``encode --standard`` wrote and why."""

    input: str
    output: str
    format: str
    codec: str
    qp: int
    preset: str
    bitdepth: int
    width: int
    height: int
    frames: int
    metric: Metric
    lam: float
    chosen: str
    prefilter: str | None
    candidates: list[StandardCandidate]
    note: str | None = None
    seconds: float


def filter_frame(net: PreFilter, frame: Frame, qp: int, bitdepth: int) -> Frame:
    """``frame`` through the pre-filter at ``qp``, rounded to ``bitdepth`` samples."""
    dtype = np.uint8 if bitdepth == 8 else np.uint16
    y = unit(torch.from_numpy(frame.y.astype(np.float32))[None, None], bitdepth)
    uv = unit(torch.from_numpy(np.stack([frame.u, frame.v]).astype(np.float32))[None], bitdepth)
    with torch.inference_mode():
        fy, fuv = net(y, uv, torch.tensor([qp]))
    ys = from_unit(fy, bitdepth).round()[0, 0].numpy().astype(dtype)
    uvs = from_unit(fuv, bitdepth).round()[0].numpy().astype(dtype)
    return Frame(ys, uvs[0], uvs[1])


def _inputs(source: Path, cfg: StandardConfig, name: str, bitdepth: int) -> Iterator[Frame]:
    for frame in iter_frames(source):
        if name == "direct" or cfg.prefilter is None:
            yield frame
        else:
            yield filter_frame(cfg.prefilter, frame, cfg.qp, bitdepth)


@dataclass
class Measured:
    """A candidate coded, decoded from its own file by plain ffmpeg, and measured."""

    path: Path
    bits: int
    psnr: PsnrAccumulator
    ms: MsSsimAccumulator | None
    md5: str

    @property
    def ms_ssim(self) -> float | None:
        return None if self.ms is None else self.ms.ms_ssim

    def mse_planes(self) -> list[float]:
        scale = float(4 ** (self.psnr.bitdepth - 8)) * self.psnr.frames
        return [m / scale for m in self.psnr.mse_sum]


def code_candidate(
    source: Path,
    info: VideoInfo,
    frames: int,
    cfg: StandardConfig,
    fmt: StreamFormat,
    name: str,
    folder: Path,
) -> Measured:
    """Code candidate ``name`` into ``folder``, decode the file with plain ffmpeg, measure."""
    # ``source`` has ``frames`` frames of ``info``; the file is ``folder/NAME.SUFFIX``.
    path = folder / f"{name}{fmt.suffixes[0]}"
    fps = f"{info.fps_num}/{info.fps_den}"
    frames_in = _inputs(source, cfg, name, info.bitdepth)
    settings = cfg.settings(info.bitdepth)
    ffmpeg.encode(cfg.backend, settings, frames_in, info.width, info.height, fps, path, fmt)
    psnr = PsnrAccumulator(info.bitdepth)
    big = min(info.width, info.height) >= MS_SSIM_MIN_SIDE
    ms = MsSsimAccumulator(info.bitdepth) if big else None
    digest = hashlib.md5()
    decoded = ffmpeg.decode(
        cfg.backend, path, info.width, info.height, info.bitdepth, frames, demuxer=fmt.demuxer
    )
    for ref, rec in zip(iter_frames(source), decoded, strict=False):
        psnr.add(ref, rec)
        if ms is not None:
            ms.add(ref, rec)
        for plane in rec:
            digest.update(plane.astype("<u2" if info.bitdepth > 8 else "u1").tobytes())
    for _ in decoded:  # to the end: the frame count and exit status are checked there
        pass
    return Measured(path, 8 * path.stat().st_size, psnr, ms, digest.hexdigest())


def distortion(
    mse: Sequence[float], ms_ssim: float | None, metric: Metric, exchange: float | None
) -> float:
    """D of a candidate from its per-plane MSE (8-bit units) and luma MS-SSIM (module
    docstring); the 6:1:1 MSE when there is no MS-SSIM or exchange rate."""
    y, u, v = mse
    if metric == "psnr" or ms_ssim is None or exchange is None:
        return (6 * y + u + v) / 8
    return (6 * exchange * (1.0 - ms_ssim) + u + v) / 8


def exchange_rate(mse_y: float, ms_ssim: float | None) -> float | None:
    """Luma MSE per unit of ``1 − MS-SSIM`` at an operating point (direct coding's)."""
    if ms_ssim is None or ms_ssim >= 1.0:
        return None
    return mse_y / (1.0 - ms_ssim)


def check_standard(source: Path, cfg: StandardConfig) -> VideoInfo:
    """Refuse, in one line, a source the standard stream cannot carry as it is."""
    info = read_info(source)
    if info.width % 2 or info.height % 2:
        raise InputError(
            f"--standard: {info.width}x{info.height} is odd; a 4:2:0 stream a plain player "
            "shows at the source's size needs even dimensions"
        )
    if cfg.metric == "ms-ssim" and min(info.width, info.height) < MS_SSIM_MIN_SIDE:
        raise InputError(
            f"--metric ms-ssim needs pictures of at least {MS_SSIM_MIN_SIDE}x{MS_SSIM_MIN_SIDE}"
        )
    return info


def _costed(
    measured: dict[str, Measured], cfg: StandardConfig, info: VideoInfo, frames: int, lam: float
) -> list[StandardCandidate]:
    """Each candidate's figures and J (module docstring), direct coding's exchange rate for
    MS-SSIM."""
    anchor = measured.get("direct", next(iter(measured.values())))
    exchange = exchange_rate(anchor.mse_planes()[0], anchor.ms_ssim)
    reports = []
    for name, m in measured.items():
        d = distortion(m.mse_planes(), m.ms_ssim, cfg.metric, exchange)
        reports.append(
            StandardCandidate(
                name=name,
                bytes=m.bits // 8,
                kbps=kbps(m.bits, frames, info.fps_num, info.fps_den),
                psnr_y=m.psnr.psnr_planes[0],
                psnr_u=m.psnr.psnr_planes[1],
                psnr_v=m.psnr.psnr_planes[2],
                psnr_yuv=m.psnr.psnr_yuv,
                ms_ssim=m.ms_ssim,
                ms_ssim_db=None if m.ms is None else m.ms.db,
                distortion=d,
                cost=rd_cost(d, m.bits, frames, info, lam),
                decoded_md5=m.md5,
            )
        )
    return reports


def encode_standard(
    source: str,
    output: str,
    cfg: StandardConfig,
    progress: Callable[[str], None] | None = None,
) -> StandardReport:
    """Code ``source`` (a y4m path, or ``-``) into the standard file ``output`` (module
    docstring); the file appears only once it is complete."""
    started = time.monotonic()
    fmt = stream_format(output, cfg.backend.name)
    candidates = cfg.candidates
    note = None
    if cfg.prefilter is None and "prefilter" in candidates:
        if candidates == ("prefilter",):
            raise OptionError(
                f"--standard: the bank has no {cfg.backend.name} pre-filter for {cfg.metric}"
            )
        candidates = tuple(c for c in candidates if c != "prefilter")
        note = f"the bank has no {cfg.backend.name} pre-filter for {cfg.metric}: direct only"
    with tempfile.TemporaryDirectory(prefix="wrapcodec-standard-") as tmp:
        folder = Path(tmp)
        path = spool_stdin(folder / "input.y4m") if source == "-" else Path(source)
        info = check_standard(path, cfg)
        frames = count_frames(path)
        measured: dict[str, Measured] = {}
        for name in candidates:
            if progress is not None:
                progress(name)
            measured[name] = code_candidate(path, info, frames, cfg, fmt, name, folder)
        lam = cfg.backend.qp_to_lambda(cfg.qp)
        reports = _costed(measured, cfg, info, frames, lam)
        best = min(reports, key=lambda c: (c.cost, c.bytes))
        chosen = measured[best.name].path
        atomic_write(Path(output), lambda p: shutil.copyfile(chosen, p))
    return StandardReport(
        input=source,
        output=output,
        format=fmt.name,
        codec=cfg.backend.name,
        qp=cfg.qp,
        preset=cfg.preset,
        bitdepth=info.bitdepth,
        width=info.width,
        height=info.height,
        frames=frames,
        metric=cfg.metric,
        lam=lam,
        chosen=best.name,
        prefilter=cfg.prefilter_name if "prefilter" in candidates else None,
        candidates=reports,
        note=note,
        seconds=time.monotonic() - started,
    )
