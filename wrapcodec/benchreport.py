"""Frontiers, BD-rate tables, RD plots and the files of a bench run.

Rows follow Table 1 of the switchable neural wrappers paper (HEVC anchor): each row's RD
curve is the frontier of direct coding plus that row's options, against direct coding alone.
The primary BD-rate is the *envelope* (continuous RDO: every option's curve interpolated like
the anchor, best option at each quality); the paper's discrete Pareto-frontier variant is
reported beside it, labelled as such.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wrapcodec.bdrate import (
    BDResult,
    Curve,
    Interp,
    bd_rate_envelope,
    bd_rate_envelopes,
    bd_rate_pareto,
)
from wrapcodec.bench import Point, curve_of
from wrapcodec.options import OPTIONS
from wrapcodec.paths import atomic_write

ROWS: dict[str, tuple[int, ...]] = {
    "bilinear": (12, 13, 14),
    "Lanczos": (9, 10, 11),
    "linear": (9, 10, 11, 12, 13, 14),
    "post-only": (1, 2, 3, 4),
    "wrapper": (5, 6, 7, 8),
    "post + wrapper": (1, 2, 3, 4, 5, 6, 7, 8),
    "all options": tuple(range(1, 15)),
}
CurveId = int | str  # an option's code, or a rival's name (bench.curve_of)
Row = tuple[tuple[CurveId, ...], tuple[CurveId, ...]]  # (anchor curves, test curves)
ALL_OPTIONS = ROWS["all options"]
CODEC_RESAMPLING = "codec resampling"
AGAINST_CODEC = "all options vs codec resampling"
QUALITY = {"psnr_yuv": "PSNR-YUV", "psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "vmaf": "VMAF"}
AVERAGE = "average"
MEAN = "mean of sequences"


def _curve(points: Sequence[Point], metric: str) -> Curve | None:
    pairs = [(p.kbps, getattr(p, metric)) for p in points if getattr(p, metric) is not None]
    if len(pairs) < 2:
        return None
    return Curve.of([r for r, _ in pairs], [q for _, q in pairs])


def _by(points: Sequence[Point]) -> dict[str, dict[CurveId, list[Point]]]:
    table: dict[str, dict[CurveId, list[Point]]] = defaultdict(lambda: defaultdict(list))
    for p in points:
        table[p.spec.sequence][curve_of(p)].append(p)
    return table


def rival_rows(rivals: Sequence[str]) -> dict[str, Row]:
    """The rows that compare with a codec's own resampling, as (anchors, tests): each rival
    alone against direct, direct plus every rival against direct, and the wrapper's
    frontier (direct and all options) against the codec's (direct and every rival)."""
    if not rivals:
        return {}
    rows: dict[str, Row] = {f"{r} alone": ((0,), (r,)) for r in rivals}
    rows[CODEC_RESAMPLING] = ((0,), (0, *rivals))
    rows[AGAINST_CODEC] = ((0, *rivals), (0, *ALL_OPTIONS))
    return rows


def all_rows(rivals: Sequence[str]) -> dict[str, Row]:
    """Every row of the tables as (anchors, tests): :data:`ROWS` (direct against direct plus
    the row's options), then :func:`rival_rows`."""
    rows = {row: ((0,), (0, *codes)) for row, codes in ROWS.items()}
    return {**rows, **rival_rows(rivals)}


