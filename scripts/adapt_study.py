"""Measure content adaptation of the shipped post-processors: parameters × steps → dB, bytes, s.

For each clip × option × QP: code the clip once with the shipped model, then fit updates with
each configuration and measure the decoder's output with the update applied (the exact
encoder path). One JSON line per measurement on stdout.

    python scripts/adapt_study.py CLIP.y4m [CLIP.y4m …] --codec x265 --qps 27,37 \
        --options 1,2 --configs "bias:100:1e-3,bias:300:1e-3,all:300:1e-3"

A configuration is ``subset:steps:lr[:quant[:batch[:crop[:levels]]]]`` (subset ``bias`` or ``all``,
quant ``int8`` or ``f16``; ``lr`` is the fit's constant rate below 50 steps and the peak of its
schedule above, as ``wrapcodec.adapt.learning_rate`` uses them). ``--inherit`` also measures a
segment coded with the update fitted on the preceding segment of the same clip
(``--segment-frames``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from wrapcodec.adapt import AdaptConfig, fit
from wrapcodec.adaptation import training_pictures
from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.options import option
from wrapcodec.pipeline import Layout, code_and_measure, measure
from wrapcodec.update import Quant, Subset
from wrapcodec.y4m import count_frames, read_info

SUBSETS = {"bias": Subset.BIAS_TAIL, "all": Subset.ALL}
QUANTS = {"int8": Quant.INT8, "f16": Quant.FLOAT16}


def parse_config(text: str) -> AdaptConfig:
    parts = text.split(":")
    subset, steps, lr = parts[0], int(parts[1]), float(parts[2])
    quant = QUANTS[parts[3]] if len(parts) > 3 else Quant.INT8
    batch = int(parts[4]) if len(parts) > 4 else AdaptConfig.batch
    crop = int(parts[5]) if len(parts) > 5 else AdaptConfig.crop
    levels = int(parts[6]) if len(parts) > 6 else AdaptConfig.levels
    return AdaptConfig(
        steps=steps,
        subset=SUBSETS[subset],
        quant=quant,
        lr=lr,
        peak_lr=lr,
        batch=batch,
        crop=crop,
        levels=levels,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--codec", default="x265")
    ap.add_argument("--qps", default="32")
    ap.add_argument("--options", default="1,2")
    ap.add_argument("--configs", default="bias:300:1e-3")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--segment-frames", type=int, default=None)
    ap.add_argument("--inherit", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    backend = get_backend(args.codec)
    bank = get_bank()
    configs = [parse_config(c) for c in args.configs.split(",")]
    for clip in map(Path, args.clips):
        info = read_info(clip)
        frames = min(count_frames(clip), args.frames or 10**9)
        step = args.segment_frames or frames
        ranges = [(f, min(step, frames - f)) for f in range(0, frames, step)]
        for code in map(int, args.options.split(",")):
            opt = option(code)
            for qp in map(int, args.qps.split(",")):
                settings = EncodeSettings(qp=qp, preset=backend.default_preset, threads=1)
                layout = Layout.make(info, opt, backend, 10, bank)
                previous: dict[str, bytes] = {}
                for first, count in ranges:
                    with tempfile.TemporaryDirectory() as tmp:
                        stream = Path(tmp) / f"s{backend.extension}"
                        plain = code_and_measure(
                            backend, settings, clip, layout, first, count, stream
                        )
                        row = {
                            "clip": clip.stem,
                            "option": opt.name,
                            "qp": qp,
                            "first": first,
                            "frames": count,
                            "payload_bytes": plain.payload_bytes,
                            "psnr_yuv": round(plain.psnr_yuv, 4),
                        }
                        decoded, sources = training_pictures(
                            backend, stream, layout, clip, first, count, AdaptConfig.max_frames
                        )
                        for text, cfg in zip(args.configs.split(","), configs, strict=True):
                            fitted = fit(layout.processors.post, decoded, sources, cfg)  # type: ignore[union-attr]
                            adapted = measure(
                                backend,
                                stream,
                                layout.with_update(fitted.update),
                                clip,
                                first,
                                count,
                            )
                            out = {
                                **row,
                                "config": text,
                                "params": fitted.params,
                                "update_bytes": len(fitted.update),
                                "update_pct": round(
                                    100 * len(fitted.update) / plain.payload_bytes, 3
                                ),
                                "gain_db": round(adapted.psnr_yuv - plain.psnr_yuv, 4),
                                "fit_s": round(fitted.seconds, 2),
                            }
                            if args.inherit and text in previous:
                                inherited = measure(
                                    backend,
                                    stream,
                                    layout.with_update(previous[text]),
                                    clip,
                                    first,
                                    count,
                                )
                                out["inherit_gain_db"] = round(
                                    inherited.psnr_yuv - plain.psnr_yuv, 4
                                )
                            previous[text] = fitted.update
                            print(json.dumps(out), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
