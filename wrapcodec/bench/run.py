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
from wrapcodec.backend import Backend, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.bench.analysis import BenchResults, assemble
from wrapcodec.bench.cache import Cache, Keyed
from wrapcodec.bench.plan import BenchConfig, bitdepths, plan
from wrapcodec.bench.points import Point, PointSpec, point_cache, run_point
from wrapcodec.bench.report import versions, write_outputs
from wrapcodec.encode import ProgressSink
from wrapcodec.encode.cost import rd_cost
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
    measures = config.lam == "measured" and any(s.adapt_steps for s in first)
    directs = _directs(plans) if len(plans) > 1 or measures else {}
    probed = len({(s.sequence, s.qp) for s in first}) if measures else 0
    if progress is not None:
        progress.start(len(directs) + probed + len(first))
    at, anchored = _measured_anchors(config, list(directs.values()), cache, advance)
    specs = first
    if len(plans) > 1:
        specs = _at_best_depths(plans, {seat: at[d.key()] for seat, d in directs.items()})
    scales: dict[Seat, float] = {}
    if measures:
        seats = {(s.sequence, s.qp, s.bitdepth) for s in specs}
        probes = {seat: _probe(backend, directs[seat]) for seat in seats}
        slopes, computed = _measured_anchors(config, list(probes.values()), cache, advance)
        anchored += computed
        scales = {
            seat: _scale(backend, at[directs[seat].key()], slopes[p.key()])
            for seat, p in probes.items()
        }
    specs = [_priced(s, scales, backend.slope_scale) for s in specs]
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
            "update_scale": 1.0,
        }
    )


def _directs(plans: dict[int, tuple[list[PointSpec], list[str]]]) -> dict[Seat, PointSpec]:
    """Direct coding at every seat of ``plans``: what chooses the depth and measures λ."""
    return {(s.sequence, s.qp, s.bitdepth): _direct(s, s.qp) for p, _ in plans.values() for s in p}


def _probe(backend: Backend, direct: PointSpec) -> PointSpec:
    """The slope probe of a direct point (:func:`~wrapcodec.encode.lagrange.probe_qp`)."""
    return direct.model_copy(update={"qp": probe_qp(backend, direct.qp)})


def _measured_anchors(
    config: BenchConfig,
    anchors: Sequence[PointSpec],
    cache: Cache[Point],
    advance: Callable[[Point, bool], None],
) -> tuple[dict[str, Point], int]:
    """``anchors`` measured (a point cached before it recorded its MSE measured again), by
    their keys, and how many were measured now."""
    if not anchors:
        return {}, 0
    for spec in anchors:
        hit = cache.get(spec)
        if hit is not None and hit.mse is None:
            cache.path(spec).unlink()
    measured, computed = run_points(anchors, cache, config.jobs, config.dask, advance)
    return {p.spec.key(): p for p in measured}, computed


def _scale(backend: Backend, direct: Point, probe: Point) -> float:
    """λ's scale at a direct point's seat, from it and its slope probe
    (:func:`~wrapcodec.encode.lagrange.secant_scale`; 1 where the curve does not fall)."""
    assert direct.mse is not None and probe.mse is not None
    info = read_info(Path(direct.spec.path))
    scale = secant_scale(
        backend,
        direct.spec.qp,
        direct.mse,
        direct.bits,
        probe.spec.qp,
        probe.mse,
        probe.bits,
        direct.spec.frames * info.width * info.height,
    )
    return 1.0 if scale is None else scale


def _priced(spec: PointSpec, scales: dict[Seat, float], slope: float) -> PointSpec:
    """``spec`` at its seat's λ when it is an adapted point (the λ decides its update): the
    one measured there, else the codec's λ(QP) with the update's quantisation at ``slope``
    times it (the codec's slope scale), as ``encode`` prices."""
    if not spec.adapt_steps:
        return spec
    scale = scales.get((spec.sequence, spec.qp, spec.bitdepth))
    if scale is None:
        return spec.model_copy(update={"update_scale": slope})
    return spec.model_copy(update={"lam_scale": scale})


def _at_best_depths(
    plans: dict[int, tuple[list[PointSpec], list[str]]], directs: dict[Seat, Point]
) -> list[PointSpec]:
    """``--bitdepth auto``: every point of a sequence and QP at the depth whose direct coding
    (``directs``) has the lower J at the codec's λ(QP) (the first of equals), as ``encode``
    chooses it for a segment. Returns those specs, in the order of the first plan."""
    depths = list(plans)
    first = plans[depths[0]][0]
    backend = get_backend(first[0].codec)

    def cost(sequence: str, qp: int, depth: int) -> float:
        p = directs[(sequence, qp, depth)]
        assert p.mse is not None
        lam = backend.qp_to_lambda(qp)
        return rd_cost(p.mse, p.bits, p.spec.frames, read_info(Path(p.spec.path)), lam)

    best = {(s.sequence, s.qp): min(depths, key=lambda d: cost(s.sequence, s.qp, d)) for s in first}
    chosen = {
        (s.sequence, s.option, s.qp, s.rival): s
        for d in depths
        for s in plans[d][0]
        if best[(s.sequence, s.qp)] == d
    }
    return [chosen[(s.sequence, s.option, s.qp, s.rival)] for s in first]