def average_points(points: Sequence[Point]) -> list[Point]:
    """The 'average' sequence: rate and qualities averaged over sequences per (curve, QP),
    for (curve, QP) pairs measured on every sequence."""
    groups: dict[tuple[CurveId, int], list[Point]] = defaultdict(list)
    for p in points:
        groups[(curve_of(p), p.spec.qp)].append(p)
    n = len({p.spec.sequence for p in points})
    out = []
    for group in groups.values():
        if len(group) != n:
            continue
        fields: dict[str, Any] = {}
        for name in ("kbps", "psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "ssim_y", "vmaf"):
            values = [getattr(p, name) for p in group]
            fields[name] = None if None in values else sum(values) / n
        spec = group[0].spec.model_copy(update={"sequence": AVERAGE, "path": ""})
        out.append(group[0].model_copy(update={**fields, "spec": spec}))
    return out


def _row_bd(
    per_curve: dict[CurveId, list[Point]],
    anchors: Sequence[CurveId],
    tests: Sequence[CurveId],
    metric: str,
    interp: Interp,
) -> tuple[BDResult, BDResult] | None:
    """(envelope, Pareto) BD-rate of the ``tests`` curves against the ``anchors`` curves, or
    None when an anchor or every test beyond the anchors is unmeasured."""
    anchor_curves = [_curve(per_curve.get(a, []), metric) for a in anchors]
    if None in anchor_curves or not any(per_curve.get(t) for t in tests if t not in anchors):
        return None
    curves = [c for c in (_curve(per_curve.get(t, []), metric) for t in tests) if c is not None]
    if not curves:
        return None
    pool = [(p.kbps, getattr(p, metric)) for t in tests for p in per_curve.get(t, [])]
    anchor_pool = [
        (p.kbps, getattr(p, metric))
        for a in anchors
        for p in per_curve[a]
        if getattr(p, metric) is not None
    ]
    anchor = Curve.of([r for r, _ in anchor_pool], [q for _, q in anchor_pool])
    if len(anchors) == 1:
        envelope = bd_rate_envelope(anchor, curves, interp)
    else:
        envelope = bd_rate_envelopes([c for c in anchor_curves if c is not None], curves, interp)
    return envelope, bd_rate_pareto(anchor, pool, interp)


def analyse(
    points: Sequence[Point], metrics: Sequence[str], interp: Interp, rivals: Sequence[str] = ()
) -> dict[str, Any]:
    """BD-rate of every row, sequence (and the average) and metric, both methods."""
    table = _by([*points, *average_points(points)])
    out: dict[str, Any] = {}
    for sequence, per_curve in table.items():
        for row, (anchors, tests) in all_rows(rivals).items():
            for metric in metrics:
                result = _row_bd(per_curve, anchors, tests, metric, interp)
                if result is None:
                    continue
                envelope, pareto = result
                out.setdefault(row, {}).setdefault(metric, {})[sequence] = {
                    "envelope": envelope.__dict__,
                    "pareto": pareto.__dict__,
                }
    for row in out.values():
        for per_sequence in row.values():
            means: dict[str, float | None] = {}
            for method in ("envelope", "pareto"):
                values = [
                    r[method]["bd_rate"]
                    for s, r in per_sequence.items()
                    if s != AVERAGE and r[method]["bd_rate"] is not None
                ]
                means[method] = sum(values) / len(values) if values else None
            per_sequence[MEAN] = means
    return out


def speed_table(points: Sequence[Point]) -> list[dict[str, Any]]:
    """Decoder complexity and speeds per option (and rival), averaged over the points."""
    groups: dict[CurveId, list[Point]] = defaultdict(list)
    for p in points:
        groups[curve_of(p)].append(p)
    rows = []
    for code, group in sorted(groups.items(), key=lambda item: str(item[0]).zfill(2)):
        rows.append(
            {
                "option": code,
                "name": group[0].kind if isinstance(code, str) else group[0].option_name,
                "post_kmacs_per_pixel": sum(p.post_kmacs_per_pixel for p in group) / len(group),
                "encode_fps": sum(p.encode_fps for p in group) / len(group),
                "decode_fps": sum(p.decode_fps for p in group) / len(group),
            }
        )
    return rows


ADAPT_COLUMNS = (
    "adapt_steps",
    "adapt_used",
    "adapt_gain_db",
    "adapt_bytes",
    "adapt_s",
    "psnr_yuv_without_update",
    "adapt_cost_without",
    "adapt_cost_with",
)
"""Content adaptation columns of points.csv (empty for points without adaptation)."""


def points_csv(points: Sequence[Point]) -> str:
    """points.csv: one row per point, the spec's identifying fields and the figures."""
    buf = io.StringIO()
    fields = [
        "sequence",
        "option",
        "option_name",
        "ratio",
        "bottleneck",
        "codec",
        "preset",
        "qp",
        "frames",
        "bits",
        "kbps",
        "psnr_y",
        "psnr_u",
        "psnr_v",
        "psnr_yuv",
        "ssim_y",
        "vmaf",
        "encode_s",
        "decode_s",
        "encode_fps",
        "decode_fps",
        "post_kmacs_per_pixel",
        *ADAPT_COLUMNS,
    ]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for p in points:
        row = p.model_dump(exclude={"spec"})
        row.update(
            {
                k: getattr(p.spec, k)
                for k in ("sequence", "option", "codec", "preset", "qp", "frames")
            }
        )
        row["adapt_steps"] = p.spec.adapt_steps
        if p.adapt_gain_db is None:
            row["adapt_used"] = None  # no adaptation tried: empty, not False
        writer.writerow({k: row.get(k) for k in fields})
    return buf.getvalue()


def bd_value(per_sequence: dict[str, Any], sequence: str, method: str) -> float | None:
    """A BD-rate of one row and metric: a sequence's, the average curve's, or ``MEAN``."""
    entry = per_sequence.get(sequence, {}).get(method)
    return entry["bd_rate"] if isinstance(entry, dict) else entry


def fmt_bd(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.2f} %"


def markdown(results: dict[str, Any]) -> str:
    """report.md: the BD-rate tables (both methods), speeds, and how they were computed."""
    bd = results["bd_rate"]
    seqs = results["sequences"]
    lines = [
        f"# wrapcodec bench: {results['config']['dataset']} with {results['config']['codec']}",
        "",
        f"Command: `{results['command']}`",
        "",
    ]
    lines += [
        f"wrapcodec {results['versions']['wrapcodec']}, ffmpeg "
        f"{results['versions']['ffmpeg']}, {results['config']['codec']} "
        f"{results['versions']['encoder']}; QPs {results['config']['qps']}, preset "
        f"{results['preset']}, {results['config']['bitdepth']}-bit bottleneck.",
        "",
    ]
    for method, title in (
        ("envelope", "BD-rate, RD envelope (continuous RDO; primary)"),
        (
            "pareto",
            "BD-rate, discrete Pareto frontier (the paper's variant; biased by interpolation)",
        ),
    ):
        for metric in results["config"]["metrics_columns"]:
            lines += [f"## {title}: {QUALITY[metric]}", ""]
            header = ["row", *seqs, AVERAGE, MEAN]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for row in all_rows(results["config"].get("rivals", [])):
                per = bd.get(row, {}).get(metric)
                if per is None:
                    lines.append("| " + " | ".join([row, *["n/a"] * (len(header) - 1)]) + " |")
                    continue
                cells = [fmt_bd(bd_value(per, s, method)) for s in [*seqs, AVERAGE, MEAN]]
                lines.append("| " + " | ".join([row, *cells]) + " |")
            lines.append("")
    lines += [
        "## Decoder complexity and speed",
        "",
        "| option | post-processor kMAC/pixel | encode fps | decode fps |",
        "|---|---|---|---|",
    ]
    for r in results["speed"]:
        lines.append(
            f"| {r['option']} {r['name']} | {r['post_kmacs_per_pixel']:.3f} | "
            f"{r['encode_fps']:.1f} | {r['decode_fps']:.1f} |"
        )
    if results.get("post_gain"):
        lines += [
            "",
            "## Neural post-processor against Lanczos-4 upsampling of the same bitstream",
            "",
            "PSNR-YUV difference in dB, mean over QPs.",
            "",
            "| option | " + " | ".join(seqs) + f" | {MEAN} |",
            "|---|" + "---|" * (len(seqs) + 1),
        ]
        for r in results["post_gain"]:
            cells = [f"{r['sequences'][s]:+.3f}" if s in r["sequences"] else "n/a" for s in seqs]
            lines.append(
                f"| {r['option']} {r['name']} | " + " | ".join(cells) + f" | {r['mean']:+.3f} |"
            )
    if results.get("adaptation"):
        lines += ["", *_adaptation_markdown(results["adaptation"])]
    lines += ["", "## Method", "", results["method"], ""]
    warnings = sorted(
        {
            f"{row} / {metric} / {seq}: {r[m]['warning']}"
            for row, per_metric in bd.items()
            for metric, per_seq in per_metric.items()
            for seq, r in per_seq.items()
            if seq != MEAN
            for m in ("envelope", "pareto")
            if r[m].get("warning")
        }
    )
    if warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
    if results["notes"]:
        lines += ["## Notes", "", *[f"- {n}" for n in results["notes"]], ""]
    return "\n".join(lines)


METHOD = (
    "Each point is a real encode and decode; bits are those of the whole .wrp file. PSNR is "
    "computed per plane and frame, averaged over frames, PSNR-YUV = (6·Y + U + V)/8 (HM/JVET). "
    "BD-rate (Bjøntegaard, VCEG-M33) interpolates log10(rate) as a function of quality with "
    "piecewise cubic Hermite (PCHIP, as the JVET CTC spreadsheet; Akima on request) and "
    "averages the log-rate difference over the overlap of the quality ranges. Envelope: every "
    "option's curve of a row (direct included) is interpolated that way, and the test curve is, "
    "at each quality, the lowest rate over those curves (the best option at each rate); it is "
    "integrated on a dense grid, so a frontier containing the anchor never scores above 0 %. "
    "Pareto: the non-dominated points of all options and QPs form one curve that goes through "
    "the bjontegaard package like a single codec's curve. Average: rates and qualities averaged "
    "over sequences per option and QP; 'mean of sequences' is the mean of per-sequence BD-rates. "
    "Rivals (--rivals) are the codec's own resampling modes coded at the same QPs, the whole "
    "stream in the .wrp as for direct coding: 'R alone' is rival R's curve against direct "
    "(a loss shows as a positive figure), 'codec resampling' direct plus every rival against "
    "direct, and 'all options vs codec resampling' the envelope of direct and all options "
    "against the envelope of direct and every rival, over direct coding's quality range as "
    "every row (where both reach)."
)


def plot(points: Sequence[Point], sequence: str, metric: str, path: Path) -> None:
    """RD plot of one sequence: direct and each row's discrete frontier, kbps on log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wrapcodec.bdrate import pareto_front

    per_option = _by(points)[sequence]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    direct = sorted((p.kbps, getattr(p, metric)) for p in per_option.get(0, []))
    if direct:
        ax.plot(*zip(*direct, strict=True), "k-o", label="direct", linewidth=2)
    for row, codes in ROWS.items():
        pool = [(p.kbps, getattr(p, metric)) for c in (0, *codes) for p in per_option.get(c, [])]
        if not any(per_option.get(c) for c in codes):
            continue
        front = pareto_front([pt for pt in pool if pt[1] is not None])
        ax.plot(*zip(*front, strict=True), "-.", marker=".", label=f"direct + {row}")
    for rival in sorted(c for c in per_option if isinstance(c, str)):
        curve = sorted((p.kbps, getattr(p, metric)) for p in per_option[rival])
        ax.plot(*zip(*curve, strict=True), ":", marker="x", label=f"{rival} (codec)")
    ax.set_xscale("log")
    ax.set_xlabel("rate (kbps, log scale)")
    ax.set_ylabel(QUALITY[metric] + (" (dB)" if metric.startswith("psnr") else ""))
    ax.set_title(f"{sequence}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(out: Path, results: dict[str, Any], points: Sequence[Point]) -> list[Path]:
    """results.json, points.csv, report.md and the PNG plots; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("results.json", json.dumps(results, indent=2, default=str)),
        ("points.csv", points_csv(points)),
        ("report.md", markdown(results)),
    ):
        path = out / name
        atomic_write(path, functools.partial(_write_text, text=text))
        written.append(path)
    everything = [*points, *average_points(points)]
    for sequence in [*results["sequences"], AVERAGE]:
        path = out / f"rd_{sequence}.png"
        plot(everything, sequence, "psnr_yuv", path)
        written.append(path)
    return written


