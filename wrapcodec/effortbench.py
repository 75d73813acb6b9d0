"""``wrapcodec bench-effort``: what each effort level of the encoder costs and loses.

For every sequence and QP it codes the clip once with the codec alone (option 0's encode: the
pre-processing sample conversion and the codec, as ``encode`` runs it, no decoding or
measuring) and runs ``encode`` at each effort level, all in one process, one after the other,
so that no timing shares the machine with another. Per effort level it reports the wall time
of ``encode`` over that one direct encode, and the BD-rate (PSNR-YUV) of its RD curve (the
chosen options at the QPs) against ``exhaustive``'s, per sequence and as a mean.

Timings are of a warm process: the networks and the integer kernels are loaded by a first,
unmeasured encode; the CLI adds its start-up to every run. Results are cached per (sequence,
QP, effort, settings), so an interrupted run resumes; cached times are from the run that made
them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from wrapcodec import ffmpeg
from wrapcodec.adapt import AdaptConfig
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.bank import Bank
from wrapcodec.bdrate import BDRateError, Curve, bd_rate
from wrapcodec.bench import sequences
from wrapcodec.encode import EncodeConfig, EncodeReport, encode_file
from wrapcodec.encode.efforts import EFFORTS
from wrapcodec.encode.search import REVISION as SEARCH_REVISION
from wrapcodec.options import OPTIONS, Option
from wrapcodec.paths import atomic_write, sha256_file
from wrapcodec.pipeline import REVISION, Layout, encode_stream
from wrapcodec.y4m import count_frames, read_info

REFERENCE = "exhaustive"


class EffortRun(BaseModel):
    """One ``encode`` of one sequence at one QP and effort level."""

    sequence: str
    qp: int
    effort: str
    option: str
    kbps: float
    psnr_yuv: float
    seconds: float  # encode_file's wall time
    direct_s: float  # one direct encode of the same clip, measured just before
    encodes: int  # encoder runs, probes included
    jobs: int = 1  # candidates coded at once


def _key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def _effort_fields(name: str) -> dict[str, Any]:
    """What names an effort level's run in the cache: below exhaustive, its parameters and
    the search's revision too (a run of a level that has since changed is measured again)."""
    level = EFFORTS[name]
    if level.verify is None:  # exhaustive: every option coded in full, as ever
        return {"effort": name}
    params = dataclasses.asdict(level)
    params.pop("description")
    return {"effort": name, "search": {**params, "revision": SEARCH_REVISION}}


def direct_encode_seconds(
    backend: Backend, settings: EncodeSettings, path: Path, frames: int, workdir: Path
) -> float:
    """Seconds of one encode of ``path`` by the codec alone, as ``encode`` codes option 0."""
    info = read_info(path)
    layout = Layout.make(info, OPTIONS[0], backend, settings.bitdepth)
    stream = workdir / f"direct{backend.extension}"
    return encode_stream(backend, settings, path, layout, 0, frames, stream)


def run(
    dataset: Path,
    backend: Backend,
    preset: str,
    bitdepth: int,
    qps: Sequence[int],
    efforts: Sequence[str],
    options: Sequence[Option],
    bank: Bank,
    adapt_steps: int,
    cache: Path,
    jobs: int,
    pre_arithmetic: str = "float32",
    on_run: Callable[[EffortRun, bool], None] | None = None,
) -> list[EffortRun]:
    """Every (sequence, QP, effort) of the dataset, from the cache or measured now."""
    cache.mkdir(parents=True, exist_ok=True)
    runs: list[EffortRun] = []
    warm = False
    with tempfile.TemporaryDirectory(prefix="wrapcodec-effort-") as tmp:
        workdir = Path(tmp)
        for path in sequences(dataset):
            digest = sha256_file(path)
            encode = functools.partial(
                _encode,
                path,
                workdir,
                backend,
                options=options,
                bank=bank,
                adapt_steps=adapt_steps,
                jobs=jobs,
                pre_arithmetic=pre_arithmetic,
            )
            frames = count_frames(path)
            for qp in qps:
                settings = EncodeSettings(qp=qp, preset=preset, bitdepth=bitdepth)
                base = {
                    "source": digest,
                    "codec": backend.name,
                    "preset": preset,
                    "bitdepth": bitdepth,
                    "qp": qp,
                    "options": [int(o.code) for o in options],
                    "bank": bank.id_for(bank.integer).hex(),
                    "adapt_steps": adapt_steps,
                    "revision": REVISION,
                    "jobs": jobs,
                }
                if pre_arithmetic != "float32":  # float32 runs keep their earlier keys
                    base["pre_arithmetic"] = pre_arithmetic
                todo = [
                    e
                    for e in efforts
                    if not (cache / f"{_key({**base, **_effort_fields(e)})}.json").exists()
                ]
                direct_s = 0.0
                if todo:
                    if not warm:  # load networks and kernels outside any timing
                        encode(settings, "fast")
                        warm = True
                    direct_s = direct_encode_seconds(backend, settings, path, frames, workdir)
                for effort in efforts:
                    entry = cache / f"{_key({**base, **_effort_fields(effort)})}.json"
                    hit = entry.exists()
                    if hit:
                        result = EffortRun.model_validate_json(entry.read_text())
                    else:
                        report = encode(settings, effort)
                        result = EffortRun(
                            sequence=path.stem,
                            qp=qp,
                            effort=effort,
                            option=report.option_name,
                            kbps=report.kbps,
                            psnr_yuv=report.psnr_yuv,
                            seconds=report.timings["total_s"],
                            direct_s=direct_s,
                            encodes=report.encodes,
                            jobs=jobs,
                        )
                        text = result.model_dump_json(indent=1)
                        atomic_write(entry, lambda p, text=text: p.write_text(text))  # type: ignore[misc]
                    runs.append(result)
                    if on_run is not None:
                        on_run(result, hit)
    return runs


