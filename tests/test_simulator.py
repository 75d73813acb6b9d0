"""The codec simulator: its network, its training on real x265 output, its card, and the
pre-filter trained through it."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from wrapcodec import ffmpeg, pairs
from wrapcodec.backend import get_backend
from wrapcodec.errors import InputError
from wrapcodec.prefilter_train import (
    Batch,
    Clips,
    PreFilterTrainConfig,
    PreFilterTrainer,
    measured_scales,
)
from wrapcodec.simulator import CodecSimulator, picture_loss, rate_loss, yuv_mse
from wrapcodec.simulator_train import (
    SimulatorTrainConfig,
    SimulatorTrainer,
    load_coded,
    load_simulator,
)

IMAGES = Path(__file__).parent / "data" / "images"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three Kodak crops as 4-frame 128×128 clips coded by x265 at 8 bits, r = 1, QPs 27
    and 42 (ultrafast)."""
    folder = tmp_path_factory.mktemp("sim-pairs")
    clips = pairs.make_clips(IMAGES, folder, pairs.ClipSpec(frames=4, size=128))
    points = pairs.points(["x265"], [Fraction(1)], [27, 42], bitdepth=8)
    assert pairs.build(clips, folder, points, jobs=2, preset="ultrafast") == 6
    return folder


@pytest.fixture(scope="module")
def val(tmp_path_factory: pytest.TempPathFactory, parkjoy: Path) -> Path:
    """Two frames of Park Joy as photos (validation clips are 256×256)."""
    folder = tmp_path_factory.mktemp("sim-val")
    for i in (0, 5):
        cmd = [ffmpeg.ffmpeg_exe(), "-v", "error", "-i", str(parkjoy), "-vf", f"select=eq(n\\,{i})"]
        subprocess.run([*cmd, "-frames:v", "1", str(folder / f"f{i}.png")], check=True)
    return folder


