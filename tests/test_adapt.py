"""Content adaptation: updates as bytes, the fit, and the encoder and decoder around them."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import shutil
import signal
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wrapcodec import adapt
from wrapcodec.adapt import (
    MIN_STEPS,
    REFERENCE_SAMPLES,
    AdaptConfig,
    fit,
    fit_forms,
    held_frames,
    learning_rate,
    output_distortion,
    planned_steps,
    rate_gradient,
    sensitivity,
    shard_threads,
    step_count,
    training_frames,
)
from wrapcodec.adaptation import adapt_and_measure
from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import Bank, get_bank
from wrapcodec.cli import cli
from wrapcodec.container import pack, read_wrp, unpack
from wrapcodec.errors import ContainerError
from wrapcodec.metrics import measure_files
from wrapcodec.nets import PostProcessor, mse_8bit
from wrapcodec.options import OPTIONS
from wrapcodec.pipeline import Layout, code_and_measure
from wrapcodec.update import (
    Quant,
    Subset,
    Update,
    apply_update,
    decode_update,
    encode_update,
    ladder,
    resolve,
    subset_names,
    subset_size,
)
from wrapcodec.y4m import read_info

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def bank() -> Bank:
    return get_bank()


@pytest.fixture(scope="module")
def post(bank: Bank) -> PostProcessor:
    return bank.processors(OPTIONS[2]).post


def _deltas(post: PostProcessor, subset: Subset, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = dict(post.named_parameters())
    return {
        n: 0.01 * torch.randn(params[n].shape, generator=gen) for n in subset_names(post, subset)
    }


# -- updates as bytes -------------------------------------------------------------------------


def test_bias_tail_subset_is_every_bias_the_tail_and_chroma(post: PostProcessor) -> None:
    names = subset_names(post, Subset.BIAS_TAIL)
    assert {"tail.weight", "tail.bias", "chroma.weight", "chroma.bias", "head.bias"} <= set(names)
    assert not any(
        n.endswith(".weight") and n.split(".")[0] not in ("tail", "chroma") for n in names
    )
    assert subset_size(post, Subset.BIAS_TAIL) == 536  # the default PostConfig
    assert subset_size(post, Subset.ALL) == sum(p.numel() for p in post.parameters())


@pytest.mark.parametrize(("quant", "tolerance"), [(Quant.FLOAT16, 2**-11), (Quant.INT8, 0.5 / 127)])
@pytest.mark.parametrize("subset", [Subset.BIAS_TAIL, Subset.ALL])
def test_update_round_trip(
    post: PostProcessor, subset: Subset, quant: Quant, tolerance: float
) -> None:
    deltas = _deltas(post, subset)
    update = decode_update(encode_update(deltas, subset, quant), post)
    assert (update.subset, update.quant) == (subset, quant)
    assert list(update.deltas) == list(deltas)
    for name, d in deltas.items():
        peak = float(d.abs().max())
        err = float((update.deltas[name] - d).abs().max())
        assert err <= tolerance * peak * (1 + 1e-6), name  # relative to the tensor's peak


def test_int8_update_is_smaller_than_float16(post: PostProcessor) -> None:
    deltas = _deltas(post, Subset.BIAS_TAIL)
    int8 = encode_update(deltas, Subset.BIAS_TAIL, Quant.INT8)
    f16 = encode_update(deltas, Subset.BIAS_TAIL, Quant.FLOAT16)
    assert len(int8) < 0.75 * len(f16)


def test_pinned_update_bytes_decode(post: PostProcessor) -> None:
    """tests/data/update_example.bin: subset 1, int8; every delta of tensor k is (k+1)·1e-3
    (stored as scale (k+1)·1e-3/127 and q = 127). If this fails, the update layout changed."""
    data = (DATA / "update_example.bin").read_bytes()
    assert data[:2] == b"\x01\x02"
    update = decode_update(data, post)
    for k, (name, d) in enumerate(update.deltas.items()):
        assert torch.allclose(d, torch.full_like(d, (k + 1) * 1e-3), atol=1e-9), name


def test_apply_update_adds_deltas_and_leaves_the_bank_alone(post: PostProcessor) -> None:
    before = {n: p.detach().clone() for n, p in post.named_parameters()}
    update = decode_update(
        encode_update(_deltas(post, Subset.BIAS_TAIL), Subset.BIAS_TAIL, Quant.INT8), post
    )
    adapted = apply_update(post, update)
    for name, p in post.named_parameters():
        assert torch.equal(p, before[name])
    adapted_params = dict(adapted.named_parameters())
    for name, d in update.deltas.items():
        assert torch.equal(adapted_params[name], before[name] + d)
    assert torch.equal(adapted_params["enc0.0.pw.weight"], before["enc0.0.pw.weight"])


def _body(post: PostProcessor, subset: Subset) -> bytes:
    return zlib.decompress(encode_update(_deltas(post, subset), subset, Quant.INT8)[2:])


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda u, p: u[:1], "shorter than its preamble"),
        (lambda u, p: b"\x09" + u[1:], "unknown update subset 9"),
        (lambda u, p: u[:1] + b"\x07" + u[2:], "unknown update quantisation 7"),
        (lambda u, p: u[:2] + b"not zlib at all", "not a valid zlib stream"),
        (lambda u, p: u[:-3], "truncated"),
        (lambda u, p: u + b"junk", "after the update's zlib stream"),
        # an update for every parameter, labelled as the small subset: made for another model
        (lambda u, p: b"\x01\x02" + zlib.compress(_body(p, Subset.ALL)), "another model"),
        (lambda u, p: b"\x02\x02" + u[2:], "another model"),
        (
            lambda u, p: (
                b"\x01\x02"
                + zlib.compress(struct.pack("<f", np.inf) + _body(p, Subset.BIAS_TAIL)[4:])
            ),
            "not finite",
        ),
    ],
)
def test_corrupt_or_foreign_updates_are_refused(
    post: PostProcessor, mangle: Callable[[bytes, PostProcessor], bytes], message: str
) -> None:
    good = encode_update(_deltas(post, Subset.BIAS_TAIL), Subset.BIAS_TAIL, Quant.INT8)
    with pytest.raises(ContainerError, match=message):
        decode_update(mangle(good, post), post)


def test_training_frames_spread_over_the_segment() -> None:
    assert training_frames(5, 30) == [0, 1, 2, 3, 4]
    picks = training_frames(300, 30)
    assert len(picks) == 30 and picks[0] == 0 and picks[-1] == 299
    assert max(np.diff(picks)) - min(np.diff(picks)) <= 1


def test_training_frames_of_one() -> None:
    assert training_frames(9, 1) == [4]


def test_held_frames_span_the_segment_under_a_memory_cap() -> None:
    assert held_frames(300, 720, 1280, AdaptConfig()) == training_frames(300, 30)  # today's
    grow = AdaptConfig(grow=True, hold_mib=256.0)
    assert held_frames(12, 720, 1280, grow) == list(range(12))  # all of a short segment
    picks = held_frames(3000, 720, 1280, grow)
    per_frame = 3 * 1.5 * 4 * 720 * 1280
    assert len(picks) == int(256 * 2**20 // per_frame) == 16
    assert picks[0] == 0 and picks[-1] == 2999  # the whole segment, evenly
    assert held_frames(3000, 4320, 7680, AdaptConfig(grow=True, hold_mib=1.0)) == [1499]


def test_planned_steps_grow_with_the_segment_and_the_rung() -> None:
    assert planned_steps(Subset.BIAS_TAIL, REFERENCE_SAMPLES) == 300
    assert planned_steps(Subset.ALL, REFERENCE_SAMPLES) == 5000
    sizes = [REFERENCE_SAMPLES // 1000, REFERENCE_SAMPLES // 4, REFERENCE_SAMPLES * 4]
    steps = [planned_steps(Subset.BIAS_TAIL, n) for n in sizes]
    assert steps == [MIN_STEPS, 150, 600]
    assert planned_steps(Subset.BIAS_TAIL, REFERENCE_SAMPLES * 10**4) == 1200  # capped
    for n in sizes:
        per_rung = [planned_steps(s, n) for s in ladder()]
        assert per_rung == sorted(per_rung)


def test_budget_converts_to_steps_before_the_fit() -> None:
    crop = (128, 128)
    assert step_count(AdaptConfig(), 10**6, crop) == 300  # today: fixed steps
    assert step_count(AdaptConfig(steps=0, grow=True), 10**9, crop) == 0  # off stays off
    grow = AdaptConfig(grow=True, subset=Subset.ALL)
    assert step_count(grow, REFERENCE_SAMPLES, crop) == 5000
    budget = AdaptConfig(grow=True, subset=Subset.ALL, budget_s=10.0)
    steps = step_count(budget, REFERENCE_SAMPLES, crop)
    assert 0 < steps < 5000 and steps == step_count(budget, REFERENCE_SAMPLES, crop)
    assert step_count(AdaptConfig(budget_s=20.0), 10**6, (64, 64)) > steps  # smaller crops
    assert step_count(AdaptConfig(budget_s=0.0), 10**6, crop) == 0


def test_learning_rate_warms_up_then_decays_towards_zero() -> None:
    cfg = AdaptConfig(peak_lr=5e-3)
    rates = [learning_rate(cfg, k, 300) for k in range(300)]
    assert rates[:15] == pytest.approx([5e-3 * (k + 1) / 15 for k in range(15)])
    assert max(rates) == rates[14] == pytest.approx(5e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[14:]))  # no rise after
    assert rates[157] == pytest.approx(2.5e-3, rel=0.01)  # half-way down the cosine
    assert 0 < rates[-1] < 1e-6
    n = adapt.SCHEDULED_STEPS
    assert [learning_rate(cfg, k, n) for k in (0, 1, 2)] == pytest.approx([2.5e-3, 5e-3, 5e-3])


def test_a_short_fit_keeps_a_constant_rate() -> None:
    cfg = AdaptConfig(lr=2e-3, peak_lr=5e-3)
    n = adapt.SCHEDULED_STEPS - 1
    assert {learning_rate(cfg, k, n) for k in range(n)} == {2e-3}
    assert learning_rate(cfg, 0, 1) == 2e-3


def test_a_fit_steps_at_the_scheduled_rates(
    post: PostProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Adam step of a fit is taken at :func:`learning_rate` of its index."""
    seen: list[float] = []
    step = adapt.Adam.step

    def record(self: adapt.Adam) -> None:
        seen.append(self.lr)
        step(self)

    monkeypatch.setattr(adapt.Adam, "step", record)
    decoded, sources = _pictures()
    cfg = AdaptConfig(steps=adapt.SCHEDULED_STEPS, crop=32, batch=2, peak_lr=2e-3)
    fit(post, decoded, sources, cfg)
    assert seen == [learning_rate(cfg, k, cfg.steps) for k in range(cfg.steps)]
    assert len(set(seen)) > 10  # scheduled, not constant


