"""Training the standard-stream pre-filter with the real codec in the loop.

Each step takes a batch of pseudo-video clips of the training photos (the post-processor
priors' pair cache, :mod:`wrapcodec.pairs`), a random QP per clip, and:

1. filters the clips (:class:`~wrapcodec.prefilter.PreFilter`) and rounds them to 8 bits;
2. codes and decodes them with the real codec at 8 bits, as ``encode --standard`` does;
3. minimises ``J = D + λ·R̂`` per luma sample, λ the encoder's relation λ(QP)
   (:meth:`~wrapcodec.backend.Backend.qp_to_lambda`) or, ``lam="measured"``, the slope of
   the clip's own direct coding in the cache (:func:`measured_scales`), R̂ the learned
   :class:`~wrapcodec.prefilter.RateModel`, and D the distortion against the source, which
   reaches the filter in one of three ways (``surrogate``): that of the real decoded pictures
   with its gradient passed straight through the codec (after Klopp et al.); the filter's
   own change plus the codec's error as the learned :class:`~wrapcodec.prefilter.ErrorModel`
   predicts it (the codec's noise is then not pre-compensated); or that of the real decoded
   pictures with the gradient of a codec simulator's picture
   (:class:`~wrapcodec.simulator.CodecSimulator`, after Qiu et al.; its rate head is then R̂),
   so the filter learns only what the codec's output follows;
4. fits the codec models to what the codec really did with the filtered clips (its bits,
   its MSE against them, or, the simulator, its pictures), so what the filter is trained
   against follows what it makes.

Before the filter moves, the rate model is fitted to the cache's real bits of unfiltered
clips and the error model warms up on real encodes of them. D is the RDO's 6:1:1 YUV MSE
(target ``psnr``), or for ``ms-ssim`` luma ``1 − MS-SSIM`` in MSE units at the operating point
the codec reached (so λ keeps its meaning) beside the chroma MSE.

Validation codes pseudo-videos of other photos (Kodak) at the cache's QPs, filtered and not,
and reports the BD-rate of the filter against direct coding in both metrics, and how well the
codec models predict the real bits and MSE of each clip.
"""

from __future__ import annotations

import concurrent.futures
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import save_file
from scipy.stats import spearmanr
from torch import Tensor, nn

from wrapcodec import ffmpeg
from wrapcodec.backend import Backend, EncodeSettings, get_backend
from wrapcodec.bank import PreFilterCard
from wrapcodec.bdrate import Curve, bd_rate
from wrapcodec.encode.lagrange import secant_scale
from wrapcodec.errors import InputError
from wrapcodec.metrics import MsSsimAccumulator, PsnrAccumulator, kbps, weighted
from wrapcodec.metrics import mse as mse_plane
from wrapcodec.nets import from_unit, unit
from wrapcodec.pairs import QPS, ClipSpec, make_clips, series_dir
from wrapcodec.paths import atomic_write, sha256_file
from wrapcodec.prefilter import (
    ErrorModel,
    PreFilter,
    RateModel,
    clip_mse_parts,
    ms_ssim,
    yuv_mse,
)
from wrapcodec.simulator import CodecSimulator, picture_loss, random_window, rate_loss
from wrapcodec.y4m import Frame, iter_frames


class PreFilterTrainConfig(BaseModel):
    """One training run."""

    model_config = ConfigDict(frozen=True)

    codec: str = "x265"
    target: Literal["psnr", "ms-ssim"] = "psnr"
    steps: int = 1500
    batch: int = 4
    frames: int = 8
    qp_range: tuple[int, int] = (22, 47)
    lr: float = 5e-4
    rate_lr: float = 1e-3
    rate_online_lr: float = 2e-4
    surrogate: Literal["straight-through", "error-model", "simulator"] = "straight-through"
    """How the real codec's distortion reaches the filter: its gradient passed straight
    through the codec, the filter's own change plus the learned codec error
    (:class:`~wrapcodec.prefilter.ErrorModel`), the codec's noise not pre-compensated, or
    through a codec simulator (:class:`~wrapcodec.simulator.CodecSimulator`, whose rate head
    is then R̂)."""
    sim_crop: int = 128
    """The simulator's picture is fitted on to a random window this wide of each clip."""
    lam: Literal["model", "measured"] = "model"
    """The price of a bit in J: the encoder's relation λ(QP), or, ``measured``, each training
    clip's own, from the cache's direct coding of it (:func:`measured_scales`; QPs are then
    drawn from the cache's)."""
    error_warmup_steps: int = 300
    rate_pretrain_steps: int = 1500
    width: int = 16
    layers: int = 4
    seed: int = 0
    validate_every: int = 500
    preset: str | None = None