def _encode(
    path: Path,
    workdir: Path,
    backend: Backend,
    settings: EncodeSettings,
    effort: str,
    *,
    options: Sequence[Option],
    bank: Bank,
    adapt_steps: int,
    jobs: int,
    pre_arithmetic: str,
) -> EncodeReport:
    config = EncodeConfig(
        backend=backend,
        settings=settings,
        options=tuple(options),
        bank=bank,
        adapt=AdaptConfig(steps=adapt_steps),
        effort=effort,
        jobs=jobs,
        pre_arithmetic=pre_arithmetic,
    )
    return encode_file(str(path), str(workdir / "out.wrp"), config)


def summarise(runs: Sequence[EffortRun], efforts: Sequence[str]) -> dict[str, Any]:
    """Per effort level: time over one direct encode (median and range over the runs) and the
    BD-rate against ``exhaustive`` per sequence and their mean; how often the choice was
    exhaustive's."""
    by: dict[tuple[str, str], list[EffortRun]] = {}
    for r in runs:
        by.setdefault((r.sequence, r.effort), []).append(r)
    seqs = sorted({r.sequence for r in runs})
    out: dict[str, Any] = {"sequences": seqs, "efforts": {}}
    for effort in efforts:
        mine = [r for r in runs if r.effort == effort]
        ratios = [r.seconds / r.direct_s for r in mine if r.direct_s > 0]
        per_seq: dict[str, float | None] = {}
        same = 0
        for seq in seqs:
            ref = sorted(by.get((seq, REFERENCE), []), key=lambda r: r.qp)
            test = sorted(by.get((seq, effort), []), key=lambda r: r.qp)
            same += sum(a.option == b.option for a, b in zip(ref, test, strict=False))
            if len(ref) < 2 or len(test) < 2:
                per_seq[seq] = None
                continue
            try:
                per_seq[seq] = bd_rate(
                    Curve.of([r.kbps for r in ref], [r.psnr_yuv for r in ref]),
                    Curve.of([r.kbps for r in test], [r.psnr_yuv for r in test]),
                ).bd_rate
            except BDRateError:
                per_seq[seq] = None
        values = [v for v in per_seq.values() if v is not None]
        out["efforts"][effort] = {
            "runs": len(mine),
            "time_ratio_median": statistics.median(ratios) if ratios else None,
            "time_ratio_min": min(ratios, default=None),
            "time_ratio_max": max(ratios, default=None),
            "seconds_total": sum(r.seconds for r in mine),
            "direct_seconds_total": sum(r.direct_s for r in mine),
            "encodes_mean": statistics.mean(r.encodes for r in mine) if mine else None,
            "bd_rate_vs_exhaustive": per_seq,
            "bd_rate_vs_exhaustive_mean": statistics.mean(values) if values else None,
            "bd_rate_vs_exhaustive_max": max(values, default=None),
            "same_choice": f"{same}/{len(mine)}",
        }
    return out


def markdown(summary: dict[str, Any], command: str, versions: dict[str, str]) -> str:
    """The summary as a report."""
    lines = [
        "# Effort levels",
        "",
        f"`{command}`",
        "",
        *(f"- {k}: {v}" for k, v in versions.items()),
        "",
        "Time: `encode`'s wall time over one direct encode of the same clip (median, min–max "
        "over sequences × QPs). BD-rate: PSNR-YUV, the effort's curve against exhaustive's.",
        "",
        "| effort | time × direct | min–max | encodes | BD-rate vs exhaustive (mean) | worst "
        "sequence | same choice |",
        "|---|---|---|---|---|---|---|",
    ]
    for effort, e in summary["efforts"].items():
        lines.append(
            f"| {effort} | {_f(e['time_ratio_median'], '.2f')} | "
            f"{_f(e['time_ratio_min'], '.2f')}–{_f(e['time_ratio_max'], '.2f')} | "
            f"{_f(e['encodes_mean'], '.1f')} | {_f(e['bd_rate_vs_exhaustive_mean'], '+.3f')} % | "
            f"{_f(e['bd_rate_vs_exhaustive_max'], '+.3f')} % | {e['same_choice']} |"
        )
    lines += ["", "| sequence | " + " | ".join(summary["efforts"]) + " |"]
    lines.append("|---|" + "---|" * len(summary["efforts"]))
    for seq in summary["sequences"]:
        cells = [
            _f(e["bd_rate_vs_exhaustive"].get(seq), "+.3f") for e in summary["efforts"].values()
        ]
        lines.append(f"| {seq} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _f(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def versions(backend: Backend, bank: Bank) -> dict[str, str]:
    return {
        "ffmpeg": ffmpeg.capabilities().version,
        "encoder": ffmpeg.encoder_version(backend),
        "models": f"{bank.folder} (bank {bank.id_for(bank.integer).hex()})",
    }
