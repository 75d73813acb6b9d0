"""Which candidates of a segment are coded in full: :func:`exhaustive` (all of them, the
reference) or :func:`probed` (the levels below it: an anchor in full, the others bounded,
estimated or probed and only the best of that ranking in full). Both return a
:class:`Decision`: the trials coded in full and a report for every candidate. The algorithm is
described in docs/effort.md; the rules it applies are :mod:`wrapcodec.encode.rules`, here only
the coding, measuring and bookkeeping around them.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from wrapcodec.encode import rules
from wrapcodec.encode.cost import rd_cost
from wrapcodec.encode.efforts import BOUND_FRAMES, CODING_SHARE, probe_frames, spread
from wrapcodec.encode.rate import estimate_qp, start_qp
from wrapcodec.encode.report import (
    CandidateReport,
    EstimateReport,
    ProbeReport,
    ProgressSink,
    bare_report,
)
from wrapcodec.encode.trials import Clip, Job, Trial, code_all, code_full, over_budget
from wrapcodec.options import OPTIONS, Option
from wrapcodec.pipeline import lossless_mse, stream_key
from wrapcodec.y4m import Frame, Y4MWriter

REVISION = 5
"""Bumped whenever the levels below exhaustive decide differently (benchmarks measure again)."""


@dataclass
class Decision:
    """One segment's candidates coded in full, and the reports of all of them."""

    trials: list[Trial]
    reports: dict[int, CandidateReport]
    probe: ProbeReport | None = None
    probe_s: float = 0.0


def exhaustive(
    job: Job,
    candidates: Sequence[Option],
    clip: Clip,
    budget: float | None,
    progress: ProgressSink,
) -> Decision:
    """Every candidate coded in full (the reference). Under a budget direct goes first, so
    that the others start their QP search from its QP."""
    decision = Decision([], {})
    rest = [o for o in candidates if budget is None or o.code != 0]
    done: dict[int, Trial | None] = {}
    if len(rest) < len(candidates):
        done = code_all(job, [(OPTIONS[0], None)], clip, budget, progress)
    anchor = done.get(0)
    work = [(o, None if anchor is None else start_qp(anchor.qp, o)) for o in rest]
    done |= code_all(job, work, clip, budget, progress)
    for opt in candidates:
        trial = done[int(opt.code)]
        if trial is None:
            decision.reports[int(opt.code)] = bare_report(
                opt, job.info, skipped=over_budget(job, budget)
            )
        else:
            decision.trials.append(trial)
    return decision


def write_probe(job: Job, clip: Clip, picks: Sequence[int], name: str = "probe") -> Clip:
    """The segment's frames ``picks`` (relative to the clip) as a y4m file of their own,
    ``name`` and the clip's first frame naming it in the job's folder."""
    path = job.workdir / f"{name}-{clip.first}.y4m"
    wanted = set(picks)
    with Y4MWriter(path, job.info) as writer:
        for k, frame in enumerate(clip.frames()):
            if k in wanted:
                writer.write(frame)
    return Clip(path, 0, len(picks))


def probed(
    job: Job,
    candidates: Sequence[Option],
    clip: Clip,
    budget: float | None,
    progress: ProgressSink,
) -> Decision:
    """Anchor in full, the options sharing its bitstream estimated on some of its decoded
    frames, the others bounded and probed family by family, the best of the ranking in full
    (docs/effort.md); everything exhaustive when there is no anchor to scale the probe by."""
    t0 = time.perf_counter()
    direct = OPTIONS[0]
    decision = Decision([], {})
    bound = _Bound(job, clip, decision)
    prober = _Prober(job, clip, decision)
    lanczos = [o for o in candidates if o.kind == "lanczos"]
    shared = [o for o in candidates if o.code != 0 and stream_key(o) == stream_key(direct)]
    picks = spread(clip.count, job.effort.window)
    anchor = _anchor(job, clip, budget, shared, picks, bound, lanczos)
    if anchor is None:  # nothing to scale the probe by: code everything
        return exhaustive(job, candidates, clip, budget, progress)
    if direct in candidates:
        decision.trials.append(anchor)
        progress.advance(direct.name)
    bound.against(anchor, budget)
    prober.attach(anchor)
    if shared:
        sampled = anchor.sampled or job.sample(anchor, clip, shared, picks)
        for opt in shared:
            prober.shared(opt, *sampled[opt], picks)
    _probe_families(job, candidates, shared, lanczos, bound, prober)
    finalists = _finalists(job, decision, prober.estimates, anchor, budget)
    for report in decision.reports.values():
        if report.pruned is not None:
            progress.advance(report.name)
    decision.probe_s = time.perf_counter() - t0
    if decision.probe is not None:
        decision.probe.seconds = decision.probe_s
    _verify(job, decision, finalists, anchor, clip, budget, progress)
    return decision