@dataclass
class Batch:
    """Clips as tensors in ``[-1, 1]``: ``y (N,T,H,W)``, ``uv (N,T,2,H/2,W/2)``."""

    y: Tensor
    uv: Tensor

    @staticmethod
    def of(clips: Sequence[Sequence[Frame]]) -> Batch:
        y = np.stack([np.stack([f.y for f in c]) for c in clips])
        uv = np.stack([np.stack([np.stack([f.u, f.v]) for f in c]) for c in clips])
        return Batch(unit(torch.from_numpy(y).float(), 8), unit(torch.from_numpy(uv).float(), 8))


def to_frames(y: Tensor, uv: Tensor) -> list[Frame]:
    """One clip's pictures ``(T,H,W)``, ``(T,2,h,w)`` in ``[-1, 1]`` → 8-bit frames."""
    ys = from_unit(y, 8).round().to(torch.uint8).numpy()
    uvs = from_unit(uv, 8).round().to(torch.uint8).numpy()
    return [Frame(ys[t], uvs[t, 0], uvs[t, 1]) for t in range(ys.shape[0])]


def filter_clip(net: PreFilter, clip: Sequence[Frame], qp: int) -> list[Frame]:
    """8-bit ``clip`` through the pre-filter ``net`` at ``qp``, 8-bit."""
    b = Batch.of([clip])
    with torch.no_grad():
        y, uv = net(b.y[0][:, None], b.uv[0], torch.full((len(clip),), qp))
    return to_frames(y[:, 0], uv)


def ste_round8(x: Tensor) -> Tensor:
    """Rounded to the 8-bit grid forward, the identity backward."""
    return x + (unit(from_unit(x, 8).round(), 8) - x).detach()


def code_clip(
    backend: Backend, qp: int, frames: Sequence[Frame], preset: str | None = None
) -> tuple[int, list[Frame]]:
    """``frames`` (8-bit) coded at ``qp`` by the real codec and decoded: bits and pictures."""
    height, width = frames[0].y.shape
    settings = EncodeSettings(qp=qp, preset=preset or backend.default_preset, bitdepth=8, threads=1)
    with tempfile.TemporaryDirectory(prefix="wrapcodec-prefilter-") as tmp:
        stream = Path(tmp) / f"clip{backend.extension}"
        ffmpeg.encode(backend, settings, frames, width, height, "25", stream)
        decoded = list(ffmpeg.decode(backend, stream, width, height, 8, len(frames)))
        return 8 * stream.stat().st_size, decoded


def exchange(y: Tensor, ty: Tensor) -> Tensor:
    """Per clip: luma MSE (8-bit units) per unit of luma ``1 − MS-SSIM`` at this operating
    point, held fixed (no gradient)."""
    with torch.no_grad():
        n, t = y.shape[:2]
        flat = (n * t, 1, *y.shape[-2:])
        score = ms_ssim(from_unit(y, 8).reshape(flat), from_unit(ty, 8).reshape(flat))
        loss = (1.0 - score.view(n, t).mean(dim=1)).clamp(min=1e-6)
        return ((y - ty) ** 2).mean(dim=(1, 2, 3)) * 127.5**2 / loss


