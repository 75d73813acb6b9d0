"""The files of a bench run: results.json, points.csv, report.md and RD plots; the versions
both benches report."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from wrapcodec import __version__, ffmpeg
from wrapcodec.backend import Backend
from wrapcodec.bank import Bank
from wrapcodec.bench.analysis import (
    AVERAGE,
    MEAN,
    METHODS,
    QUALITY,
    ROWS,
    AdaptationMean,
    AdaptationRow,
    BDTable,
    BenchResults,
    all_rows,
    average_points,
    by_sequence,
)
from wrapcodec.bench.points import Point
from wrapcodec.paths import atomic_write


def versions(backend: Backend, bank: Bank | None) -> dict[str, str]:
    """What made the figures, as the reports name it: wrapcodec, ffmpeg, the codec library
    and the model bank (folder, id and arithmetic; "none" when no neural option ran)."""
    if bank is None:
        models = "none"
    else:
        arithmetic = "integer" if bank.integer else "float"
        models = f"{bank.folder} (bank {bank.id_for(bank.integer).hex()}, {arithmetic} arithmetic)"
    return {
        "wrapcodec": __version__,
        "ffmpeg": ffmpeg.capabilities().version,
        "encoder": ffmpeg.encoder_version(backend),
        "models": models,
    }


def fmt_bd(value: float | None) -> str:
    """A BD-rate as the tables show it: ``+1.23 %``, or ``n/a``."""
    return "n/a" if value is None or math.isnan(value) else f"{value:+.2f} %"


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
        "bitdepth",
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
                for k in ("sequence", "option", "codec", "preset", "qp", "bitdepth", "frames")
            }
        )
        row["adapt_steps"] = p.spec.adapt_steps
        if p.adapt_gain_db is None:
            row["adapt_used"] = None  # no adaptation tried: empty, not False
        writer.writerow({k: row.get(k) for k in fields})
    return buf.getvalue()


def markdown(results: BenchResults) -> str:
    """report.md: the BD-rate tables (both methods), speeds, and how they were computed."""
    config = results.config
    lines = [
        f"# wrapcodec bench: {config.dataset} with {config.codec}",
        "",
        f"Command: `{results.command}`",
        "",
        f"wrapcodec {results.versions['wrapcodec']}, ffmpeg {results.versions['ffmpeg']}, "
        f"{config.codec} {results.versions['encoder']}; QPs {config.qps}, preset "
        f"{results.preset}, {_depth_text(results)}.",
        "",
    ]
    for method in METHODS:
        for metric in config.metrics_columns:
            lines += _bd_markdown(results, method, metric)
    lines += _speed_markdown(results)
    if results.post_gain:
        lines += ["", *_post_gain_markdown(results)]
    if results.adaptation:
        lines += ["", *_adaptation_markdown(results.adaptation)]
    if results.bd_rate_without_update:
        lines += ["", *_without_update_markdown(results)]
    lines += ["", "## Method", "", results.method, ""]
    warnings = sorted(
        {
            f"{row} / {metric} / {seq}: {warning}"
            for row, per_metric in results.bd_rate.items()
            for metric, per in per_metric.items()
            for seq, r in per.sequences.items()
            for warning in (r.envelope.warning, r.pareto.warning)
            if warning
        }
    )
    if warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
    if results.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in results.notes], ""]
    return "\n".join(lines)


TITLES = {
    "envelope": "BD-rate, RD envelope (continuous RDO; primary)",
    "pareto": "BD-rate, discrete Pareto frontier (the paper's variant; biased by interpolation)",
}


def _depth_text(results: BenchResults) -> str:
    """The bottleneck depth of the run: the one asked for, or with ``auto`` the points each
    depth was chosen for."""
    if results.config.bitdepth != "auto":
        return f"{results.config.bitdepth}-bit bottleneck"
    anchors = [p for p in results.points if p.spec.option == 0 and not p.spec.rival]
    counts = Counter(p.spec.bitdepth for p in anchors)
    at = ", ".join(f"{d} bits at {counts[d]}" for d in sorted(counts, reverse=True))
    return (
        "bottleneck depth chosen per sequence and QP by direct coding's J, as `encode "
        f"--bitdepth auto` chooses it ({at} of the {len(anchors)} sequence-QP pairs)"
    )


def _bd_markdown(results: BenchResults, method: str, metric: str) -> list[str]:
    """One BD-rate table of report.md: every row by sequence, the average and the mean."""
    lines = [f"## {TITLES[method]}: {QUALITY[metric]}", ""]
    return lines + _bd_rows(
        results, results.bd_rate, list(all_rows(results.config.rivals)), method, metric
    )


def _without_update_markdown(results: BenchResults) -> list[str]:
    """The section of report.md with the neural rows' BD-rates without the updates."""
    table = results.bd_rate_without_update
    lines = [
        "## Without the update: PSNR-YUV",
        "",
        "The rows with neural options, each adapted point taken with the bank's "
        "post-processor as it is on the same bitstream (its rate without the update's bytes): "
        "what the models give without content adaptation. BD-rate against direct.",
        "",
    ]
    rows = [row for row in ROWS if row in table]
    for method in METHODS:
        lines += [f"{TITLES[method]}:", ""]
        lines += _bd_rows(results, table, rows, method, "psnr_yuv")
    return lines


