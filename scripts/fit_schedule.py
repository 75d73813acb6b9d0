"""Content adaptation's fit under other learning rates: the gain on frames it was not fitted on.

Reads the first segment of a post-1/1 ``.wrp`` file (coded without an update, e.g. ``wrapcodec
encode CLIP -o OUT --qp N --options 1 --adapt-steps 0``), decodes its stream, and fits the
segment's prior as the encoder fits it (``wrapcodec.adapt``'s own training loop: 4 crops of
128² a step, seeded) to every 4th frame, once per variant; then measures PSNR-Y/U/V in float
arithmetic on every 8th frame from the third, which no variant was fitted on, against the
prior unfitted (``--batch`` and ``--crop`` change the steps' crops, ``--warmup-share`` the
warm-up). One JSON line per variant::

    python scripts/fit_schedule.py OUT.wrp SOURCE.y4m \
        bias_tail:300:constant:1e-3,bias_tail:300:cosine:5e-3+decoder:647:cosine:5e-3

A variant is one or more rungs joined by ``+``, each ``subset:steps:rate:peak[:weight]``
(subset a ``wrapcodec.update.Subset`` name; rate ``constant`` or ``cosine``: the warm-up over
the first 20th of the steps and the half cosine of ``wrapcodec.adapt.learning_rate``, at that
peak); each rung starts where the one before ended, as the encoder's climb does.

With ``--lam L`` (the λ an update is quantised at, as the encoder's ``rd_lambda``: 8-bit SSE
per bit per luma sample) each row also gives the update as the encoder would code it against
the bank (every parameter the variant trained, quantised by rate and distortion at L): its
bytes and its gain measured the same way. A rung's ``weight`` then puts the update's rate in
its loss: ``weight · μ · Σ log2(1 + |δ| / s)`` over the changes δ from the bank's weights, with
μ the price of a bit at L (``wrapcodec.update.rd_mu``) and per parameter ``s = √(6μ / (w ln 2))``,
the quantisation step at which a parameter of sensitivity ``w`` (``wrapcodec.adapt.sensitivity``,
measured when the rung begins) costs as much in distortion as in bits: about the bits a
change of δ takes once quantised (``wrapcodec.adapt.rate_gradient``; the encoder's own fit
prices its rate so at ``wrapcodec.adapt.RATE_WEIGHT``, 4, and the segment's λ)::

    python scripts/fit_schedule.py OUT.wrp SOURCE.y4m --lam 581 \
        bias_tail:300:cosine:5e-3+all:5000:cosine:5e-3,bias_tail:300:cosine:5e-3+all:5000:cosine:5e-3:4
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from wrapcodec import adapt
from wrapcodec.bank import get_bank
from wrapcodec.container import read_wrp, segment_bitdepth
from wrapcodec.decoder import bottleneck
from wrapcodec.metrics import weighted
from wrapcodec.nets import PostProcessor
from wrapcodec.options import OPTIONS
from wrapcodec.pipeline import to_tensors
from wrapcodec.update import (
    Quant,
    Subset,
    apply_update,
    decode_update,
    ladder,
    subset_names,
)
from wrapcodec.y4m import Y4MReader

Picture = tuple[Tensor, Tensor]
FITTED, MEASURED = (4, 0), (8, 2)  # every n-th frame from the k-th


def _held(k: int) -> str | None:
    for name, (every, first) in (("fit", FITTED), ("measure", MEASURED)):
        if k % every == first:
            return name
    return None


def _psnr(post: PostProcessor, frames: list[tuple[Picture, Picture]]) -> list[float]:
    """PSNR-Y, -U, -V of ``post``'s output (normalised samples, peak-to-peak 2)."""
    se = [0.0, 0.0, 0.0]
    with torch.no_grad():
        for (y, uv), (ty, tuv) in frames:
            y_hat, uv_hat = post(y, uv, ty.shape[-2], ty.shape[-1])
            se[0] += float(((y_hat.clamp(-1, 1) - ty) ** 2).mean())
            for c in (0, 1):
                se[1 + c] += float(((uv_hat[:, c].clamp(-1, 1) - tuv[:, c]) ** 2).mean())
    return [10 * math.log10(4 / (e / len(frames))) for e in se]


def _frames(wrp: str, source: str) -> tuple[int, dict[str, list[tuple[Picture, Picture]]], int]:
    """The segment's prior, its frames held to fit and to measure, and its luma samples."""
    header, segments = read_wrp(wrp)
    seg = segments[0]
    if seg.option != 1:
        raise SystemExit(f"{wrp}: its first segment is option {seg.option}, not post-1/1")
    depth = segment_bitdepth(header, seg)
    held: dict[str, list[tuple[Picture, Picture]]] = {"fit": [], "measure": []}
    count = 0
    with bottleneck(wrp, header, seg) as (_, frames), Y4MReader(source) as reader:
        for k, (frame, src) in enumerate(zip(frames, reader, strict=False)):
            count += 1
            name = _held(k)
            if name is not None:
                decoded = to_tensors(frame, depth)
                held[name].append((decoded, to_tensors(src, reader.info.bitdepth)))
    return seg.prior, held, count * reader.info.width * reader.info.height


