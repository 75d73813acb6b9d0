"""wrapcodec bench on real clips: outputs, cache, frontier sanity, local vs Dask cluster."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from wrapcodec.bench import BenchConfig, Cache, plan, post_kmacs_per_pixel, run_points
from wrapcodec.cli import cli


@pytest.fixture(scope="module")
def dataset(
    parkjoy: Path, tmp_path_factory: pytest.TempPathFactory, cut_clip: Callable[..., Path]
) -> Path:
    cut = cut_clip
    folder = tmp_path_factory.mktemp("dataset")
    cut(parkjoy, folder / "pj_a.y4m", 128, 72, 2, 8)
    cut(parkjoy, folder / "pj_b.y4m", 96, 64, 2, 8)
    return folder


ARGS = ["--codec", "x264", "--qps", "26,32,38,44", "--preset", "ultrafast", "--options", "9,12,13"]


def test_bench_outputs_and_cache(runner: CliRunner, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = runner.invoke(cli, ["bench", str(dataset), *ARGS, "--out", str(out), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    for name in ("results.json", "points.csv", "report.md", "rd_pj_a.png", "rd_average.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["computed_points"] == 2 * 4 * 4
    assert results["versions"]["encoder"] != "unknown"
    assert "bench" in results["command"]
    # A frontier that contains the anchor never scores above 0 % with the envelope.
    for row in ("bilinear", "Lanczos", "all options"):
        for seq, r in results["bd_rate"][row]["psnr_yuv"].items():
            if seq != "mean of sequences":
                assert r["envelope"]["bd_rate"] <= 1e-9, (row, seq)
    assert "post-only" not in results["bd_rate"]  # no neural options measured: no row
    report = (out / "report.md").read_text()
    assert "RD envelope" in report and "Pareto" in report and "PCHIP" in report
    # the rerun reuses every point: no encode at all
    again = runner.invoke(cli, ["bench", str(dataset), *ARGS, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["computed_points"] == 0
    assert "32 from cache" in again.stdout


def test_interrupted_run_resumes(dataset: Path, tmp_path: Path) -> None:
    config = BenchConfig(
        dataset=str(dataset), codec="x264", qps=[30, 40], preset="ultrafast", options=[0, 9]
    )
    specs, _ = plan(config)
    cache = Cache(tmp_path / "cache")
    run_points(specs[:3], cache)  # "interrupted" after three points
    points, computed = run_points(specs, cache)
    assert computed == len(specs) - 3
    assert [p.spec for p in points] == specs


def test_ssim_vmaf_and_psnr_against_ffmpeg(
    dataset: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x264")
    config = BenchConfig(
        dataset=str(dataset / "pj_a.y4m"),
        codec="x264",
        qps=[34, 40],
        preset="ultrafast",
        options=[0, 12],
        metrics=["psnr", "ssim", "vmaf"],
    )
    specs, _ = plan(config)
    points, _ = run_points(specs, Cache(tmp_path / "c"))
    for p in points:
        assert p.ssim_y is not None and 0.5 < p.ssim_y <= 1.0
        assert p.vmaf is not None and 0.0 <= p.vmaf <= 100.0
        assert p.psnr_yuv == pytest.approx((6 * p.psnr_y + p.psnr_u + p.psnr_v) / 8)
    # worse quality at the higher QP, on every metric
    direct = sorted((p for p in points if p.spec.option == 0), key=lambda p: p.spec.qp)
    assert direct[0].psnr_yuv > direct[1].psnr_yuv
    assert direct[0].ssim_y > direct[1].ssim_y  # type: ignore[operator]
    assert direct[0].vmaf > direct[1].vmaf  # type: ignore[operator]


def test_post_macs() -> None:
    assert post_kmacs_per_pixel(0, 480, 270) == 0.0
    # bilinear 2x up: 2 taps vertical on the half-width picture + 2 taps horizontal = 3 MAC
    # per luma pixel, plus chroma (a quarter each): 1.5 → 4.5 MACs/pixel (edges clamp: fewer)
    assert post_kmacs_per_pixel(12, 480, 270) == pytest.approx(0.0045, rel=0.02)
    assert post_kmacs_per_pixel(9, 480, 270) > post_kmacs_per_pixel(12, 480, 270)


def test_dask_local_cluster_equals_local_run(dataset: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    config = BenchConfig(
        dataset=str(dataset / "pj_b.y4m"),
        codec="x264",
        qps=[30, 40],
        preset="ultrafast",
        options=[0, 10, 13],
        threads=1,
    )
    specs, _ = plan(config)
    local, _ = run_points(specs, Cache(tmp_path / "local"))
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        remote, computed = run_points(
            specs, Cache(tmp_path / "dask"), dask=cluster.scheduler_address
        )
    assert computed == len(specs)
    for a, b in zip(local, remote, strict=True):
        assert a.spec == b.spec
        assert (a.bits, a.psnr_y, a.psnr_yuv) == (b.bits, b.psnr_y, b.psnr_yuv)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["/nonexistent/videos"], "no such file or folder"),
        (["DATA", "--qps", "30"], "at least 2 QPs"),
        (["DATA", "--qps", "30,x"], "not a list of integers"),
        (["DATA", "--metrics", "psnr,lpips"], "unknown metric 'lpips'"),
        (["DATA", "--options", "6", "--models", "EMPTY"], "needs neural models"),
    ],
)
def test_bench_bad_input(
    runner: CliRunner, dataset: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    (tmp_path / "empty").mkdir()
    subst = {"DATA": str(dataset), "EMPTY": str(tmp_path / "empty")}
    args = [subst.get(a, a) for a in args]
    result = runner.invoke(cli, ["bench", *args, "--codec", "x264", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
