"""Post-processor updates of quantisation 3 (rate-distortion steps, range-coded), the capacity
ladder, relative updates and their resolution, and the range coder underneath."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapcodec.bank import get_bank
from wrapcodec.entropy import RangeDecoder, RangeEncoder, contexts, estimate_bits, put_int
from wrapcodec.errors import ContainerError
from wrapcodec.nets import PostProcessor
from wrapcodec.options import OPTIONS
from wrapcodec.update import (
    STEP_COUNT,
    Quant,
    Quantised,
    Subset,
    Update,
    apply_update,
    decode_update,
    encode_quantised,
    encode_update,
    encode_update_rd,
    ladder,
    rd_mu,
    resolve,
    step_size,
    subset_names,
    subset_size,
)

DATA = Path(__file__).parent / "data"
POST = get_bank().processors(OPTIONS[2]).post


@pytest.fixture(scope="module")
def post() -> PostProcessor:
    return POST


def _shapes(subset: Subset) -> list[tuple[str, torch.Size]]:
    params = dict(POST.named_parameters())
    return [(n, params[n].shape) for n in subset_names(POST, subset)]


def _deltas(subset: Subset, seed: int = 0, scale: float = 0.01) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: scale * torch.randn(s, generator=gen) for n, s in _shapes(subset)}


def _ones(deltas: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: torch.ones_like(d) for n, d in deltas.items()}


# -- the capacity ladder ----------------------------------------------------------------------


def test_ladder_rungs_are_nested_and_grow(post: PostProcessor) -> None:
    assert [int(s) for s in Subset] == [1, 2, 3, 4]  # stream ids never change meaning
    rungs = ladder()
    assert rungs == (Subset.BIAS, Subset.BIAS_TAIL, Subset.DECODER, Subset.ALL)
    sizes = [subset_size(post, s) for s in rungs]
    assert sizes == [428, 536, 2636, 7488]  # the shipped architecture
    for small, big in itertools.pairwise(rungs):
        assert set(subset_names(post, small)) < set(subset_names(post, big))
    assert all(n.endswith(".bias") for n in subset_names(post, Subset.BIAS))
    decoder = set(subset_names(post, Subset.DECODER)) - set(subset_names(post, Subset.BIAS_TAIL))
    assert {n.split(".")[0] for n in decoder} == {"up2", "dec1", "up1", "dec0"}


# -- the range coder --------------------------------------------------------------------------

INTS = st.integers(min_value=-(2**24) + 1, max_value=2**24 - 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.one_of(st.integers(-3, 3), INTS)), max_size=300))
def test_range_coder_round_trips_any_integers(values: list[tuple[int, int]]) -> None:
    enc, probs = RangeEncoder(), contexts(3)
    for ctx, v in values:
        put_int(enc, probs, ctx, v)
    data = enc.finish()
    dec, probs = RangeDecoder(data), contexts(3)
    assert [dec.get_int(probs, ctx) for ctx, _ in values] == [v for _, v in values]
    dec.finish()


def test_range_coder_refuses_values_it_cannot_code() -> None:
    with pytest.raises(ValueError, match="out of the coder's range"):
        put_int(RangeEncoder(), contexts(1), 0, 2**24)


def test_bit_estimate_is_close_to_the_coded_size() -> None:
    rng = np.random.default_rng(0)
    for scale in (0.3, 3.0, 300.0):
        q = np.rint(rng.laplace(0, scale, 3000)).astype(np.int64)
        enc, probs = RangeEncoder(), contexts(1)
        for v in q.tolist():
            put_int(enc, probs, 0, v)
        coded = 8 * len(enc.finish())
        assert abs(estimate_bits(q) - coded) < 0.05 * coded + 40, scale


# -- quantisation 3 ---------------------------------------------------------------------------


def test_step_sizes_are_exact_and_decreasing() -> None:
    assert [float(step_size(i)) for i in (1, 2, 3, 4, 5, 6)] == [1, 0.875, 0.75, 0.625, 0.5, 0.4375]
    steps = [step_size(i) for i in range(1, STEP_COUNT + 1)]
    assert all(a > b for a, b in itertools.pairwise(steps))
    assert all(s.dtype == np.float32 and s > 0 for s in steps)
    assert step_size(29) == np.float32(2**-7)


@st.composite
def quantised(draw: st.DrawFn, subset: Subset) -> list[Quantised]:
    tensors = []
    for _, shape in _shapes(subset):
        step = draw(st.sampled_from([0, 1, 29, 60, STEP_COUNT]))
        if step == 0:
            tensors.append(Quantised(0, np.zeros(shape, np.int64)))
            continue
        values = draw(st.lists(st.one_of(st.integers(-2, 2), INTS), min_size=1, max_size=4))
        q = np.resize(np.array(values, np.int64), shape.numel()).reshape(shape)
        tensors.append(Quantised(step, q))
    return tensors


@settings(max_examples=25, deadline=None)
@given(st.data(), st.sampled_from([Subset.BIAS, Subset.BIAS_TAIL]), st.booleans())
def test_quantisation_3_round_trips(data: st.DataObject, subset: Subset, relative: bool) -> None:
    tensors = data.draw(quantised(subset))
    update = decode_update(encode_quantised(subset, tensors, relative), POST)
    assert (update.subset, update.quant, update.relative) == (subset, Quant.RD, relative)
    assert list(update.deltas) == subset_names(POST, subset)
    for t, d in zip(tensors, update.deltas.values(), strict=True):
        expected = step_size(t.step) * t.q.astype(np.float32) if t.step else np.zeros(t.q.shape)
        assert d.dtype == torch.float32
        assert np.array_equal(d.numpy(), expected.astype(np.float32))  # bit-exact float32


@pytest.mark.parametrize("subset", ladder())
def test_rd_update_round_trip_error_follows_its_steps(subset: Subset) -> None:
    deltas = _deltas(subset)
    data = encode_update_rd(deltas, subset, _ones(deltas), mu=0.0)  # bits are free
    update = decode_update(data, POST)
    for name, d in deltas.items():
        err = float((update.deltas[name] - d).abs().max())
        assert err <= 2**-12 * float(d.abs().max()), name  # half the finest step


def test_rd_update_trades_bytes_for_error_with_mu() -> None:
    deltas = _deltas(Subset.BIAS_TAIL)
    sizes, errors = [], []
    for mu in (1e-8, 1e-6, 1e-5, 1e-4, 1.0):
        update = decode_update(encode_update_rd(deltas, Subset.BIAS_TAIL, _ones(deltas), mu), POST)
        sizes.append(len(encode_update_rd(deltas, Subset.BIAS_TAIL, _ones(deltas), mu)))
        errors.append(sum(float(((update.deltas[n] - d) ** 2).sum()) for n, d in deltas.items()))
    assert sizes == sorted(sizes, reverse=True) and errors == sorted(errors)
    assert sizes[0] > 10 * sizes[-1]
    assert all(not bool(d.any()) for d in update.deltas.values())  # μ = 1: nothing pays


def test_insensitive_tensors_are_not_sent() -> None:
    deltas = _deltas(Subset.BIAS_TAIL)
    weights = _ones(deltas)
    weights["tail.weight"] = torch.zeros_like(deltas["tail.weight"])
    update = decode_update(encode_update_rd(deltas, Subset.BIAS_TAIL, weights, 1e-7), POST)
    assert not bool(update.deltas["tail.weight"].any())
    assert bool(update.deltas["tail.bias"].any())


def test_rd_update_is_far_smaller_than_int8_at_the_same_precision() -> None:
    deltas = _deltas(Subset.ALL)
    int8 = encode_update(deltas, Subset.ALL, Quant.INT8)
    decoded = decode_update(int8, POST)
    int8_error = sum(float(((decoded.deltas[n] - d) ** 2).sum()) for n, d in deltas.items())
    mu = 1e-5  # about the int8 error of these deltas
    rd = encode_update_rd(deltas, Subset.ALL, _ones(deltas), mu)
    rd_decoded = decode_update(rd, POST)
    rd_error = sum(float(((rd_decoded.deltas[n] - d) ** 2).sum()) for n, d in deltas.items())
    assert rd_error + mu * 8 * len(rd) < int8_error + mu * 8 * len(int8)


def test_steps_searched_on_a_pool_give_the_same_bytes() -> None:
    deltas = _deltas(Subset.DECODER)
    weights = _ones(deltas)
    scale = {name: 1.0 + k for k, name in enumerate(deltas)}

    def distortion(name: str, error: np.ndarray) -> float:  # coherent errors count more
        return scale[name] * float(np.sum(error, dtype=np.float64) ** 2 + np.sum(error**2))

    mu = 1e-6
    alone = encode_update_rd(deltas, Subset.DECODER, weights, mu, False, distortion)
    with ThreadPoolExecutor(max_workers=2) as pool:
        pooled = encode_update_rd(deltas, Subset.DECODER, weights, mu, False, distortion, pool=pool)
    assert pooled == alone
    assert alone != encode_update_rd(deltas, Subset.DECODER, weights, mu)  # measured ≠ diagonal


def test_rd_mu_is_lambda_per_source_luma_sample() -> None:
    assert rd_mu(100.0, 10 * 64 * 32) == pytest.approx(100.0 / 20480)


def test_encode_update_rd_refuses_non_finite_input() -> None:
    deltas = _deltas(Subset.BIAS)
    with pytest.raises(ValueError, match="mu must be finite"):
        encode_update_rd(deltas, Subset.BIAS, _ones(deltas), float("nan"))
    deltas["head.bias"][0] = float("inf")
    with pytest.raises(ValueError, match="not finite"):
        encode_update_rd(deltas, Subset.BIAS, _ones(deltas), 1e-6)
    with pytest.raises(ValueError, match="encode_update_rd"):
        encode_update(_deltas(Subset.BIAS), Subset.BIAS, Quant.RD)


# -- the pinned example -----------------------------------------------------------------------


def example_tensors() -> list[Quantised]:
    """tests/data/update_rd_example.bin: subset 3 (every bias), relative; bias tensor k
    (0-based, parameter order) unchanged when k is odd, else step index 29 (2^-7) and
    q_i = ((i mod 3) − 1)·(k + 1)."""
    tensors = []
    for k, (_, shape) in enumerate(_shapes(Subset.BIAS)):
        if k % 2:
            tensors.append(Quantised(0, np.zeros(shape, np.int64)))
        else:
            q = ((np.arange(shape.numel()) % 3) - 1) * (k + 1)
            tensors.append(Quantised(29, q.reshape(shape)))
    return tensors


def test_pinned_rd_update_bytes() -> None:
    """If this fails, quantisation 3's layout or its range coder changed."""
    data = (DATA / "update_rd_example.bin").read_bytes()
    assert data[:3] == b"\x03\x03\x01"
    assert encode_quantised(Subset.BIAS, example_tensors(), relative=True) == data
    update = decode_update(data, POST)
    assert update.relative and update.subset == Subset.BIAS
    for k, d in enumerate(update.deltas.values()):
        i = torch.arange(d.numel())
        expected = 0 if k % 2 else ((i % 3) - 1) * (k + 1) * 2**-7
        assert torch.equal(d, torch.zeros_like(d) + expected), k


