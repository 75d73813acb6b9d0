"""Content adaptation of a neural candidate coded in full: its post-processor fitted to the
segment on the rungs of the capacity ladder the budget pays for (:mod:`wrapcodec.adaptation`),
and the update in force after the previous segment reused at no bytes; the RDO keeps the best
of these and the bank's post-processor (:func:`with_adaptation`)."""

from __future__ import annotations

import dataclasses

from wrapcodec.adapt import ladder_plan
from wrapcodec.adaptation import (
    Inheriting,
    Pace,
    Segment,
    Variant,
    best_rung_index,
    climb,
    full,
)
from wrapcodec.encode.report import AdaptationReport, RungReport
from wrapcodec.encode.trials import Clip, Job, Trial, pick
from wrapcodec.pipeline import Coded, InForce, segment_layout, update_in_force


def inherited(job: Job, plain: Trial, clip: Clip, previous: InForce) -> Trial:
    """``plain`` post-processed with the update in force after the previous segment (of
    the same option), at no bytes: the segment inherits it."""
    layout, chain = segment_layout(plain.layout, b"", True, previous)
    coded = clip.measure(job.backend, plain.coded.stream, layout, plain.coded.encode_s)
    trial = job.score(plain.option, plain.layout, coded, plain.qp, clip.count)
    return dataclasses.replace(trial, inherit=True, chain=chain, shares=plain.shares)


def adapted(
    job: Job, plain: Trial, clip: Clip, previous: InForce | None, pace: Pace | None = None
) -> tuple[list[Trial], AdaptationReport, Inheriting | None]:
    """``plain`` (a neural trial) with updates fitted to the segment, one per rung of the
    ladder the budget pays for (absolute and, warm-started from ``previous`` when it is
    in force for this option, relative too), each measured; the trials of those measured on
    every frame (in a long segment, the climb's choice only, or none when inheriting
    ``previous`` judged better or the climb stopped out of reach), the report of every one,
    whose top-level figures are those of the lowest J measured on every frame (or judged,
    when none was), and inheriting as the climb judged it
    (:class:`~wrapcodec.adaptation.Climb`). With a ``pace``, the climb stops where the
    candidate can no longer reach the others (the report's ``out_of_reach``)."""
    assert job.adapt is not None
    lam = job.update_scale * job.lam(plain.qp)  # the updates' quantisation; J at job.lam
    samples = clip.count * job.info.width * job.info.height
    height, width = job.info.height + job.info.height % 2, job.info.width + job.info.width % 2
    crop = (min(job.adapt.crop, height), min(job.adapt.crop, width))
    budget = None if job.adapt_budget is None else job.adapt_budget.seconds(samples)
    plan = ladder_plan(job.adapt, samples, crop, budget)
    seg = Segment(
        job.backend,
        plain.coded.stream,
        plain.layout,
        clip.path,
        clip.first,
        clip.count,
        plain.coded.encode_s,
    )

    def cost(coded: Coded, update: bytes) -> float:
        return job.score(plain.option, plain.layout, coded, plain.qp, clip.count, update).cost

    climbed = climb(seg, job.adapt, plan, lam, previous, cost, pace)
    variants = climbed.variants
    trials = [_variant_trial(job, plain, clip, v) for v in full(variants)]
    warm = update_in_force(previous, plain.layout) is not None
    tried = [_rung_report(v, plain, warm) for v in variants]
    measured = [t for t in tried if t.judged_on is None] or tried
    best = measured[best_rung_index([t.cost for t in measured])]
    report = AdaptationReport(
        steps=best.steps,
        params=best.params,
        bytes=best.bytes,
        gain_db=best.gain_db,
        seconds=sum(v.fitted.seconds for v in variants),
        rung=best.rung,
        relative=best.relative,
        budget_s=budget,
        tried=tried,
        bar=None if pace is None else pace.bar,
        out_of_reach=climbed.out_of_reach,
    )
    return trials, report, climbed.inheriting


def with_adaptation(
    job: Job,
    plain: Trial,
    clip: Clip,
    budget: float | None,
    previous: InForce | None,
    pace: Pace | None = None,
) -> tuple[Trial, AdaptationReport]:
    """The best of ``plain``, ``plain`` with each update fitted to the segment and, when the
    update in force after the previous segment (``previous``) is of this option, ``plain``
    reusing it (:func:`~wrapcodec.encode.trials.pick`: lowest J at a QP, or highest PSNR-YUV
    within a bitrate budget). In a long segment the climb judges reusing it beside the
    updates, and only the better (lower J on the judged frames) of reusing it and the best
    update is measured on every frame and competes; a candidate whose climb stopped out of
    reach there competes without either. ``pace``: see :func:`adapted`."""
    fitted, report, inheriting = adapted(job, plain, clip, previous, pace)
    measured = [k for k, t in enumerate(report.tried) if t.judged_on is None]
    variants = [plain, *fitted]
    cost_inherited = None
    if previous is not None and update_in_force(previous, plain.layout) is not None:
        if inheriting is None or (inheriting.wins and not report.out_of_reach):
            variants.append(inherited(job, plain, clip, previous))
            report.inherited_gain_db = variants[-1].coded.psnr_yuv - plain.coded.psnr_yuv
            cost_inherited = variants[-1].cost
        else:
            report.inherited_gain_db = inheriting.gain_db
            report.inherited_judged_on = inheriting.judged_on
            cost_inherited = inheriting.cost
    if budget is None:
        report.cost_without = plain.cost
        report.cost_with = min((t.cost for t in fitted), default=None)
        report.cost_inherited = cost_inherited
    best = pick(variants, budget, clip.count, job.info)
    picked = [measured[k] for k, t in enumerate(fitted) if t is best]
    if picked:
        chosen = report.tried[picked[0]]
        report.rung, report.relative = chosen.rung, chosen.relative
        report.steps, report.params, report.bytes = chosen.steps, chosen.params, chosen.bytes
        report.gain_db = chosen.gain_db
    report.used = bool(picked)
    report.inherited = best.inherit
    best.qps_tried = plain.qps_tried
    return best, report


def _variant_trial(job: Job, plain: Trial, clip: Clip, v: Variant) -> Trial:
    trial = job.score(plain.option, plain.layout, v.coded, plain.qp, clip.count, v.fitted.update)
    return dataclasses.replace(trial, chain=v.chain, shares=plain.shares)


def _rung_report(v: Variant, plain: Trial, warm: bool) -> RungReport:
    return RungReport(
        rung=v.rung.name.lower(),
        relative=v.fitted.relative,
        warm=warm,
        steps=v.fitted.steps,
        params=v.fitted.params,
        bytes=len(v.fitted.update),
        gain_db=v.coded.psnr_yuv - plain.coded.psnr_yuv if v.gain_db is None else v.gain_db,
        cost=v.cost,
        seconds=v.fitted.seconds,
        judged_on=v.judged_on,
    )
