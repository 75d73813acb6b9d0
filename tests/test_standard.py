"""``encode --standard``: plain streams any player decodes, the pre-filter and what trains it."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_errors import fails
from click.testing import CliRunner
from procs import alive, children, one_line, requires_proc, start, wait_for
from safetensors.torch import save_file

from wrapcodec import ffmpeg
from wrapcodec.backend import get_backend
from wrapcodec.bank import STANDARD_FOLDER, PreFilterCard, load_prefilter, prefilter_card
from wrapcodec.cli import cli
from wrapcodec.encode.standard import StandardConfig, encode_standard, parse_standard_options
from wrapcodec.errors import InputError, OptionError
from wrapcodec.metrics import MsSsimAccumulator, ms_ssim_plane
from wrapcodec.paths import sha256_file
from wrapcodec.prefilter import PreFilter, RateModel, ms_ssim
from wrapcodec.streams import FORMATS, stream_format
from wrapcodec.y4m import count_frames, iter_frames


def make_bank(folder: Path, codec: str, metric: str, seed: int = 1) -> Path:
    """A bank folder holding one pre-filter with small random weights (not the identity)."""
    torch.manual_seed(seed)
    net = PreFilter(width=8, layers=3)
    last = net.body[-1]
    assert isinstance(last, torch.nn.Conv2d)
    torch.nn.init.normal_(last.weight, std=0.02)
    name = f"prefilter-{codec}-{metric}"
    dest = folder / STANDARD_FOLDER
    dest.mkdir(parents=True)
    weights = dest / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    card = PreFilterCard(
        name=name,
        file=weights.name,
        sha256=sha256_file(weights),
        codec=codec,
        metric=metric,  # type: ignore[arg-type]
        width=8,
        layers=3,
        qp_range=(22, 47),
    )
    (dest / f"{name}.json").write_text(card.model_dump_json())
    return folder


def plain_decode(path: Path, bitdepth: int = 8) -> tuple[str, int]:
    """MD5 of the pictures plain ffmpeg decodes from ``path``, and their count."""
    pix = "yuv420p" if bitdepth == 8 else "yuv420p10le"
    cmd = [ffmpeg.ffmpeg_exe(), "-v", "error", "-i", str(path), "-fps_mode", "passthrough"]
    cmd += ["-f", "rawvideo", "-pix_fmt", pix, "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return hashlib.md5(raw).hexdigest(), raw


# -- formats ----------------------------------------------------------------------------------


def test_stream_format_by_suffix() -> None:
    assert stream_format("a.MP4", "x265").muxer == "mp4"
    assert stream_format("a.hevc", "x265").demuxer == "hevc"
    assert stream_format("a.ivf", "svtav1").name == "IVF"
    assert "-tag:v" in stream_format("a.mp4", "x265").muxer_args("x265")
    assert stream_format("a.mp4", "x264").muxer_args("x264") == ["-movflags", "+faststart"]
    with pytest.raises(InputError, match="cannot hold vvenc"):
        stream_format("a.mkv", "vvenc")
    with pytest.raises(InputError, match="cannot hold x264"):
        stream_format("a.265", "x264")
    with pytest.raises(InputError, match=r"name it by its format \(for x264: .mp4"):
        stream_format("a.wrp", "x264")
    suffixes = [s for f in FORMATS for s in f.suffixes]
    assert len(suffixes) == len(set(suffixes))


def test_standard_options() -> None:
    assert parse_standard_options("all") == ("direct", "prefilter")
    assert parse_standard_options("0,prefilter") == ("direct", "prefilter")
    with pytest.raises(OptionError, match=r"option 1 \(post-1/1\) needs wrapcodec's decoder"):
        parse_standard_options("direct,1")
    with pytest.raises(OptionError, match=r"option 5 \(wrapper-1/1\)"):
        parse_standard_options("wrapper-1/1")
    with pytest.raises(OptionError, match="given twice"):
        parse_standard_options("direct,0")


# -- MS-SSIM ----------------------------------------------------------------------------------


def test_ms_ssim_numpy_and_torch_agree(parkjoy: Path) -> None:
    frame = next(iter_frames(parkjoy))
    rng = np.random.default_rng(0)
    noisy = np.clip(frame.y + rng.normal(0, 8, frame.y.shape), 0, 255).astype(np.uint8)
    value = ms_ssim_plane(frame.y, noisy, 8)
    t = ms_ssim(
        torch.from_numpy(frame.y.astype(np.float32))[None, None],
        torch.from_numpy(noisy.astype(np.float32))[None, None],
    )
    assert 0.5 < value < 0.999
    assert abs(float(t) - value) < 1e-5
    assert ms_ssim_plane(frame.y, frame.y, 8) == pytest.approx(1.0)
    worse = np.clip(frame.y + rng.normal(0, 16, frame.y.shape), 0, 255).astype(np.uint8)
    assert ms_ssim_plane(frame.y, worse, 8) < value
    acc = MsSsimAccumulator(8)
    acc.add(frame, frame._replace(y=noisy))
    assert acc.db == pytest.approx(-10 * np.log10(1 - value))


def test_ms_ssim_refuses_small_pictures() -> None:
    a = np.zeros((100, 300), np.uint8)
    with pytest.raises(InputError, match="at least 176"):
        ms_ssim_plane(a, a, 8)


# -- networks ---------------------------------------------------------------------------------


def test_untrained_prefilter_is_the_identity() -> None:
    y = torch.rand(2, 1, 16, 24) * 2 - 1
    uv = torch.rand(2, 2, 8, 12) * 2 - 1
    fy, fuv = PreFilter()(y, uv, torch.tensor([22, 40]))
    assert torch.equal(fy, y) and torch.equal(fuv, uv)


def test_rate_model_is_positive_and_differentiable() -> None:
    model = RateModel()
    y = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_()
    uv = torch.rand(2, 3, 2, 8, 8) * 2 - 1
    bits = model(y, uv, torch.tensor([22, 47]))
    assert bits.shape == (2,) and bool((bits > 0).all())
    bits.sum().backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0


# -- the bank ---------------------------------------------------------------------------------


def test_prefilter_card_checks_its_weights(tmp_path: Path) -> None:
    folder = make_bank(tmp_path, "x265", "psnr")
    card = prefilter_card(folder, "x265", "psnr")
    assert card is not None and prefilter_card(folder, "x264", "psnr") is None
    assert isinstance(load_prefilter(folder, card), PreFilter)
    weights = folder / STANDARD_FOLDER / card.file
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(InputError, match="does not match its card"):
        load_prefilter(folder, card)
    bad = folder / STANDARD_FOLDER / "prefilter-x264-psnr.json"
    bad.write_text(json.dumps(card.model_dump() | {"file": "../x.safetensors"}))
    with pytest.raises(InputError, match="not a pre-filter card"):
        prefilter_card(folder, "x264", "psnr")


# -- encoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "suffix"), [("x265", ".mp4"), ("x265", ".hevc"), ("x264", ".mkv"), ("svtav1", ".ivf")]
)
def test_standard_file_decodes_to_what_was_measured(
    tmp_path: Path,
    parkjoy: Path,
    runner: CliRunner,
    require_backend: Callable[[str], None],
    codec: str,
    suffix: str,
) -> None:
    require_backend(codec)
    bank = make_bank(tmp_path / "bank", codec, "psnr")
    out = tmp_path / f"out{suffix}"
    args = ["encode", str(parkjoy), "-o", str(out), "--standard", "--codec", codec, "--qp", "40"]
    result = runner.invoke(cli, [*args, "--json", "--models", str(bank)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["candidates"]] == ["direct", "prefilter"]
    direct, filtered = report["candidates"]
    assert direct["decoded_md5"] != filtered["decoded_md5"]  # the filter changed the pictures
    best = min(report["candidates"], key=lambda c: c["cost"])
    assert report["chosen"] == best["name"]
    digest, raw = plain_decode(out)
    assert digest == best["decoded_md5"]
    assert len(raw) == count_frames(parkjoy) * 480 * 270 * 3 // 2
    assert out.stat().st_size == best["bytes"]
    assert {p.name for p in tmp_path.iterdir()} == {"bank", out.name}  # nothing else left


def test_ms_ssim_target_is_reported_and_used(
    tmp_path: Path, parkjoy: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    bank = make_bank(tmp_path / "bank", "x265", "ms-ssim")
    card = prefilter_card(bank, "x265", "ms-ssim")
    assert card is not None
    cfg = StandardConfig(
        get_backend("x265"), 37, "ultrafast", "ms-ssim", prefilter=load_prefilter(bank, card)
    )
    report = encode_standard(str(parkjoy), str(tmp_path / "o.mp4"), cfg)
    direct = report.candidates[0]
    assert direct.ms_ssim is not None and 0.8 < direct.ms_ssim < 1.0
    assert direct.ms_ssim_db == pytest.approx(-10 * np.log10(1 - direct.ms_ssim))
    assert report.metric == "ms-ssim" and direct.distortion > 0
    assert report.chosen == min(report.candidates, key=lambda c: c.cost).name


def test_standard_without_a_prefilter_is_direct_with_a_note(
    tmp_path: Path, clip8: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    require_backend("x264")
    empty = tmp_path / "bank"
    empty.mkdir()
    out = tmp_path / "o.264"
    args = ["encode", str(clip8), "-o", str(out), "--standard", "--codec", "x264", "--qp", "30"]
    result = runner.invoke(cli, [*args, "--models", str(empty), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["chosen"] == "direct" and "no x264 pre-filter" in report["note"]
    assert report["candidates"][0]["ms_ssim"] is None  # 192x108 is under MS-SSIM's minimum
    assert plain_decode(out)[0] == report["candidates"][0]["decoded_md5"]
    fails(
        runner,
        [*args[:-2], "--qp", "30", "--models", str(empty), "--options", "prefilter", "-y"],
        "no x264 pre-filter for psnr",
    )


def test_standard_refusals(
    tmp_path: Path, clip8: Path, clip10_odd: Path, runner: CliRunner
) -> None:
    base = ["encode", str(clip8), "--standard", "--qp", "30"]
    out = str(tmp_path / "o.mp4")
    fails(runner, [*base, "-o", out, "--options", "0,post-1/1"], "needs wrapcodec's decoder")
    fails(runner, [*base, "-o", str(tmp_path / "o.wrp")], "plain player", ".mp4")
    fails(runner, [*base, "-o", str(tmp_path / "o.mkv"), "--codec", "vvenc"], "cannot hold vvenc")
    fails(runner, [*base, "-o", out, "--jobs", "2"], "--jobs does not apply to --standard")
    fails(runner, [*base, "-o", out, "--bitdepth", "10"], "--bitdepth does not apply")
    fails(runner, [*base, "-o", out, "--metric", "ms-ssim", "--options", "direct"], "176")
    plain = ["encode", str(clip8), "--qp", "30", "-o", str(tmp_path / "o.wrp")]
    fails(runner, [*plain, "--metric", "ms-ssim"], "--metric applies to --standard")
    odd = ["encode", str(clip10_odd), "--standard", "--qp", "30", "-o", out]
    fails(runner, [*odd, "--options", "direct"], "161x97 is odd")
    assert not any(tmp_path.iterdir())


def test_bench_standard_in_both_metrics_and_cached(
    tmp_path: Path, parkjoy: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    from wrapcodec.bench.standard import run_standard_bench

    bank = make_bank(tmp_path / "bank", "x265", "psnr")
    done: list[str] = []
    args = (parkjoy, "x265", [30, 38, 46], "psnr", tmp_path / "out", 3, "ultrafast", str(bank))
    result = run_standard_bench(*args, progress=done.append)  # type: ignore[arg-type]
    assert len(done) == 6 and len(result.points) == 6
    curves = {r.curve: r for r in result.rows}
    assert set(curves) == {"prefilter", "standard"}
    assert all(r.bd_psnr is not None and r.bd_ms_ssim is not None for r in result.rows)
    assert len(curves["standard"].chosen) == 3
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| **mean** | standard |" in report
    again = run_standard_bench(*args, progress=done.append)  # type: ignore[arg-type]
    assert len(done) == 6 and again.rows == result.rows  # every point from the cache


def test_models_lists_prefilters(tmp_path: Path, runner: CliRunner) -> None:
    bank = make_bank(tmp_path / "bank", "x265", "ms-ssim")
    result = runner.invoke(cli, ["models", "--json", "--models", str(bank)])
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads(result.stdout) if r["kind"] == "prefilter"]
    assert row["name"] == "prefilter-x265-ms-ssim" and row["metric"] == "ms-ssim"
    assert row["macs_per_pixel"] == 0  # nothing at the decoder
    assert row["pre_macs_per_pixel"] == PreFilter(8, 3).macs_per_pixel() > 0
    table = runner.invoke(cli, ["models", "--models", str(bank)])
    assert table.exit_code == 0 and "prefilter-x265-ms-ssim" in table.stdout


@requires_proc
def test_sigterm_standard_leaves_nothing(tmp_path: Path, parkjoy: Path) -> None:
    """SIGTERM while ffmpeg writes a candidate's MP4: one line, 143, no temporary folder, no
    output, no ffmpeg left."""
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    args = ["encode", str(parkjoy), "-o", str(out / "o.mp4"), "--standard", "--qp", "30"]
    proc = start([*args, "--preset", "slow", "--options", "direct"], tmp, tmp_path)
    wait_for(proc, lambda: bool(list(tmp.glob("wrapcodec-standard-*/direct.mp4"))), "encoding")
    time.sleep(0.3)
    coders = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    one_line(err, "Terminated.")
    assert list(tmp.iterdir()) == [] and list(out.iterdir()) == []
    time.sleep(0.2)
    assert not [pid for pid in coders if alive(pid)], "ffmpeg left running"


def test_standard_reads_standard_input(
    tmp_path: Path, clip8: Path, runner: CliRunner, require_backend: Callable[[str], None]
) -> None:
    require_backend("x265")
    out = tmp_path / "o.265"
    args = ["encode", "-", "-o", str(out), "--standard", "--qp", "34", "--options", "direct"]
    result = runner.invoke(cli, [*args, "--json"], input=clip8.read_bytes())
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["input"] == "-" and report["frames"] == count_frames(clip8)
    assert plain_decode(out)[0] == report["candidates"][0]["decoded_md5"]


def test_bench_standard_needs_a_prefilter(tmp_path: Path, clip8: Path, runner: CliRunner) -> None:
    empty = tmp_path / "bank"
    empty.mkdir()
    args = ["bench", str(clip8), "--standard", "ms-ssim", "--models", str(empty)]
    fails(runner, [*args, "--out", str(tmp_path / "b")], "no x265 pre-filter for ms-ssim")
    assert not (tmp_path / "b").exists()
    bank = make_bank(tmp_path / "bank2", "x265", "ms-ssim")
    args = ["bench", str(clip8), "--standard", "ms-ssim", "--models", str(bank)]
    fails(runner, [*args, "--out", str(tmp_path / "b")], "pj8 is 192x108")
    assert not (tmp_path / "b").exists()
