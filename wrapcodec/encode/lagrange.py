"""The price of a bit in a segment's RDO: λ measured on direct coding's own RD curve.

The reference-encoder relation λ(QP) = c·2^((QP − 12)/3) (:meth:`Backend.qp_to_lambda`)
prices a bit for the codec's mode decisions, not for a choice between whole codings of a
segment. BD-rate asks whether a candidate lies below direct coding's RD curve, and to first
order it does exactly when its J is lower at λ equal to that curve's slope at the QP. That
slope depends on the content: on 120 frames of three 720p camera clips, x265's secant slope
between neighbouring QPs is 3.7–17 times the relation's λ (docs/measurements.md).

With ``--lambda measured`` each segment's λ is measured (:func:`measure`): direct coding at
the segment's QP and at :data:`PROBE_STEP` QPs above it (below it at the top of the codec's
range) give the secant slope −ΔD/ΔR, and λ is the relation's λ at the QP times the ratio of
that slope to the relation's λ at the two QPs' midpoint (:func:`secant_scale`). The ratio is
bounded by :data:`SCALE_RANGE`, and a curve that does not fall there (a static or lossless
segment) keeps the relation's λ. It is not the default: on the long clips of
docs/measurements.md it gained 0.1–0.2 points of BD-rate with much smaller updates, but on
the short sequences it lost 0.1, for one more direct encode a segment.
"""

from __future__ import annotations

import math
import time

from wrapcodec.backend import Backend
from wrapcodec.encode.report import LambdaReport
from wrapcodec.encode.trials import Clip, Job
from wrapcodec.options import OptionCode, option

PROBE_STEP = 3
"""QPs between a segment's QP and its slope probe: one halving of the relation's λ."""

SCALE_RANGE = (0.25, 64.0)
"""The bounds of the measured λ over the relation's."""


def probe_qp(backend: Backend, qp: int) -> int:
    """The QP of the slope probe: :data:`PROBE_STEP` above ``qp``, or below it when that is
    past the top of the backend's range."""
    lo, hi = backend.qp_range
    return qp + PROBE_STEP if qp + PROBE_STEP <= hi else max(lo, qp - PROBE_STEP)


def secant_scale(
    backend: Backend,
    qp: int,
    mse: float,
    bits: int,
    other_qp: int,
    other_mse: float,
    other_bits: int,
    samples: int,
) -> float | None:
    """The secant slope of direct coding between ``qp`` and ``other_qp`` (MSE in 8-bit units
    per bit per luma sample of the ``samples``), over the relation's λ at their midpoint,
    within :data:`SCALE_RANGE`; None when the MSE does not fall as the bits rise."""
    d_mse, d_rate = other_mse - mse, (bits - other_bits) / samples
    if d_rate == 0 or d_mse / d_rate <= 0 or not math.isfinite(d_mse / d_rate):
        return None
    scale = (d_mse / d_rate) / backend.qp_to_lambda((qp + other_qp) / 2)
    return min(max(scale, SCALE_RANGE[0]), SCALE_RANGE[1])


def measure(job: Job, clip: Clip) -> tuple[Job, LambdaReport]:
    """``job`` pricing bits at the λ measured on ``clip`` (:attr:`Job.lam_scale`), and the
    measurement. Both codings are direct ones at the job's depth; the one at the segment's
    QP is the search's own, kept in the job's streams."""
    t0 = time.perf_counter()
    direct, qp = option(OptionCode.DIRECT), job.settings.qp
    other = probe_qp(job.backend, qp)
    at, probe = job.trial(direct, qp, clip), job.trial(direct, other, clip)
    samples = clip.count * job.info.width * job.info.height
    scale = secant_scale(
        job.backend,
        qp,
        at.coded.mse_8bit,
        at.bits,
        other,
        probe.coded.mse_8bit,
        probe.bits,
        samples,
    )
    report = LambdaReport(
        model=job.backend.qp_to_lambda(qp),
        scale=1.0 if scale is None else scale,
        measured=scale is not None,
        probe_qp=other,
        probe_kbps=job.kbps(probe.bits, clip.count),
        probe_psnr_yuv=probe.coded.psnr_yuv,
        seconds=time.perf_counter() - t0,
    )
    return job.priced(report.scale), report
