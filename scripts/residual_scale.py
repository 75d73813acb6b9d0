"""Whether a post-processor's strength should follow the picture type: its residual scaled per
picture type (I, P, B) and plane, each scale fitted by least squares to the source.

The residual is the post-processor's output less the decoded picture (post-1/1: r = 1, so the
two have one size). For each picture type and plane the scale ``s = <r, e> / <r, r>`` (``e``
the source less the decoded picture) minimises the squared error of ``decoded + s · r``; the
script prints PSNR-YUV (6:1:1) of the decoded frames, of the post-processor's and of the
scaled ones, and the scales. The picture types are those ffmpeg's ``showinfo`` reports for
the stream. Fitted on the frames it is measured on, the gain bounds what such scales could
send for::

    wrapcodec encode CLIP.y4m -o OUT.wrp --qp 37
    wrapcodec decode OUT.wrp -o POST.y4m
    python scripts/residual_scale.py OUT.wrp CLIP.y4m POST.y4m
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from wrapcodec import ffmpeg
from wrapcodec.container import read_wrp, segment_bitdepth
from wrapcodec.decoder import bottleneck
from wrapcodec.y4m import Frame, iter_frames

WEIGHTS = (6.0, 1.0, 1.0)  # PSNR-YUV 6:1:1


def picture_types(stream: Path) -> list[str]:
    """I, P or B for each picture of ``stream``, in output order."""
    run = subprocess.run(
        [
            ffmpeg.ffmpeg_exe(),
            "-hide_banner",
            "-i",
            str(stream),
            "-vf",
            "showinfo",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return re.findall(r"type:([IPB])", run.stderr)


def sums(
    source: Path, decoded: Iterator[Frame], post: Path, types: list[str]
) -> dict[tuple[str, int], np.ndarray]:
    """Per (picture type, plane): ``<r, e>``, ``<r, r>``, ``<e, e>`` and the sample count."""
    acc: dict[tuple[str, int], np.ndarray] = {}
    frames = zip(iter_frames(source), decoded, iter_frames(post), strict=True)
    for k, (s, d, p) in enumerate(frames):
        for i, plane in enumerate("yuv"):
            a, b, c = (getattr(f, plane).astype(np.float64) for f in (s, d, p))
            e, r = a - b, c - b
            v = acc.setdefault((types[k], i), np.zeros(4))
            v += [np.sum(r * e), np.sum(r * r), np.sum(e * e), e.size]
    return acc


def psnr_yuv(acc: dict[tuple[str, int], np.ndarray], scales: dict[tuple[str, int], float]) -> float:
    """PSNR-YUV of ``decoded + scale · r`` (one PSNR per plane over all frames, 8-bit peak)."""
    err, n = np.zeros(3), np.zeros(3)
    for (t, i), (re_, rr, ee, count) in acc.items():
        s = scales[(t, i)]
        err[i] += ee - 2 * s * re_ + s * s * rr
        n[i] += count
    planes = 10 * np.log10(255.0**2 / (err / n))
    return float(np.dot(WEIGHTS, planes) / sum(WEIGHTS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wrp", type=Path, help="a one-segment post-1/1 file, 8-bit bottleneck")
    ap.add_argument("source", type=Path, help="the clip it was coded from (8-bit)")
    ap.add_argument("post", type=Path, help="`wrapcodec decode` of the file")
    args = ap.parse_args()
    header, segments = read_wrp(args.wrp)
    seg = segments[0]
    if segment_bitdepth(header, seg) != 8:
        raise SystemExit(f"{args.wrp}: its first segment's bottleneck is not 8-bit")
    with bottleneck(str(args.wrp), header, seg) as (stream, decoded):
        acc = sums(args.source, decoded, args.post, picture_types(stream))
    print(f"decoded {psnr_yuv(acc, dict.fromkeys(acc, 0.0)):.4f} dB")
    print(f"post-processed {psnr_yuv(acc, dict.fromkeys(acc, 1.0)):.4f} dB")
    best = {k: v[0] / v[1] for k, v in acc.items()}
    print(f"scaled per picture type and plane {psnr_yuv(acc, best):.4f} dB")
    for (t, i), s in sorted(best.items()):
        print(f"  {t} {'YUV'[i]} scale {s:.3f}")


if __name__ == "__main__":
    main()