def _pictures(frames: int = 2) -> tuple[list, list]:
    gen = torch.Generator().manual_seed(3)
    sources, decoded = [], []
    for _ in range(frames):
        y = torch.rand(1, 1, 64, 96, generator=gen) * 2 - 1
        uv = torch.rand(1, 2, 32, 48, generator=gen) * 2 - 1
        sources.append((y, uv))
        decoded.append((y[..., ::2, ::2] + 0.05, uv[..., ::2, ::2]))
    return decoded, sources


RD = AdaptConfig(steps=15, crop=32, batch=2, quant=Quant.RD, rd_lambda=50.0)


def test_fit_checks_its_configuration(post: PostProcessor) -> None:
    decoded, sources = _pictures()
    with pytest.raises(ValueError, match="rd_lambda"):
        fit(post, decoded, sources, AdaptConfig(steps=1, quant=Quant.RD))
    with pytest.raises(ValueError, match="relative update needs"):
        fit(
            post,
            decoded,
            sources,
            AdaptConfig(steps=1, quant=Quant.RD, rd_lambda=1.0, relative=True),
        )
    relative = Update(Subset.BIAS, Quant.RD, {}, relative=True)
    with pytest.raises(ValueError, match="resolved"):
        fit(post, decoded, sources, RD, start=relative)


