"""Training the codec simulator (:class:`~wrapcodec.simulator.CodecSimulator`) on real codec
output, validating it against the real codec, and its card.

The pairs are those of the post-processor priors' cache (:mod:`wrapcodec.pairs`) at r = 1:
each training photo's pseudo-video and what the codec decoded from it at each QP, with the
bits it spent. Each step takes ``batch`` clips at random QPs and minimises

    loss = Σ MSE(simulated, decoded) / Σ MSE(source, decoded)  +  mean (log2 R̂ − log2 R)²

over the batch's clips: the picture term is the share of the codec's error (6:1:1 YUV MSE)
the simulator leaves unexplained (1 for a simulator that passes its input through, 0 for an
exact one), measured on a random window of each clip (``crop``), so coarse QPs, whose errors
follow the picture, weigh more than the fine ones' near-random rounding; the rate term is the
rate head's error in the whole clip's bits, as a ratio.

Validation codes pseudo-videos of other photos (Kodak) with the real codec at QPs 22–47 and
reports, per QP (the clips' MSE pooled) and as the mean over the QPs: the simulation's PSNR
(simulated against decoded, 6:1:1 YUV MSE) beside the codec's own (the source against
decoded, what a simulator that passes its input through would score) and the share of the
codec's error explained; and how the rate head ranks and sizes the real bits of each clip
(Spearman, mean |log2| error).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import save_file
from scipy.stats import spearmanr
from torch import Tensor

from wrapcodec.backend import get_backend
from wrapcodec.bank import checked_weights
from wrapcodec.errors import InputError
from wrapcodec.metrics import psnr
from wrapcodec.pairs import QPS, ClipSpec, codec_dir, make_clips
from wrapcodec.paths import atomic_write, sha256_file
from wrapcodec.prefilter_train import Batch, code_clip, read_history, save_run
from wrapcodec.simulator import (
    CodecSimulator,
    picture_loss,
    random_window,
    rate_loss,
    yuv_mse,
)
from wrapcodec.y4m import Frame, iter_frames


class SimulatorTrainConfig(BaseModel):
    """One training run."""

    model_config = ConfigDict(frozen=True)

    codec: str = "x265"
    steps: int = 2000
    batch: int = 8
    crop: int = 128
    """The picture is fitted on a random window of each clip this wide (the bits on the
    whole clip)."""
    lr: float = 1e-3
    width: int = 32
    seed: int = 0
    validate_every: int = 500
    preset: str | None = None
    """The validation encodes' preset (the codec's default unless given); the training
    pairs are whatever the cache was coded with."""


class SimulatorCard(BaseModel):
    """What a simulator is (codec, width), its weights' sha256, how it was trained and what
    it scores against the real codec (free-form: figures with their commands)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["codec-simulator"] = "codec-simulator"
    file: str
    sha256: str
    codec: str
    bitdepth: int = 8
    width: Annotated[int, Field(ge=1, le=256)]
    training: dict[str, object] = {}
    validation: dict[str, object] = {}


def load_simulator(path: Path) -> tuple[CodecSimulator, SimulatorCard]:
    """The simulator whose weights are ``path`` (``.safetensors``) and card sits beside it
    (``.json``), checked: one line for a missing, altered or foreign file."""
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise InputError(f"{card_path}: no simulator card beside {path.name}")
    try:
        card = SimulatorCard.model_validate_json(card_path.read_text())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{card_path}: not a simulator card ({where}: {first['msg']})") from None
    net = CodecSimulator(card.width)
    try:
        net.load_state_dict(checked_weights(path, card.sha256))
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit the card's architecture ({exc})") from None
    return net.eval(), card


@dataclass
class CodedClip:
    """A source clip, what the codec decoded from it at ``qp`` (8-bit planes), and its bits."""

    source: list[Frame]
    decoded: list[Frame]
    qp: int
    bits: int


