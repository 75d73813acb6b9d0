"""What a trained pre-filter does to clips, per QP: how far it moves them, and the bits and
decoded quality of the filtered clips against direct coding (the codec at 8 bits, its
default preset, as ``encode --standard`` codes).

    python scripts/prefilter_effect.py BANK CODEC METRIC CLIPS_DIR [--clips 8] [--qps 27,37,47]

BANK holds ``standard/prefilter-CODEC-METRIC.{safetensors,json}`` (a ``train-prefilter``
output folder); CLIPS_DIR holds 8-bit ``.y4m`` clips (the run's ``standard/val-clips/clips``:
the validation photos' pan clips). The first ``--clips`` of them, sorted by name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from wrapcodec.backend import get_backend
from wrapcodec.bank import load_prefilter, prefilter_card
from wrapcodec.metrics import PsnrAccumulator
from wrapcodec.prefilter_train import code_clip, filter_clip
from wrapcodec.y4m import iter_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bank", type=Path)
    ap.add_argument("codec")
    ap.add_argument("metric", choices=["psnr", "ms-ssim"])
    ap.add_argument("clips_dir", type=Path)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--qps", default="27,37,47")
    args = ap.parse_args()
    card = prefilter_card(args.bank, args.codec, args.metric)
    if card is None:
        raise SystemExit(f"{args.bank}: no pre-filter for {args.codec}, {args.metric}")
    net = load_prefilter(args.bank, card)
    backend = get_backend(args.codec)
    clips = [list(iter_frames(p)) for p in sorted(args.clips_dir.glob("*.y4m"))[: args.clips]]
    for qp in (int(q) for q in args.qps.split(",")):
        bits = {"direct": 0, "filtered": 0}
        acc = {k: PsnrAccumulator(8) for k in ("direct", "filtered", "change")}
        for clip in clips:
            moved = filter_clip(net, clip, qp)
            for a, b in zip(clip, moved, strict=True):
                acc["change"].add(a, b)
            for name, frames in (("direct", clip), ("filtered", moved)):
                n, decoded = code_clip(backend, qp, frames)
                bits[name] += n
                for a, b in zip(clip, decoded, strict=True):
                    acc[name].add(a, b)
        print(
            f"QP {qp}: filter's change {acc['change'].psnr_yuv:.2f} dB; bits filtered / direct "
            f"{bits['filtered'] / bits['direct']:.3f}; PSNR-YUV direct "
            f"{acc['direct'].psnr_yuv:.2f} dB, filtered {acc['filtered'].psnr_yuv:.2f} dB"
        )


if __name__ == "__main__":
    main()