def test_int8_body_is_unchanged() -> None:
    """Quantisation 2's body for tests/data/update_example.bin's deltas, byte for byte."""
    pinned = (DATA / "update_example.bin").read_bytes()
    deltas = {
        n: torch.full(s, (k + 1) * 1e-3) for k, (n, s) in enumerate(_shapes(Subset.BIAS_TAIL))
    }
    ours = encode_update(deltas, Subset.BIAS_TAIL, Quant.INT8)
    assert ours[:2] == pinned[:2]
    assert zlib.decompress(ours[2:]) == zlib.decompress(pinned[2:])


# -- relative updates -------------------------------------------------------------------------


def _rd(subset: Subset, seed: int, relative: bool) -> Update:
    deltas = _deltas(subset, seed)
    return decode_update(encode_update_rd(deltas, subset, _ones(deltas), 1e-8, relative), POST)


def test_resolve_adds_a_relative_update_to_the_one_in_force() -> None:
    in_force = _rd(Subset.BIAS_TAIL, 1, relative=False)
    change = _rd(Subset.BIAS_TAIL, 2, relative=True)
    resolved = resolve(change, in_force)
    assert not resolved.relative and resolved.subset == Subset.BIAS_TAIL
    for name, acc in resolved.deltas.items():
        assert torch.equal(acc, in_force.deltas[name] + change.deltas[name])  # float32
    assert resolve(in_force, None) is in_force and resolve(in_force, change) is in_force


