"""The pre-processor's arithmetic: float32 or bfloat16 convolutions (encoder side only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import Bank, get_bank
from wrapcodec.bench.plan import BenchConfig, plan
from wrapcodec.cli import cli
from wrapcodec.encode import EncodeConfig, encode_file
from wrapcodec.errors import InputError
from wrapcodec.metrics import measure_files
from wrapcodec.nets import PRE_ARITHMETICS, default_pre_arithmetic, pre_arithmetic
from wrapcodec.options import OPTIONS
from wrapcodec.pipeline import Layout, preprocess, source_frames
from wrapcodec.y4m import read_info

WRAPPERS = [c for c, o in OPTIONS.items() if o.kind == "wrapper"]


@pytest.fixture(scope="module")
def bank() -> Bank:
    return get_bank()


def _bottleneck(clip: Path, code: int, bank: Bank, arithmetic: str) -> np.ndarray:
    info = read_info(clip)
    layout = Layout.make(
        info, OPTIONS[code], get_backend("x265"), 10, bank, pre_arithmetic=arithmetic
    )
    frame = next(iter(source_frames(clip, 0, 1)))
    return np.concatenate([p.astype(np.int64).ravel() for p in preprocess(frame, layout)])


@pytest.mark.parametrize("code", WRAPPERS)
def test_bfloat16_moves_few_samples_by_one_step(
    clip8: Path, bank: Bank, code: int, one_thread: None
) -> None:
    exact = _bottleneck(clip8, code, bank, "float32")
    fast = _bottleneck(clip8, code, bank, "bfloat16")
    assert np.array_equal(exact, _bottleneck(clip8, code, bank, "float32"))
    diff = np.abs(fast - exact)
    # bfloat16 is in use (some sample moves), and only the small learned corrections lose
    # precision: no 10-bit sample moves by more than one step, and few move at all
    assert diff.max() == 1
    assert np.mean(diff) < 0.1


def test_unknown_arithmetic_is_refused(clip8: Path, bank: Bank, runner: CliRunner) -> None:
    with pytest.raises(ValueError, match="int8"):
        pre_arithmetic("int8")
    with pytest.raises(ValueError, match="int8"):
        Layout.make(
            read_info(clip8), OPTIONS[5], get_backend("x265"), 10, bank, pre_arithmetic="int8"
        )
    with pytest.raises(InputError, match="--pre-arithmetic 'int8'"):
        config = EncodeConfig(
            backend=get_backend("x265"),
            settings=EncodeSettings(qp=32, preset="ultrafast"),
            options=(OPTIONS[5],),
            bank=bank,
            pre_arithmetic="int8",
        )
        encode_file(str(clip8), str(clip8.with_suffix(".wrp")), config)
    result = runner.invoke(
        cli, ["encode", str(clip8), "-o", "x.wrp", "--qp", "32", "--pre-arithmetic", "int8"]
    )
    assert result.exit_code == 2 and "int8" in result.output


@pytest.mark.parametrize("arithmetic", ["auto", *PRE_ARITHMETICS])
def test_encode_reports_its_arithmetic_and_decodes_to_its_measurement(
    runner: CliRunner,
    tmp_path: Path,
    clip8: Path,
    arithmetic: str,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x265")
    wrp, out = tmp_path / "w.wrp", tmp_path / "w.y4m"
    result = runner.invoke(
        cli,
        [
            *("encode", str(clip8), "-o", str(wrp), "--codec", "x265", "--qp", "32"),
            *("--preset", "ultrafast", "--options", "6", "--adapt-steps", "0", "--json"),
            *("--pre-arithmetic", arithmetic),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = default_pre_arithmetic() if arithmetic == "auto" else arithmetic
    assert report["pre_arithmetic"] == expected and report["option"] == 6
    decoded = runner.invoke(cli, ["decode", str(wrp), "-o", str(out)])
    assert decoded.exit_code == 0, decoded.output
    assert measure_files(str(clip8), str(out)).psnr_yuv == pytest.approx(
        report["psnr_yuv"], abs=1e-9
    )


def test_bench_keys(clip8: Path, first_bench_key: Callable[[BaseModel], str]) -> None:
    config = BenchConfig(dataset=str(clip8), codec="x264", qps=[30, 40], options=[0, 2, 6])
    plain = plan(config)[0]
    fast = plan(config.model_copy(update={"pre_arithmetic": "bfloat16"}))[0]
    for a, b in zip(plain, fast, strict=True):
        wrapper = OPTIONS[a.option].kind == "wrapper"
        assert b.pre_arithmetic == ("bfloat16" if wrapper else "float32")
        assert (a.key() == b.key()) != wrapper  # other points are shared between both runs
        # float32 hashes as the key did before the field existed
        assert a.key() == first_bench_key(a)


def test_models_speed_names_the_arithmetic(runner: CliRunner) -> None:
    args = ["models", "speed", "--size", "64x48", "--frames", "1", "--json"]
    result = runner.invoke(cli, [*args, "--pre-arithmetic", "bfloat16"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["pre_arithmetic"] == "bfloat16"
    assert all(
        (row["pre_fps_64x48"] is None) == row["model"].startswith("post")
        for row in summary["models"]
    )
