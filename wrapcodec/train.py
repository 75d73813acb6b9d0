"""Training of post-processors and pre+post wrappers (``wrapcodec train``).

Loss (Hu et al. eq. 2): ``L = MSE_YUV(x, x̂) + λ·L_R`` with MSE the 6:1:1-weighted mean of the
Y, U and V squared errors in 8-bit sample units and ``L_R`` the proxy rate in bits per source
luma pixel (so λ = 16 weighs rate as the paper does, and as the encoder's RDO does).

The codec between pre- and post-processor is either the JPEG proxy or the real codec in the
forward pass (``--proxy codec``). With the real codec the rate term keeps the proxy's
differentiable form ``a·Σ log(1 + |Y|/q)``, taken at the codec's own quantiser step for the
QP drawn and scaled (stop-gradient) to the bits the codec spent on the batch, and λ is the
encoder's RDO λ at that QP: the loss is then the cost ``J = D + λ·R`` the encoder's RDO
minimises. Post-only models train their post-processor behind the pipeline's bilinear
downsampling; wrappers train both networks. A post-processor may also learn from pairs the
real codecs coded once (``--proxy pairs``, :mod:`wrapcodec.pairs`): plain supervised
learning on the decoded bottleneck, the loss the 6:1:1 MSE alone (the rate is fixed).

Everything a run needs to continue lives in its checkpoint (``OUT.ckpt``: step, weights,
optimiser state, the config); each step draws its batch from a generator seeded with
``(seed, step)``, so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from wrapcodec import pairs as coded_pairs
from wrapcodec.backend import Backend, get_backend
from wrapcodec.bank import split_weights
from wrapcodec.dataset import Picture, center_crops, load_pictures, sample_batch, to_tensors
from wrapcodec.errors import InputError
from wrapcodec.nets import (
    PEAK_8BIT,
    PostProcessor,
    PreProcessor,
    bilinear_bottleneck,
    bottleneck_dims,
    mse_8bit,
)
from wrapcodec.paths import atomic_write
from wrapcodec.proxy import BLOCK_SIZES, JpegProxy, codec_roundtrip, codec_step

log = logging.getLogger(__name__)


def parse_qp_range(text: str) -> tuple[int, int]:
    """``LOW-HIGH`` (whole numbers, LOW ≤ HIGH) as a pair; anything else is an InputError."""
    lo, _, hi = text.partition("-")
    if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
        raise InputError(f"--qp-range {text!r}: expected LOW-HIGH, e.g. 22-47")
    return int(lo), int(hi)


def check_device(device: str) -> None:
    """Refuse a CUDA ``device`` on a machine without one, before any work starts."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here")


