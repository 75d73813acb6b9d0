"""Training runs: a seeded smoke test, resuming, wrappers and the ``train`` command."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_errors import fails
from click.testing import CliRunner
from safetensors.torch import load_file

from wrapcodec.cli import cli
from wrapcodec.errors import InputError
from wrapcodec.train import StepResult, TrainConfig, Trainer, build_nets, mse_8bit

IMAGES = Path(__file__).parent / "data" / "images"


pytestmark = pytest.mark.usefixtures("one_thread")


def config(**changes: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "kind": "post",
        "ratio": "1/2",
        "data": str(IMAGES),
        "val": str(IMAGES),
        "steps": 20,
        "batch": 2,
        "crop": 64,
        "clip_len": 2,
        "val_every": 10,
        "val_count": 2,
        "seed": 0,
        "proxy": "jpeg",
    }
    return TrainConfig(**(base | changes))


class Run:
    """What one :meth:`Trainer.run` reported, and where it wrote."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.steps: list[int] = []
        self.results: list[StepResult] = []
        self.vals: list[dict[str, float]] = []

    def __call__(self, step: int, result: StepResult, val: dict[str, float] | None) -> None:
        self.steps.append(step)
        self.results.append(result)
        if val is not None:
            self.vals.append(val)

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.trainer.out))


def train(cfg: TrainConfig, out: Path, resume: bool = False) -> Run:
    trainer = Trainer(cfg, out)
    if resume:
        trainer.resume()
    run = Run(trainer)
    trainer.run(run)
    return run


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The seeded 20-step post 1/2 run, shared by the tests that compare against it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # it runs before the per-test fixture that does this
    try:
        return train(config(), tmp_path_factory.mktemp("straight") / "m.safetensors")
    finally:
        torch.set_num_threads(threads)


# -- the library ----------------------------------------------------------------------------


def test_mse_8bit_weighs_luma_six_to_one() -> None:
    y, uv = torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 2, 2)
    off = 2 / 255  # one 8-bit step in normalised units
    assert mse_8bit(y + off, uv, y, uv).item() == pytest.approx(6 / 8, rel=1e-5)
    assert mse_8bit(y, uv + off, y, uv).item() == pytest.approx(2 / 8, rel=1e-5)
    uv_u = uv.clone()
    uv_u[:, 0] += 2 * off
    assert mse_8bit(y, uv_u, y, uv).item() == pytest.approx(4 / 8, rel=1e-5)


def test_seeded_smoke_run(straight: Run, tmp_path: Path) -> None:
    assert straight.steps == list(range(1, 21))
    assert all(math.isfinite(r.loss) and r.loss > 0 for r in straight.results)
    assert all(math.isfinite(r.mse) and math.isfinite(r.bpp) and r.q > 0 for r in straight.results)
    out = straight.trainer.out
    for suffix in (".safetensors", ".ckpt", ".train.json"):
        assert out.with_suffix(suffix).is_file(), suffix
    history = straight.trainer.history
    assert [h["step"] for h in history] == [10, 20]
    assert len(straight.vals) == 2
    for val in straight.vals:
        assert 15 < val["jpeg_psnr"] < 60 and 15 < val["jpeg_bilinear_psnr"] < 60
        assert val["jpeg_bpp"] > 0
    meta = json.loads(out.with_suffix(".train.json").read_text())
    assert meta["step"] == 20 and meta["config"]["ratio"] == "1/2"
    assert len(meta["history"]) == 2

    weights = straight.weights
    assert weights and all(k.startswith("post.") for k in weights)
    assert weights["post.tail.weight"].abs().sum().item() > 0  # it did train (zero at start)

    again = train(config(), tmp_path / "m.safetensors")
    assert same_weights(again.weights, weights)
    assert [r.loss for r in again.results] == [r.loss for r in straight.results]