def post_gain(points: Sequence[Point]) -> list[dict[str, Any]]:
    """Per neural option: PSNR-YUV of its post-processor minus Lanczos-4 upsampling of the
    same bitstream, averaged over QPs per sequence, and the mean of sequences (dB)."""
    by_option: dict[int, dict[str, list[float]]] = {}
    for p in points:
        if p.psnr_yuv_lanczos_post is None:
            continue
        gains = by_option.setdefault(p.spec.option, {})
        gains.setdefault(p.spec.sequence, []).append(p.psnr_yuv - p.psnr_yuv_lanczos_post)
    rows = []
    for code, per_seq in sorted(by_option.items()):
        means = {seq: sum(v) / len(v) for seq, v in sorted(per_seq.items())}
        rows.append(
            {
                "option": code,
                "name": OPTIONS[code].name,
                "sequences": means,
                "mean": sum(means.values()) / len(means),
            }
        )
    return rows


def adaptation(points: Sequence[Point]) -> list[dict[str, Any]]:
    """Per neural option with content adaptation: over its points, the mean PSNR-YUV gain of
    the fitted update (dB, whether the point kept it or not), the share of points that keep it
    (lower J), the mean update bytes and fitting seconds; per sequence and the mean of
    sequences."""
    by_option: dict[int, dict[str, list[Point]]] = {}
    for p in points:
        if p.adapt_gain_db is None:
            continue
        by_option.setdefault(p.spec.option, {}).setdefault(p.spec.sequence, []).append(p)
    rows = []
    for code, per_seq in sorted(by_option.items()):
        figures = {seq: _adaptation_figures(group) for seq, group in sorted(per_seq.items())}
        mean = {
            k: sum(f[k] for f in figures.values()) / len(figures)
            for k in ("gain_db", "used_share", "bytes", "fit_s")
        }
        rows.append(
            {
                "option": code,
                "name": OPTIONS[code].name,
                "steps": sorted({p.spec.adapt_steps for g in per_seq.values() for p in g}),
                "sequences": figures,
                "mean": mean,
            }
        )
    return rows