class TrainConfig(BaseModel):
    """Everything that defines a training run (written next to the weights)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["post", "wrapper"]
    ratio: str = Field(pattern=r"^(1|1/2|2/3|1/4)$")
    data: str
    val: str | None = None
    steps: int = Field(gt=0)
    batch: int = Field(default=8, gt=0)
    crop: int = Field(default=256, ge=64)
    clip_len: int = Field(default=4, gt=0, description="pictures per pan clip in a batch")
    lr: float = Field(default=1e-3, gt=0)
    lam: float = Field(
        default=16.0,
        ge=0,
        description="λ of L = MSE + λ·rate with the JPEG proxy (the real codec uses its RDO λ)",
    )
    proxy: Literal["jpeg", "codec", "pairs"] = "jpeg"
    codec: str = Field(
        default="x265", description="the codec in the loop; with pairs, a comma-separated list"
    )
    preset: str = "medium"
    bitdepth: Literal[8, 10] = Field(
        default=10, description="the bottleneck's bit depth: of the pairs, or of the codec"
    )
    qp_min: int = 22
    qp_max: int = 47
    q_init: float = Field(default=8.0, gt=0)
    q_spread: float = Field(
        default=2.0, ge=0, description="octaves over which the proxy step is jittered per step"
    )
    seed: int = 0
    val_every: int = Field(default=100, gt=0)
    val_count: int = Field(default=8, gt=0, description="validation pictures used")
    device: str = "cpu"
    init: str | None = Field(default=None, description="weights to start from")
    freeze_pre: bool = Field(
        default=False, description="train only the post-processor of a wrapper"
    )

    @property
    def fraction(self) -> Fraction:
        return Fraction(self.ratio)

    @property
    def codecs(self) -> list[str]:
        return self.codec.split(",")

    @model_validator(mode="after")
    def _pairs_train_posts(self) -> TrainConfig:
        if self.proxy == "pairs" and self.kind != "post" and not (self.freeze_pre and self.init):
            raise ValueError(
                "coded pairs train post-processors only (--kind post, or --kind wrapper "
                "--freeze-pre --init WRAPPER behind the pre-processor they were coded through)"
            )
        if self.proxy != "pairs" and len(self.codecs) > 1:
            raise ValueError("several codecs are for --proxy pairs only")
        return self


@dataclass
class Nets:
    """The trainable parts of a run."""

    post: PostProcessor
    pre: PreProcessor | None
    proxy: JpegProxy

    def modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"post": self.post, "proxy": self.proxy}
        if self.pre is not None:
            mods["pre"] = self.pre
        return mods

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules().values() for p in m.parameters()]

    def weights(self) -> dict[str, Tensor]:
        """The shipped tensors: ``post.*`` and, for wrappers, ``pre.*``."""
        out = {f"post.{k}": v for k, v in self.post.state_dict().items()}
        if self.pre is not None:
            out |= {f"pre.{k}": v for k, v in self.pre.state_dict().items()}
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def build_nets(cfg: TrainConfig) -> Nets:
    torch.manual_seed(cfg.seed)
    post = PostProcessor(cfg.fraction)
    pre = PreProcessor(cfg.fraction) if cfg.kind == "wrapper" else None
    return Nets(post, pre, JpegProxy(q_init=cfg.q_init))


def load_init(nets: Nets, path: Path) -> None:
    """Start from shipped-format weights: a post model fills ``post``, a wrapper both."""
    try:
        tensors = load_file(str(path))
        for name, module in (("post", nets.post), ("pre", nets.pre)):
            part = split_weights(tensors, name)
            if part and module is not None:
                module.load_state_dict(part)
    except (OSError, RuntimeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0].rstrip(":")
        raise InputError(f"{path}: not weights of this kind and ratio ({first})") from None


def psnr(mse: float) -> float:
    return 10 * math.log10(PEAK_8BIT**2 / max(mse, 1e-10))


@dataclass
class StepResult:
    loss: float
    mse: float
    bpp: float
    q: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def psnr(self) -> float:
        return psnr(self.mse)


def bottleneck(nets: Nets, y: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
    """Source → bottleneck: the pre-processor, or the pipeline's bilinear downsampling."""
    if nets.pre is not None:
        return nets.pre(y, uv)
    h, w = y.shape[-2:]
    return bilinear_bottleneck(y, uv, *bottleneck_dims(w, h, nets.post.ratio))


def rd_step(
    cfg: TrainConfig,
    nets: Nets,
    backend: Backend | None,
    y: Tensor,
    uv: Tensor,
    rng: np.random.Generator,
    qp: int | None = None,
    block: int | None = None,
    q_scale: float | None = None,
) -> tuple[Tensor, StepResult]:
    """The training objective on a batch: bottleneck → the codec (the proxy, or the real
    codec's round trip when ``backend`` is given) → post-processor → ``D + λ·R``. A random
    block size, quantiser spread and QP unless given."""
    yb, uvb = bottleneck(nets, y, uv)
    block = block or int(rng.choice(BLOCK_SIZES))
    if q_scale is None:
        q_scale = 2.0 ** float(rng.uniform(-cfg.q_spread / 2, cfg.q_spread / 2))
    lam = cfg.lam
    if backend is not None:
        qp = qp if qp is not None else int(rng.integers(cfg.qp_min, cfg.qp_max + 1))
        yd, uvd, bits = codec_roundtrip(
            backend, yb, uvb, qp, cfg.clip_len, cfg.preset, cfg.bitdepth
        )
        # the proxy's smooth coefficient count at the codec's own step, scaled to the
        # bits the codec spent, weighed by the encoder's RDO λ at that QP
        q_scale = codec_step(qp) / float(nets.proxy.q)
        coded = nets.proxy(yb, uvb, block=block, q_scale=q_scale, scale_to=bits)
        lam = backend.qp_to_lambda(qp)
        extra: dict[str, float] = {"qp": float(qp), "codec_bpp": bits / y[:, 0].numel()}
    else:
        coded = nets.proxy(yb, uvb, block=block, q_scale=q_scale)
        yd, uvd = coded.y_hat, coded.uv_hat
        extra = {"jpeg_bits": float(coded.real_bits)}
    h, w = y.shape[-2:]
    y_hat, uv_hat = nets.post(yd, uvd, h, w)
    mse = mse_8bit(y_hat, uv_hat, y, uv)
    bpp = coded.rate / y[:, 0].numel()
    loss = mse + lam * bpp
    result = StepResult(loss.item(), mse.item(), bpp.item(), nets.proxy.q.item(), extra)
    return loss, result