def test_resolve_across_rungs_keeps_the_larger_subset() -> None:
    in_force = _rd(Subset.DECODER, 1, relative=False)
    small = resolve(_rd(Subset.BIAS, 2, relative=True), in_force)
    assert small.subset == Subset.DECODER
    assert list(small.deltas) == subset_names(POST, Subset.DECODER)
    assert torch.equal(small.deltas["tail.weight"], in_force.deltas["tail.weight"])
    big = resolve(_rd(Subset.ALL, 3, relative=True), in_force)
    assert big.subset == Subset.ALL and list(big.deltas) == subset_names(POST, Subset.ALL)
    adapted = dict(apply_update(POST, big).named_parameters())
    bank = dict(POST.named_parameters())
    name = "mid.0.pw.weight"
    assert torch.equal(adapted[name], bank[name] + big.deltas[name])


def test_relative_update_without_one_in_force_is_refused() -> None:
    with pytest.raises(ContainerError, match="needs an update in force"):
        resolve(_rd(Subset.BIAS, 1, relative=True), None)
    with pytest.raises(ValueError, match="resolved"):
        resolve(_rd(Subset.BIAS, 1, relative=True), _rd(Subset.BIAS, 2, relative=True))


def test_relative_update_that_does_not_fit_the_one_in_force_is_refused() -> None:
    in_force = _rd(Subset.BIAS, 1, relative=False)
    bad = Update(Subset.BIAS, Quant.RD, {"head.bias": torch.zeros(3)}, relative=True)
    with pytest.raises(ContainerError, match="does not fit"):
        resolve(bad, in_force)
    huge = {n: torch.full_like(d, 3e38) for n, d in in_force.deltas.items()}
    big = Update(Subset.BIAS, Quant.RD, huge, relative=False)
    with pytest.raises(ContainerError, match=r"not finite|non-finite"):
        resolve(Update(Subset.BIAS, Quant.RD, huge, relative=True), big)