def _adaptation_figures(group: Sequence[Point]) -> dict[str, float]:
    n = len(group)
    return {
        "gain_db": sum(p.adapt_gain_db or 0.0 for p in group) / n,
        "used_share": sum(p.adapt_used for p in group) / n,
        "bytes": sum(p.adapt_bytes or 0 for p in group) / n,
        "fit_s": sum(p.adapt_s or 0.0 for p in group) / n,
        "points": n,
    }


def _adaptation_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The "Content adaptation" section of report.md."""
    steps = sorted({s for r in rows for s in r["steps"]})
    lines = [
        "## Content adaptation",
        "",
        f"Each neural point's post-processor fitted to its own bitstream in "
        f"{', '.join(map(str, steps))} steps (`--adapt-steps`); the point keeps the update, as "
        "the encoder does, when it lowers J = D + λ·R with the update's bytes counted in R. "
        "Gain: PSNR-YUV with the update minus without, mean over QPs (every point, kept or "
        "not); used: share of points that keep it; bytes and fit seconds: means.",
        "",
        "| option | sequence | gain (dB) | used | update bytes | fit s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        for seq, f in [*r["sequences"].items(), (MEAN, r["mean"])]:
            lines.append(
                f"| {r['option']} {r['name']} | {seq} | {f['gain_db']:+.3f} | "
                f"{100 * f['used_share']:.0f} % | {f['bytes']:.0f} | {f['fit_s']:.2f} |"
            )
    return lines


def assemble(
    config: dict[str, Any],
    preset: str,
    points: Sequence[Point],
    notes: Sequence[str],
    command: str,
    versions: dict[str, str],
    interp: Interp,
) -> dict[str, Any]:
    """The content of results.json."""
    metrics = ["psnr_yuv", "psnr_y"]
    if any(p.ssim_y is not None for p in points):
        metrics.append("ssim_y")
    if any(p.vmaf is not None for p in points):
        metrics.append("vmaf")
    config = {**config, "metrics_columns": metrics}
    return {
        "command": command,
        "config": config,
        "preset": preset,
        "versions": versions,
        "sequences": sorted({p.spec.sequence for p in points}),
        "method": METHOD,
        "interp": interp,
        "bd_rate": analyse(points, metrics, interp, config.get("rivals", [])),
        "speed": speed_table(points),
        "post_gain": post_gain(points),
        "adaptation": adaptation(points),
        "notes": list(notes),
        "points": [p.model_dump() for p in points],
    }


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)
