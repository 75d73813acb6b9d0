"""Measure update coding: today's int8 + zlib against the rate-distortion form, per rung.

For each segment of a clip (``--segment-frames``), code it once with the shipped model, fit
each rung of the capacity ladder and code the same fitted weights both ways (quantisation 2
and 3), measuring the decoder's output with each. From the second segment on, also fit from
the update in force (warm start) and send the change (a relative update). One JSON line per
measurement on stdout.

    python scripts/update_bytes.py CLIP.y4m --codec x265 --qp 32 --option 1 \
        --segment-frames 10 --steps bias:300,bias_tail:300,decoder:600,all:1000
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from wrapcodec.adapt import AdaptConfig, fit
from wrapcodec.adaptation import training_pictures
from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.encode.cost import rd_cost
from wrapcodec.options import option
from wrapcodec.pipeline import Coded, Layout, code_and_measure, measure
from wrapcodec.update import Quant, Subset, Update, apply_update, decode_update, resolve
from wrapcodec.y4m import VideoInfo, count_frames, read_info


def _measure(args: argparse.Namespace, ctx: dict, update: Update) -> float:
    layout: Layout = ctx["layout"]
    assert layout.processors is not None
    post = apply_update(layout.processors.post, update)
    adapted = replace(layout, processors=layout.processors.with_post(post))
    coded = measure(ctx["backend"], ctx["stream"], adapted, args.clip, *ctx["range"])
    return coded.mse_8bit


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip", type=Path)
    ap.add_argument("--codec", default="x265")
    ap.add_argument("--qp", type=int, default=32)
    ap.add_argument("--option", type=int, default=1)
    ap.add_argument("--segment-frames", type=int, default=10)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--steps", default="bias:300,bias_tail:300,decoder:600,all:1000")
    args = ap.parse_args()
    torch.set_num_threads(1)
    backend, bank, info = get_backend(args.codec), get_bank(), read_info(args.clip)
    layout = Layout.make(info, option(args.option), backend, 10, bank)
    lam = backend.qp_to_lambda(args.qp)
    rungs = [(Subset[n.upper()], int(k)) for n, k in (x.split(":") for x in args.steps.split(","))]
    frames = min(count_frames(args.clip), args.frames or 10**9)
    in_force: dict[Subset, Update] = {}
    for first in range(0, frames, args.segment_frames):
        count = min(args.segment_frames, frames - first)
        with tempfile.TemporaryDirectory() as tmp:
            stream = Path(tmp) / f"s{backend.extension}"
            settings = EncodeSettings(qp=args.qp, preset=backend.default_preset, threads=1)
            plain = code_and_measure(backend, settings, args.clip, layout, first, count, stream)
            ctx = {"layout": layout, "backend": backend, "stream": stream, "range": (first, count)}
            data = training_pictures(backend, stream, layout, args.clip, first, count, 30)
            for subset, steps in rungs:
                _segment(args, ctx, plain, data, subset, steps, lam, in_force, info)


def _segment(
    args: argparse.Namespace,
    ctx: dict,
    plain: Coded,
    data: tuple[list, list],
    subset: Subset,
    steps: int,
    lam: float,
    in_force: dict[Subset, Update],
    info: VideoInfo,
) -> None:
    first, count = ctx["range"]
    post = ctx["layout"].processors.post
    base = AdaptConfig(steps=steps, subset=subset, rd_lambda=lam)
    variants: list[tuple[str, AdaptConfig, Update | None]] = [
        ("int8+zlib", base, None),
        ("rd", replace(base, quant=Quant.RD), None),
    ]
    if subset in in_force:
        warm = replace(base, quant=Quant.RD, relative=True)
        variants.append(("rd relative, warm", warm, in_force[subset]))
    chain: Update | None = None
    for name, cfg, start in variants:
        fitted = fit(post, *data, cfg, start=start, segment_frames=count)
        update = resolve(decode_update(fitted.update, post), start)
        mse = _measure(args, ctx, update)
        bits = 8 * (plain.payload_bytes + len(fitted.update))
        print(
            json.dumps(
                {
                    "first": first,
                    "subset": subset.name,
                    "steps": fitted.steps,
                    "coding": name,
                    "params": fitted.params,
                    "bytes": len(fitted.update),
                    "pct": round(100 * len(fitted.update) / plain.payload_bytes, 3),
                    "gain_db": round(10 * math.log10(plain.mse_8bit / mse), 4),
                    "dJ": round(
                        rd_cost(mse, bits, count, info, lam)
                        - rd_cost(plain.mse_8bit, 8 * plain.payload_bytes, count, info, lam),
                        5,
                    ),
                    "fit_s": round(fitted.seconds, 1),
                }
            ),
            flush=True,
        )
        chain = update  # the last RD variant (relative when there is one) stays in force
    assert chain is not None
    in_force[subset] = chain


if __name__ == "__main__":
    main()