def _bd_rows(
    results: BenchResults, table: BDTable, rows: Sequence[str], method: str, metric: str
) -> list[str]:
    """A BD-rate table: ``rows`` of ``table`` by sequence, the average and the mean."""
    columns = [*results.sequences, AVERAGE, MEAN]
    header = ["row", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        per = table.get(row, {}).get(metric)
        if per is None:
            lines.append("| " + " | ".join([row, *["n/a"] * (len(header) - 1)]) + " |")
            continue
        cells = [fmt_bd(per.value(s, method)) for s in columns]
        lines.append("| " + " | ".join([row, *cells]) + " |")
    return [*lines, ""]


def _speed_markdown(results: BenchResults) -> list[str]:
    lines = [
        "## Decoder complexity and speed",
        "",
        "| option | post-processor kMAC/pixel | encode fps | decode fps |",
        "|---|---|---|---|",
    ]
    for r in results.speed:
        lines.append(
            f"| {r.option} {r.name} | {r.post_kmacs_per_pixel:.3f} | "
            f"{r.encode_fps:.1f} | {r.decode_fps:.1f} |"
        )
    return lines


def _post_gain_markdown(results: BenchResults) -> list[str]:
    seqs = results.sequences
    lines = [
        "## Neural post-processor against Lanczos-4 upsampling of the same bitstream",
        "",
        "PSNR-YUV difference in dB, mean over QPs.",
        "",
        "| option | " + " | ".join(seqs) + f" | {MEAN} |",
        "|---|" + "---|" * (len(seqs) + 1),
    ]
    for r in results.post_gain:
        cells = [f"{r.sequences[s]:+.3f}" if s in r.sequences else "n/a" for s in seqs]
        lines.append(f"| {r.option} {r.name} | " + " | ".join(cells) + f" | {r.mean:+.3f} |")
    return lines


def plot(points: Sequence[Point], sequence: str, metric: str, path: Path) -> None:
    """RD plot of one sequence: direct and each row's discrete frontier, kbps on log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wrapcodec.bdrate import pareto_front

    per_option = by_sequence(points)[sequence]
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


def write_text_files(out: Path, files: Sequence[tuple[str, str]]) -> list[Path]:
    """Write each (name, text) of ``files`` to ``out`` atomically; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files:
        path = out / name
        atomic_write(path, lambda p, text=text: p.write_text(text))  # type: ignore[misc]
        written.append(path)
    return written


def write_outputs(out: Path, results: BenchResults, points: Sequence[Point]) -> list[Path]:
    """results.json, points.csv, report.md and the PNG plots; returns the files written."""
    written = write_text_files(
        out,
        [
            ("results.json", json.dumps(results.model_dump(), indent=2, default=str)),
            ("points.csv", points_csv(points)),
            ("report.md", markdown(results)),
        ],
    )
    everything = [*points, *average_points(points)]
    for sequence in [*results.sequences, AVERAGE]:
        path = out / f"rd_{sequence}.png"
        plot(everything, sequence, "psnr_yuv", path)
        written.append(path)
    return written


def _adaptation_markdown(rows: Sequence[AdaptationRow]) -> list[str]:
    """The "Content adaptation" section of report.md."""
    steps = sorted({s for r in rows for s in r.steps})
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
        figures: list[tuple[str, AdaptationMean]] = [*r.sequences.items(), (MEAN, r.mean)]
        for seq, f in figures:
            lines.append(
                f"| {r.option} {r.name} | {seq} | {f.gain_db:+.3f} | "
                f"{100 * f.used_share:.0f} % | {f.bytes:.0f} | {f.fit_s:.2f} |"
            )
    return lines
