"""The post-processors in integer arithmetic (wrapcodec.exact): the kernels against a plain
numpy int64 reference of the same arithmetic, the identity of an untrained network, the
distance to the float network, the calibration and ids, and the same decoded bytes under
other instruction sets and thread counts (real subprocesses)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wrapcodec.bank import Bank, get_bank
from wrapcodec.cli import cli
from wrapcodec.container import read_wrp
from wrapcodec.exact import (
    P_EXP,
    UP_BITS,
    ExactPost,
    IntBlock,
    IntConv,
    _taps,
    quantize_conv,
    quantize_post,
    to_p,
)
from wrapcodec.metrics import PsnrAccumulator, measure_files
from wrapcodec.nets import PostProcessor, bottleneck_dims, from_unit, unit
from wrapcodec.options import OPTIONS
from wrapcodec.pipeline import to_tensors
from wrapcodec.y4m import Frame, iter_frames

NEURAL = [c for c, o in OPTIONS.items() if o.neural]

# --- a plain int64 reference of the arithmetic ------------------------------------------------


def rq(acc: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Rounding shift per output channel (axis 0), half up; left shift when negative."""
    out = np.empty_like(acc)
    for o, s in enumerate(shift):
        out[o] = (acc[o] + (1 << (s - 1))) >> s if s > 0 else acc[o] << -s
    return out


def sat(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -32768, 32767)


def ref_conv(x: np.ndarray, c: IntConv, relu: bool = False) -> np.ndarray:
    acc = np.einsum("oc,chw->ohw", c.weight[:, :, 0, 0].astype(np.int64), x) + c.bias[:, None, None]
    out = rq(acc, c.shift)
    return sat(np.maximum(out, 0) if relu else out)