def _anchor(
    job: Job,
    clip: Clip,
    budget: float | None,
    shared: Sequence[Option],
    picks: Sequence[int],
    bound: _Bound,
    lanczos: Sequence[Option],
) -> Trial | None:
    """Direct coded in full; at a QP with ``shared`` measured beside it on ``picks``. With
    ``jobs`` > 1 the Lanczos options' bound is measured meanwhile."""

    def code() -> Trial | None:
        if budget is None:
            return job.trial(OPTIONS[0], job.settings.qp, clip, sampled=shared, picks=picks)
        return code_full(job, OPTIONS[0], clip, budget, None)

    if job.jobs <= 1:
        return code()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        coding = pool.submit(code)
        bound.measure(lanczos)
        return coding.result()


def _probe_families(
    job: Job,
    candidates: Sequence[Option],
    shared: Sequence[Option],
    lanczos: Sequence[Option],
    bound: _Bound,
    prober: _Prober,
) -> None:
    """Bound and probe the Lanczos options, then the bilinear and post options, then the
    wrappers (the dearest to probe: a network before the codec), each of the ratios the
    estimates so far leave in play."""
    survivors = bound.survivors(lanczos)
    if job.effort.ratio_ladder:
        prober.ladder(lanczos, survivors, bound.ruled_out)
    else:
        prober.code_all(survivors)
        for opt in survivors:
            prober.estimate(opt)
    for kinds in (("bilinear", "post"), ("wrapper",)):
        stage = [o for o in candidates if o.kind in kinds and o not in shared]
        if "wrapper" in kinds and job.effort.pairs_need_post:
            stage = prober.paired(stage)
        survivors = bound.survivors(prober.in_play(stage, bound.ruled_out))
        prober.code_all(survivors)
        for opt in survivors:
            prober.estimate(opt)
    if prober.report is not None:
        prober.report.bound_frames = bound.picks
    prober.decision.probe = prober.report


def _finalists(
    job: Job,
    decision: Decision,
    estimates: Sequence[_Estimate],
    anchor: Trial,
    budget: float | None,
) -> list[_Estimate]:
    """The estimates ranked; the best ``verify`` of them (anchor counted) that are worth
    coding in full, the others' reports saying why they are not."""
    verify, margin = job.effort.verify, job.effort.verify_margin
    assert verify is not None
    ranked = sorted(estimates, key=lambda e: (e.cost, int(e.option.code)))
    for rank, e in enumerate(ranked, start=1):
        if e.option.code != 0:
            _estimate_of(decision, e.option).rank = rank
    finalists = [e for e in ranked[:verify] if e.option.code != 0]
    for e in ranked[verify:]:
        if e.option.code != 0:
            decision.reports[
                int(e.option.code)
            ].pruned = f"estimate J {e.cost:.3f}, not among the {verify} best"
    if budget is not None:
        return finalists
    for e in [e for e in finalists if not rules.worth_coding(e.cost, anchor.cost, margin)]:
        finalists.remove(e)
        decision.reports[int(e.option.code)].pruned = (
            f"estimate J {e.cost:.3f} within {100 * margin:g} % of "
            f"direct's {anchor.cost:.3f}: not coded in full"
        )
    if job.effort.pairs_beat_post:
        _pairs_beat_post(decision, estimates, finalists)
    return finalists


def _pairs_beat_post(
    decision: Decision, estimates: Sequence[_Estimate], finalists: list[_Estimate]
) -> None:
    """The wrappers among ``finalists`` that :func:`~wrapcodec.encode.rules.pair_worth_coding`
    rules out removed, their reports saying why."""
    post = {e.option.ratio: e.cost for e in estimates if e.option.kind == "post"}
    for e in [e for e in finalists if e.option.kind == "wrapper"]:
        theirs = post.get(e.option.ratio)
        if rules.pair_worth_coding(e.cost, theirs):
            continue
        finalists.remove(e)
        decision.reports[int(e.option.code)].pruned = (
            f"estimate J {e.cost:.3f} ≥ post-{e.option.ratio_text}'s {theirs:.3f}: "
            "the pair is not coded in full"
        )