@pytest.mark.slow  # five fits of a real network
def test_rd_fit_is_smaller_than_int8_and_deterministic(post: PostProcessor) -> None:
    decoded, sources = _pictures()
    int8 = fit(post, decoded, sources, AdaptConfig(steps=15, crop=32, batch=2))
    rd = fit(post, decoded, sources, RD)
    assert rd.update[:3] == b"\x01\x03\x00" and rd.steps == 15 and rd.params == 536
    assert len(rd.update) < len(int8.update) / 2
    assert fit(post, decoded, sources, RD).update == rd.update
    # a dearer bit sends less; a bit priced at nothing sends more
    dear = fit(post, decoded, sources, AdaptConfig(**{**RD.__dict__, "rd_lambda": 1e6}))
    cheap = fit(post, decoded, sources, AdaptConfig(**{**RD.__dict__, "rd_lambda": 1e-3}))
    assert len(dear.update) < len(rd.update) < len(cheap.update)


def test_rate_gradient_is_the_gradient_of_the_rate() -> None:
    """What rate_gradient adds is autograd's gradient of weight·μ·Σ log2(1 + |δ|/s),
    s = √(6μ/(w ln 2)), at changes δ from the base away from 0."""
    gen = torch.Generator().manual_seed(5)
    base = [torch.randn(3, 4, generator=gen), torch.randn(6, generator=gen)]
    weights = [torch.rand(3, 4, generator=gen) * 100 + 1, torch.rand(6, generator=gen) * 10 + 1]
    trained = [b + torch.randn(b.shape, generator=gen) * 0.1 for b in base]
    mu, weight = 2.5, 0.7
    ours = [t.clone() for t in trained]
    for t in ours:
        t.grad = torch.zeros_like(t)
    rate_gradient(base, weights, mu, weight)(ours)
    leaves = [t.clone().requires_grad_(True) for t in trained]
    rate = sum(
        (
            torch.log2(1 + (t - b).abs() / torch.sqrt(6 * mu / (w * math.log(2)))).sum()
            for t, b, w in zip(leaves, base, weights, strict=True)
        ),
        torch.tensor(0.0),
    )
    (weight * mu * rate).backward()
    for mine, leaf in zip(ours, leaves, strict=True):
        assert mine.grad is not None and leaf.grad is not None
        assert torch.allclose(mine.grad, leaf.grad, rtol=1e-5, atol=1e-7)