def _clip(seed: int, n: int = 2, t: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, t, size, size, generator=g) * 2 - 1
    uv = torch.rand(n, t, 2, size // 2, size // 2, generator=g) * 2 - 1
    return y, uv


def _perturb(net: CodecSimulator, std: float) -> None:
    """Move the picture head's last layer off zero (an untrained one passes input through)."""
    last = net.picture[-1]
    assert isinstance(last, torch.nn.Conv2d)
    torch.nn.init.normal_(last.weight, std=std)


def test_an_untrained_simulator_is_a_lossless_codec() -> None:
    y, uv = _clip(0)
    sy, suv, bits = CodecSimulator(width=8)(y, uv, torch.tensor([22, 47]))
    assert torch.equal(sy, y) and torch.equal(suv, uv)
    assert bits.shape == (2,) and bool((bits > 0).all())


def test_the_simulated_picture_and_bits_follow_the_input() -> None:
    net = CodecSimulator(width=8)
    _perturb(net, 0.1)
    y, uv = _clip(1)
    y.requires_grad_(True)
    sy, suv, bits = net(y, uv, torch.tensor([30, 30]))
    (sy.sum() + suv.sum() + bits.sum()).backward()
    assert y.grad is not None and bool((y.grad != 0).any())
    # each clip is simulated on its own: changing the second leaves the first's output
    y2 = y.detach().clone()
    y2[1] = -y2[1]
    sy2, _, bits2 = net(y2, uv, torch.tensor([30, 30]))
    assert torch.equal(sy2[0], sy.detach()[0]) and bits2[0] == bits[0]
    assert not torch.equal(sy2[1], sy.detach()[1])


def test_the_losses_measure_the_unexplained_share_of_the_codec_error() -> None:
    net = CodecSimulator(width=8)
    y, uv = _clip(2)
    dy, duv = (y * 0.9).clamp(-1, 1), uv
    bits = torch.tensor([1000.0, 4000.0])
    qp = torch.tensor([30, 40])
    # an untrained simulator passes its input through: it explains none of the error
    assert torch.allclose(picture_loss(net, (y, uv), qp, (dy, duv)), torch.tensor(1.0))
    _perturb(net, 0.1)
    sy, suv = net.picture_of(y, uv, qp)
    share = yuv_mse(sy, suv, dy, duv).sum() / yuv_mse(y, uv, dy, duv).sum()
    assert torch.allclose(picture_loss(net, (y, uv), qp, (dy, duv)), share)
    _, _, sim_bits = net(y, uv, qp)
    assert torch.allclose(rate_loss(net, (y, uv), qp, bits), (sim_bits.log2() - bits.log2()) ** 2)
    expected = (6 * ((y - dy) ** 2).mean(dim=(1, 2, 3))) / 8 * 127.5**2
    assert torch.allclose(yuv_mse(y, uv, dy, duv), expected)


@pytest.mark.slow
def test_training_learns_the_codec_and_exports_a_card(
    cache: Path, val: Path, tmp_path: Path
) -> None:
    cfg = SimulatorTrainConfig(
        steps=60, batch=6, lr=3e-3, width=8, validate_every=60, preset="ultrafast"
    )
    out = tmp_path / "sim" / "simulator-x265.safetensors"
    trainer = SimulatorTrainer(cfg, cache, val, out)
    assert len(trainer.train) == 6 and {c.qp for c in trainer.train} == {27, 42}
    with torch.no_grad():
        picture_before, rate_before = trainer.losses(trainer.train)
    trainer.run(lambda _: None)
    with torch.no_grad():
        picture, rate = trainer.losses(trainer.train)
    # Closer to what x265 really decoded than its input is (which explains none of it), and
    # to its bits.
    assert float(picture_before) == 1.0 and float(picture) < 0.97
    assert float(rate.mean()) < 0.5 * float(rate_before.mean())
    net, card = load_simulator(out)
    assert card.codec == "x265" and card.training["steps"] == 60
    before, after = trainer.history[0], trainer.history[-1]
    assert before["explained"] == 0.0 and before["sim_psnr_yuv"] == before["codec_psnr_yuv"]
    assert {"sim_psnr_yuv_qp22", "rate_spearman", "rate_log2_error"} <= set(after)
    assert after["step"] == 60 and after["sim_psnr_yuv"] != after["codec_psnr_yuv"]
    # the exported weights are the trained ones
    clip = trainer.train[0]
    b = Batch.of([clip.source])
    with torch.no_grad():
        assert torch.equal(
            net(b.y, b.uv, torch.tensor([27]))[0], trainer.net(b.y, b.uv, torch.tensor([27]))[0]
        )
    # resumed, it goes on from its checkpoint
    more = SimulatorTrainer(cfg.model_copy(update={"steps": 62}), cache, val, out)
    more.run(lambda _: None)
    assert more.step == 62 and len(more.history) == 3


def test_a_simulator_card_is_checked(tmp_path: Path) -> None:
    net = CodecSimulator(width=8)
    trainer = SimulatorTrainer.__new__(SimulatorTrainer)  # export only needs these
    trainer.cfg, trainer.net, trainer.train = SimulatorTrainConfig(width=8), net, []
    trainer.out = tmp_path / "s.safetensors"
    trainer.export({"step": 0.0}, 1.0)
    load_simulator(trainer.out)
    card = json.loads(trainer.out.with_suffix(".json").read_text())
    card["width"] = 16
    trainer.out.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="do not fit"):
        load_simulator(trainer.out)
    card["width"], card["sha256"] = 8, "0" * 64
    trainer.out.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="does not match its card"):
        load_simulator(trainer.out)
    trainer.out.with_suffix(".json").write_text('{"kind": "codec-simulator"}')
    with pytest.raises(InputError, match="not a simulator card"):
        load_simulator(trainer.out)
    with pytest.raises(InputError, match="no simulator card"):
        load_simulator(tmp_path / "missing.safetensors")


def test_no_pairs_or_no_validation_photo_is_one_line(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="wrapcodec pairs --codecs x264 --ratios 1 --bitdepth 8"):
        load_coded(tmp_path, "x264")
    out = tmp_path / "s.safetensors"
    with pytest.raises(InputError, match="no photo of at least 256"):
        SimulatorTrainer(SimulatorTrainConfig(), cache, IMAGES, out)  # 160-pixel crops