def _rung(text: str) -> tuple[Subset, int, str, float, float]:
    subset, steps, rate, peak, *weight = text.split(":")
    if rate not in ("constant", "cosine") or len(weight) > 1:
        raise SystemExit(f"{text}: subset:steps:rate:peak[:weight], the rate constant or cosine")
    return Subset[subset.upper()], int(steps), rate, float(peak), float(weight[0] if weight else 0)


def _fit(
    post: PostProcessor,
    rungs: str,
    frames: list[tuple[Picture, Picture]],
    batch: int,
    crop: int,
    samples: int,
    lam: float | None = None,
) -> tuple[PostProcessor, Subset, list[Picture]]:
    """The fitted copy of ``post`` (default layout), the largest subset it trained, and the
    upsampled pictures it was fitted on; a rung's rate is priced at ``lam`` over the
    segment's ``samples``."""
    model = copy.deepcopy(post)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    height, width = frames[0][1][0].shape[-2:]
    with torch.no_grad():
        upsampled = [model.upsample(y, uv, height, width) for (y, uv), _ in frames]
    sources = [s for _, s in frames]
    schedule = adapt.learning_rate
    bank = {n: p.detach() for n, p in post.named_parameters()}
    largest = ladder()[0]
    for text in rungs.split("+"):
        subset, steps, rate, peak, weight = _rung(text)
        largest = adapt._larger(largest, subset)
        cfg = replace(adapt.AdaptConfig(), lr=peak, peak_lr=peak, batch=batch, crop=crop)
        if rate == "constant":
            adapt.learning_rate = lambda cfg, step, steps: cfg.lr  # type: ignore[assignment]
        names = subset_names(model, subset)
        size = (cfg.crop, cfg.crop)
        priced = None
        if weight:
            if lam is None:
                raise SystemExit(f"{text}: a rate weight needs --lam")
            rd = replace(cfg, quant=Quant.RD, rd_lambda=lam, rate_weight=weight)
            priced = adapt._priced(model, names, bank, upsampled, size, samples, rd)
        try:
            adapt._train(model, names, (upsampled, sources), size, steps, cfg, priced)
        finally:
            adapt.learning_rate = schedule
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(memory_format=torch.contiguous_format), largest, upsampled  # type: ignore[call-overload]


def _coded(
    post: PostProcessor,
    model: PostProcessor,
    subset: Subset,
    upsampled: list[Picture],
    samples: int,
    lam: float,
    crop: int,
) -> tuple[bytes, PostProcessor]:
    """The update of ``model`` against the bank as the encoder codes it at ``lam``, and the
    post-processor the decoder makes of it."""
    cfg = replace(adapt.AdaptConfig(), subset=subset, quant=Quant.RD, rd_lambda=lam, crop=crop)
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    update, _, _ = adapt._encode(post, model, None, {}, upsampled, (crop, crop), samples, cfg)
    return update, apply_update(post, decode_update(update, post))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("wrp")
    ap.add_argument("source")
    ap.add_argument("variants", help="comma-separated; each rungs joined by +")
    ap.add_argument("--batch", type=int, default=adapt.AdaptConfig.batch, help="crops a step")
    ap.add_argument("--crop", type=int, default=adapt.AdaptConfig.crop, help="a crop's side")
    ap.add_argument(
        "--warmup-share",
        type=int,
        default=adapt.WARMUP_SHARE,
        help="the cosine rate rises over 1/N of the steps (20: a twentieth)",
    )
    ap.add_argument("--lam", type=float, help="code each update at this λ (see above)")
    args = ap.parse_args()
    adapt.WARMUP_SHARE = args.warmup_share
    torch.set_num_threads(1)
    prior, held, samples = _frames(args.wrp, args.source)
    post = get_bank().processors(OPTIONS[1], prior).post
    base = _psnr(post, held["measure"])
    for variant in args.variants.split(","):
        t0 = time.perf_counter()
        fitted, subset, upsampled = _fit(
            post, variant, held["fit"], args.batch, args.crop, samples, args.lam
        )
        after = _psnr(fitted, held["measure"])
        row: dict[str, Any] = {
            "variant": variant,
            "prior": prior,
            "gain_yuv_db": round(weighted(tuple(after)) - weighted(tuple(base)), 4),
            "gain_y_u_v_db": [round(a - b, 4) for a, b in zip(after, base, strict=True)],
        }
        if args.lam is not None:
            update, decoded = _coded(post, fitted, subset, upsampled, samples, args.lam, args.crop)
            coded = _psnr(decoded, held["measure"])
            row["bytes"] = len(update)
            row["coded_gain_yuv_db"] = round(weighted(tuple(coded)) - weighted(tuple(base)), 4)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