def test_resume_continues_as_one_run(straight: Run, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    first = train(config(steps=10), out)
    assert first.steps == list(range(1, 11))
    second = train(config(steps=20), out, resume=True)
    assert second.steps == list(range(11, 21))
    assert same_weights(second.weights, straight.weights)
    assert [r.loss for r in second.results] == [r.loss for r in straight.results[10:]]
    assert second.trainer.history == straight.trainer.history


def test_resume_refuses_a_changed_configuration(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    train(config(steps=1, val=None), out)
    with pytest.raises(InputError, match="different configuration"):
        Trainer(config(steps=2, val=None, lr=2e-3), out).resume()
    with pytest.raises(InputError, match="different configuration"):
        Trainer(config(steps=2, val=None, ratio="1/4"), out).resume()
    Trainer(config(steps=2, val=None), out).resume()  # only the step count may change


def test_resume_without_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no checkpoint"):
        Trainer(config(), tmp_path / "none.safetensors").resume()


def test_wrapper_trains_the_pre_processor(tmp_path: Path) -> None:
    cfg = config(kind="wrapper", ratio="2/3", steps=3, val_count=1)
    initial = build_nets(cfg).weights()
    run = train(cfg, tmp_path / "w.safetensors")
    assert run.steps == [1, 2, 3]
    assert all(math.isfinite(r.loss) for r in run.results)
    weights = run.weights
    assert weights.keys() == initial.keys()
    pre = [k for k in weights if k.startswith("pre.")]
    assert pre and any(k.startswith("post.") for k in weights)
    assert weights["pre.tail.weight"].abs().sum().item() > 0  # zero before training
    assert any(not torch.equal(weights[k], initial[k]) for k in pre if k != "pre.tail.weight")


def test_missing_training_data(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        Trainer(config(data=str(tmp_path / "nothing")), tmp_path / "m.safetensors")
    with pytest.raises(InputError, match="no images"):
        Trainer(config(crop=512), tmp_path / "m.safetensors")


@pytest.mark.parametrize(
    "damage",
    [lambda data: b"not an image at all", lambda data: data[: len(data) // 2]],
    ids=["not an image", "truncated"],
)
def test_corrupt_training_image_is_named(
    tmp_path: Path, runner: CliRunner, damage: Callable[[bytes], bytes]
) -> None:
    """One unreadable picture among good ones: an InputError naming it, one line from the
    command, and nothing written."""
    data = tmp_path / "data"
    data.mkdir()
    for image in IMAGES.iterdir():
        (data / image.name).write_bytes(image.read_bytes())
    broken = data / "broken.png"
    broken.write_bytes(damage(next(IMAGES.glob("*.png")).read_bytes()))
    out = tmp_path / "m.safetensors"
    with pytest.raises(InputError, match=f"^{re.escape(str(broken))}: cannot read this image"):
        Trainer(config(data=str(data), val=None), out)
    args = [*cli_args(out), "--data", str(data)]
    fails(runner, args, str(broken), "cannot read this image")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# -- the command ------------------------------------------------------------------------------


def cli_args(out: Path, *extra: str) -> list[str]:
    return [
        "train", "--kind", "post", "--ratio", "1/4", "--data", str(IMAGES), "--steps", "2",
        "--batch", "2", "--crop", "64", "--threads", "1", "--out", str(out), *extra,
    ]  # fmt: skip


def test_cli_train_refuses_to_overwrite_and_resumes(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    result = runner.invoke(cli, cli_args(out))
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".ckpt").is_file()
    assert "step 2" in result.stdout
    first = load_file(str(out))

    fails(runner, cli_args(out), "--resume")
    assert same_weights(load_file(str(out)), first)  # left alone

    result = runner.invoke(cli, [*cli_args(out), "--resume", "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert "step 3" in result.stdout
    meta = json.loads(out.with_suffix(".train.json").read_text())
    assert meta["step"] == 3
    assert not same_weights(load_file(str(out)), first)


def test_cli_train_rejects_a_reversed_qp_range(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    fails(runner, cli_args(out, "--qp-range", "40-30"), "--qp-range", "40-30")
    fails(runner, cli_args(out, "--qp-range", "thirty"), "--qp-range")
    assert not out.exists() and not out.with_suffix(".ckpt").exists()


def test_cli_train_without_cuda(runner: CliRunner, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available here")
    out = tmp_path / "m.safetensors"
    fails(runner, cli_args(out, "--device", "cuda"), "--device cuda", "CUDA")
    assert not out.exists()


def test_cli_resume_needs_a_checkpoint(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    fails(runner, [*cli_args(out), "--resume"], "no checkpoint")
    assert not out.exists()


def test_codec_in_the_loop_trains_the_wrapper(
    tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    """With x265 in the forward pass the pre-processor still learns (identity backward) and
    the proxy's step, which only shapes the rate term, stays where it started."""
    require_backend("x265")
    cfg = config(kind="wrapper", ratio="1/2", steps=2, val_every=2, val_count=2, proxy="codec")
    run = train(cfg, tmp_path / "c.safetensors")
    assert all(r.q == pytest.approx(cfg.q_init) for r in run.results)
    assert all(22 <= r.extra["qp"] <= 47 and r.extra["codec_bpp"] > 0 for r in run.results)
    assert {"qp27_psnr", "qp37_psnr", "qp27_bilinear_psnr"} <= set(run.vals[-1])
    assert run.weights["pre.tail.weight"].abs().sum().item() > 0


def test_frozen_pre_processor_stays_put(tmp_path: Path) -> None:
    start = tmp_path / "start.safetensors"
    train(config(kind="wrapper", ratio="1/2", steps=2, val_count=1), start)
    cfg = config(kind="wrapper", ratio="1/2", steps=2, val_count=1, init=str(start))
    run = train(cfg.model_copy(update={"freeze_pre": True}), tmp_path / "ft.safetensors")
    before, after = load_file(str(start)), run.weights
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("pre."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("post."))