def _verify(
    job: Job,
    decision: Decision,
    finalists: Sequence[_Estimate],
    anchor: Trial,
    clip: Clip,
    budget: float | None,
    progress: ProgressSink,
) -> None:
    """The finalists coded in full (under a budget from the QP their estimate points to)."""
    work = []
    for e in finalists:
        start = None
        if budget is not None:
            start = estimate_qp(anchor.qp, job.kbps(round(e.bits), clip.count), budget)
        work.append((e.option, start))
    done = code_all(job, work, clip, budget, progress)
    for e in finalists:
        trial = done[int(e.option.code)]
        if trial is None:
            decision.reports[int(e.option.code)].skipped = over_budget(job, budget)
            continue
        _estimate_of(decision, e.option).coded = True
        decision.trials.append(trial)


@dataclass
class _Estimate:
    cost: float  # J, estimated (the anchor's: measured)
    bits: float
    option: Option


def _estimate_of(decision: Decision, opt: Option) -> EstimateReport:
    estimate = decision.reports[int(opt.code)].estimate
    assert estimate is not None
    return estimate


class _Bound:
    """Measures the candidates' distortion through an uncoded bottleneck on
    :data:`~wrapcodec.encode.efforts.BOUND_FRAMES` frames and rules out those whose bound
    reaches the anchor's (:func:`~wrapcodec.encode.rules.bound_rules_out`)."""

    def __init__(self, job: Job, clip: Clip, decision: Decision) -> None:
        self.job, self.decision = job, decision
        self.limit, self.what, self.coding = math.inf, "J", 0.0
        self.clip = clip
        self.picks = spread(clip.count, BOUND_FRAMES)
        self._frames: list[Frame] | None = None  # read on first use (beside the anchor)
        self.floors: dict[Option, float] = {}
        self.ruled_out: dict[Option, float] = {}  # by the bound: their least J

    def against(self, anchor: Trial, budget: float | None) -> None:
        """The anchor coded in full: what the bound compares with. In QP mode a candidate
        beats the anchor only with a lower J; under a budget (both within it) only with a lower
        D. Either way its D through an uncoded bottleneck bounds it; at the anchor's QP a
        linear option's coding adds to that floor."""
        self.limit = anchor.cost if budget is None else anchor.coded.mse_8bit
        self.what = "J" if budget is None else "MSE"
        if budget is None:
            self.coding = CODING_SHARE * anchor.coded.mse_8bit

    def measure(self, candidates: Sequence[Option]) -> None:
        """The floors of ``candidates`` not measured yet."""
        if self._frames is None:
            self._frames = [f for k, f in enumerate(self.clip.frames()) if k in self.picks]
        for opt in candidates:
            if opt not in self.floors:
                self.floors[opt] = lossless_mse(self.job.layout(opt), self._frames)

    def survivors(self, candidates: Sequence[Option]) -> list[Option]:
        """``candidates`` not ruled out. Those at r = 1 pass unmeasured: at full size an
        uncoded bottleneck loses next to nothing, so their bound would not rule them out, and
        a wrapper's would cost two network passes."""
        self.measure([o for o in candidates if o.ratio != 1])
        kept: list[Option] = []
        for opt in candidates:
            if opt.ratio == 1:
                estimate = EstimateReport(method="probe", cost=math.inf)
                self.decision.reports[int(opt.code)] = bare_report(
                    opt, self.job.info, estimate=estimate
                )
                kept.append(opt)
                continue
            floor = self.floors[opt]
            coding = rules.coding_added(opt.kind, self.coding)
            least = floor + coding
            estimate = EstimateReport(
                method="bound", frames=self.picks, lossless_mse=floor, cost=least
            )
            report = bare_report(opt, self.job.info, estimate=estimate)
            if rules.bound_rules_out(least, self.limit):
                self.ruled_out[opt] = least
                plus = f" + coding {coding:.3f}" if coding else ""
                report.pruned = (
                    f"uncoded-bottleneck MSE {floor:.3f}{plus} ≥ {self.what} {self.limit:.3f} "
                    "of direct"
                )
            else:
                estimate.method, estimate.cost = "probe", math.inf
                kept.append(opt)
            self.decision.reports[int(opt.code)] = report
        return kept