class Checkpoint:
    """A run's files: ``OUT`` (the weights, safetensors), ``OUT.ckpt`` (networks, optimiser,
    step and history, to resume; loaded with ``weights_only``) and ``OUT.train.json`` (the
    configuration and history, which model cards read)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out.with_suffix(".ckpt")

    def save(
        self,
        cfg: TrainConfig,
        nets: Nets,
        opt: torch.optim.Optimizer,
        step: int,
        history: list[dict[str, float]],
    ) -> None:
        state = {
            "step": step,
            "config": cfg.model_dump_json(),
            "history": json.dumps(history),
            "optimizer": opt.state_dict(),
        } | {name: m.state_dict() for name, m in nets.modules().items()}
        atomic_write(self.path, lambda p: torch.save(state, p))
        atomic_write(self.out, lambda p: save_file(nets.weights(), str(p)))
        meta = {"config": cfg.model_dump(), "step": step, "history": history}
        atomic_write(
            self.out.with_suffix(".train.json"),
            lambda p: p.write_text(json.dumps(meta, indent=1) + "\n"),
        )

    def load(
        self, cfg: TrainConfig, nets: Nets, opt: torch.optim.Optimizer, device: torch.device
    ) -> tuple[int, list[dict[str, float]]]:
        """Restore ``nets`` and ``opt``; the step and history. Refuses a checkpoint made with
        another configuration (only ``steps`` may change)."""
        if not self.path.exists():
            raise InputError(f"{self.path}: no checkpoint to resume from")
        state = torch.load(self.path, map_location=device, weights_only=True)
        saved = TrainConfig.model_validate_json(state["config"])
        if saved.model_dump(exclude={"steps"}) != cfg.model_dump(exclude={"steps"}):
            raise InputError(
                f"{self.path}: was made with a different configuration; "
                "pass the same options (only --steps may change)"
            )
        for name, m in nets.modules().items():
            m.load_state_dict(state[name])
        opt.load_state_dict(state["optimizer"])
        return int(state["step"]), json.loads(state["history"])


class Trainer:
    """One training run; :meth:`run` trains from the checkpoint's step to ``cfg.steps``."""

    def __init__(self, cfg: TrainConfig, out: Path) -> None:
        self.cfg = cfg
        self.out = out  # the weights
        self.files = Checkpoint(out)
        self.device = torch.device(cfg.device)
        self.nets = build_nets(cfg)
        if cfg.init:
            load_init(self.nets, Path(cfg.init))
        for m in self.nets.modules().values():
            m.to(self.device)
        if cfg.proxy == "codec":
            # The real codec makes the distortion, so nothing balances the proxy's rate
            # against q: it would only grow. It stays at q_init and only shapes the rate term.
            self.nets.proxy.log_q.requires_grad_(False)
        if cfg.freeze_pre and self.nets.pre is not None:
            self.nets.pre.requires_grad_(False)
        params = [p for p in self.nets.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=cfg.lr)
        self.step = 0
        self.history: list[dict[str, float]] = []
        # with pairs, the real codec is only needed to validate
        self.backend = get_backend(cfg.codecs[0]) if cfg.proxy != "jpeg" else None
        self.pairs: list[coded_pairs.Pair] = []
        self.pictures: list[Picture] = []
        if cfg.proxy == "pairs":
            cache = Path(cfg.data)
            depth = cfg.bitdepth
            # a wrapper's post-processor learns from what was coded through its own pre
            pre = coded_pairs.pre_digest(self.nets.pre) if self.nets.pre is not None else ""
            qps = coded_pairs.cached_qps(
                cache, cfg.codecs, cfg.fraction, cfg.qp_min, cfg.qp_max, depth, pre
            )
            self.pairs = coded_pairs.load_pairs(cache, cfg.codecs, cfg.fraction, qps, depth, pre)
            self.val_qps = qps[:: max(1, len(qps) - 1)]  # the band's ends
        else:
            self.pictures = load_pictures(Path(cfg.data), min_size=cfg.crop)
            self.val_qps = [27, 37]
        self.val: list[Picture] = []
        if cfg.val:
            self.val = center_crops(load_pictures(Path(cfg.val), cfg.crop), cfg.crop)
            self.val = self.val[: cfg.val_count]

    def train_step(self) -> StepResult:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.step])
        for m in self.nets.modules().values():
            m.train()
        if self.pairs:
            loss, result = self._pairs_step(rng)
        else:
            y, uv = sample_batch(rng, self.pictures, cfg.batch, cfg.crop, cfg.clip_len)
            y, uv = y.to(self.device), uv.to(self.device)
            loss, result = rd_step(cfg, self.nets, self.backend, y, uv, rng)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return result

    def _pairs_step(self, rng: np.random.Generator) -> tuple[Tensor, StepResult]:
        """Supervised: the post-processor on crops of what the codec really decoded, against
        their sources, with the RDO's 6:1:1 YUV MSE (the rate is the codec's, fixed)."""
        (y, uv), (ty, tuv) = coded_pairs.sample_batch(
            rng, self.pairs, self.cfg.batch, self.cfg.crop
        )
        dev = self.device
        y_hat, uv_hat = self.nets.post.restore(y.to(dev), uv.to(dev))
        loss = mse_8bit(y_hat, uv_hat, ty.to(dev), tuv.to(dev))
        return loss, StepResult(loss.item(), loss.item(), 0.0, self.nets.proxy.q.item())

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR-YUV (8-bit MSE 6:1:1) and rate on the validation crops, for the model and
        for the plain bilinear path (bilinear down, the same codec stand-in, bilinear up)."""
        if not self.val:
            return {}
        for m in self.nets.modules().values():
            m.eval()
        y, uv = to_tensors(self.val)
        y, uv = y.to(self.device), uv.to(self.device)
        bilinear = Nets(PostProcessor(self.nets.post.ratio).to(self.device), None, self.nets.proxy)
        out: dict[str, float] = {}
        points: list[int | None] = list(self.val_qps) if self.backend is not None else [None]
        for qp in points:
            tag = f"qp{qp}" if qp is not None else "jpeg"
            for nets, name in ((self.nets, ""), (bilinear, "_bilinear")):
                rng = np.random.default_rng(0)
                _, r = rd_step(self.cfg, nets, self.backend, y, uv, rng, qp, 8, 1.0)
                out[f"{tag}{name}_psnr"] = r.psnr
                if not name:
                    out[f"{tag}_bpp"] = r.extra.get("codec_bpp", r.bpp)
        return out

    def save(self) -> None:
        self.files.save(self.cfg, self.nets, self.opt, self.step, self.history)

    def resume(self) -> None:
        self.step, self.history = self.files.load(self.cfg, self.nets, self.opt, self.device)

    def run(self, report: Callable[[int, StepResult, dict[str, float] | None], None]) -> None:
        cfg = self.cfg
        while self.step < cfg.steps:
            t = time.perf_counter()
            result = self.train_step()
            result.extra["step_s"] = time.perf_counter() - t
            val = None
            if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                val = self.validate()
                self.history.append({"step": self.step, "loss": result.loss, "q": result.q} | val)
                self.save()
            report(self.step, result, val)
