"""Running a bench: cached results read back, the others measured on local processes or on a
Dask distributed cluster, and ``wrapcodec bench`` as one call (:func:`run_bench`)."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from wrapcodec import ffmpeg, workers
from wrapcodec.backend import get_backend
from wrapcodec.bank import get_bank
from wrapcodec.bench.analysis import BenchResults, assemble
from wrapcodec.bench.cache import Cache, Keyed
from wrapcodec.bench.plan import BenchConfig, bitdepths, plan
from wrapcodec.bench.points import Point, PointSpec, point_cache, run_point
from wrapcodec.bench.report import versions, write_outputs
from wrapcodec.encode import ProgressSink
from wrapcodec.encode.lagrange import probe_qp, secant_scale
from wrapcodec.options import OPTIONS
from wrapcodec.y4m import read_info

S = TypeVar("S", bound=Keyed)
R = TypeVar("R", bound=BaseModel)
_Measured = Generator[tuple[S, R], None, None]


def _local(specs: Sequence[S], jobs: int, measure: Callable[[S], R]) -> _Measured[S, R]:
    """In this process one after the other (``jobs`` ≤ 1), else on ``jobs`` processes.

    When the caller stops early (a signal, an error, the iterator closed), the points not
    started are cancelled and the worker processes stopped (:func:`wrapcodec.workers.stop`),
    with their ffmpeg processes and temporary folders: nothing goes on running."""
    if jobs <= 1:
        for spec in specs:
            yield spec, measure(spec)
        return
    executor = workers.pool(jobs)
    try:
        futures = {executor.submit(workers.in_worker, measure, s): s for s in specs}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()
    except BaseException:
        workers.stop(executor)
        raise
    executor.shutdown()


def _dask(specs: Sequence[S], address: str, measure: Callable[[S], R]) -> _Measured[S, R]:
    """On the Dask scheduler at ``address`` (``measure`` must be a top-level function).

    When the caller stops early, the points are cancelled on the cluster (a point already
    running on a worker thread runs to its end there, as Dask cannot stop a thread) and the
    client closed; the cluster's workers are left alone."""
    client = workers.dask_client(address)
    from distributed import as_completed

    with client:
        futures = client.map(workers.dask_task, [measure] * len(specs), list(specs), pure=False)
        spec_of = {future.key: spec for future, spec in zip(futures, specs, strict=True)}
        try:
            for future in as_completed(futures):
                yield spec_of[future.key], future.result()
        except BaseException:
            with contextlib.suppress(Exception):
                client.cancel(futures)
            raise


def run_cached(
    specs: Sequence[S],
    cache: Cache[R],
    measure: Callable[[S], R],
    jobs: int = 1,
    dask: str | None = None,
    on_result: Callable[[R, bool], None] | None = None,
) -> tuple[list[R], int]:
    """The result of every spec: cached ones read back, the others measured (in the order of
    ``specs``, on ``jobs`` processes or the Dask scheduler at ``dask``) and cached.

    ``on_result(result, from_cache)`` follows each one. Returns the results in the order of
    ``specs`` and how many were measured."""
    done: dict[str, R] = {}
    todo: list[S] = []
    for spec in specs:
        hit = cache.get(spec)
        if hit is None:
            todo.append(spec)
        else:
            done[spec.key()] = hit
            if on_result:
                on_result(hit, True)
    measured = _dask(todo, dask, measure) if dask else _local(todo, jobs, measure)
    # Closed on the way out, whatever stops this loop (a signal here, not inside the
    # iterator, included): the iterator stops its workers then, not when collected.
    with contextlib.closing(measured):
        for spec, result in measured:
            cache.put(spec, result)
            done[spec.key()] = result
            if on_result:
                on_result(result, False)
    return [done[s.key()] for s in specs], len(todo)


def run_points(
    specs: Sequence[PointSpec],
    cache: Cache[Point],
    jobs: int = 1,
    dask: str | None = None,
    on_point: Callable[[Point, bool], None] | None = None,
) -> tuple[list[Point], int]:
    """Every point of ``specs`` (:func:`run_cached` with :func:`~wrapcodec.bench.points.run_point`).

    Returns the points in the order of ``specs`` and how many were computed."""
    return run_cached(specs, cache, run_point, jobs, dask, on_point)


def run_bench(
    config: BenchConfig, folder: Path, command: str, progress: ProgressSink | None = None
) -> tuple[BenchResults, list[Path]]:
    """``wrapcodec bench``: plan the points of ``config``, measure those not in ``folder``'s
    cache, analyse them and write the report files to ``folder``.

    ``command`` is the command line as resolved (stored in the results). Returns the results
    and the files written."""
    backend = get_backend(config.codec)
    ffmpeg.require(backend)
    cache = point_cache(folder / "cache")

    measured: set[str] = set()

    def advance(point: Point, hit: bool) -> None:
        if not hit:
            measured.add(point.spec.key())
        if progress is not None:
            progress.advance(f"{point.spec.sequence[:12]} {point.option_name}")

    plans = {d: plan(config.model_copy(update={"bitdepth": d})) for d in bitdepths(config)}
    first, notes = next(iter(plans.values()))
    measures = config.lam == "measured" and (len(plans) > 1 or any(s.adapt_steps for s in first))
    anchors = _anchors(plans, probes=measures)
    if progress is not None:
        progress.start(len(anchors) + len(first))
    scales: dict[Seat, float] = {}
    anchored = 0
    if anchors:
        scales, anchored = _measured_anchors(config, anchors, cache, advance, measures)
    specs = _at_best_depths(plans, scales, cache) if len(plans) > 1 else first
    specs = [_priced(s, scales) for s in specs]
    points, computed = run_points(specs, cache, config.jobs, config.dask, advance)
    neural = any(OPTIONS[c].neural for c in config.options)
    results = assemble(
        config,
        specs[0].preset if specs else "",
        points,
        notes,
        command,
        versions(backend, get_bank(config.models) if neural else None),
        computed + anchored,
        cached=sum(1 for p in points if p.spec.key() not in measured),
    )
    return results, write_outputs(folder, results, points)


