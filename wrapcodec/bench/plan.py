"""What ``wrapcodec bench`` measures: the run as the user asked for it, and its points.

:func:`plan` turns a :class:`BenchConfig` into the :class:`~wrapcodec.bench.points.PointSpec`
of every option × QP × sequence (and of the codec's own resampling modes, the rivals), after
checking everything that can be checked before the first encode.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wrapcodec.backend import Backend, EncodeSettings, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.bdrate import Interp
from wrapcodec.bench.points import METRICS, PointSpec
from wrapcodec.errors import InputError
from wrapcodec.options import OPTIONS, skip_reason
from wrapcodec.paths import sha256_file
from wrapcodec.y4m import count_frames, read_info

CODEC_THREADS = 2
"""Threads one encode of a point uses by default: :func:`point_jobs` keeps that many per job."""


def point_jobs() -> int:
    """How many points run at once by default (``bench --jobs``): cores / :data:`CODEC_THREADS`,
    so that every core is busy without oversubscribing it. Not the encoder's ``--jobs``, the
    candidates one encode codes at once."""
    return max(1, (os.cpu_count() or 1) // CODEC_THREADS)


def point_threads(jobs: int) -> int:
    """Encoder threads per point by default when ``jobs`` points run at once: cores / jobs."""
    return max(1, (os.cpu_count() or 1) // jobs)


def rival_names(backend: Backend, names: list[str]) -> list[str]:
    """``--rivals`` resolved: ``["all"]`` is every resampling mode of the codec's own."""
    if names != ["all"]:
        return names
    if not backend.rivals:
        raise InputError(f"--rivals all: {backend.name} has no resampling modes of its own")
    return [r.name for r in backend.rivals]


class BenchConfig(BaseModel):
    """A bench run as the user asked for it (stored in results.json)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    codec: str
    qps: list[int] = Field(default_factory=lambda: [22, 27, 32, 37, 42, 47])
    frames: int | None = None
    preset: str | None = None
    bitdepth: int | Literal["auto"] = 10  # auto: direct coding's lower J per sequence and QP
    options: list[int] = Field(default_factory=lambda: [0, 9, 10, 11, 12, 13, 14])
    metrics: list[str] = Field(default_factory=lambda: ["psnr"])
    jobs: int = 1
    threads: int | None = None
    dask: str | None = None
    interp: Interp = "pchip"
    models: str | None = None  # model bank folder [the shipped bank]
    adapt_steps: int = Field(default=0, ge=0)  # content adaptation of neural options; 0: none
    adapt_budget: str = ""  # "": one fit per point; else the encoder's ladder within it
    rivals: list[str] = Field(default_factory=list)  # the codec's own resolution tools
    pre_arithmetic: str = "float32"  # of the wrappers' pre-processors (nets.PRE_ARITHMETICS)
    lam: Literal["model", "measured"] = "model"  # adapted points' λ (encode's)


def sequences(dataset: Path) -> list[Path]:
    """The .y4m files of a folder (sorted), or the one file given."""
    if dataset.is_file():
        return [dataset]
    if not dataset.is_dir():
        raise InputError(f"{dataset}: no such file or folder")
    found = sorted(dataset.glob("*.y4m"))
    if not found:
        raise InputError(f"{dataset}: no .y4m files")
    return found


def bitdepths(config: BenchConfig) -> tuple[int, ...]:
    """The bottleneck depths the run codes at: the one asked for or, with ``auto``, every
    depth the codec takes, the highest first (as ``encode --bitdepth auto`` tries them: on
    equal J the first wins)."""
    if config.bitdepth != "auto":
        return (config.bitdepth,)
    return tuple(sorted(get_backend(config.codec).bitdepths, reverse=True))


def plan(config: BenchConfig) -> tuple[list[PointSpec], list[str]]:
    """All point specs of a run at one bottleneck depth, and notes on skipped options."""
    if config.bitdepth == "auto":
        raise ValueError("plan() codes one depth: plan each of bitdepths(config)")
    backend = get_backend(config.codec)
    preset = config.preset or backend.default_preset
    for m in config.metrics:
        if m not in METRICS:
            raise InputError(f"unknown metric {m!r} (choose from {', '.join(METRICS)})")
    bank = get_bank(config.models)
    if len(set(config.rivals)) != len(config.rivals):
        raise InputError(f"--rivals names one twice: {','.join(config.rivals)}")
    for name in config.rivals:
        backend.with_rival(name)  # BackendError names the known ones
    for code in config.options:
        if code not in OPTIONS:
            raise InputError(f"option {code} is not available for bench")
        bank.require(OPTIONS[code])
    backend.validate(EncodeSettings(qp=config.qps[0], preset=preset, bitdepth=config.bitdepth))
    for qp in config.qps:
        backend.validate(EncodeSettings(qp=qp, preset=preset, bitdepth=config.bitdepth))
    specs: list[PointSpec] = []
    notes: list[str] = []
    for path in sequences(Path(config.dataset)):
        info = read_info(path)
        available = count_frames(path)
        if available == 0:
            raise InputError(f"{path}: no frames")
        frames = min(config.frames or available, available)
        digest = sha256_file(path)
        common: dict[str, Any] = {
            "sequence": path.stem,
            "path": str(path.resolve()),
            "source_sha256": digest,
            "frames": frames,
            "codec": config.codec,
            "preset": preset,
            "bitdepth": config.bitdepth,
            "threads": config.threads,
            "metrics": tuple(sorted(set(config.metrics) | {"psnr"})),
        }
        for code in config.options:
            reason = skip_reason(OPTIONS[code], info.width, info.height)
            if reason:
                notes.append(f"{path.stem}: skipped {OPTIONS[code].name}: {reason}")
                continue
            neural = OPTIONS[code].neural
            for qp in config.qps:
                specs.append(
                    PointSpec(
                        **common,
                        option=code,
                        qp=qp,
                        model_hash=bank.card(
                            OPTIONS[code],
                            bank.prior_for(OPTIONS[code], config.codec, qp, config.bitdepth),
                        ).key
                        if neural
                        else "",
                        models=str(bank.folder) if neural else None,
                        # linear points stay shared between runs with and without adaptation
                        adapt_steps=config.adapt_steps if neural else 0,
                        # adapted points take the encoder's ladder ("none": no bound)
                        adapt_budget=(config.adapt_budget or "none")
                        if neural and config.adapt_steps
                        else "",
                        pre_arithmetic=config.pre_arithmetic
                        if OPTIONS[code].kind == "wrapper"
                        else "float32",
                    )
                )
        for rival in config.rivals:
            specs += [PointSpec(**common, option=0, qp=qp, rival=rival) for qp in config.qps]
    return specs, notes
