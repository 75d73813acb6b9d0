"""PSNR-YUV (6:1:1) of post-processor weights on pictures coded by a real codec, per QP.

The pictures (all one size, e.g. the Kodak crops) are coded as one clip with the option that
a post-only model of the ratio shares its bitstream with (direct at r = 1, bilinear below),
once per QP, and decoded as the decoder does; each weights file's post-processor (float
arithmetic) then runs on the same decoded frames. The first column is an untrained
post-processor (bilinear upsampling) on the same bitstream, through the same normalisation
as the networks: at r = 1 that is 0.01–0.16 dB below what direct decoding shows (the
networks' [-1, 1] normalisation divides by 2^d − 1, direct decoding shifts), so compare
weights with each other here and with direct coding through the model cards. With
``--bitdepth 8`` (an 8-bit bottleneck) it is direct decoding itself::

    python scripts/prior_eval.py ../shared/data/images/val --ratio 1 --codec x265 \
        --qps 22,27,32,37,42,47 models/post-1.safetensors new.safetensors
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import torch
from safetensors.torch import load_file

from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import split_weights
from wrapcodec.metrics import PsnrAccumulator
from wrapcodec.nets import PostProcessor
from wrapcodec.pairs import coding_option
from wrapcodec.pipeline import Layout, decode_bottleneck, encode_stream, from_tensors, to_tensors
from wrapcodec.validation import _clip
from wrapcodec.y4m import Frame, VideoInfo, iter_frames


def coded(
    pictures: Path, ratio: Fraction, codec: str, qps: Iterable[int], bitdepth: int
) -> Iterator[tuple[int, float, VideoInfo, list[tuple[Frame, Frame]]]]:
    """``pictures`` coded as one clip by ``codec`` with the option a post-only model of
    ``ratio`` shares its bitstream with, at each of ``qps``: the QP, the bits per pixel, the
    clip's format and (decoded bottleneck, source) frame by frame."""
    backend = get_backend(codec)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "val.y4m"
        info, count = _clip(pictures, clip)
        layout = Layout.make(info, coding_option(ratio), backend, bitdepth)
        sources = list(iter_frames(clip))
        for qp in qps:
            stream = Path(tmp) / f"q{qp}{backend.extension}"
            settings = EncodeSettings(qp=qp, preset=backend.default_preset, bitdepth=bitdepth)
            encode_stream(backend, settings, clip, layout, 0, count, stream)
            decoded = list(decode_bottleneck(backend, stream, layout, count))
            bpp = 8 * stream.stat().st_size / (count * info.width * info.height)
            yield qp, bpp, info, list(zip(decoded, sources, strict=True))


def load_post(path: Path | None, ratio: Fraction) -> PostProcessor:
    post = PostProcessor(ratio)
    if path is not None:
        post.load_state_dict(split_weights(load_file(str(path)), "post"))
    return post.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pictures", type=Path)
    ap.add_argument("weights", nargs="*", type=Path)
    ap.add_argument("--ratio", default="1")
    ap.add_argument("--codec", default="x265")
    ap.add_argument("--qps", default="22,27,32,37,42,47")
    ap.add_argument("--bitdepth", type=int, choices=(8, 10), default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ratio = Fraction(args.ratio)
    posts = [load_post(None, ratio)] + [load_post(w, ratio) for w in args.weights]
    names = ["bilinear"] + [w.stem for w in args.weights]
    print("| QP | bpp | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    qps = [int(q) for q in args.qps.split(",")]
    for qp, bpp, info, frames in coded(args.pictures, ratio, args.codec, qps, args.bitdepth):
        accs = [PsnrAccumulator(8) for _ in posts]
        with torch.inference_mode():
            for frame, source in frames:
                y, uv = to_tensors(frame, args.bitdepth)
                for post, acc in zip(posts, accs, strict=True):
                    y_hat, uv_hat = post(y, uv, info.height, info.width)
                    acc.add(source, from_tensors(y_hat, uv_hat, info.width, info.height, 8))
        base = accs[0].psnr_yuv
        cells = [f"{base:.3f}"] + [f"{a.psnr_yuv - base:+.3f}" for a in accs[1:]]
        print(f"| {qp} | {bpp:.4f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
