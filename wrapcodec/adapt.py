"""Content adaptation: fit a bank post-processor to the segment the encoder has just coded.

The encoder holds what no offline training sees: the source and the exact decoded bottleneck
of the segment. It fine-tunes a subset of the post-processor's parameters on random crops of
those frames against the source, with the loss the RDO measures (the 6:1:1 YUV MSE in 8-bit
units), and sends the change as an update (:mod:`wrapcodec.update`). This is instance
adaptation of the decoder-side network (the NN post-filter with a weight update of VVC's
SEI), done per segment.

The bilinear resampling in front of the network has no parameters, so each training frame is
resampled once and the learned stage (:meth:`PostProcessor.restore`) runs on crops of it. The
fit is seeded and runs on one thread, so the same segment gives the same update, whatever
thread count the rest of the encoder uses.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from wrapcodec.nets import PostProcessor, mse_8bit
from wrapcodec.update import Quant, Subset, encode_update, subset_names

Picture = tuple[Tensor, Tensor]
"""A normalised 4:2:0 picture: (1,1,H,W) luma and (1,2,H/2,W/2) chroma, H and W even."""


@dataclass(frozen=True)
class AdaptConfig:
    """How the encoder fits a post-processor to a segment (defaults chosen by measurement,
    README "Content adaptation")."""

    steps: int = 300
    subset: Subset = Subset.BIAS_TAIL
    quant: Quant = Quant.INT8
    levels: int = 127  # int8 levels per sign at each tensor's peak
    lr: float = 1e-3
    crop: int = 128  # luma side of a training crop at the output resolution (even)
    batch: int = 4  # crops per step
    max_frames: int = 30  # training frames per segment, evenly spaced
    seed: int = 0


@dataclass(frozen=True)
class Fitted:
    """An update and what it took."""

    update: bytes
    params: int  # parameters the update carries
    seconds: float
    loss_first: float  # training loss (MSE, 8-bit units) of the first and last steps
    loss_last: float


def training_frames(count: int, max_frames: int) -> list[int]:
    """Indices of at most ``max_frames`` frames spread evenly over ``count``."""
    if count <= max_frames:
        return list(range(count))
    return sorted({round(i * (count - 1) / (max_frames - 1)) for i in range(max_frames)})


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _crop(p: Picture, top: int, left: int, h: int, w: int) -> Picture:
    y, uv = p
    return (
        y[..., top : top + h, left : left + w],
        uv[..., top // 2 : (top + h) // 2, left // 2 : (left + w) // 2],
    )


def _batch(
    upsampled: Sequence[Picture],
    targets: Sequence[Picture],
    size: tuple[int, int],
    cfg: AdaptConfig,
    gen: torch.Generator,
) -> tuple[Picture, Picture]:
    """``cfg.batch`` random crops (even offsets, so chroma stays aligned) of random frames."""
    height, width = upsampled[0][0].shape[-2:]
    h, w = size
    xs: list[Picture] = []
    ts: list[Picture] = []
    for _ in range(cfg.batch):
        k = int(torch.randint(len(upsampled), (1,), generator=gen))
        top = 2 * int(torch.randint((height - h) // 2 + 1, (1,), generator=gen))
        left = 2 * int(torch.randint((width - w) // 2 + 1, (1,), generator=gen))
        xs.append(_crop(upsampled[k], top, left, h, w))
        ts.append(_crop(targets[k], top, left, h, w))
    return (
        (torch.cat([x[0] for x in xs]), torch.cat([x[1] for x in xs])),
        (torch.cat([t[0] for t in ts]), torch.cat([t[1] for t in ts])),
    )


def fit(
    post: PostProcessor, decoded: Sequence[Picture], sources: Sequence[Picture], cfg: AdaptConfig
) -> Fitted:
    """Fine-tune ``cfg.subset`` of a copy of ``post`` on ``decoded`` bottleneck frames against
    their ``sources`` (same order, normalised); return the quantised, compressed update."""
    if not decoded or len(decoded) != len(sources):
        raise ValueError("fit needs one source picture per decoded picture")
    t0 = time.perf_counter()
    with _one_thread():
        model = copy.deepcopy(post)
        height, width = sources[0][0].shape[-2:]
        with torch.no_grad():
            upsampled = [model.upsample(y, uv, height, width) for y, uv in decoded]
        names = subset_names(model, cfg.subset)
        params = dict(model.named_parameters())
        start = {n: params[n].detach().clone() for n in names}
        for name, p in params.items():
            p.requires_grad_(name in start)
        opt = torch.optim.Adam([params[n] for n in names], lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        size = (min(cfg.crop, height), min(cfg.crop, width))  # all even
        losses: list[float] = []
        for _ in range(cfg.steps):
            (y, uv), (ty, tuv) = _batch(upsampled, sources, size, cfg, gen)
            y_hat, uv_hat = model.restore(y, uv)
            loss = mse_8bit(y_hat, uv_hat, ty, tuv)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        deltas = {n: params[n].detach() - start[n] for n in names}
        update = encode_update(deltas, cfg.subset, cfg.quant, cfg.levels)
    return Fitted(
        update=update,
        params=sum(d.numel() for d in deltas.values()),
        seconds=time.perf_counter() - t0,
        loss_first=losses[0] if losses else float("nan"),
        loss_last=losses[-1] if losses else float("nan"),
    )