def ref_block(x: np.ndarray, b: IntBlock) -> np.ndarray:
    c_n, h, w = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    s = b.stride
    h_out, w_out = -(-h // s), -(-w // s)
    acc = np.zeros((c_n, h_out, w_out), np.int64) + b.dw.bias[:, None, None]
    for dy in range(3):
        for dx in range(3):
            patch = xp[:, dy : dy + s * h_out : s, dx : dx + s * w_out : s]
            acc += b.dw.weight[:, 0, dy, dx][:, None, None] * patch
    t = sat(rq(acc, b.dw.shift))
    pw = np.einsum("oc,chw->ohw", b.pw.weight[:, :, 0, 0].astype(np.int64), t)
    out = np.maximum(rq(pw + b.pw.bias[:, None, None], b.pw.shift), 0)
    return sat(out + x if b.residual else out)


def ref_upsample(p: np.ndarray, height: int, width: int) -> np.ndarray:
    if p.shape == (height, width):
        return p.astype(np.int64)
    iy0, iy1, wy = _taps(p.shape[0], height)
    ix0, ix1, wx = _taps(p.shape[1], width)
    p = p.astype(np.int64)
    one = 1 << UP_BITS
    rows = (one - wy)[:, None] * p[iy0] + wy[:, None] * p[iy1]
    v = (one - wx) * rows[:, ix0] + wx * rows[:, ix1]
    return (v + (1 << (2 * UP_BITS - 1))) >> (2 * UP_BITS)


def ref_post(m: ExactPost, y: np.ndarray, u: np.ndarray, v: np.ndarray, bitdepth: int,
             height: int, width: int, out_bitdepth: int) -> tuple[np.ndarray, ...]:  # fmt: skip
    y_up = ref_upsample(to_p(y, bitdepth), height, width)
    uv_up = np.stack([ref_upsample(to_p(p, bitdepth), height // 2, width // 2) for p in (u, v)])
    h2, w2 = height // 2, width // 2
    x = np.stack([y_up[0::2, 0::2], y_up[0::2, 1::2], y_up[1::2, 0::2], y_up[1::2, 1::2],
                  uv_up[0], uv_up[1]])  # fmt: skip
    x = np.pad(x, ((0, 0), (0, -h2 % 4), (0, -w2 % 4)), mode="edge")

    def blocks(t: np.ndarray, bs: tuple[IntBlock, ...]) -> np.ndarray:
        for b in bs:
            t = ref_block(t, b)
        return t

    def up(skip: np.ndarray, small: np.ndarray) -> np.ndarray:
        return sat(skip + small.repeat(2, axis=1).repeat(2, axis=2))

    e0 = blocks(ref_conv(x, m.head, relu=True), m.enc0)
    e1 = blocks(ref_block(e0, m.down1), m.enc1)
    mid = blocks(ref_block(e1, m.down2), m.mid)
    d1 = blocks(up(e1, ref_conv(mid, m.up2)), m.dec1)
    d0 = blocks(up(e0, ref_conv(d1, m.up1)), m.dec0)
    res = ref_conv(d0, m.tail)[:, :h2, :w2]
    y_hat = y_up.copy()
    for k in range(4):
        y_hat[k // 2 :: 2, k % 2 :: 2] += res[k]
    uvp = np.pad(uv_up, ((0, 0), (1, 1), (1, 1)), mode="edge")
    acc = np.zeros((2, h2, w2), np.int64) + m.chroma.bias[:, None, None]
    for o in range(2):
        for c in range(2):
            for dy in range(3):
                for dx in range(3):
                    acc[o] += m.chroma.weight[o, c, dy, dx] * uvp[c, dy : dy + h2, dx : dx + w2]
    uv_hat = rq(acc, m.chroma.shift) + res[4:]
    peak = (1 << out_bitdepth) - 1

    def sample(p: np.ndarray) -> np.ndarray:
        return np.clip(((p + 4096) * peak + 4096) >> 13, 0, peak).astype(np.uint16)

    return sample(y_hat), sample(uv_hat[0]), sample(uv_hat[1])


@pytest.fixture(scope="module")
def bank() -> Bank:
    return get_bank()


@pytest.fixture(scope="module")
def frame(parkjoy: Path) -> Frame:
    """A 96×64 crop of a real picture, 8-bit."""
    f = next(iter_frames(parkjoy))
    return Frame(f.y[100:164, 200:296], f.u[50:82, 100:148], f.v[50:82, 100:148])


def bottleneck(frame: Frame, ratio: Fraction) -> tuple[np.ndarray, ...]:
    """10-bit planes at the bottleneck size of ``ratio`` (bilinear, as post-only codes)."""
    from wrapcodec.nets import bilinear_bottleneck

    y, uv = to_tensors(frame, 8)
    bw, bh = bottleneck_dims(frame.y.shape[1], frame.y.shape[0], ratio)
    yb, uvb = bilinear_bottleneck(y, uv, bw, bh)
    planes = [from_unit(t, 10).round().numpy().astype(np.uint16) for t in (yb[0, 0], *uvb[0])]
    return tuple(planes)


# --- the kernels are the arithmetic -----------------------------------------------------------


@pytest.mark.parametrize("code", NEURAL)
def test_kernels_equal_the_int64_reference(bank: Bank, frame: Frame, code: int) -> None:
    exact = bank.processors(OPTIONS[code]).exact
    assert exact is not None
    y, u, v = bottleneck(frame, exact.ratio)
    for out_bits in (8, 10):
        got = exact(y, u, v, 10, 64, 96, out_bits)
        want = ref_post(exact, y, u, v, 10, 64, 96, out_bits)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("ratio", ["1", "1/2", "2/3", "1/4"])
@pytest.mark.parametrize("bits", [8, 10])
def test_untrained_network_is_bilinear_and_identity_at_r1(
    frame: Frame, ratio: str, bits: int
) -> None:
    """An untrained post-processor (zero tail, identity chroma) is bilinear upsampling; at
    r = 1 it gives back its input sample for sample, at either bit depth."""
    post = PostProcessor(Fraction(ratio))
    exact = quantize_post(post, {k: 12 for k in _exponent_names(post)})
    y, u, v = (p.astype(np.uint16) << (bits - 8) for p in frame) if ratio == "1" else (
        p >> (10 - bits) for p in bottleneck(frame, Fraction(ratio))
    )  # fmt: skip
    out = exact(y, u, v, bits, 64, 96, bits)
    if ratio == "1":
        for o, i in zip(out, (y, u, v), strict=True):
            np.testing.assert_array_equal(o, i)
    else:  # the float bilinear upsampling, within rounding (weights in 1/1024ths)
        yt, uvt = (
            unit(torch.from_numpy(y.astype(np.float32))[None, None], bits),
            unit(torch.from_numpy(np.stack([u, v]).astype(np.float32))[None], bits),
        )
        with torch.no_grad():
            yf, _ = post(yt, uvt, 64, 96)
        want = from_unit(yf[0, 0], bits).numpy()
        # rounding to P format (1/8 of a 10-bit step) and to samples, weights in 1/1024ths
        d = np.abs(out[0].astype(np.float64) - want)
        assert d.max() <= 0.6 and d.mean() < 0.3


def _exponent_names(post: PostProcessor) -> list[str]:
    from wrapcodec.exact import _names

    return [f"{n}.dw" for n, *_ in _names(post)] + ["level0", "level1", "level2"]


@pytest.mark.parametrize("code", NEURAL)
def test_close_to_the_float_network(bank: Bank, frame: Frame, code: int) -> None:
    nets = bank.processors(OPTIONS[code])
    assert nets.exact is not None
    y, u, v = bottleneck(frame, nets.post.ratio)
    got = Frame(*nets.exact(y, u, v, 10, 64, 96, 8))
    yt, uvt = to_tensors(Frame(y, u, v), 10)
    with torch.no_grad():
        yf, uvf = nets.post(yt, uvt, 64, 96)
    f8 = [np.clip(np.rint(from_unit(t, 8).numpy()), 0, 255) for t in (yf[0, 0], *uvf[0])]
    want = Frame(*(p.astype(np.uint16) for p in f8))
    for g, w in zip(got, want, strict=True):
        d = np.abs(g.astype(int) - w.astype(int))
        assert d.max() <= 1 and d.mean() < 0.1, (d.max(), d.mean())
    a, b = PsnrAccumulator(8), PsnrAccumulator(8)
    a.add(frame, got)
    b.add(frame, want)
    mse = [(6 * acc.mse_sum[0] + acc.mse_sum[1] + acc.mse_sum[2]) / 8 for acc in (a, b)]
    assert abs(mse[0] - mse[1]) < 0.02 + 0.01 * mse[1]  # 8-bit units²


def test_accumulators_cannot_overflow() -> None:
    """Worst-case inputs (every term at the largest magnitude, with the weight's sign) stay
    inside int32, and the weights keep the precision that allows."""
    rng = np.random.default_rng(0)
    for terms, k_max in ((6, 4096), (9, 32767), (32, 32767), (18, 4096)):
        w = torch.from_numpy(rng.normal(0, 0.3, (8, terms, 1, 1)).astype(np.float32))
        b = torch.from_numpy(rng.normal(0, 0.5, 8).astype(np.float32))
        conv = quantize_conv(w, b, 13, 12, k_max)
        worst = np.abs(conv.weight.astype(np.int64)).sum(axis=(1, 2, 3)) * k_max
        assert (worst + np.abs(conv.bias) < 2**31).all()
        assert np.abs(conv.weight).max() >= 2**30 // (terms * k_max) // 2  # no bit wasted
    huge_bias = quantize_conv(torch.full((1, 4, 1, 1), 1e-6), torch.tensor([3.0]), 14, 12)
    assert abs(int(huge_bias.bias[0])) < 2**30  # a coarser weight exponent makes it fit


def test_to_p_is_the_float_normalisation() -> None:
    for bits in (8, 10):
        x = np.arange(1 << bits, dtype=np.uint16)
        p = to_p(x[None], bits)[0].astype(np.float64) / (1 << P_EXP)
        want = unit(torch.from_numpy(x.astype(np.float64)), bits).numpy()
        assert np.abs(p - want).max() <= 0.5 / (1 << P_EXP)


# --- calibration, cards and ids -------------------------------------------------------------


def test_shipped_cards_carry_the_arithmetic(bank: Bank) -> None:
    assert bank.integer
    for code, card in bank.cards.items():
        assert card.arithmetic is not None and card.arithmetic.version == 1
        names = set(_exponent_names(bank.processors(OPTIONS[code]).post))
        assert set(card.arithmetic.exponents) == names
        assert all(8 <= e <= 15 for e in card.arithmetic.exponents.values())


def test_calibrate_writes_cards_and_the_id_follows(
    bank: Bank, tmp_path: Path, runner: CliRunner
) -> None:
    folder = tmp_path / "bank"
    shutil.copytree(bank.folder, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    images = Path(__file__).parent / "data" / "images"
    args = ["models", "calibrate", "--data", str(images), "--pictures", "3", "--crop", "64"]
    result = runner.invoke(cli, [*args, "--models", str(folder)])
    assert result.exit_code == 0, result.output
    again = Bank(folder)
    assert again.integer and again.id == bank.id  # same weights: same float id
    card = again.cards[2]
    assert card.arithmetic is not None and "3 centre crops 64x64" in card.arithmetic.calibration
    changed = json.loads((folder / f"{card.name}.json").read_text())
    changed["arithmetic"]["exponents"]["level0"] += 1
    (folder / f"{card.name}.json").write_text(json.dumps(changed))
    moved = Bank(folder)
    assert moved.id == bank.id and moved.id_for(True) != again.id_for(True)
    assert moved.cards[2].key != again.cards[2].key  # bench points expire with it


# --- the same bytes everywhere ----------------------------------------------------------------


def _cpu_has(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


SETTINGS = {
    "as is": {},
    "AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "NUMBA_CPU_NAME": "haswell"},
    "SSE4.1": {"ONEDNN_MAX_CPU_ISA": "SSE41", "NUMBA_CPU_NAME": "nehalem"},
    "SSE4.1, no ATen vectors": {
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "ATEN_CPU_CAPABILITY": "default",
        "NUMBA_CPU_NAME": "generic",
    },
    "1 thread": {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    "4 threads": {"NUMBA_NUM_THREADS": "4", "OMP_NUM_THREADS": "4"},
}


@pytest.fixture(scope="module")
def adapted_files(
    clip8: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[Path], list[float]]:
    """Files of four neural options, one per ratio, fitted to the clip (at QP 16 the update
    pays for itself on this small clip)."""
    folder = tmp_path_factory.mktemp("exact")
    files, psnrs = [], []
    for code in (1, 6, 3, 8):
        wrp = folder / f"o{code}.wrp"
        args = ["encode", str(clip8), "-o", str(wrp), "--codec", "x264", "--qp", "16"]
        args += ["--preset", "ultrafast", "--options", str(code), "--adapt-steps", "40", "--json"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        files.append(wrp)
        psnrs.append(json.loads(result.stdout)["psnr_yuv"])
    return files, psnrs


def test_decoded_bytes_are_the_same_everywhere(
    adapted_files: tuple[list[Path], list[float]],
    clip8: Path,
    tmp_path: Path,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x264")
    files, psnrs = adapted_files
    assert any(s.update for f in files for s in read_wrp(f)[1])
    digests: dict[str, list[str]] = {}
    for name, env in SETTINGS.items():
        needs = {"haswell": "avx2", "nehalem": "sse4_2"}.get(env.get("NUMBA_CPU_NAME", ""))
        if needs and not _cpu_has(needs):
            continue  # code compiled for that CPU would not run on this one
        outs = [tmp_path / f"{name}-{f.stem}.y4m" for f in files]
        code = "\n".join(
            [
                "import sys",
                "from wrapcodec.bank import get_bank",
                "from wrapcodec.cards import reference_digest",
                "from wrapcodec.decoder import decode_file",
                "from wrapcodec.options import OPTIONS",
                "for wrp, out in zip(sys.argv[1::2], sys.argv[2::2]):",
                "    decode_file(wrp, out)",
                "bank = get_bank()",
                "for code, card in bank.cards.items():",  # the bytes every card records
                "    assert reference_digest(bank, OPTIONS[code]) == card.arithmetic.reference",
            ]
        )
        argv = [str(p) for pair in zip(files, outs, strict=True) for p in pair]
        proc = subprocess.run(
            [sys.executable, "-c", code, *argv],
            env={**os.environ, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        digests[name] = [hashlib.sha256(o.read_bytes()).hexdigest() for o in outs]
    assert all(d == digests["as is"] for d in digests.values()), digests
    for out, psnr in zip((tmp_path / f"as is-{f.stem}.y4m" for f in files), psnrs, strict=True):
        assert measure_files(str(clip8), str(out)).psnr_yuv == pytest.approx(psnr, abs=1e-9)


def test_models_speed_reports_speed_and_the_reference(runner: CliRunner) -> None:
    args = ["models", "speed", "--size", "64x48", "--frames", "1", "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["models"]
    assert len(rows) == len(NEURAL)
    for row in rows:
        assert row["arithmetic"] == "integer v1" and row["matches_reference"] is True
        assert row["post_fps_64x48"] > 0
        assert (row["pre_fps_64x48"] is None) == row["model"].startswith("post")
