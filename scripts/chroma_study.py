"""Does a chroma stage help a post-processor's prior, not only a fit to one clip?

Trains, from the same post-processor weights, on the same pair cache and the same batches
(float arithmetic, Adam, the 6:1:1 MSE in 8-bit units), the post-processor alone and the
post-processor followed by a chroma stage (``luma_probe.ChromaStage``: 3×3 convolutions on
the output chroma and the output luma as four channels at chroma resolution, its last layer
starting at zero); then codes the validation pictures (e.g. the Kodak crops) as one clip with
the real codec at each QP and prints, per QP, PSNR-Y/U/V and 6:1:1 PSNR-YUV of both against
direct decoding of the same bitstream::

    python scripts/chroma_study.py CACHE ../shared/data/images/val models/post-1-p7.safetensors \
        --codec x265 --bitdepth 8 --steps 1000 --widths 8
"""

from __future__ import annotations

import argparse
import copy
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from luma_probe import ChromaStage, fit
from prior_eval import coded, load_post
from torch import nn

from wrapcodec.backend import get_backend
from wrapcodec.metrics import PsnrAccumulator
from wrapcodec.nets import PostProcessor
from wrapcodec.pairs import cached_qps, load_pairs, sample_batch
from wrapcodec.pipeline import from_tensors, to_tensors


def _train(model: nn.Module, pairs: list, steps: int, lr: float, batch: int, crop: int) -> None:
    rng = np.random.default_rng(0)
    fit(model, lambda: sample_batch(rng, pairs, batch, crop), steps, lr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cache", type=Path)
    ap.add_argument("pictures", type=Path)
    ap.add_argument("weights", type=Path)
    ap.add_argument("--codec", default="x265")
    ap.add_argument("--bitdepth", type=int, choices=(8, 10), default=8)
    ap.add_argument("--qps", default="22,27,32,37,42,47")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--widths", default="8")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    ratio = Fraction(1)
    get_backend(args.codec)  # an unknown codec is refused before the pairs are loaded
    train_qps = cached_qps(args.cache, [args.codec], ratio, 22, 47, args.bitdepth)
    pairs = load_pairs(args.cache, [args.codec], ratio, train_qps, args.bitdepth)
    post = load_post(args.weights, ratio)
    widths = [int(w) for w in args.widths.split(",")]
    models: list[tuple[str, nn.Module]] = [
        ("post", copy.deepcopy(post)),
        (f"post + chroma {args.widths}", ChromaStage(copy.deepcopy(post), widths)),
    ]
    for name, model in models:
        t0 = time.perf_counter()
        model.train()
        _train(model, pairs, args.steps, args.lr, args.batch, args.crop)
        model.eval()
        print(f"{name}: {args.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    models.insert(0, ("untrained further", post))
    print("| QP | direct Y/U/V/YUV | " + " | ".join(n for n, _ in models) + " |")
    qps = [int(q) for q in args.qps.split(",")]
    for qp, _, info, frames in coded(args.pictures, ratio, args.codec, qps, args.bitdepth):
        direct = PsnrAccumulator(8)
        accs = [PsnrAccumulator(8) for _ in models]
        with torch.inference_mode():
            for frame, source in frames:
                if args.bitdepth == 8:
                    direct.add(source, frame)
                y, uv = to_tensors(frame, args.bitdepth)
                for (_, model), acc in zip(models, accs, strict=True):
                    up = PostProcessor.upsample(y, uv, info.height, info.width)
                    y_hat, uv_hat = model.restore(*up)  # type: ignore[operator]
                    acc.add(source, from_tensors(y_hat, uv_hat, info.width, info.height, 8))
        base = [*direct.psnr_planes, direct.psnr_yuv] if args.bitdepth == 8 else [0.0] * 4
        cells = ["/".join(f"{v:.3f}" for v in base)]
        for acc in accs:
            values = [*acc.psnr_planes, acc.psnr_yuv]
            cells.append("/".join(f"{v - b:+.3f}" for v, b in zip(values, base, strict=True)))
        print(f"| {qp} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