def test_an_int8_update_has_no_price_to_fit_to(post: PostProcessor) -> None:
    """Only an update quantised by rate and distortion has a price for its bits: an INT8
    fit is the same with and without the rate's weight."""
    decoded, sources = _pictures()
    cfg = AdaptConfig(steps=3, crop=32, batch=2)
    assert cfg.rate_weight > 0
    unpriced = fit(post, decoded, sources, replace(cfg, rate_weight=0.0))
    assert fit(post, decoded, sources, cfg).update == unpriced.update


@pytest.mark.slow  # three fits of a real network
def test_warm_start_continues_from_the_update_in_force(post: PostProcessor) -> None:
    decoded, sources = _pictures()
    first = fit(post, decoded, sources, RD)
    in_force = decode_update(first.update, post)
    relative = AdaptConfig(**{**RD.__dict__, "relative": True, "subset": Subset.BIAS})
    again = fit(post, decoded, sources, relative, start=in_force, segment_frames=40)
    change = decode_update(again.update, post)
    assert change.relative and again.relative and again.subset == Subset.BIAS
    resolved = resolve(change, in_force)
    assert resolved.subset == Subset.BIAS_TAIL  # the tail in force stays in force
    assert torch.equal(resolved.deltas["tail.weight"], in_force.deltas["tail.weight"])
    # warm, the first loss is the cold fit's last one's neighbourhood, not the bank's
    assert again.loss_first < first.loss_first
    # absolute from a warm start carries the larger subset, so nothing in force is lost
    warm_abs = fit(
        post,
        decoded,
        sources,
        AdaptConfig(**{**RD.__dict__, "subset": Subset.BIAS}),
        start=in_force,
    )
    assert (
        warm_abs.subset == Subset.BIAS_TAIL
        and decode_update(warm_abs.update, post).subset == Subset.BIAS_TAIL
    )


def test_the_fits_layout_stays_inside_the_fit(post: PostProcessor) -> None:
    """The copy a fit trains runs in channels-last layout; the weights it hands back, and
    the bank's post-processor it copied, are in the default layout."""
    decoded, sources = _pictures()
    fitted = fit(post, decoded, sources, RD)
    assert fitted.weights and all(w.is_contiguous() for w in fitted.weights.values())
    assert all(p.is_contiguous() for p in post.parameters())


@pytest.mark.slow  # three fits of a real network
def test_a_higher_rung_begins_where_the_rung_below_ended(post: PostProcessor) -> None:
    """``init`` starts the training from a lower rung's float weights: the first loss is
    that rung's neighbourhood, not the bank's, and the update is still coded against the
    bank (absolute) or the update in force (relative), over the higher rung."""
    decoded, sources = _pictures()
    bias = fit(post, decoded, sources, AdaptConfig(**{**RD.__dict__, "subset": Subset.BIAS}))
    assert set(bias.weights) == set(subset_names(post, Subset.BIAS))
    cold = fit(post, decoded, sources, RD)
    (warm,) = fit_forms(post, decoded, sources, RD, (False,), init=bias.weights)
    assert warm.loss_first < cold.loss_first
    assert warm.loss_first <= bias.loss_last * 1.5
    update = decode_update(warm.update, post)
    assert not update.relative and update.subset == Subset.BIAS_TAIL
    # a delta of the absolute update is the trained weight minus the bank's, to its step
    bank = dict(post.named_parameters())
    name = "tail.bias"
    step = (warm.weights[name] - bank[name].detach() - update.deltas[name]).abs().max()
    assert step < 0.5 * (warm.weights[name] - bank[name].detach()).abs().max()
    with pytest.raises(ValueError, match="outside the subset"):
        bigger = {**cold.weights, "head.weight": torch.zeros(1)}
        fit_forms(post, decoded, sources, RD, (False,), init=bigger)