def _frames(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> list[Frame]:
    return [Frame(y[t], u[t], v[t]) for t in range(y.shape[0])]


def load_coded(cache: Path, codec: str) -> list[CodedClip]:
    """Every clip of ``cache`` coded by ``codec`` at 8 bits and r = 1, at any QP."""
    sources: dict[str, list[Frame]] = {}
    found = []
    series = cache / codec_dir(codec, 8) / "1"
    for folder in sorted(series.glob("qp*")) if series.is_dir() else []:
        if not folder.name[2:].isdecimal():
            continue
        for path in sorted(folder.glob("*.npz")):
            if path.stem not in sources:
                sources[path.stem] = list(iter_frames(cache / "clips" / f"{path.stem}.y4m"))
            with np.load(path) as data:
                planes = [data[k].astype(np.uint8) for k in ("y", "u", "v")]
                bits = int(data["bits"])
            qp = int(folder.name[2:])
            found.append(CodedClip(sources[path.stem], _frames(*planes), qp, bits))
    if not found:
        raise InputError(
            f"{cache}: no pairs of {codec} at 8 bits and r = 1 "
            f"(make them with `wrapcodec pairs --codecs {codec} --ratios 1 --bitdepth 8`)"
        )
    return found


class SimulatorTrainer:
    """A resumable run: the simulator, its optimiser and the step."""

    def __init__(self, cfg: SimulatorTrainConfig, cache: Path, val: Path, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.backend = get_backend(cfg.codec)
        torch.manual_seed(cfg.seed)
        self.net = CodecSimulator(cfg.width)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.step = 0
        self.rng = np.random.default_rng(cfg.seed)
        self.train = load_coded(cache, cfg.codec)
        spec = ClipSpec()
        found = make_clips(val, out.parent / "val-clips", spec)
        self.val_clips = [list(iter_frames(p)) for p in found]
        if not self.val_clips:
            raise InputError(f"{val}: no photo of at least {spec.size} pixels for validation")
        self._val: list[CodedClip] | None = None
        self.history: list[dict[str, float]] = []

    @property
    def checkpoint(self) -> Path:
        return self.out.with_suffix(".ckpt")

    def save(self) -> None:
        state = {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "step": torch.tensor(self.step),
        }
        save_run(self.out, state, self.history)

    def resume(self) -> None:
        if not self.checkpoint.exists():
            return
        state = torch.load(self.checkpoint, weights_only=True)
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.step = int(state["step"])
        self.rng = np.random.default_rng([self.cfg.seed, self.step])
        self.history = read_history(self.out)

    def losses(self, clips: Sequence[CodedClip], crop: int | None = None) -> tuple[Tensor, Tensor]:
        """:func:`~wrapcodec.simulator.picture_loss` of the clips, on a random
        ``crop``×``crop`` window (a multiple of 4) where one is given, and
        :func:`~wrapcodec.simulator.rate_loss` of each whole clip."""
        src = Batch.of([c.source for c in clips])
        dec = Batch.of([c.decoded for c in clips])
        qp = torch.tensor([c.qp for c in clips])
        real = torch.tensor([float(c.bits) for c in clips])
        rate = rate_loss(self.net, (src.y, src.uv), qp, real)
        at, dec_at = random_window(self.rng, crop, (src.y, src.uv), (dec.y, dec.uv))
        picture = picture_loss(self.net, at, qp, dec_at)
        return picture, rate

    def train_step(self) -> dict[str, float]:
        picks = self.rng.integers(len(self.train), size=self.cfg.batch)
        picture, rate = self.losses([self.train[int(i)] for i in picks], self.cfg.crop)
        loss = picture.mean() + rate.mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.step += 1
        return {"picture": picture.mean().item(), "rate": rate.mean().item()}

    # -- validation ------------------------------------------------------------------------

    def validation_set(self) -> list[CodedClip]:
        """The validation clips coded by the real codec at each QP (coded once a run)."""
        if self._val is None:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                jobs = [
                    (clip, qp, pool.submit(code_clip, self.backend, qp, clip, self.cfg.preset))
                    for qp in QPS
                    for clip in self.val_clips
                ]
                self._val = [CodedClip(c, j.result()[1], q, j.result()[0]) for c, q, j in jobs]
        return self._val

    def validate(self) -> dict[str, float]:
        """Simulation against the real codec on the validation clips (module docstring)."""
        sim_se: dict[int, float] = {}
        codec_se: dict[int, float] = {}
        predicted, real = [], []
        with torch.no_grad():
            for coded in self.validation_set():
                src, dec = Batch.of([coded.source]), Batch.of([coded.decoded])
                sy, suv, bits = self.net(src.y, src.uv, torch.tensor([coded.qp]))
                sim_se[coded.qp] = (
                    sim_se.get(coded.qp, 0.0) + yuv_mse(sy, suv, dec.y, dec.uv).item()
                )
                codec_se[coded.qp] = (
                    codec_se.get(coded.qp, 0.0) + yuv_mse(src.y, src.uv, dec.y, dec.uv).item()
                )
                predicted.append(bits.item())
                real.append(float(coded.bits))
        n = len(self.val_clips)
        qps = sorted(sim_se)
        out = {
            "step": float(self.step),
            "sim_psnr_yuv": float(np.mean([psnr(sim_se[q] / n, 8) for q in qps])),
            "codec_psnr_yuv": float(np.mean([psnr(codec_se[q] / n, 8) for q in qps])),
            "explained": float(np.mean([1.0 - sim_se[q] / codec_se[q] for q in qps])),
        }
        for qp in qps:
            out[f"sim_psnr_yuv_qp{qp}"] = psnr(sim_se[qp] / n, 8)
            out[f"codec_psnr_yuv_qp{qp}"] = psnr(codec_se[qp] / n, 8)
        log2 = np.abs(np.log2(np.array(predicted)) - np.log2(np.array(real)))
        out["rate_spearman"] = float(spearmanr(predicted, real).statistic)
        out["rate_log2_error"] = float(log2.mean())
        return out

    # -- the run -----------------------------------------------------------------------------

    def export(self, metrics: dict[str, float], seconds: float) -> None:
        """The weights and their card (:class:`SimulatorCard`) beside them."""
        weights = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        atomic_write(self.out, lambda p: save_file(weights, str(p)))
        card = SimulatorCard(
            file=self.out.name,
            sha256=sha256_file(self.out),
            codec=self.cfg.codec,
            width=self.cfg.width,
            training=self.cfg.model_dump() | {"seconds": round(seconds), "pairs": len(self.train)},
            validation=dict(metrics),
        )
        text = card.model_dump_json(indent=2) + "\n"
        atomic_write(self.out.with_suffix(".json"), lambda p: p.write_text(text))

    def run(self, report: Callable[[str], None]) -> None:
        started = time.monotonic()
        self.resume()
        if self.step == 0:
            metrics = self.validate()
            self.history.append(metrics)
            report(f"before: {_fmt(metrics)}")
        while self.step < self.cfg.steps:
            out = self.train_step()
            if self.step % 20 == 0:
                report(f"step {self.step}: " + _fmt(out))
            if self.step % self.cfg.validate_every == 0 or self.step == self.cfg.steps:
                metrics = self.validate()
                self.history.append(metrics)
                report(f"validation: {_fmt(metrics)}")
                self.save()
        self.export(self.history[-1], time.monotonic() - started)


def _fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in values.items())