Seat = tuple[str, int, int]
"""A sequence, QP and bottleneck depth: where direct coding anchors the points."""


def _direct(spec: PointSpec, qp: int) -> PointSpec:
    """Direct coding of ``spec``'s sequence at ``qp`` and ``spec``'s depth, as planned."""
    return spec.model_copy(
        update={
            "option": 0,
            "qp": qp,
            "model_hash": "",
            "models": None,
            "adapt_steps": 0,
            "adapt_budget": "",
            "rival": "",
            "pre_arithmetic": "float32",
            "lam_scale": 1.0,
        }
    )


def _anchors(plans: dict[int, tuple[list[PointSpec], list[str]]], probes: bool) -> list[PointSpec]:
    """The direct points measured before the others: at every seat with several depths to
    choose between, and with ``probes`` the slope probes of :mod:`~wrapcodec.encode.lagrange`
    (direct coding 3 QPs up) too."""
    if len(plans) == 1 and not probes:
        return []
    backend = get_backend(next(iter(plans.values()))[0][0].codec)
    seats = {(s.sequence, s.qp, s.bitdepth): s for p, _ in plans.values() for s in p}
    anchors = [_direct(s, s.qp) for s in seats.values()]
    if probes:
        anchors += [_direct(s, probe_qp(backend, s.qp)) for s in seats.values()]
    return list({a.key(): a for a in anchors}.values())


def _measured_anchors(
    config: BenchConfig,
    anchors: Sequence[PointSpec],
    cache: Cache[Point],
    advance: Callable[[Point, bool], None],
    measures: bool,
) -> tuple[dict[Seat, float], int]:
    """``anchors`` measured (a point cached before it recorded its MSE measured again), and
    with ``measures`` each seat's λ scale from its direct point and slope probe (1 where the
    curve does not fall); how many were measured now."""
    for spec in anchors:
        hit = cache.get(spec)
        if hit is not None and hit.mse is None:
            cache.path(spec).unlink()
    measured, computed = run_points(anchors, cache, config.jobs, config.dask, advance)
    if not measures:
        return {}, computed
    backend = get_backend(config.codec)
    at = {(p.spec.sequence, p.spec.qp, p.spec.bitdepth): p for p in measured}
    scales: dict[Seat, float] = {}
    for p in measured:
        seat = (p.spec.sequence, p.spec.qp, p.spec.bitdepth)
        probe = at.get((p.spec.sequence, probe_qp(backend, p.spec.qp), p.spec.bitdepth))
        if probe is None or seat in scales:
            continue
        assert p.mse is not None and probe.mse is not None
        scale = secant_scale(
            backend,
            p.spec.qp,
            p.mse,
            p.bits,
            probe.spec.qp,
            probe.mse,
            probe.bits,
            p.spec.frames * _samples(p.spec),
        )
        scales[seat] = 1.0 if scale is None else scale
    return scales, computed


def _samples(spec: PointSpec) -> int:
    """Luma samples per frame of ``spec``'s source."""
    info = read_info(Path(spec.path))
    return info.width * info.height


def _priced(spec: PointSpec, scales: dict[Seat, float]) -> PointSpec:
    """``spec`` at its seat's λ when it is an adapted point (the λ decides its update)."""
    scale = scales.get((spec.sequence, spec.qp, spec.bitdepth))
    if scale is None or not spec.adapt_steps:
        return spec
    return spec.model_copy(update={"lam_scale": scale})


def _at_best_depths(
    plans: dict[int, tuple[list[PointSpec], list[str]]],
    scales: dict[Seat, float],
    cache: Cache[Point],
) -> list[PointSpec]:
    """``--bitdepth auto``: every point of a sequence and QP at the depth whose direct coding
    (measured, in ``cache``) has the lower J (the first of equals), at the λ measured at the
    first depth (``scales``; the codec's λ(QP) without), as ``encode`` chooses it for a
    segment. Returns those specs, in the order of the first plan."""
    depths = list(plans)
    first = plans[depths[0]][0]
    backend = get_backend(first[0].codec)

    def cost(spec: PointSpec, depth: int) -> float:
        p = cache.get(_direct(spec.model_copy(update={"bitdepth": depth}), spec.qp))
        assert p is not None and p.mse is not None
        lam = scales.get((spec.sequence, spec.qp, depths[0]), 1.0) * backend.qp_to_lambda(spec.qp)
        return p.mse + lam * p.bits / (spec.frames * _samples(spec))

    best = {(s.sequence, s.qp): min(depths, key=lambda d: cost(s, d)) for s in first}
    chosen = {
        (s.sequence, s.option, s.qp, s.rival): s
        for d in depths
        for s in plans[d][0]
        if best[(s.sequence, s.qp)] == d
    }
    return [chosen[(s.sequence, s.option, s.qp, s.rival)] for s in first]