def distortion(
    target: str, y: Tensor, uv: Tensor, ty: Tensor, tuv: Tensor, rate: Tensor | None = None
) -> Tensor:
    """Per clip, in 8-bit MSE units: the 6:1:1 MSE (``psnr``), or luma ``1 − MS-SSIM``
    times an exchange rate (:func:`exchange`; ``rate``, or this picture's own) beside the
    chroma MSE (``ms-ssim``)."""
    if target == "psnr":
        return yuv_mse(y, uv, ty, tuv)
    _, mse_uv = clip_mse_parts(y, uv, ty, tuv)
    n, t = y.shape[:2]
    flat = (n * t, 1, *y.shape[-2:])
    score = ms_ssim(from_unit(y, 8).reshape(flat), from_unit(ty, 8).reshape(flat))
    loss = 1.0 - score.view(n, t).mean(dim=1)
    scale = exchange(y, ty) if rate is None else rate
    return (6 * scale * loss + mse_uv) / 8


class Clips:
    """The training clips (8-bit pseudo-videos) held in memory."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.frames = [list(iter_frames(p)) for p in self.paths]

    def sample(
        self, rng: np.random.Generator, n: int, frames: int
    ) -> tuple[list[int], list[list[Frame]]]:
        """``n`` random windows of ``frames`` pictures: their clips' indices and pictures."""
        picks, out = [], []
        for _ in range(n):
            i = int(rng.integers(len(self.frames)))
            start = int(rng.integers(len(self.frames[i]) - frames + 1))
            picks.append(i)
            out.append(self.frames[i][start : start + frames])
        return picks, out


def _series(cache: Path, codec: str) -> Path:
    """The cache's folder of ``codec``'s pairs at r = 1: at 8 bits, the pre-filter's depth,
    where the cache has them, else at 10."""
    at8 = cache / series_dir(codec, Fraction(1), 8)
    return at8 if at8.is_dir() else cache / series_dir(codec, Fraction(1), 10)


def cached_bits(cache: Path, codec: str) -> list[tuple[int, int, int]]:
    """(clip index, QP, bits) of the unfiltered clips coded in the pair cache at r = 1."""
    names = sorted(p.stem for p in (cache / "clips").glob("*.y4m"))
    found = []
    for qp in QPS:
        folder = _series(cache, codec) / f"qp{qp:02d}"
        for i, name in enumerate(names):
            path = folder / f"{name}.npz"
            if path.exists():
                with np.load(path) as data:
                    found.append((i, qp, int(data["bits"])))
    return found


def measured_scales(
    cache: Path, codec: str, clips: Clips, backend: Backend
) -> dict[tuple[int, int], float]:
    """(clip index, QP) → the price of a bit on that clip's own direct coding at 8 bits, over
    the relation's λ(QP): the secant slope of its RD curve between the QP and the next QP the
    cache coded it at (the one below at the top), as ``encode --lambda measured`` measures a
    segment's (:func:`~wrapcodec.encode.lagrange.secant_scale`). Pairs missing, or whose MSE
    does not fall as the bits rise, have none; the caller falls back to the relation."""
    series = _series(cache, codec)
    sources = [
        [np.stack([getattr(f, k) for f in frames]) for k in ("y", "u", "v")]
        for frames in clips.frames
    ]
    scales = {}
    for i, path in enumerate(clips.paths):
        points = {}
        for qp in QPS:
            npz = series / f"qp{qp:02d}" / f"{path.stem}.npz"
            if npz.exists():
                with np.load(npz) as data:
                    planes = [data[k] for k in ("y", "u", "v")]
                    y, u, v = (mse_plane(a, b) for a, b in zip(sources[i], planes, strict=True))
                    mse = weighted((y, u, v))
                    points[qp] = (mse, int(data["bits"]))
        samples = sources[i][0].size
        coded = sorted(points)
        if len(coded) < 2:
            continue
        for k, qp in enumerate(coded):
            other = coded[k + 1] if k + 1 < len(coded) else coded[k - 1]
            scale = secant_scale(backend, qp, *points[qp], other, *points[other], samples)
            if scale is not None:
                scales[(i, qp)] = scale
    return scales


