"""Training the standard-stream pre-filter with the real codec in the loop, on a tiny cache."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from wrapcodec import ffmpeg
from wrapcodec.backend import get_backend
from wrapcodec.bank import load_prefilter, prefilter_card
from wrapcodec.pairs import codec_dir
from wrapcodec.prefilter_train import (
    Batch,
    PreFilterTrainConfig,
    PreFilterTrainer,
    code_clip,
    distortion,
    ste_round8,
)
from wrapcodec.y4m import Frame, VideoInfo, Y4MWriter, iter_frames

pytestmark = pytest.mark.slow


def _tiny_cache(root: Path, parkjoy: Path) -> tuple[Path, Path]:
    """Two 256x256, 4-frame clips cut from Park Joy with their real x265 bits at every QP the
    trainer reads, and a folder of two photos (frames of it) for validation."""
    frames = list(iter_frames(parkjoy))
    clips = root / "cache" / "clips"
    clips.mkdir(parents=True)
    for i, left in enumerate((0, 200)):
        with Y4MWriter(clips / f"c{i}.y4m", VideoInfo(256, 256, 8, 25, 1)) as w:
            for f in frames[:4]:
                w.write(
                    Frame(
                        f.y[:256, left : left + 256],
                        f.u[:128, left // 2 : left // 2 + 128],
                        f.v[:128, left // 2 : left // 2 + 128],
                    )
                )
    backend = get_backend("x265")
    for qp in (22, 47):
        folder = root / "cache" / codec_dir("x265", 10) / "1" / f"qp{qp}"
        folder.mkdir(parents=True)
        for clip in sorted(clips.glob("*.y4m")):
            bits, _ = code_clip(backend, qp, list(iter_frames(clip)), "ultrafast")
            np.savez(folder / f"{clip.stem}.npz", bits=np.array(bits))
    val = root / "val"
    val.mkdir()
    for i in (0, 5):
        cmd = [ffmpeg.ffmpeg_exe(), "-v", "error", "-i", str(parkjoy), "-vf", f"select=eq(n\\,{i})"]
        subprocess.run([*cmd, "-frames:v", "1", str(val / f"f{i}.png")], check=True)
    return root / "cache", val


def test_distortion_passes_the_gradient_straight_through() -> None:
    y = torch.zeros(1, 1, 2, 2, requires_grad=True)
    uv = torch.zeros(1, 1, 2, 1, 1)
    decoded = torch.full_like(y, 0.5)
    through = y + (decoded - y).detach()
    d = distortion("psnr", through, uv, torch.zeros_like(y), uv)
    d.sum().backward()
    assert y.grad is not None
    # d/dy of 6/8 · mean((decoded − 0)²)·127.5² is taken at the decoded value, not at y
    assert torch.allclose(y.grad, torch.full_like(y, 6 / 8 * 2 * 0.5 / 4 * 127.5**2))
    assert torch.equal(ste_round8(torch.tensor([-0.999])), torch.tensor([-1.0]))  # 0.13 → 0


def test_training_runs_resumes_and_exports_a_card(tmp_path: Path, parkjoy: Path) -> None:
    cache, val = _tiny_cache(tmp_path, parkjoy)
    cfg = PreFilterTrainConfig(
        steps=2,
        batch=2,
        frames=2,
        rate_pretrain_steps=2,
        validate_every=2,
        preset="ultrafast",
        width=8,
        layers=3,
        surrogate="error-model",
        error_warmup_steps=1,
    )
    out = tmp_path / "bank" / "standard" / "prefilter-x265-psnr.safetensors"
    trainer = PreFilterTrainer(cfg, cache, val, out)
    trainer.run(lambda _: None)
    # one warm-up step fits the codec models alone, then two move the filter too
    assert trainer.step == 2 and trainer.rate_step == 2 and trainer.error_step == 3
    card = prefilter_card(tmp_path / "bank", "x265", "psnr")
    assert card is not None and card.training["steps"] == 2
    assert {"bd_psnr", "bd_ms_ssim", "rate_spearman", "error_spearman"} <= set(card.validation)
    net = load_prefilter(tmp_path / "bank", card)
    b = Batch.of([list(iter_frames(cache / "clips" / "c0.y4m"))[:1]])
    fy, _ = net(b.y[0][:, None], b.uv[0], torch.tensor([32]))
    assert not torch.equal(fy, b.y[0][:, None])  # two steps moved it off the identity
    more = PreFilterTrainer(cfg.model_copy(update={"steps": 3}), cache, val, out)
    more.run(lambda _: None)
    assert more.step == 3 and len(more.history) == 3  # before, step 2, step 3
