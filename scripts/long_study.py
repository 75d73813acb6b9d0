"""Measure `wrapcodec encode` on long clips: all options, post-1/1 alone and direct, against
plain 8-bit coding by the codec alone (ffmpeg, the same QP and preset).

For each clip × QP, one JSON line per configuration on stdout (resumable: lines already in
``--log`` are skipped; an encode's line says what each neural candidate's climb did:
``adapted``), then a BD-rate table (PSNR-YUV 6:1:1, piecewise cubic on log-rate)::

    python scripts/long_study.py CLIP.y4m [CLIP.y4m …] --codec x265 --qps 22,27,32,37,42,47 \
        --log long.jsonl [--wrapcodec PATH] [--extra 'MORE ENCODE ARGUMENTS']

Plain coding (the codec alone, 8 bits) is measured for x265 and x264; leave ``plain`` out of
``--configs`` for the others.

``--wrapcodec`` runs another installation (an older release, to measure a baseline).
``direct`` is direct coding at the bit depth ``encode`` chooses (``--bitdepth auto``, two
encodes), ``direct-10`` at 10 bits (one encode: the times are relative to it where measured).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wrapcodec.bdrate import Curve, bd_rate
from wrapcodec.metrics import measure_files

CONFIGS = {
    "direct": ["--options", "0"],
    "direct-10": ["--options", "0", "--bitdepth", "10"],
    "post-1/1": ["--options", "1"],
    "all": [],
}
PLAIN = {
    "x265": ("libx265", "-x265-params", "qp={qp}:log-level=warning", "hevc"),
    "x264": ("libx264", "-qp", "{qp}", "h264"),
}


def encode(exe: str, clip: Path, codec: str, qp: int, options: list[str], extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wrp"
        cmd = [exe, "encode", str(clip), "-o", str(out), "--codec", codec, "--qp", str(qp)]
        t0 = time.perf_counter()
        done = subprocess.run([*cmd, *options, *extra, "--json"], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode:
            sys.exit(f"{' '.join(cmd)}: {done.stderr.strip()}")
        report = json.loads(done.stdout)
    update = 0
    adapted = []
    for segment in report["segments"]:
        for c in segment["candidates"]:
            a = c.get("adaptation")
            if c.get("chosen") and a and a.get("used"):
                update += a["bytes"]
            if a:
                adapted.append(_adaptation(c["name"], a))
    return {
        "bits": report["bits"],
        "kbps": report["kbps"],
        "psnr_yuv": report["psnr_yuv"],
        "option": report["option_name"],
        "bitdepths": [s.get("bitdepth") for s in report["segments"]],
        "update_bytes": update,
        "wall_s": wall,
        "total_s": report["timings"]["total_s"],
        "adapted": adapted,
    }


def _adaptation(name: str, a: dict) -> dict:
    """What a neural candidate's climb did: its J without an update, each rung's J, seconds,
    bytes and the frames its J was measured on (a number: the judged frames of a long
    segment; null: every frame, in a long segment only the best rung's), and the bar it had
    to reach where it was adapted after another."""
    rungs = [[t["rung"], t["cost"], t["seconds"], t["bytes"], t["judged_on"]] for t in a["tried"]]
    keep = ("cost_without", "seconds", "bar", "out_of_reach", "used")
    return {"name": name, "rungs": rungs} | {k: a.get(k) for k in keep}


def plain(ffmpeg: str, clip: Path, codec: str, qp: int, frames: int, fps: float) -> dict:
    """The codec alone on the 8-bit source, as a user would run it."""
    encoder, flag, params, fmt = PLAIN[codec]
    with tempfile.TemporaryDirectory() as tmp:
        stream, decoded = Path(tmp) / f"out.{fmt}", Path(tmp) / "dec.y4m"
        t0 = time.perf_counter()
        args = ["-c:v", encoder, "-preset", "medium", flag, params.format(qp=qp), "-f", fmt]
        subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-i", str(clip), *args, str(stream)], check=True
        )
        wall = time.perf_counter() - t0
        subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(stream), str(decoded)], check=True)
        acc = measure_files(str(clip), str(decoded))
        bits = 8 * stream.stat().st_size
    return {
        "bits": bits,
        "kbps": bits / frames * fps / 1000,
        "psnr_yuv": acc.psnr_yuv,
        "wall_s": wall,
    }


def _curve(points: list[dict]) -> Curve:
    ordered = sorted(points, key=lambda p: -p["qp"])
    return Curve(tuple(p["kbps"] for p in ordered), tuple(p["psnr_yuv"] for p in ordered))


def _row(clip: str, config: str, by: dict[str, dict[int, dict]]) -> str:
    """One table row over the QPs that ``config``, direct and plain coding all have."""
    qps = sorted(set(by[config]) & set(by["direct"]) & set(by.get("plain", by["direct"])))
    pick = {k: [by[k][q] for q in qps] for k in (config, "direct", "plain") if k in by}
    bd = {k: bd_rate(_curve(pick[k]), _curve(pick[config])).bd_rate for k in pick if k != config}
    shares = [p.get("update_bytes", 0) * 8 / p["bits"] * 100 for p in pick[config]]
    one = by["direct-10"] if set(qps) <= set(by.get("direct-10", {})) else by["direct"]
    times = [p["wall_s"] / one[q]["wall_s"] for p, q in zip(pick[config], qps, strict=True)]
    return (
        f"| {clip} | {config} | {qps[0]}–{qps[-1]} | {bd.get('direct') or 0.0:+.2f} % | "
        f"{bd.get('plain') or float('nan'):+.2f} % | {shares[0]:.3f}–{shares[-1]:.3f} % | "
        f"{sum(times) / len(times):.2f} |"
    )


def table(rows: list[dict]) -> str:
    lines = [
        "| clip | config | QPs | BD-rate vs direct | BD-rate vs plain 8-bit "
        "| update share (min–max QP) | time × one direct encode |",
        "|---|---|---|---|---|---|---|",
    ]
    for clip in sorted({r["clip"] for r in rows}):
        by: dict[str, dict[int, dict]] = {}
        for r in rows:
            if r["clip"] == clip:
                by.setdefault(r["config"], {})[r["qp"]] = r
        for config in ("post-1/1", "all", "direct-10", "direct"):
            if config in by and "direct" in by:
                lines.append(_row(clip, config, by))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--codec", default="x265")
    ap.add_argument("--qps", default="22,27,32,37,42,47")
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--wrapcodec", default="wrapcodec")
    ap.add_argument(
        "--configs",
        default="direct,direct-10,post-1/1,all,plain",
        help=f"plain: the codec alone ({', '.join(PLAIN)})",
    )
    ap.add_argument("--extra", default="", help="more encode arguments, one string")
    args = ap.parse_args()
    if "plain" in args.configs.split(",") and args.codec not in PLAIN:
        sys.exit(f"plain coding is measured for {', '.join(PLAIN)} only: leave it out of --configs")
    from imageio_ffmpeg import get_ffmpeg_exe

    from wrapcodec.y4m import count_frames, read_info

    rows = (
        [json.loads(line) for line in args.log.read_text().splitlines()]
        if args.log.exists()
        else []
    )
    done = {(r["clip"], r["config"], r["qp"]) for r in rows}
    with args.log.open("a") as log:
        for clip in args.clips:
            info = read_info(clip)
            frames, fps = count_frames(clip), info.fps_num / info.fps_den
            for qp in (int(q) for q in args.qps.split(",")):
                for config in args.configs.split(","):
                    if (clip.name, config, qp) in done:
                        continue
                    if config == "plain":
                        row = plain(get_ffmpeg_exe(), clip, args.codec, qp, frames, fps)
                    else:
                        row = encode(
                            args.wrapcodec,
                            clip,
                            args.codec,
                            qp,
                            CONFIGS[config],
                            shlex.split(args.extra),
                        )
                    row |= {"clip": clip.name, "config": config, "qp": qp}
                    rows.append(row)
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    print(json.dumps(row), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