def save_run(out: Path, state: dict[str, object], history: list[dict[str, float]]) -> None:
    """A training run's checkpoint (``out`` with ``.ckpt``) and its validation history
    (``.log.json``), each written whole."""
    atomic_write(out.with_suffix(".ckpt"), lambda p: torch.save(state, p))
    text = json.dumps(history, indent=1)
    atomic_write(out.with_suffix(".log.json"), lambda p: p.write_text(text))


def read_history(out: Path) -> list[dict[str, float]]:
    """The validation history :func:`save_run` wrote beside ``out``, or none."""
    path = out.with_suffix(".log.json")
    return list(json.loads(path.read_text())) if path.exists() else []


def _fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in values.items())


class PreFilterTrainer:
    """A resumable run: the filter, the rate model, their optimisers and the step."""

    def __init__(
        self,
        cfg: PreFilterTrainConfig,
        cache: Path,
        val: Path,
        out: Path,
        simulator: CodecSimulator | None = None,
    ) -> None:
        if (cfg.surrogate == "simulator") != (simulator is not None):
            raise ValueError("the simulator surrogate takes a codec simulator; no other does")
        self.cfg, self.out = cfg, out
        self.sim = simulator
        self.backend = get_backend(cfg.codec)
        torch.manual_seed(cfg.seed)
        self.filter = PreFilter(cfg.width, cfg.layers)
        self.rate = RateModel()
        self.error = ErrorModel()
        self.opt = torch.optim.Adam(self.filter.parameters(), lr=cfg.lr)
        self.rate_opt = torch.optim.Adam(self.rate.parameters(), lr=cfg.rate_lr)
        self.error_opt = torch.optim.Adam(self.error.parameters(), lr=cfg.rate_lr)
        self.sim_opt = (
            torch.optim.Adam(self.sim.parameters(), lr=cfg.rate_online_lr) if self.sim else None
        )
        self.step = 0
        self.rate_step = 0
        self.error_step = 0
        self.rng = np.random.default_rng(cfg.seed)
        self.train = Clips(sorted((cache / "clips").glob("*.y4m")))
        self.bits = cached_bits(cache, cfg.codec)
        self.scales = (
            measured_scales(cache, cfg.codec, self.train, self.backend)
            if cfg.lam == "measured"
            else None
        )
        lo, hi = cfg.qp_range
        if self.scales is not None and not any(lo <= qp <= hi for _, qp in self.scales):
            raise InputError(f"{cache}: no clip coded at two QPs in {lo}-{hi} to measure λ on")
        self.val = Clips(make_clips(val, out.parent / "val-clips", ClipSpec()))
        self.pool = concurrent.futures.ThreadPoolExecutor(2)
        self.history: list[dict[str, float]] = []

    # -- checkpoints ---------------------------------------------------------------------

    @property
    def checkpoint(self) -> Path:
        return self.out.with_suffix(".ckpt")

    def save(self) -> None:
        state = {
            "filter": self.filter.state_dict(),
            "rate": self.rate.state_dict(),
            "opt": self.opt.state_dict(),
            "rate_opt": self.rate_opt.state_dict(),
            "error": self.error.state_dict(),
            "error_opt": self.error_opt.state_dict(),
            "step": torch.tensor(self.step),
            "rate_step": torch.tensor(self.rate_step),
            "error_step": torch.tensor(self.error_step),
        }
        if self.sim is not None and self.sim_opt is not None:
            state |= {"sim": self.sim.state_dict(), "sim_opt": self.sim_opt.state_dict()}
        save_run(self.out, state, self.history)

    def take_rate_model(self, checkpoint: Path) -> None:
        """Start from the codec models of another run's checkpoint (their fitting done)."""
        state = torch.load(checkpoint, weights_only=True)
        self.rate.load_state_dict(state["rate"])
        self.rate_step = int(state["rate_step"])
        if "error" in state:
            self.error.load_state_dict(state["error"])
            self.error_step = int(state["error_step"])

    def resume(self) -> None:
        if not self.checkpoint.exists():
            return
        state = torch.load(self.checkpoint, weights_only=True)
        self.filter.load_state_dict(state["filter"])
        self.rate.load_state_dict(state["rate"])
        self.opt.load_state_dict(state["opt"])
        self.rate_opt.load_state_dict(state["rate_opt"])
        self.error.load_state_dict(state["error"])
        self.error_opt.load_state_dict(state["error_opt"])
        self.step, self.rate_step = int(state["step"]), int(state["rate_step"])
        self.error_step = int(state["error_step"])
        if self.sim is not None and self.sim_opt is not None:
            self.sim.load_state_dict(state["sim"])
            self.sim_opt.load_state_dict(state["sim_opt"])
        self.rng = np.random.default_rng([self.cfg.seed, self.step, self.rate_step])
        self.history = read_history(self.out)

    # -- the rate model alone --------------------------------------------------------------

    def rate_pretrain_step(self) -> float:
        picks = [self.bits[int(self.rng.integers(len(self.bits)))] for _ in range(8)]
        batch = Batch.of([self.train.frames[i] for i, _, _ in picks])
        qp = torch.tensor([q for _, q, _ in picks])
        real = torch.tensor([b for _, _, b in picks], dtype=torch.float32)
        loss = ((self.rate(batch.y, batch.uv, qp).log2() - real.log2()) ** 2).mean()
        self.rate_opt.zero_grad()
        loss.backward()
        self.rate_opt.step()
        self.rate_step += 1
        return loss.item()

    # -- the filter ----------------------------------------------------------------------------

    def lam(self, clip: int, qp: int) -> float:
        """The price of a bit for ``clip`` at ``qp``: the relation's λ, or with
        ``lam="measured"`` times the clip's own scale (:func:`measured_scales`)."""
        scale = 1.0 if self.scales is None else self.scales.get((clip, qp), 1.0)
        return self.backend.qp_to_lambda(qp) * scale

    def _code_all(self, clips: list[list[Frame]], qps: list[int]) -> list[tuple[int, list[Frame]]]:
        jobs = [
            self.pool.submit(code_clip, self.backend, q, c, self.cfg.preset)
            for c, q in zip(clips, qps, strict=True)
        ]
        return [j.result() for j in jobs]

    def _predict(self, model: nn.Module, y: Tensor, uv: Tensor, q: Tensor) -> Any:
        """``model``'s prediction, differentiable in the pictures, not in its parameters."""
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            return model(y, uv, q)
        finally:
            for p in model.parameters():
                p.requires_grad_(True)

    def _fit(
        self,
        model: RateModel | ErrorModel,
        opt: torch.optim.Optimizer,
        inputs: tuple[Tensor, ...],
        real: Tensor,
        lr: float,
    ) -> float:
        """One step of ``model`` towards the real values (squared error of log2)."""
        loss = ((model(*inputs).log2() - real.log2()) ** 2).mean()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    def filter_step(self) -> dict[str, float]:
        """One step (module docstring); while the error model warms up (``error-model``
        surrogate), the codec models are fitted and the filter is left as it is."""
        cfg = self.cfg
        picks, clips = self.train.sample(self.rng, cfg.batch, cfg.frames)
        if self.scales is not None:  # the QPs the cache measured the clips' λ at
            lo, hi = cfg.qp_range
            measured = sorted({qp for _, qp in self.scales if lo <= qp <= hi})
            qps = [measured[int(self.rng.integers(len(measured)))] for _ in clips]
        else:
            qps = [int(self.rng.integers(cfg.qp_range[0], cfg.qp_range[1] + 1)) for _ in clips]
        src = Batch.of(clips)
        n, t = src.y.shape[:2]
        q = torch.tensor(qps)
        fy, fuv = self.filter(
            src.y.flatten(0, 1)[:, None], src.uv.flatten(0, 1), q.repeat_interleave(t)
        )
        fy, fuv = ste_round8(fy.view_as(src.y)), ste_round8(fuv.view_as(src.uv))
        coded = self._code_all([to_frames(fy[i].detach(), fuv[i].detach()) for i in range(n)], qps)
        dec = Batch.of([d for _, d in coded])
        bits = torch.tensor([b for b, _ in coded], dtype=torch.float32)
        codec_error = distortion("psnr", dec.y, dec.uv, fy.detach(), fuv.detach())
        samples = t * src.y.shape[-1] * src.y.shape[-2]
        lams = torch.tensor([self.lam(i, qp) for i, qp in zip(picks, qps, strict=True)])
        real_d = distortion(cfg.target, dec.y, dec.uv, src.y, src.uv)
        warming = cfg.surrogate == "error-model" and self.error_step < cfg.error_warmup_steps
        out = {"real_j": (real_d + lams * bits / samples).mean().item()}
        if not warming:
            if cfg.surrogate == "error-model":
                # the filter's own change, in the target's units at the operating point the
                # codec really reached, plus the codec's learned error
                rate = exchange(dec.y, src.y) if cfg.target == "ms-ssim" else None
                d = distortion(cfg.target, fy, fuv, src.y, src.uv, rate)
                d = d + self._predict(self.error, fy, fuv, q)
            elif self.sim is not None:
                # the real decoded pictures, differentiated as the simulator's
                sy, suv, sim_bits = self._predict(self.sim, fy, fuv, q)
                ry, ruv = sy + (dec.y - sy).detach(), suv + (dec.uv - suv).detach()
                d = distortion(cfg.target, ry, ruv, src.y, src.uv)
            else:
                ry = fy + (dec.y - fy).detach()
                ruv = fuv + (dec.uv - fuv).detach()
                d = distortion(cfg.target, ry, ruv, src.y, src.uv)
            r_hat = sim_bits if self.sim is not None else self._predict(self.rate, fy, fuv, q)
            j = (d + lams * r_hat / samples).mean()
            self.opt.zero_grad()
            j.backward()
            self.opt.step()
            self.step += 1
            out["j"] = j.item()
        # The codec models follow what the codec really does with what the filter now makes.
        inputs = (fy.detach(), fuv.detach(), q)
        if self.sim is not None and self.sim_opt is not None:
            at, dec_at = random_window(self.rng, cfg.sim_crop, inputs[:2], (dec.y, dec.uv))
            picture = picture_loss(self.sim, at, q, dec_at)
            rate = rate_loss(self.sim, inputs[:2], q, bits)
            self.sim_opt.zero_grad()
            (picture.mean() + rate.mean()).backward()
            self.sim_opt.step()
            out["sim_picture"], out["rate_loss"] = picture.mean().item(), rate.mean().item()
            return out
        out["rate_loss"] = self._fit(self.rate, self.rate_opt, inputs, bits, cfg.rate_online_lr)
        if cfg.surrogate == "error-model":
            lr = cfg.rate_lr if warming else cfg.rate_online_lr  # a fresh model learns faster
            out["error_loss"] = self._fit(self.error, self.error_opt, inputs, codec_error, lr)
            self.error_step += 1
        return out

    # -- validation ------------------------------------------------------------------------

    def filtered(self, clip: Sequence[Frame], qp: int) -> list[Frame]:
        """``clip`` through the filter at ``qp``, 8-bit."""
        return filter_clip(self.filter, clip, qp)

    def validate(self, qps: Sequence[int] = QPS) -> dict[str, float]:
        """BD-rates of the filter against direct coding on the validation clips (rates and
        qualities pooled over clips per QP), and how well the codec models predict the real
        bits and codec MSE of each clip (Spearman rank correlation, mean |log2| error)."""
        results: dict[str, dict[int, list[float]]] = {"direct": {}, "filter": {}}
        predicted, real, predicted_error, real_error = [], [], [], []
        for qp in qps:
            for name, make in (("direct", lambda c, q: list(c)), ("filter", self.filtered)):
                inputs = [make(c, qp) for c in self.val.frames]
                coded = self._code_all(inputs, [qp] * len(inputs))
                psnr_acc, ms_acc = PsnrAccumulator(8), MsSsimAccumulator(8)
                for clip, (_, dec) in zip(self.val.frames, coded, strict=True):
                    for a, b in zip(clip, dec, strict=True):
                        psnr_acc.add(a, b)
                        ms_acc.add(a, b)
                bits = sum(b for b, _ in coded)
                frames = sum(len(c) for c in self.val.frames)
                results[name][qp] = [kbps(bits, frames, 25, 1), psnr_acc.psnr_yuv, ms_acc.db]
                batch, decoded = Batch.of(inputs), Batch.of([d for _, d in coded])
                qp_batch = torch.full((len(inputs),), qp)
                with torch.no_grad():
                    if self.sim is not None:
                        sy, suv, sim_bits = self.sim(batch.y, batch.uv, qp_batch)
                        predicted += sim_bits.tolist()
                        predicted_error += distortion("psnr", sy, suv, batch.y, batch.uv).tolist()
                    else:
                        predicted += self.rate(batch.y, batch.uv, qp_batch).tolist()
                        predicted_error += self.error(batch.y, batch.uv, qp_batch).tolist()
                real += [float(b) for b, _ in coded]
                real_error += distortion("psnr", decoded.y, decoded.uv, batch.y, batch.uv).tolist()

        def bd(metric: int) -> float:
            a, b = results["direct"], results["filter"]
            anchor = Curve.of([a[q][0] for q in qps], [a[q][metric] for q in qps])
            test = Curve.of([b[q][0] for q in qps], [b[q][metric] for q in qps])
            value = bd_rate(anchor, test).bd_rate
            return float("nan") if value is None else float(value)

        def log2_error(a: list[float], b: list[float]) -> float:
            return float(np.abs(np.log2(np.array(a)) - np.log2(np.array(b))).mean())

        return {
            "step": float(self.step),
            "bd_psnr": bd(1),
            "bd_ms_ssim": bd(2),
            "rate_spearman": float(spearmanr(predicted, real).statistic),
            "rate_log2_error": log2_error(predicted, real),
            "error_spearman": float(spearmanr(predicted_error, real_error).statistic),
            "error_log2_error": log2_error(predicted_error, real_error),
        }

    # -- the run -----------------------------------------------------------------------------

    def export(self, metrics: dict[str, float], seconds: float) -> None:
        """The filter's weights and its card (:class:`~wrapcodec.bank.PreFilterCard`)."""
        weights = {k: v.contiguous() for k, v in self.filter.state_dict().items()}
        atomic_write(self.out, lambda p: save_file(weights, str(p)))
        card = PreFilterCard(
            name=self.out.stem,
            file=self.out.name,
            sha256=sha256_file(self.out),
            codec=self.cfg.codec,
            metric=self.cfg.target,
            width=self.cfg.width,
            layers=self.cfg.layers,
            qp_range=self.cfg.qp_range,
            training=self.cfg.model_dump() | {"seconds": round(seconds)},
            validation=dict(metrics),
        )
        text = card.model_dump_json(indent=2) + "\n"
        atomic_write(self.out.with_suffix(".json"), lambda p: p.write_text(text))

    def run(self, report: Callable[[str], None]) -> None:
        started = time.monotonic()
        self.resume()
        while self.sim is None and self.rate_step < self.cfg.rate_pretrain_steps:
            loss = self.rate_pretrain_step()
            if self.rate_step % 100 == 0:
                report(f"rate {self.rate_step}: log2 error² {loss:.3f}")
                self.save()
        if self.step == 0:
            metrics = self.validate()
            self.history.append(metrics)
            report(f"before: {metrics}")
        while self.step < self.cfg.steps:
            before = self.step
            out = self.filter_step()
            if self.step == before:
                if self.error_step % 20 == 0:
                    report(f"error warm-up {self.error_step}: " + _fmt(out))
                continue
            if self.step % 20 == 0:
                report(f"step {self.step}: " + _fmt(out))
            if self.step % self.cfg.validate_every == 0 or self.step == self.cfg.steps:
                self.save()
                metrics = self.validate()
                self.history.append(metrics)
                report(f"validation: {metrics}")
                self.save()
        self.export(self.history[-1], time.monotonic() - started)
