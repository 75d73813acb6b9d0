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
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from luma_probe import ChromaStage
from prior_eval import load_post
from torch import nn

from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.metrics import PsnrAccumulator
from wrapcodec.nets import PostProcessor, mse_8bit
from wrapcodec.pairs import cached_qps, coding_option, load_pairs, sample_batch
from wrapcodec.pipeline import Layout, decode_bottleneck, encode_stream, from_tensors, to_tensors
from wrapcodec.validation import _clip
from wrapcodec.y4m import iter_frames


def _train(model: nn.Module, pairs: list, steps: int, lr: float, batch: int, crop: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        (y, uv), (ty, tuv) = sample_batch(rng, pairs, batch, crop)
        y_hat, uv_hat = model.restore(y, uv)  # type: ignore[operator]
        loss = mse_8bit(y_hat, uv_hat, ty, tuv)
        opt.zero_grad()
        loss.backward()
        opt.step()


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
    backend = get_backend(args.codec)
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
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "val.y4m"
        info, count = _clip(args.pictures, clip)
        layout = Layout.make(info, coding_option(ratio), backend, args.bitdepth)
        sources = list(iter_frames(clip))
        for qp in (int(q) for q in args.qps.split(",")):
            stream = Path(tmp) / f"q{qp}{backend.extension}"
            settings = EncodeSettings(qp=qp, preset=backend.default_preset, bitdepth=args.bitdepth)
            encode_stream(backend, settings, clip, layout, 0, count, stream)
            decoded = list(decode_bottleneck(backend, stream, layout, count))
            direct = PsnrAccumulator(8)
            accs = [PsnrAccumulator(8) for _ in models]
            with torch.inference_mode():
                for frame, source in zip(decoded, sources, strict=True):
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
