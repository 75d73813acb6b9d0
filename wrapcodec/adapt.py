"""Content adaptation: fit a bank post-processor to the segment the encoder has just coded.

The encoder holds what no offline training sees: the source and the exact decoded bottleneck
of the segment. It fine-tunes a subset of the post-processor's parameters on random crops of
those frames against the source, with the loss the RDO measures (the 6:1:1 YUV MSE in 8-bit
units), and sends the change as an update (:mod:`wrapcodec.update`). This is instance
adaptation of the decoder-side network (the NN post-filter with a weight update of VVC's
SEI), done per segment.

The bilinear resampling in front of the network has no parameters, so each training frame is
resampled once and the learned stage (:meth:`PostProcessor.restore`) runs on crops of it. The
fit is seeded and each step sums its shards' gradients in a fixed order (:func:`_gradients`),
so the same segment gives the same update, whatever threads the fit and the rest of the
encoder run on.

Learning that grows with the video: the capacity ladder (:func:`wrapcodec.update.ladder`)
gives the rungs the encoder may choose among; with ``AdaptConfig.grow`` the step count grows
with the segment's samples (:func:`planned_steps`) and the frames held span the whole segment
under a memory cap (:func:`held_frames`); ``budget_s`` bounds the steps by a fixed cost model
(:func:`step_seconds`), never by a clock, so the same inputs give the same bytes; ``fit`` may
start from the update in force (warm start) and send only the change (``relative``, with
:attr:`Quant.RD`, whose steps are chosen by rate-distortion from the fit's sensitivities). Such
an update's bits have a price, and the fit minimises D plus their estimate at
:data:`RATE_WEIGHT` times that price (:func:`rate_gradient`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from wrapcodec import interrupt
from wrapcodec.adam import Adam
from wrapcodec.errors import InputError
from wrapcodec.nets import PEAK_8BIT, PostProcessor, mse_8bit
from wrapcodec.update import (
    Distortion,
    Quant,
    Subset,
    Update,
    apply_update,
    encode_update,
    encode_update_rd,
    ladder,
    rd_mu,
    subset_names,
)

Picture = tuple[Tensor, Tensor]
"""A normalised 4:2:0 picture: (1,1,H,W) luma and (1,2,H/2,W/2) chroma, H and W even."""


REVISION = 5
"""Bumped whenever a fit's result for the same inputs changes (its rounding included), so that
cached bench points and effort runs that adapt are measured again. 1: the fit in
channels-last layout and the ladder from the biases and tail; 2: the learning rate's warm-up
and cosine decay; 3: a budgeted climb's second rung is every parameter; 4: every parameter's
planned steps 5,000 at the reference segment (were 2,000); 5: the update's rate in the loss
of a fit quantised by rate and distortion (:data:`RATE_WEIGHT`)."""

WARMUP_SHARE = 20
"""A scheduled fit's learning rate rises over the first 1/20 of its steps
(:func:`learning_rate`)."""
SCHEDULED_STEPS = 50
"""Fits of at least this many steps follow :func:`learning_rate`'s schedule; shorter ones keep
a constant rate."""

MAX_STEPS = 10_000
"""Most steps a fit is asked for: over 30 times the default, minutes of fitting per candidate."""


RATE_WEIGHT = 4.0
"""A fit's update's bits are priced in its loss at four times their price at the RDO's λ. The
codec's λ relation prices a bit several times below its worth on real clips' RD curves
(measured on dog: 4.2–4.4 times the update's price at QPs 37–47), and on the three 120-frame
720p clips the fit at four times gained more than at one (docs/measurements.md, "The
update's rate in the fit's loss")."""


def check_steps(steps: int | None) -> None:
    """Refuse ``--adapt-steps`` outside 0..:data:`MAX_STEPS` in one line (None: the default)."""
    if steps is not None and not 0 <= steps <= MAX_STEPS:
        raise InputError(f"--adapt-steps {steps}: at most {MAX_STEPS}")


@dataclass(frozen=True)
class AdaptConfig:
    """How the encoder fits a post-processor to a segment (defaults chosen by measurement:
    docs/measurements.md, "Content adaptation")."""

    steps: int = 300
    subset: Subset = Subset.BIAS_TAIL  # what a fit trains; :func:`ladder_plan`'s first rung
    quant: Quant = Quant.INT8
    levels: int = 127  # int8 levels per sign at each tensor's peak
    lr: float = 1e-3  # learning rate of a short fit (:func:`learning_rate`)
    peak_lr: float = 5e-3  # peak learning rate of a longer fit
    crop: int = 128  # luma side of a training crop at the output resolution (even)
    batch: int = 4  # crops per step
    max_frames: int = 30  # training frames per segment, evenly spaced (unless ``grow``)
    seed: int = 0
    grow: bool = False  # steps by planned_steps, frames held over the whole segment
    budget_s: float | None = None  # at most this many seconds of steps by step_seconds
    hold_mib: float = 1024.0  # with ``grow``: memory for the frames held
    relative: bool = False  # send the change to the update in force (needs Quant.RD)
    rd_lambda: float | None = None  # the RDO's λ (8-bit SSE per bit), needed by Quant.RD
    probes: int = 8  # batches of the sensitivity estimate (Quant.RD)
    # with Quant.RD, the update's rate in the loss at this many times its price at
    # ``rd_lambda`` (:func:`rate_gradient`; 0: the distortion alone; INT8 has no price)
    rate_weight: float = RATE_WEIGHT


@dataclass(frozen=True)
class Fitted:
    """An update and what it took."""

    update: bytes
    params: int  # parameters the update carries
    seconds: float
    loss_first: float  # training loss (MSE, 8-bit units) of the first and last steps
    loss_last: float
    steps: int = 0  # steps run
    subset: Subset = Subset.BIAS_TAIL  # what the update carries
    relative: bool = False  # the update is a change to the update in force
    # the trained float weights of ``subset``, by name (before quantisation): where a higher
    # rung's training may begin (:func:`fit_forms`'s ``init``)
    weights: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)


def training_frames(count: int, max_frames: int) -> list[int]:
    """Indices of at most ``max_frames`` frames spread evenly over ``count``."""
    if count <= max_frames:
        return list(range(count))
    if max_frames <= 1:
        return [(count - 1) // 2]
    return sorted({round(i * (count - 1) / (max_frames - 1)) for i in range(max_frames)})


HELD_BYTES_PER_SAMPLE = 3 * 1.5 * 4
"""Bytes a held frame takes per luma sample: decoded (at most), resampled and source
pictures, 4:2:0 float32."""


def held_frames(count: int, height: int, width: int, cfg: AdaptConfig) -> list[int]:
    """The frames of a ``count``-frame segment (``height``×``width``) the fit trains on.

    Without ``cfg.grow``: ``cfg.max_frames`` of them (today's 30). With it: as many as
    ``cfg.hold_mib`` holds, spread evenly over the whole segment (every frame when they fit),
    so a long segment trains on all of it while memory stays bounded."""
    if not cfg.grow:
        return training_frames(count, cfg.max_frames)
    per_frame = HELD_BYTES_PER_SAMPLE * height * width
    return training_frames(count, max(1, int(cfg.hold_mib * 2**20 // per_frame)))


REFERENCE_SAMPLES = 120 * 1280 * 720
"""Luma samples of the segment the rungs' reference step counts were measured on."""
REFERENCE_STEPS = {Subset.BIAS: 300, Subset.BIAS_TAIL: 300, Subset.DECODER: 1000, Subset.ALL: 5000}
MIN_STEPS = 20
STEP_CAP = 4  # at most this many times a rung's reference steps

STEP_SECONDS_PER_SAMPLE = {
    Subset.BIAS: 5.0e-7,
    Subset.BIAS_TAIL: 5.0e-7,
    Subset.DECODER: 5.5e-7,
    Subset.ALL: 6.0e-7,
}
"""Seconds of one step per luma sample of the batch (``batch · crop²``) on one thread, by
rung: the fixed cost model of ``budget_s`` (about 33 ms a step at 4 crops of 128², measured
on a shared 2-core x86-64 machine; every rung back-propagates through the whole network,
the weight rungs also form weight gradients)."""


def planned_steps(subset: Subset, samples: int) -> int:
    """Steps for a segment of ``samples`` luma samples (frames × W × H) on rung ``subset``.

    The rung's reference count (measured at :data:`REFERENCE_SAMPLES`: 300 for the bias
    rungs, 5,000 for every parameter) times the square root of the segment's share of it:
    more data carries more steps before the fit overfits, but frames of one segment are
    alike, so less than in proportion. At least :data:`MIN_STEPS`, at most
    :data:`STEP_CAP` times the reference."""
    base = REFERENCE_STEPS[subset]
    steps = round(base * math.sqrt(samples / REFERENCE_SAMPLES))
    return max(MIN_STEPS, min(STEP_CAP * base, steps))


def step_seconds(subset: Subset, batch: int, crop: tuple[int, int]) -> float:
    """Modelled seconds of one training step (one thread) on rung ``subset``."""
    return STEP_SECONDS_PER_SAMPLE[subset] * batch * crop[0] * crop[1]


def step_count(cfg: AdaptConfig, samples: int, crop: tuple[int, int]) -> int:
    """Steps the fit runs: ``cfg.steps`` (or :func:`planned_steps` with ``cfg.grow``; 0
    always turns adaptation off), then at most what ``cfg.budget_s`` pays for.

    The budget converts to steps *before* fitting, through the fixed :func:`step_seconds`
    model rather than a clock, so the same inputs always give the same update's bytes; the
    wall time is the model's estimate, not a guarantee."""
    if cfg.steps <= 0:
        return 0
    steps = planned_steps(cfg.subset, samples) if cfg.grow else cfg.steps
    if cfg.budget_s is not None:
        steps = min(steps, int(cfg.budget_s // step_seconds(cfg.subset, cfg.batch, crop)))
    return max(steps, 0)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread inside the block (a process-wide setting: fits run at once on
    several Python threads enter it once, around all of them)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


SHARDS = 2
"""A training step's crops are split into this many shards whose gradients are summed in a
fixed order (:func:`_gradients`), so a fit may run them on as many threads at once and still
give the same update as on one."""

_shard_pool: ThreadPoolExecutor | None = None


@contextlib.contextmanager
def shard_threads(workers: int) -> Iterator[None]:
    """Inside the block, fits run the shards of their steps on up to ``workers`` threads,
    shared by every fit of the block (so fits at once do not oversubscribe the cores); one
    worker, or a block inside another, changes nothing. Only the wall time depends on it."""
    global _shard_pool
    if workers <= 1 or _shard_pool is not None:
        yield
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shard") as pool:
        _shard_pool = pool
        try:
            yield
        finally:
            _shard_pool = None


def _crop(p: Picture, top: int, left: int, h: int, w: int) -> Picture:
    y, uv = p
    return (
        y[..., top : top + h, left : left + w],
        uv[..., top // 2 : (top + h) // 2, left // 2 : (left + w) // 2],
    )


def _batch(
    upsampled: Sequence[Picture],
    targets: Sequence[Picture],
    size: tuple[int, int],
    cfg: AdaptConfig,
    gen: torch.Generator,
) -> tuple[Picture, Picture]:
    """``cfg.batch`` random crops (even offsets, so chroma stays aligned) of random frames."""
    height, width = upsampled[0][0].shape[-2:]
    h, w = size
    xs: list[Picture] = []
    ts: list[Picture] = []
    for _ in range(cfg.batch):
        k = int(torch.randint(len(upsampled), (1,), generator=gen))
        top = 2 * int(torch.randint((height - h) // 2 + 1, (1,), generator=gen))
        left = 2 * int(torch.randint((width - w) // 2 + 1, (1,), generator=gen))
        xs.append(_crop(upsampled[k], top, left, h, w))
        ts.append(_crop(targets[k], top, left, h, w))
    return (
        (torch.cat([x[0] for x in xs]), torch.cat([x[1] for x in xs])),
        (torch.cat([t[0] for t in ts]), torch.cat([t[1] for t in ts])),
    )


def _check(
    decoded: Sequence[Picture], sources: Sequence[Picture], cfg: AdaptConfig, start: Update | None
) -> None:
    if not decoded or len(decoded) != len(sources):
        raise ValueError("fit needs one source picture per decoded picture")
    if cfg.relative and (cfg.quant != Quant.RD or start is None):
        raise ValueError("a relative update needs Quant.RD and the update in force (start)")
    if cfg.quant == Quant.RD and cfg.rd_lambda is None:
        raise ValueError("Quant.RD needs the RDO's λ (rd_lambda)")
    if start is not None and start.relative:
        raise ValueError("start must be the resolved update in force (wrapcodec.update.resolve)")


def _train(
    model: PostProcessor,
    names: list[str],
    data: tuple[Sequence[Picture], Sequence[Picture]],
    size: tuple[int, int],
    steps: int,
    cfg: AdaptConfig,
    rate: Callable[[Sequence[Tensor]], None] | None = None,
) -> list[float]:
    """``steps`` Adam steps on ``names`` of ``model`` (in place); the losses (distortion).
    ``rate``, when given, adds the gradient of the update's rate to each step's
    (:func:`rate_gradient`)."""
    params = dict(model.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in names)
    trained = [params[n] for n in names]
    opt = Adam(trained, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    for step in range(steps):
        stop = interrupt.received()
        if stop is not None:  # a signal: a fit on a worker thread ends with the program
            raise stop
        batch = _batch(*data, size, cfg, gen)
        losses.append(_gradients(model, trained, batch))
        if rate is not None:
            rate(trained)
        opt.lr = learning_rate(cfg, step, steps)
        opt.step()
    return losses


def learning_rate(cfg: AdaptConfig, step: int, steps: int) -> float:
    """The learning rate of step ``step`` (from 0) of a fit of ``steps``.

    A fit of :data:`SCHEDULED_STEPS` or more rises linearly to ``cfg.peak_lr`` over the first
    :data:`WARMUP_SHARE`-th of its steps, then falls along half a cosine towards 0: on the
    three 120-frame 720p clips (300 steps on the first rung) this gains 10–40 % more than a
    constant 10⁻³ in as many steps. A shorter fit (the smallest pictures, where the budget
    pays for a few dozen steps) keeps ``cfg.lr`` throughout, which gained more there than any
    decaying rate (docs/measurements.md, "The fit's learning rate")."""
    if steps < SCHEDULED_STEPS:
        return cfg.lr
    warmup = max(steps // WARMUP_SHARE, 1)
    if step < warmup:
        return cfg.peak_lr * (step + 1) / warmup
    return cfg.peak_lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (steps - warmup)))


def _gradients(
    model: PostProcessor, trained: Sequence[Tensor], batch: tuple[Picture, Picture]
) -> float:
    """Set the ``.grad`` of ``trained`` to the gradient of the batch's loss; the loss.

    The crops are split into :data:`SHARDS` shards, each forward and backward on its own (on
    the threads of :func:`shard_threads` where there are some), and the shards' gradients are
    summed in a fixed order, weighted by their crops: the same gradient however they ran."""
    (y, uv), (ty, tuv) = batch
    count = y.shape[0]
    parts = min(SHARDS, count)
    bounds = [count * k // parts for k in range(parts + 1)]

    def shard(k: int) -> tuple[float, tuple[Tensor, ...]]:
        rows = slice(bounds[k], bounds[k + 1])
        weight = (bounds[k + 1] - bounds[k]) / count
        y_hat, uv_hat = model.restore(y[rows], uv[rows])
        loss = weight * mse_8bit(y_hat, uv_hat, ty[rows], tuv[rows])
        return loss.item(), torch.autograd.grad(loss, trained)

    pool = _shard_pool
    done = list(pool.map(shard, range(parts))) if pool else [shard(k) for k in range(parts)]
    for j, p in enumerate(trained):
        grad = done[0][1][j]
        for _, grads in done[1:]:
            grad = grad + grads[j]
        p.grad = grad
    return sum(loss for loss, _ in done)


def sensitivity(
    model: PostProcessor,
    names: list[str],
    upsampled: Sequence[Picture],
    size: tuple[int, int],
    cfg: AdaptConfig,
) -> dict[str, Tensor]:
    """Per parameter of ``names``, ``w`` with ``ΔD ≈ Σ w·e²`` for small changes ``e`` of the
    fitted weights: the Gauss–Newton diagonal of the 6:1:1 MSE D (8-bit units, per pixel).

    With D = Σ_p a_p (f_p − t_p)², its Gauss–Newton Hessian is 2·Σ_p a_p ∇f_p ∇f_pᵀ; for a
    Rademacher vector r over the output samples, g = ∇(Σ_p r_p √a_p f_p) has E[g_i²] =
    Σ_p a_p (∂f_p/∂θ_i)², half that diagonal: ``cfg.probes`` random batches of crops, one
    backward pass each, seeded, no targets needed."""
    params = dict(model.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in names)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    total = {n: torch.zeros_like(params[n]) for n in names}
    scale = (PEAK_8BIT / 2) ** 2 / 8
    for _ in range(cfg.probes):
        (y, uv), _ = _batch(upsampled, upsampled, size, cfg, gen)
        y_hat, uv_hat = model.restore(y, uv)
        a_y, a_c = 6 * scale / y_hat.numel(), 2 * scale / uv_hat.numel()
        ry = 2 * torch.randint(0, 2, y_hat.shape, generator=gen).to(y_hat.dtype) - 1
        ruv = 2 * torch.randint(0, 2, uv_hat.shape, generator=gen).to(uv_hat.dtype) - 1
        probe = math.sqrt(a_y) * (ry * y_hat).sum() + math.sqrt(a_c) * (ruv * uv_hat).sum()
        grads = torch.autograd.grad(probe, [params[n] for n in names])
        for name, g in zip(names, grads, strict=True):
            total[name] += g.detach() ** 2
    return {n: t / max(cfg.probes, 1) for n, t in total.items()}


def rate_gradient(
    base: Sequence[Tensor], weights: Sequence[Tensor], mu: float, weight: float
) -> Callable[[Sequence[Tensor]], None]:
    """What adds to the gradients of the trained tensors (in the order of ``base``) that of
    ``weight · μ · Σ log2(1 + |δ| / s)``, the update's rate at ``weight`` times its price μ
    (8-bit SSE per bit per pixel, :func:`wrapcodec.update.rd_mu`), δ each parameter's change
    from ``base`` (what the update is coded against).

    Per parameter ``s = √(6μ / (w ln 2))``, with ``w`` its sensitivity (``weights``,
    :func:`sensitivity`): the quantisation step at which its distortion and its bits cost
    alike, so ``log2(1 + |δ|/s)`` is about the bits a change of δ takes once quantised. A
    change worth fewer bits than it gains stays small; the update the fit ends at then costs
    fewer bytes for nearly the same gain (docs/measurements.md, "The update's rate in the
    fit's loss")."""
    scale = weight * mu / math.log(2)
    steps = [torch.sqrt(6 * mu / (w.clamp_min(1e-12) * math.log(2))) for w in weights]

    def add(trained: Sequence[Tensor]) -> None:
        with torch.no_grad():
            for p, b, s in zip(trained, base, steps, strict=True):
                delta = p - b
                assert p.grad is not None
                p.grad += scale * torch.sign(delta) / (s + delta.abs())

    return add


def output_distortion(
    model: PostProcessor, upsampled: Sequence[Picture], size: tuple[int, int], cfg: AdaptConfig
) -> Distortion:
    """ΔD of an error in one tensor of ``model``, measured: the 6:1:1 MSE (8-bit units)
    between the outputs with and without the error on one seeded batch of ``2·cfg.batch``
    crops (the Gauss–Newton quadratic form of the whole tensor, coherent errors included).

    Safe to call from several threads at once: each thread measures on a copy of ``model``
    of its own (the same weights, so the same figures), whose weights are restored bit for
    bit after each measurement; ``model`` itself is not changed."""
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    (y, uv), _ = _batch(upsampled, upsampled, size, replace(cfg, batch=2 * cfg.batch), gen)
    with torch.no_grad():
        base = model.restore(y, uv)
    local = threading.local()

    def measure(name: str, error: np.ndarray) -> float:
        if not hasattr(local, "model"):
            local.model = copy.deepcopy(model)
            local.params = dict(local.model.named_parameters())
        mine: PostProcessor = local.model
        p = local.params[name]
        with torch.no_grad():
            saved = p.detach().clone()
            p.add_(torch.from_numpy(np.ascontiguousarray(error, np.float32)))
            out = mine.restore(y, uv)
            p.copy_(saved)
        return float(mse_8bit(*out, *base))

    return measure


def _larger(a: Subset, b: Subset) -> Subset:
    rungs = ladder()
    return a if rungs.index(a) >= rungs.index(b) else b


def _encode(
    post: PostProcessor,
    model: PostProcessor,
    start: Update | None,
    in_force: dict[str, Tensor],
    upsampled: Sequence[Picture],
    size: tuple[int, int],
    samples: int,
    cfg: AdaptConfig,
) -> tuple[bytes, Subset, int]:
    """The update's bytes, its subset and parameter count: relative to ``in_force`` (the
    weights the fit started from) or, absolute, to the bank's weights over ``cfg.subset``
    and the update in force's subset, whichever is larger (so nothing in force is lost)."""
    params = dict(model.named_parameters())
    if cfg.relative:
        subset, base = cfg.subset, in_force
    else:
        subset = cfg.subset if start is None else _larger(cfg.subset, start.subset)
        bank = dict(post.named_parameters())
        base = {n: bank[n].detach() for n in subset_names(post, subset)}
    deltas = {n: params[n].detach().contiguous() - b for n, b in base.items()}
    count = sum(d.numel() for d in deltas.values())
    if cfg.quant != Quant.RD:
        return encode_update(deltas, subset, cfg.quant, cfg.levels), subset, count
    assert cfg.rd_lambda is not None
    weights = sensitivity(model, list(deltas), upsampled, size, cfg)
    mu = rd_mu(cfg.rd_lambda, samples)
    measure = output_distortion(model, upsampled, size, cfg)
    update = encode_update_rd(deltas, subset, weights, mu, cfg.relative, measure, pool=_shard_pool)
    return update, subset, count


def fit(
    post: PostProcessor,
    decoded: Sequence[Picture],
    sources: Sequence[Picture],
    cfg: AdaptConfig,
    *,
    start: Update | None = None,
    segment_frames: int | None = None,
) -> Fitted:
    """Fine-tune ``cfg.subset`` of a copy of ``post`` on ``decoded`` bottleneck frames against
    their ``sources`` (same order, normalised); return the quantised, compressed update.

    ``start``: the resolved update in force (the previous segment's), to continue from
    instead of the bank's weights (warm start); with ``cfg.relative`` the update carries the
    change to it. ``segment_frames``: frames in the segment the pictures were held from
    (default: as many as given), for the step rule and the price of a bit."""
    return fit_forms(
        post, decoded, sources, cfg, (cfg.relative,), start=start, segment_frames=segment_frames
    )[0]


def fit_forms(
    post: PostProcessor,
    decoded: Sequence[Picture],
    sources: Sequence[Picture],
    cfg: AdaptConfig,
    forms: Sequence[bool],
    *,
    start: Update | None = None,
    segment_frames: int | None = None,
    init: Mapping[str, Tensor] | None = None,
) -> list[Fitted]:
    """:func:`fit` trained once and encoded in each of ``forms`` (``True``: relative to
    ``start``, ``False``: absolute): a warm-started absolute update and a relative one come
    from the very same weights, so trying both costs one fit. ``seconds`` of each is the
    training plus its own encoding.

    ``init``: weights (by name, within ``cfg.subset``) the training begins from instead of
    ``start``'s, such as a lower rung's :attr:`Fitted.weights` on the same pictures; the
    update is still coded against ``start`` (relative) or the bank (absolute), so the
    decoder needs nothing of them."""
    for relative in forms:
        _check(decoded, sources, replace(cfg, relative=relative), start)
    t0 = time.perf_counter()
    out = []
    with one_torch_thread():
        model = copy.deepcopy(post) if start is None else apply_update(post, start)
        # the copy fits and is measured in channels-last layout, where the depthwise and 1×1
        # convolutions run faster on CPU (docs/measurements.md, "The ladder from the biases
        # and the tail"); what leaves this function is in the default layout. (torch's stubs
        # lack Module.to's memory_format.)
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        height, width = sources[0][0].shape[-2:]
        with torch.no_grad():
            upsampled = [model.upsample(y, uv, height, width) for y, uv in decoded]
        size = (min(cfg.crop, height), min(cfg.crop, width))  # all even
        samples = (segment_frames or len(decoded)) * height * width
        steps = step_count(cfg, samples, size)
        names = subset_names(model, cfg.subset)
        params = dict(model.named_parameters())
        in_force = {n: params[n].detach().clone() for n in names}
        if init is not None:
            _begin_at(params, names, init)
        rate = None
        if cfg.rate_weight > 0 and cfg.quant == Quant.RD and steps > 0:
            rate = _priced(model, names, in_force, upsampled, size, samples, cfg)
        losses = _train(model, names, (upsampled, sources), size, steps, cfg, rate)
        trained = time.perf_counter() - t0
        weights = {
            n: params[n].detach().clone(memory_format=torch.contiguous_format) for n in names
        }
        for relative in forms:
            t1 = time.perf_counter()
            form = replace(cfg, relative=relative)
            update, subset, count = _encode(
                post, model, start, in_force, upsampled, size, samples, form
            )
            out.append(
                Fitted(
                    update=update,
                    params=count,
                    seconds=trained + time.perf_counter() - t1,
                    loss_first=losses[0] if losses else float("nan"),
                    loss_last=losses[-1] if losses else float("nan"),
                    steps=steps,
                    subset=subset,
                    relative=relative,
                    weights=weights,
                )
            )
    return out


def _priced(
    model: PostProcessor,
    names: list[str],
    base: Mapping[str, Tensor],
    upsampled: Sequence[Picture],
    size: tuple[int, int],
    samples: int,
    cfg: AdaptConfig,
) -> Callable[[Sequence[Tensor]], None]:
    """The fit's rate gradient (:func:`rate_gradient`) for ``names``, priced at ``cfg``'s λ
    over ``samples``, the sensitivities measured where the fit begins."""
    assert cfg.rd_lambda is not None  # Quant.RD's (checked by _check)
    weights = sensitivity(model, names, upsampled, size, cfg)
    mu = rd_mu(cfg.rd_lambda, samples)
    return rate_gradient([base[n] for n in names], [weights[n] for n in names], mu, cfg.rate_weight)


def _begin_at(
    params: Mapping[str, Tensor], names: Sequence[str], init: Mapping[str, Tensor]
) -> None:
    """Set the parameters of ``init`` (all of them among ``names``) to its values."""
    outside = set(init) - set(names)
    if outside:
        raise ValueError(f"init holds parameters outside the subset trained: {sorted(outside)}")
    with torch.no_grad():
        for name, value in init.items():
            params[name].copy_(value)


def ladder_plan(
    cfg: AdaptConfig, samples: int, crop: tuple[int, int], budget_s: float | None
) -> list[tuple[Subset, int]]:
    """The rungs the encoder fits for one candidate of one segment, smallest first, and the
    steps of each: the ladder from ``cfg.subset`` up (the default, the biases and the last
    two convolutions, leaves out the biases alone, whose update the next rung's beat in 107
    of 108 climbs: docs/measurements.md, "The ladder from the biases and the tail"),
    :func:`step_count` steps a rung, while ``budget_s`` (seconds by the fixed
    :func:`step_seconds` model, for all the rungs together; None: no bound) pays for them.

    Under a budget the climb has two rungs, the first and the top one (every parameter),
    which gets what the first leaves: in the same time every parameter gains more than the
    decoder half (docs/measurements.md, "Every parameter as the second rung, and a bit
    priced at the slope"). Without one, every rung from the first.

    The first rung gets at least :data:`MIN_STEPS` (or its own count, if smaller) even when
    the budget pays for fewer, so a positive budget always tries the smallest update; a
    later rung the rest of the budget cannot pay :data:`MIN_STEPS` for is not fitted, nor
    any above it. A budget of 0 (or ``cfg.steps`` 0) fits nothing. Deterministic: the same
    arguments, the same plan."""
    if budget_s is not None and budget_s <= 0:
        return []
    plan: list[tuple[Subset, int]] = []
    left = budget_s
    rungs = ladder()
    climbed = rungs[rungs.index(cfg.subset) :]
    if budget_s is not None and len(climbed) > 2:
        climbed = (climbed[0], climbed[-1])
    for rung in climbed:
        steps = step_count(replace(cfg, subset=rung, budget_s=None), samples, crop)
        if steps <= 0:
            break
        if left is not None:
            cost = step_seconds(rung, cfg.batch, crop)
            floor = min(steps, MIN_STEPS)
            affordable = int(left // cost)
            if affordable < floor and plan:
                break
            steps = min(steps, max(affordable, floor))
            left -= steps * cost
        plan.append((rung, steps))
    return plan
