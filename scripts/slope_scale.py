"""A codec's slope scale (``Backend.slope_scale``): how much more steeply whole codings' RD
curves fall than the codec's relation λ(QP) says, on the training clips.

Reads the pair cache's direct coding of the training pseudo-videos (``wrapcodec pairs --data
D --out CACHE --codecs C --ratios 1 --bitdepth 8``), takes each clip's secant slope between
neighbouring QPs over the relation's λ (``wrapcodec.prefilter_train.measured_scales``, as
``encode --lambda measured`` measures a segment's) and prints, per codec, the median over
every clip and QP, the geometric mean, and the median at each QP::

    python scripts/slope_scale.py CACHE x265 x264
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from wrapcodec.backend import get_backend
from wrapcodec.prefilter_train import Clips, measured_scales


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cache", type=Path, help="a pair cache (wrapcodec pairs --out)")
    ap.add_argument("codecs", nargs="+")
    args = ap.parse_args()
    clips = Clips(sorted((args.cache / "clips").glob("*.y4m")))
    for codec in args.codecs:
        scales = measured_scales(args.cache, codec, clips, get_backend(codec))
        if not scales:
            raise SystemExit(f"{args.cache}: no direct coding by {codec} at r = 1")
        by_qp: dict[int, list[float]] = {}
        for (_, qp), scale in scales.items():
            by_qp.setdefault(qp, []).append(scale)
        values = np.array(list(scales.values()))
        row = {
            "codec": codec,
            "points": len(values),
            "median": round(float(np.median(values)), 2),
            "geometric_mean": round(float(np.exp(np.log(values).mean())), 2),
            "median_by_qp": {q: round(float(np.median(v)), 2) for q, v in sorted(by_qp.items())},
            "p10_p90": [round(float(np.percentile(values, p)), 2) for p in (10, 90)],
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