@pytest.mark.slow
def test_a_prefilter_trains_through_the_simulator(cache: Path, val: Path, tmp_path: Path) -> None:
    sim = CodecSimulator(width=8)
    _perturb(sim, 0.01)
    start = {k: v.clone() for k, v in sim.state_dict().items()}
    cfg = PreFilterTrainConfig(
        steps=2,
        batch=2,
        frames=2,
        validate_every=2,
        preset="ultrafast",
        width=8,
        layers=3,
        surrogate="simulator",
    )
    out = tmp_path / "bank" / "standard" / "prefilter-x265-psnr.safetensors"
    trainer = PreFilterTrainer(cfg, cache, val, out, sim)
    trainer.run(lambda _: None)
    assert trainer.step == 2 and trainer.rate_step == 0  # no separate rate model fitted
    moved = [k for k, v in sim.state_dict().items() if not torch.equal(v, start[k])]
    assert moved  # fitted on to what the codec made of the filtered clips
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["surrogate"] == "simulator"
    assert {"bd_psnr", "rate_spearman", "error_spearman"} <= set(card["validation"])
    with pytest.raises(ValueError, match="simulator surrogate"):
        PreFilterTrainer(cfg, cache, val, out)
    # resumed with its simulator's state
    again = CodecSimulator(width=8)
    more = PreFilterTrainer(cfg.model_copy(update={"steps": 3}), cache, val, out, again)
    more.run(lambda _: None)
    assert more.step == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--surrogate", "simulator"], "--surrogate simulator needs --simulator FILE"),
        (
            ["--surrogate", "error-model", "--simulator", "s.safetensors"],
            "--simulator is for the simulator surrogate",
        ),
        (["--simulator", "missing.safetensors"], "no simulator card"),
    ],
)
def test_train_prefilter_refuses_a_simulator_mismatch(
    tmp_path: Path, args: list[str], message: str
) -> None:
    cmd = [sys.executable, "-m", "wrapcodec", "train-prefilter", "--data", str(tmp_path)]
    cmd += ["--val", str(IMAGES), "--out", str(tmp_path / "p.safetensors"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


@pytest.mark.slow
def test_measured_lambda_is_each_clips_own_slope(cache: Path, val: Path, tmp_path: Path) -> None:
    backend = get_backend("x265")
    clips = Clips(sorted((cache / "clips").glob("*.y4m")))
    scales = measured_scales(cache, "x265", clips, backend)
    assert set(scales) == {(i, qp) for i in range(3) for qp in (27, 42)}
    series = cache / pairs.codec_dir("x265", 8) / "1"
    for i, path in enumerate(clips.paths):
        frames = clips.frames[i]
        points = []
        for qp in (27, 42):
            with np.load(series / f"qp{qp}" / f"{path.stem}.npz") as d:
                mse = [
                    float(
                        (
                            (d[k].astype(float) - np.stack([getattr(f, k) for f in frames])) ** 2
                        ).mean()
                    )
                    for k in ("y", "u", "v")
                ]
                points.append(((6 * mse[0] + mse[1] + mse[2]) / 8, int(d["bits"])))
        (d27, r27), (d42, r42) = points
        slope = (d42 - d27) / ((r27 - r42) / (len(frames) * 128 * 128))
        expected = slope / backend.qp_to_lambda(34.5)
        assert scales[(i, 27)] == pytest.approx(expected) == scales[(i, 42)]
    cfg = PreFilterTrainConfig(
        steps=1,
        batch=2,
        frames=2,
        validate_every=1,
        preset="ultrafast",
        width=8,
        layers=3,
        surrogate="straight-through",
        rate_pretrain_steps=0,
        lam="measured",
    )
    trainer = PreFilterTrainer(cfg, cache, val, tmp_path / "p.safetensors")
    assert trainer.lam(1, 42) == pytest.approx(backend.qp_to_lambda(42) * scales[(1, 42)])
    assert trainer.lam(9, 42) == backend.qp_to_lambda(42)  # not measured: the relation
    trainer.filter_step()
    assert trainer.step == 1
    with pytest.raises(InputError, match="no clip coded at two QPs in 43-47"):
        PreFilterTrainer(cfg.model_copy(update={"qp_range": (43, 47)}), cache, val, tmp_path / "q")