@pytest.mark.parametrize("batch", [2, 3])
def test_shards_sum_to_the_batch_gradient(post: PostProcessor, batch: int) -> None:
    """A step's gradient summed over its shards is the gradient of the whole batch's loss,
    uneven shards (3 crops) included, and its loss is the batch's."""
    model = copy.deepcopy(post)
    names = subset_names(model, Subset.BIAS_TAIL)
    params = dict(model.named_parameters())
    trained = [params[n] for n in names]
    for n, p in params.items():
        p.requires_grad_(n in names)
    gen = torch.Generator().manual_seed(5)
    y, uv = torch.rand(batch, 1, 32, 32, generator=gen), torch.rand(batch, 2, 16, 16, generator=gen)
    ty, tuv = y + 0.1 * torch.rand(y.shape, generator=gen), uv.clone()
    loss = adapt._gradients(model, trained, ((y, uv), (ty, tuv)))
    sharded = [p.grad.clone() for p in trained]
    whole = mse_8bit(*model.restore(y, uv), ty, tuv)
    assert loss == pytest.approx(whole.item(), rel=1e-5)
    for got, want in zip(sharded, torch.autograd.grad(whole, trained), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_a_fit_on_shard_threads_is_the_fit_on_one(post: PostProcessor) -> None:
    """The shards of every step, and the tensors' quantisation steps, are searched on two
    threads: the same update, to the byte."""
    decoded, sources = _pictures()
    cfg = AdaptConfig(**{**RD.__dict__, "batch": 3})
    alone = fit(post, decoded, sources, cfg)
    with shard_threads(2):
        assert adapt._shard_pool is not None
        threaded = fit(post, decoded, sources, cfg)
    assert adapt._shard_pool is None
    assert threaded.update == alone.update and threaded.loss_last == alone.loss_last


def test_output_distortion_measures_the_same_on_several_threads(post: PostProcessor) -> None:
    """Each thread measures on a copy of its own: the figures of one thread, and the model
    left as it was."""
    decoded, _ = _pictures()
    model = copy.deepcopy(post)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    upsampled = [model.upsample(y, uv, 64, 96) for y, uv in decoded]
    measure = output_distortion(model, upsampled, (32, 32), RD)
    gen = np.random.default_rng(4)
    errors = [
        (name, 0.01 * gen.standard_normal(tuple(p.shape)).astype(np.float32))
        for name, p in model.named_parameters()
        for _ in range(2)
    ]
    alone = [measure(name, e) for name, e in errors]
    assert all(d > 0 for d in alone)
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = list(pool.map(lambda job: measure(*job), errors))
    assert threaded == alone
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


@pytest.mark.slow  # 100 backward passes through a real network
def test_sensitivity_is_the_gauss_newton_diagonal(post: PostProcessor) -> None:
    """The tail's bias adds to one residual channel: ∂f/∂b is 1 on a quarter of the luma
    samples (channels 0–3) or on a whole chroma plane (4, 5), so the diagonal is exactly
    6/4 · s or s, s = (255/2)²/8 in 8-bit units; the probes estimate it."""
    y = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    uv = torch.zeros(1, 2, 16, 16)
    cfg = AdaptConfig(crop=32, batch=1, probes=100)
    model = copy.deepcopy(post)
    w = sensitivity(model, ["tail.bias"], [(y, uv)], (32, 32), cfg)["tail.bias"]
    s = (255 / 2) ** 2 / 8
    expected = torch.tensor([1.5 * s] * 4 + [s] * 2)
    assert torch.allclose(w, expected, rtol=0.45)  # 100 probes: about 14 % apart


# -- the fit on a real coded clip ---------------------------------------------------------------


@pytest.fixture(scope="module")
def coded_post_1_2(
    clip8: Path, bank: Bank, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Layout, Path, float]:
    backend = get_backend("x265")
    layout = Layout.make(read_info(clip8), OPTIONS[2], backend, 10, bank)
    stream = tmp_path_factory.mktemp("adapt") / "s.265"
    settings = EncodeSettings(qp=37, preset="ultrafast")
    plain = code_and_measure(backend, settings, clip8, layout, 0, 4, stream)
    return layout, stream, plain.psnr_yuv


def test_adaptation_raises_psnr_and_is_deterministic(
    coded_post_1_2: tuple[Layout, Path, float],
    clip8: Path,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x265")
    layout, stream, plain_psnr = coded_post_1_2
    cfg = AdaptConfig(steps=40, batch=2, crop=64)
    backend = get_backend("x265")
    fitted, adapted = adapt_and_measure(backend, stream, layout, clip8, 0, 4, cfg)
    assert fitted.params == 536
    assert adapted.psnr_yuv > plain_psnr + 0.02
    # same input, same update: also when the caller runs torch on another thread count
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        again, _ = adapt_and_measure(backend, stream, layout, clip8, 0, 4, cfg)
    finally:
        torch.set_num_threads(threads)
    assert again.update == fitted.update


def test_a_fit_that_prices_its_rate_sends_fewer_bytes(
    coded_post_1_2: tuple[Layout, Path, float],
    clip8: Path,
    require_backend: Callable[[str], None],
) -> None:
    """On a real coded clip, the same fit with the update's rate in its loss ends nearer the
    bank: a smaller update that still gains, the same for the same inputs."""
    require_backend("x265")
    layout, stream, plain_psnr = coded_post_1_2
    cfg = AdaptConfig(steps=60, batch=2, crop=64, quant=Quant.RD, rd_lambda=581.0)
    backend = get_backend("x265")
    plain, _ = adapt_and_measure(backend, stream, layout, clip8, 0, 4, replace(cfg, rate_weight=0))
    priced_cfg = replace(cfg, rate_weight=1.0)
    priced, adapted = adapt_and_measure(backend, stream, layout, clip8, 0, 4, priced_cfg)
    assert len(priced.update) < len(plain.update)
    assert adapted.psnr_yuv > plain_psnr
    again, _ = adapt_and_measure(backend, stream, layout, clip8, 0, 4, priced_cfg)
    assert again.update == priced.update


def test_fit_needs_matching_pictures(post: PostProcessor) -> None:
    y, uv = torch.zeros(1, 1, 16, 16), torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match="one source picture per decoded picture"):
        fit(post, [(y, uv)], [], AdaptConfig(steps=1))


# -- encoder and decoder ----------------------------------------------------------------------


def _encode(runner: CliRunner, src: Path, out: Path, *extra: str) -> dict:
    args = ["encode", str(src), "-o", str(out), "--codec", "x265", "--json"]
    args += ["--effort", "exhaustive"]
    if "--qp" not in extra and "--bitrate" not in extra:
        args += ["--qp", "37"]
    result = runner.invoke(cli, [*args, "--preset", "ultrafast", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def adapted_file(clip8: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    wrp = tmp_path_factory.mktemp("adapted") / "a.wrp"
    report = _encode(CliRunner(), clip8, wrp, "--options", "0,2", "--adapt-steps", "40")
    return wrp, report


def test_encode_reports_and_sends_the_update(
    adapted_file: tuple[Path, dict], runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    wrp, report = adapted_file
    post = next(c for c in report["candidates"] if c["code"] == 2)
    direct = next(c for c in report["candidates"] if c["code"] == 0)
    a = post["adaptation"]
    assert direct["adaptation"] is None
    assert a["steps"] == 40 and a["gain_db"] > 0
    # every rung of the ladder from the biases and tail at 40 steps (no budget at exhaustive),
    # the best J reported
    assert [t["rung"] for t in a["tried"]][:2] == ["bias_tail", "decoder"]
    assert all(t["steps"] == 40 and not t["relative"] for t in a["tried"])
    best = min(a["tried"], key=lambda t: t["cost"])
    assert (a["rung"], a["params"], a["cost_with"]) == (best["rung"], best["params"], best["cost"])
    assert a["params"] == {"bias": 428, "bias_tail": 536, "decoder": 2636, "all": 7488}[a["rung"]]
    assert a["used"] == (a["cost_with"] < a["cost_without"])
    assert post["cost"] == min(a["cost_with"], a["cost_without"])
    assert report["bits"] == 8 * wrp.stat().st_size  # the update is in the rate
    info = json.loads(runner.invoke(cli, ["info", str(wrp), "--json"]).stdout)
    assert info["version"] == 2
    segment = info["segments"][0]
    if report["option"] == 2 and a["used"]:
        assert segment["update_bytes"] == a["bytes"] > 0
    else:
        assert segment["update_bytes"] == 0


def test_decoder_applies_the_update_exactly(
    parkjoy: Path,
    tmp_path: Path,
    runner: CliRunner,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x265")
    wrp = tmp_path / "p.wrp"
    report = _encode(runner, parkjoy, wrp, "--options", "2", "--adapt-steps", "40")
    assert report["candidates"][0]["adaptation"]["used"]
    header, segments = read_wrp(wrp)
    assert segments[0].update
    out = tmp_path / "p.y4m"
    assert runner.invoke(cli, ["decode", str(wrp), "-o", str(out)]).exit_code == 0
    assert measure_files(str(parkjoy), str(out)).psnr_yuv == pytest.approx(
        report["psnr_yuv"], abs=1e-9
    )
    # and the update is what lifts it: the same stream without it decodes lower
    bare = tmp_path / "bare.wrp"
    bare.write_bytes(
        pack(header, [segments[0].__class__(**{**segments[0].__dict__, "update": b""})])
    )
    out_bare = tmp_path / "bare.y4m"
    assert runner.invoke(cli, ["decode", str(bare), "-o", str(out_bare)]).exit_code == 0
    assert measure_files(str(parkjoy), str(out_bare)).psnr_yuv < report["psnr_yuv"]


def test_same_input_same_file(
    adapted_file: tuple[Path, dict], clip8: Path, tmp_path: Path, runner: CliRunner
) -> None:
    wrp, _ = adapted_file
    again = tmp_path / "again.wrp"
    _encode(runner, clip8, again, "--options", "0,2", "--adapt-steps", "40")
    assert again.read_bytes() == wrp.read_bytes()


@pytest.mark.slow  # two encodes, each adapting two candidates
def test_candidates_adapted_at_once_give_the_file_of_one_after_the_other(
    clip8: Path, tmp_path: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    """With --jobs 2 the neural candidates are adapted on two threads at once: the same
    updates, report figures and bytes as with --jobs 1."""
    require_backend("x265")
    args = ["--options", "0,1,5", "--effort", "exhaustive", "--adapt-steps", "30"]
    one = _encode(runner, clip8, tmp_path / "one.wrp", *args, "--jobs", "1")
    two = _encode(runner, clip8, tmp_path / "two.wrp", *args, "--jobs", "2")
    assert (tmp_path / "one.wrp").read_bytes() == (tmp_path / "two.wrp").read_bytes()

    def tried(report: dict) -> list[list[dict]]:  # every update fitted, less its seconds
        runs = [(c.get("adaptation") or {}).get("tried") or [] for c in report["candidates"]]
        return [[{k: v for k, v in t.items() if k != "seconds"} for t in run] for run in runs]

    assert tried(one) == tried(two) and len([run for run in tried(two) if run]) == 2


def test_a_fit_ends_when_a_signal_has_come(
    post: PostProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit on a worker thread, which the signal handler does not interrupt, checks for a
    signal at every step and ends with its exception."""
    from wrapcodec import interrupt

    decoded, sources = _pictures()
    monkeypatch.setattr(interrupt, "_received", [signal.SIGTERM])
    with pytest.raises(interrupt.Terminated):
        fit(post, decoded, sources, RD)


def test_corrupt_update_is_refused_with_one_line(
    clip8: Path, tmp_path: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    wrp = tmp_path / "p.wrp"
    _encode(runner, clip8, wrp, "--options", "2", "--adapt-steps", "20")
    header, segments = unpack(wrp.read_bytes())
    seg = segments[0]
    # byte 2: quantisation 3's flags, reserved bits set (int8's would be a broken zlib header)
    broken = seg.__class__(**{**seg.__dict__, "update": seg.update[:2] + b"\xfe" + seg.update[3:]})
    bad = tmp_path / "bad.wrp"
    bad.write_bytes(pack(header, [broken]))  # a valid CRC: only the update is wrong
    out = tmp_path / "out.y4m"
    result = runner.invoke(cli, ["decode", str(bad), "-o", str(out)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "segment 0" in lines[0] and "update" in lines[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".out.y4m*"))


def float_bank(dest: Path) -> Path:
    """The shipped bank without its integer arithmetic: what files were made with before."""
    bank = get_bank()
    shutil.copytree(bank.folder, dest, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for card in dest.glob("*.json"):
        data = json.loads(card.read_text())
        data.pop("arithmetic")
        card.write_text(json.dumps(data))
    assert not Bank(dest).integer and Bank(dest).id == bank.id
    return dest


def test_version_1_files_still_decode(
    clip8: Path, tmp_path: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    """A file made in float arithmetic by an earlier wrapcodec, as version 1, decodes with
    the shipped bank to exactly what its encoder measured (on this machine)."""
    require_backend("x265")
    wrp = tmp_path / "n.wrp"
    models = str(float_bank(tmp_path / "float"))
    report = _encode(runner, clip8, wrp, "--options", "6", "--adapt-steps", "0", "--models", models)
    header, segments = read_wrp(wrp)
    assert not header.integer and header.model_bank_id == get_bank().id
    v1 = tmp_path / "v1.wrp"
    v1.write_bytes(pack(header.__class__(**{**header.__dict__, "version": 1}), segments))
    assert v1.read_bytes()[4] == 1
    out = tmp_path / "v1.y4m"
    assert runner.invoke(cli, ["decode", str(v1), "-o", str(out)]).exit_code == 0
    assert measure_files(str(clip8), str(out)).psnr_yuv == pytest.approx(
        report["psnr_yuv"], abs=1e-9
    )


def test_negative_adapt_steps_is_a_usage_error(
    clip8: Path, tmp_path: Path, runner: CliRunner
) -> None:
    result = runner.invoke(
        cli,
        ["encode", str(clip8), "-o", str(tmp_path / "x.wrp"), "--qp", "32", "--adapt-steps", "-1"],
    )
    assert result.exit_code == 2
    assert "--adapt-steps" in result.output


def test_bitrate_budget_holds_with_the_update(
    parkjoy: Path, tmp_path: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    args = ["encode", str(parkjoy), "-o", str(tmp_path / "b.wrp"), "--codec", "x265", "--json"]
    extra = ["--bitrate", "600", "--preset", "ultrafast", "--options", "2", "--adapt-steps", "20"]
    result = runner.invoke(cli, [*args, *extra])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    candidate = report["candidates"][0]
    assert report["kbps"] <= 600
    assert candidate["adaptation"]["cost_with"] is None  # no λ with a budget
    assert report["bits"] == 8 * (tmp_path / "b.wrp").stat().st_size
    if candidate["adaptation"]["used"]:
        assert candidate["adaptation"]["gain_db"] > 0


def test_segments_inherit_the_previous_update_when_it_pays(
    parkjoy: Path, tmp_path: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    wrp = tmp_path / "s.wrp"
    # at QP 42 a bit is dear enough that a segment's fresh update does not always beat the
    # previous one for free (at QP 32 every segment fits its own)
    extra = ["--options", "2", "--segment-frames", "3", "--adapt-steps", "60", "--qp", "42"]
    report = _encode(runner, parkjoy, wrp, *extra, "--lambda", "model")
    _, segments = read_wrp(wrp)
    in_force = False
    for k, (seg, seg_report) in enumerate(zip(segments, report["segments"], strict=True)):
        a = seg_report["candidates"][0]["adaptation"]
        assert (a["inherited_gain_db"] is not None) == in_force, k  # offered when in force
        costs = [a["cost_without"], a["cost_with"]]
        if a["cost_inherited"] is not None:
            costs.append(a["cost_inherited"])
        assert seg_report["candidates"][0]["cost"] == min(costs)
        assert seg.inherit == a["inherited"] and bool(seg.update) == a["used"]
        in_force = a["used"] or a["inherited"]
    # an update fitted on 3 frames carries over to the next 3 for free
    assert any(s.inherit for s in segments)
    info = json.loads(runner.invoke(cli, ["info", str(wrp), "--json"]).stdout)
    assert [s["inherits_update"] for s in info["segments"]] == [s.inherit for s in segments]
    out = tmp_path / "s.y4m"
    assert runner.invoke(cli, ["decode", str(wrp), "-o", str(out)]).exit_code == 0
    assert measure_files(str(parkjoy), str(out)).psnr_yuv == pytest.approx(
        report["psnr_yuv"], abs=1e-9
    )


def test_table_shows_the_adaptation(
    parkjoy: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    args = ["encode", str(parkjoy), "-o", str(tmp_path / "t.wrp"), "--codec", "x265"]
    extra = ["--qp", "32", "--preset", "ultrafast", "--options", "0,2", "--adapt-steps", "20"]
    extra += ["--effort", "exhaustive"]
    result = CliRunner().invoke(cli, [*args, *extra], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "adapt dB" in result.output and "update" in result.output
    row = next(line for line in result.output.splitlines() if "post-1/2" in line)
    assert re.search(r"[+-]\d\.\d\d .* (\d+ B|inherited|—)", row), row