# -- damaged, truncated and foreign updates ---------------------------------------------------


def _good() -> bytes:
    deltas = _deltas(Subset.BIAS_TAIL)
    return encode_update_rd(deltas, Subset.BIAS_TAIL, _ones(deltas), 1e-7, relative=True)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda u: u[:2], "shorter than its preamble and flags"),
        (lambda u: u[:3] + u[3:6], "truncated"),
        (lambda u: u[:-2], "truncated|corrupt"),
        (lambda u: u + b"\x00", "corrupt"),
        (lambda u: u[:2] + b"\x03" + u[3:], "reserved bits"),
        (lambda u: b"\x02" + u[1:], "another model|truncated|corrupt"),  # labelled ALL
        (lambda u: b"\x03" + u[1:], "another model|corrupt|out of range"),  # labelled BIAS
    ],
)
def test_damaged_rd_updates_are_refused(mangle: Callable[[bytes], bytes], message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        decode_update(mangle(_good()), POST)


def test_every_single_byte_damage_is_refused_or_harmless() -> None:
    """Damage to any byte of the range-coded body: a ContainerError nearly always (the
    stream must end exactly with the last parameter), never another exception."""
    good = _good()
    refused = 0
    for at in range(3, len(good)):
        bad = bytearray(good)
        bad[at] ^= 0x5A
        try:
            decode_update(bytes(bad), POST)
        except ContainerError:
            refused += 1
    assert refused == len(good) - 3


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(list(Subset)), st.binary(max_size=64))
def test_arbitrary_bytes_are_a_container_error_or_an_update(subset: Subset, body: bytes) -> None:
    try:
        update = decode_update(bytes([subset, Quant.RD, 0]) + body, POST)
    except ContainerError:
        return
    assert all(bool(torch.isfinite(d).all()) for d in update.deltas.values())


def test_a_foreign_models_update_is_refused() -> None:
    other = PostProcessor(POST.ratio, POST.config.model_copy(update={"channels": (8, 16, 24)}))
    with pytest.raises(ContainerError, match=r"another model|truncated|out of range"):
        decode_update(_good(), other)