class _Prober:
    """Codes candidates on the probe frames at the probe preset and estimates their J from
    the probe scaled by the anchor's full-to-probe ratios (the probe is made on first use)."""

    def __init__(self, job: Job, clip: Clip, decision: Decision) -> None:
        self.job, self.clip, self.decision = job, clip, decision
        window = job.effort.probe_window(job.info.width, job.info.height)
        self.picks = probe_frames(clip.count, window)
        self.estimates: list[_Estimate] = []
        self.report: ProbeReport | None = None
        self._anchor: Trial | None = None
        self._probe: Clip | None = None
        self._trials: dict[tuple[Option, int], Trial] = {}
        self.skipped: dict[Option, float] = {}  # by the ladder: the milder ratio's value

    def code(self, opt: Option, qp: int) -> Trial:
        """``opt`` coded on the probe at ``qp`` (once)."""
        probe = self._probe_clip()
        if (opt, qp) not in self._trials:
            self._trials[opt, qp] = self.job.trial(opt, qp, probe, probe=True)
        return self._trials[opt, qp]

    def _probe_clip(self) -> Clip:
        if self._probe is None:
            # A segment no longer than the probe is its own probe (its streams are reused
            # when the probe preset is the user's).
            whole = len(self.picks) == self.clip.count
            self._probe = self.clip if whole else write_probe(self.job, self.clip, self.picks)
        return self._probe

    def code_all(self, options: Sequence[Option]) -> None:
        """``options`` coded on the probe at the anchor's QP, ``jobs`` at once (with the
        anchor's own probe, the first time)."""
        assert self._anchor is not None
        if not options:
            return
        qp = self._anchor.qp
        self._probe_clip()  # written once, on this thread
        work = [*([OPTIONS[0]] if self.report is None else []), *options]
        if self.job.jobs == 1:
            for opt in work:
                self.code(opt, qp)
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=self.job.jobs) as pool:
                for done in [pool.submit(self.code, opt, qp) for opt in work]:
                    done.result()
        self._scales()

    def attach(self, anchor: Trial) -> None:
        """The anchor coded in full: the QP of the estimates and the first of them."""
        self._anchor = anchor
        self.estimates = [_Estimate(anchor.cost, 0.0, OPTIONS[0])]

    def _scales(self) -> ProbeReport:
        anchor = self._anchor
        assert anchor is not None
        if self.report is None:
            base = self.code(OPTIONS[0], anchor.qp)
            assert self._probe is not None
            rate_scale, distortion_scale = rules.probe_scales(
                anchor.coded.payload_bytes,
                self.clip.count,
                anchor.coded.mse_8bit,
                base.coded.payload_bytes,
                self._probe.count,
                base.coded.mse_8bit,
            )
            self.report = ProbeReport(
                frames=self.picks,
                preset=self.job.probe_settings.preset,
                anchor=OPTIONS[0].name,
                anchor_qp=anchor.qp,
                rate_scale=rate_scale,
                distortion_scale=distortion_scale,
                bound_frames=[],
                seconds=0.0,
            )
        return self.report

    def estimate(self, opt: Option) -> None:
        """``opt``'s J estimated from its probe (:func:`~wrapcodec.encode.rules.estimated_cost`)."""
        scales, anchor, job = self._scales(), self._anchor, self.job
        assert anchor is not None and self._probe is not None
        t = self.code(opt, anchor.qp)
        cost, bits = rules.estimated_cost(
            t.coded.mse_8bit,
            8 * t.coded.payload_bytes / self._probe.count,
            scales.distortion_scale,
            scales.rate_scale,
            job.overhead_bits,
            self.clip.count,
            job.info.width * job.info.height,
            job.lam(anchor.qp),
        )
        est = _estimate_of(self.decision, opt)
        est.probe_bits, est.probe_mse, est.cost = 8 * t.coded.payload_bytes, t.coded.mse_8bit, cost
        self.estimates.append(_Estimate(cost, bits, opt))

    def shared(self, opt: Option, mse: float, anchor_mse: float, picks: Sequence[int]) -> None:
        """``opt``, sharing the anchor's bitstream, estimated from its MSE and the anchor's on
        the anchor's decoded frames ``picks``: the anchor's rate, the anchor's MSE scaled by
        their ratio."""
        anchor, job = self._anchor, self.job
        assert anchor is not None
        distortion = rules.shared_distortion(anchor.coded.mse_8bit, mse, anchor_mse)
        lam = job.lam(anchor.qp)
        cost = rd_cost(distortion, anchor.bits, self.clip.count, job.info, lam)
        self.decision.reports[int(opt.code)] = bare_report(
            opt,
            job.info,
            estimate=EstimateReport(
                method="shared",
                frames=list(picks),
                sample_mse=mse,
                anchor_sample_mse=anchor_mse,
                cost=cost,
            ),
        )
        self.estimates.append(_Estimate(cost, float(anchor.bits), opt))

    def ladder(
        self,
        options: Sequence[Option],
        survivors: Sequence[Option],
        ruled_out: Mapping[Option, float],
    ) -> None:
        """``options`` (of one kind) from the mildest downscale to the strongest, each of
        ``survivors`` probed until :func:`~wrapcodec.encode.rules.ladder_stops`; the ratios
        past that point ruled out, standing in the family rule for the value
        :func:`~wrapcodec.encode.rules.ladder_value` gives them."""
        margin = self.job.effort.family_margin
        assert margin is not None
        milder: tuple[str, float] | None = None  # the milder ratio's value: what, and how much
        for opt in sorted(options, key=lambda o: o.ratio, reverse=True):
            best = self._best()
            if rules.ladder_stops(None if milder is None else milder[1], best, margin):
                assert milder is not None
                self.skipped[opt] = rules.ladder_value(milder[1], ruled_out.get(opt))
                if opt in survivors:
                    self._rule_out(
                        opt,
                        milder[1],
                        f"{milder[0]} J {milder[1]:.3f} > {1 + margin:g} × the best "
                        f"{best:.3f}: a stronger downscale is not probed",
                    )
            elif opt in ruled_out:
                milder = (f"{opt.name}'s bound", ruled_out[opt])
            elif opt in survivors:
                self.code_all([opt])
                self.estimate(opt)
                milder = (f"{opt.name}'s estimate", self.estimates[-1].cost)

    def paired(self, wrappers: Sequence[Option]) -> list[Option]:
        """Those of ``wrappers`` that :func:`~wrapcodec.encode.rules.pair_in_play` keeps; the
        others are ruled out."""
        cost: dict[tuple[str, Fraction], float] = {
            (e.option.kind, e.option.ratio): e.cost for e in self.estimates
        }
        kept = []
        for opt in wrappers:
            linear = "direct" if opt.ratio == 1 else "bilinear"
            post, lin = cost.get(("post", opt.ratio)), cost.get((linear, opt.ratio))
            if rules.pair_in_play(post, lin):
                kept.append(opt)
                continue
            assert post is not None
            self._rule_out(
                opt,
                post,
                f"post-{opt.ratio_text}'s estimate J {post:.3f} does not beat "
                f"{linear}'s {lin:.3f}: the pair is not probed",
            )
        return kept

    def in_play(self, options: Sequence[Option], ruled_out: dict[Option, float]) -> list[Option]:
        """Those of ``options`` that :func:`~wrapcodec.encode.rules.family_in_play` keeps, the
        value of a ratio being the lowest of its estimates, of the bounds of its options the
        bound ruled out and of the ladder's values of those it skipped; the others are ruled
        out."""
        margin = self.job.effort.family_margin
        if margin is None:
            return list(options)
        assert self._anchor is not None
        # a lower bound of the J of one ruled out; the ladder's value of one it skipped
        lower = [(opt.ratio, least) for opt, least in ({**ruled_out, **self.skipped}).items()]
        estimated = [(e.option.ratio, e.cost) for e in self.estimates if e.option.code != 0]
        family = rules.best_by_ratio(self._anchor.cost, [*lower, *estimated])
        best = self._best()
        kept = []
        for opt in options:
            linear = family.get(opt.ratio)
            if rules.family_in_play(linear, best, margin):
                kept.append(opt)
                continue
            assert linear is not None
            self._rule_out(
                opt,
                linear,
                f"its ratio's best estimate J {linear:.3f} > {1 + margin:g} × the best {best:.3f}",
            )
        return kept

    def _best(self) -> float:
        """The lowest J estimated so far (the anchor's counting)."""
        return min(e.cost for e in self.estimates)

    def _rule_out(self, opt: Option, cost: float, why: str) -> None:
        """``opt`` not probed by a family rule: its report, with the estimate that decided."""
        self.decision.reports[int(opt.code)] = bare_report(
            opt, self.job.info, estimate=EstimateReport(method="family", cost=cost), pruned=why
        )
