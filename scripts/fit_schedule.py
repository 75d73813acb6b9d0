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

A variant is one or more rungs joined by ``+``, each ``subset:steps:rate:peak`` (subset a
``wrapcodec.update.Subset`` name; rate ``constant`` or ``cosine``: the warm-up over the first
20th of the steps and the half cosine of ``wrapcodec.adapt.learning_rate``, at that peak);
each rung starts where the one before ended, as the encoder's climb does.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import replace

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
from wrapcodec.update import Subset, subset_names
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


def _frames(wrp: str, source: str) -> tuple[int, dict[str, list[tuple[Picture, Picture]]]]:
    header, segments = read_wrp(wrp)
    seg = segments[0]
    if seg.option != 1:
        raise SystemExit(f"{wrp}: its first segment is option {seg.option}, not post-1/1")
    depth = segment_bitdepth(header, seg)
    held: dict[str, list[tuple[Picture, Picture]]] = {"fit": [], "measure": []}
    with bottleneck(wrp, header, seg) as (_, frames), Y4MReader(source) as reader:
        for k, (frame, src) in enumerate(zip(frames, reader, strict=False)):
            name = _held(k)
            if name is not None:
                decoded = to_tensors(frame, depth)
                held[name].append((decoded, to_tensors(src, reader.info.bitdepth)))
    return seg.prior, held


def _rung(text: str) -> tuple[Subset, int, str, float]:
    subset, steps, rate, peak = text.split(":")
    if rate not in ("constant", "cosine"):
        raise SystemExit(f"{text}: the rate is constant or cosine")
    return Subset[subset.upper()], int(steps), rate, float(peak)


def _fit(
    post: PostProcessor, rungs: str, frames: list[tuple[Picture, Picture]], batch: int, crop: int
) -> PostProcessor:
    model = copy.deepcopy(post)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    height, width = frames[0][1][0].shape[-2:]
    with torch.no_grad():
        upsampled = [model.upsample(y, uv, height, width) for (y, uv), _ in frames]
    sources = [s for _, s in frames]
    schedule = adapt.learning_rate
    for text in rungs.split("+"):
        subset, steps, rate, peak = _rung(text)
        cfg = replace(adapt.AdaptConfig(), lr=peak, peak_lr=peak, batch=batch, crop=crop)
        if rate == "constant":
            adapt.learning_rate = lambda cfg, step, steps: cfg.lr  # type: ignore[assignment]
        try:
            names = subset_names(model, subset)
            adapt._train(model, names, (upsampled, sources), (cfg.crop, cfg.crop), steps, cfg)
        finally:
            adapt.learning_rate = schedule
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]


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
    args = ap.parse_args()
    adapt.WARMUP_SHARE = args.warmup_share
    torch.set_num_threads(1)
    prior, held = _frames(args.wrp, args.source)
    post = get_bank().processors(OPTIONS[1], prior).post
    base = _psnr(post, held["measure"])
    for variant in args.variants.split(","):
        t0 = time.perf_counter()
        fitted = _fit(post, variant, held["fit"], args.batch, args.crop)
        after = _psnr(fitted, held["measure"])
        row = {
            "variant": variant,
            "prior": prior,
            "gain_yuv_db": round(weighted(tuple(after)) - weighted(tuple(base)), 4),
            "gain_y_u_v_db": [round(a - b, 4) for a, b in zip(after, base, strict=True)],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
