"""wrapcodec bench on real clips: outputs, cache, frontier sanity, local vs Dask cluster."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from wrapcodec import ffmpeg
from wrapcodec.adapt import AdaptConfig
from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.bench import points
from wrapcodec.bench.analysis import analyse, without_updates
from wrapcodec.bench.plan import BenchConfig, plan
from wrapcodec.bench.points import Point, PointSpec, point_cache, post_kmacs_per_pixel
from wrapcodec.bench.report import fmt_bd
from wrapcodec.bench.run import run_points
from wrapcodec.cli import cli
from wrapcodec.encode import EncodeConfig, encode_file
from wrapcodec.errors import FFmpegError
from wrapcodec.options import OPTIONS


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
    assert results["versions"]["models"] == "none"  # linear options only
    assert "bench" in results["command"]
    # A frontier that contains the anchor never scores above 0 % with the envelope.
    for row in ("bilinear", "Lanczos", "all options"):
        for seq, r in results["bd_rate"][row]["psnr_yuv"].items():
            if seq != "mean of sequences":
                assert r["envelope"]["bd_rate"] <= 1e-9, (row, seq)
    assert "post-only" not in results["bd_rate"]  # no neural options measured: no row
    # the terminal's table: the mean of sequences in PSNR-YUV, then in PSNR-Y
    row = next(line for line in result.output.splitlines() if line.startswith("│ Lanczos"))
    bd = results["bd_rate"]["Lanczos"]
    means = [bd[m]["mean of sequences"]["envelope"] for m in ("psnr_yuv", "psnr_y")]
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[2:4] == [fmt_bd(m) for m in means], row
    assert "mean Y" in result.output
    report = (out / "report.md").read_text()
    assert "RD envelope" in report and "Pareto" in report and "PCHIP" in report
    assert "Content adaptation" not in report and results["adaptation"] == []
    assert "Without the update" not in report and results["bd_rate_without_update"] == {}
    # the rerun reuses every point: no encode at all
    again = runner.invoke(cli, ["bench", str(dataset), *ARGS, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["computed_points"] == 0
    assert "32 from cache" in again.stdout


def test_bench_auto_depth_takes_direct_codings_lower_j(
    runner: CliRunner, dataset: Path, tmp_path: Path
) -> None:
    """``--bitdepth auto`` codes direct at 10 and 8 bits, then every point of a sequence and
    QP at the depth whose direct coding has the lower J at the codec's λ(QP), as the encoder
    chooses it (with ``--lambda measured`` too: nothing here is adapted, so nothing is
    probed); a direct point cached before points recorded their MSE is measured again."""
    out = tmp_path / "bench"
    args = ["bench", str(dataset), "--codec", "x264", "--qps", "22,44", "--preset", "ultrafast"]
    args += ["--options", "9", "--jobs", "1", "--out", str(out), "--bitdepth", "auto"]
    args += ["--lambda", "measured"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["bitdepth"] == "auto"
    # direct at two depths and Lanczos once
    assert results["computed_points"] == 2 * 2 * 2 + 2 * 2
    said = "8 points (8 computed, 0 from cache, and 4 direct points that chose the depth or"
    assert said in " ".join(result.stdout.split()), result.stdout
    cache = point_cache(out / "cache")
    for seq in ("pj_a", "pj_b"):
        for qp in (22, 44):
            here = [
                p["spec"]
                for p in results["points"]
                if p["spec"]["sequence"] == seq and p["spec"]["qp"] == qp
            ]
            direct = next(spec for spec in here if spec["option"] == 0)
            samples = direct["frames"] * {"pj_a": 128 * 72, "pj_b": 96 * 64}[seq]
            lam = 0.85 * 2 ** ((qp - 12) / 3)  # x264's λ(QP)
            costs = {}
            for depth in (10, 8):
                p = cache.get(PointSpec(**{**direct, "bitdepth": depth}))
                assert p is not None and p.mse is not None
                costs[depth] = p.mse + lam * p.bits / samples
                probe = PointSpec(**{**direct, "bitdepth": depth, "qp": qp + 3})
                assert cache.get(probe) is None
            chosen = min((10, 8), key=lambda d: costs[d])
            assert {spec["bitdepth"] for spec in here} == {chosen}, (seq, qp, costs)
    rows = list(csv.DictReader(io.StringIO((out / "points.csv").read_text())))
    assert {r["bitdepth"] for r in rows} <= {"8", "10"} and len(rows) == 8
    assert "chosen per sequence and QP" in (out / "report.md").read_text()
    # a direct point cached without its J (an older cache) is measured again
    stale = next(
        f for f in (out / "cache").iterdir() if json.loads(f.read_text())["spec"]["option"] == 0
    )
    entry = json.loads(stale.read_text())
    entry["mse"] = None
    stale.write_text(json.dumps(entry))
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["computed_points"] == 1


def test_printed_table_fits_80_columns(dataset: Path, tmp_path: Path) -> None:
    """At 80 columns the table names every row in full and cuts nothing."""
    args = ["bench", str(dataset), "--codec", "x264", "--qps", "30,40", "--preset", "ultrafast"]
    args += ["--options", "9,12", "--jobs", "1", "--out", str(tmp_path / "bench")]
    proc = subprocess.run(
        [sys.executable, "-m", "wrapcodec", *args],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout, proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80, proc.stdout
    rows = {line.split("│")[1].strip() for line in proc.stdout.splitlines() if "│" in line}
    assert rows == {"bilinear", "Lanczos", "linear", "all options"}, proc.stdout
    for header in ("average", "mean", "pj_a", "pj_b"):
        assert f" {header} " in proc.stdout, proc.stdout


def test_metric_filter_command_and_failure(tmp_path: Path) -> None:
    """The metric filters take the distorted picture first; a failure carries ffmpeg's words."""
    assert ffmpeg.filter_args("ffmpeg", "rec.y4m", "ref.y4m", "ssim") == [
        *("ffmpeg", "-hide_banner", "-nostdin", "-i", "rec.y4m", "-i", "ref.y4m"),
        *("-lavfi", "[0:v][1:v]ssim", "-f", "null", "-"),
    ]
    missing = tmp_path / "missing.y4m"
    with pytest.raises(FFmpegError, match="metric filter failed") as failure:
        ffmpeg.run_filter(missing, missing, "ssim")
    assert "missing.y4m" in failure.value.stderr


def test_interrupted_run_resumes(dataset: Path, tmp_path: Path) -> None:
    config = BenchConfig(
        dataset=str(dataset), codec="x264", qps=[30, 40], preset="ultrafast", options=[0, 9]
    )
    specs, _ = plan(config)
    cache = point_cache(tmp_path / "cache")
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
    points, _ = run_points(specs, point_cache(tmp_path / "c"))
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
    local, _ = run_points(specs, point_cache(tmp_path / "local"))
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        remote, computed = run_points(
            specs, point_cache(tmp_path / "dask"), dask=cluster.scheduler_address
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


# -- content adaptation (--adapt-steps) -------------------------------------------------------

# On this tiny clip the update pays at QP 16 and not at QP 44: both outcomes are tested.
ADAPT = ["--codec", "x264", "--qps", "16,44", "--preset", "ultrafast", "--options", "2"]
ADAPT_STEPS = 20


def test_cache_key_without_adaptation_is_the_old_key(
    dataset: Path, first_bench_key: Callable[[BaseModel], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = plan(
        BenchConfig(dataset=str(dataset / "pj_a.y4m"), codec="x264", qps=[30, 40], options=[2])
    )[0][-1]
    assert spec.option == 2 and spec.adapt_steps == 0
    digest = first_bench_key(spec)  # the key before PointSpec had adapt_steps
    assert spec.key() == digest
    adapted = spec.model_copy(update={"adapt_steps": 20})
    before = adapted.key()
    assert before != digest
    # once the fit changes an adapted point is measured again; a plain one keeps its key
    monkeypatch.setattr(points, "ADAPT_REVISION", points.ADAPT_REVISION + 1)
    assert spec.key() == digest and adapted.key() != before


def test_adaptation_applies_to_neural_points_only(dataset: Path) -> None:
    def specs(steps: int) -> list[PointSpec]:
        config = BenchConfig(
            dataset=str(dataset), codec="x264", qps=[30, 40], options=[0, 2, 9], adapt_steps=steps
        )
        return plan(config)[0]

    plain, adapted = specs(0), specs(ADAPT_STEPS)
    for a, b in zip(plain, adapted, strict=True):
        neural = OPTIONS[a.option].neural
        assert b.adapt_steps == (ADAPT_STEPS if neural else 0)
        assert (a.key() == b.key()) != neural  # linear points are shared between both runs


@pytest.fixture(scope="module")
def adapted_run(
    dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[Point], list[Point]]:
    """``bench --adapt-steps 20 --lambda measured`` of option 2 on one clip through the CLI,
    its points, and the same points without adaptation (same bitstreams: one thread, so the
    encodes are equal)."""
    out = tmp_path_factory.mktemp("adapt") / "bench"
    clip = dataset / "pj_a.y4m"
    result = CliRunner().invoke(
        cli,
        [
            *("bench", str(clip), *ADAPT, "--adapt-steps", str(ADAPT_STEPS)),
            *("--out", str(out), "--jobs", "1", "--threads", "1", "--lambda", "measured"),
        ],
    )
    assert result.exit_code == 0, result.output
    cache = point_cache(out / "cache")
    config = BenchConfig(
        dataset=str(clip),
        codec="x264",
        qps=[16, 44],
        preset="ultrafast",
        options=[0, 2],
        threads=1,
    )
    with_update = [Point(**p) for p in json.loads((out / "results.json").read_text())["points"]]
    assert [p.spec.lam_scale != 1 for p in with_update] == [False, False, True, True]
    without, computed = run_points(plan(config)[0], cache)
    assert computed == 2  # only the neural points differ
    return out, with_update, without


def test_adapted_points_take_the_lower_cost(
    adapted_run: tuple[Path, list[Point], list[Point]],
) -> None:
    _, with_update, without = adapted_run
    used = {p.spec.qp: p.adapt_used for p in with_update if p.spec.option == 2}
    assert used == {16: True, 44: False}, "the clip or models changed: pick other QPs"
    for a, p in zip(with_update, without, strict=True):
        assert a.spec.option == p.spec.option and a.spec.qp == p.spec.qp
        if a.spec.option == 0:  # linear: no adaptation, the very same point
            assert a == p and a.adapt_gain_db is None and a.adapt_bytes is None
            assert a.adapt_s is None and not a.adapt_used and a.psnr_yuv_without_update is None
            continue
        assert a.spec.adapt_steps == ADAPT_STEPS and p.spec.adapt_steps == 0
        assert p.adapt_gain_db is None and not p.adapt_used
        assert a.adapt_bytes and a.adapt_bytes > 0 and a.adapt_s and a.adapt_s > 0
        assert a.psnr_yuv_without_update == p.psnr_yuv  # the same bitstream
        assert a.adapt_gain_db is not None
        assert a.adapt_cost_with is not None and a.adapt_cost_without is not None
        # the encoder's rule: the update is kept exactly when it lowers J
        assert a.adapt_used == (a.adapt_cost_with < a.adapt_cost_without)
        chosen, other = (
            (a.adapt_cost_with, a.adapt_cost_without)
            if a.adapt_used
            else (a.adapt_cost_without, a.adapt_cost_with)
        )
        assert chosen <= other
        assert a.psnr_yuv_lanczos_post == p.psnr_yuv_lanczos_post  # same bitstream
        if a.adapt_used:  # the file carries the update: 8·(payload + update + overhead)
            assert a.bits == p.bits + 8 * a.adapt_bytes
            assert a.psnr_yuv == pytest.approx(p.psnr_yuv + a.adapt_gain_db)
            assert a.encode_s >= a.adapt_s  # the fit is encoder work
        else:  # the plain point's figures
            assert a.bits == p.bits
            assert (a.psnr_y, a.psnr_yuv) == (p.psnr_y, p.psnr_yuv)


def test_adapted_point_is_the_encoders_decision(
    dataset: Path, adapted_run: tuple[Path, list[Point], list[Point]], tmp_path: Path
) -> None:
    """``wrapcodec encode`` of the same clip, option and QP sends a file of the point's bits
    and makes the same choice, at the same measured λ."""
    _, with_update, _ = adapted_run
    point = next(p for p in with_update if p.spec.option == 2 and p.spec.qp == 16)
    config = EncodeConfig(
        backend=get_backend("x264"),
        settings=EncodeSettings(qp=point.spec.qp, preset="ultrafast", threads=1),
        options=(OPTIONS[2],),
        adapt=AdaptConfig(steps=ADAPT_STEPS),
        bank=get_bank(),
        lam="measured",
    )
    report = encode_file(str(dataset / "pj_a.y4m"), str(tmp_path / "x.wrp"), config)
    adaptation = report.candidates[0].adaptation
    assert adaptation is not None
    assert adaptation.used == point.adapt_used and adaptation.bytes == point.adapt_bytes
    assert adaptation.cost_with == pytest.approx(point.adapt_cost_with)
    assert adaptation.cost_without == pytest.approx(point.adapt_cost_without)
    (segment,) = report.segments
    assert segment.lam is not None and segment.lam.scale == point.spec.lam_scale
    assert report.bits == point.bits == 8 * (tmp_path / "x.wrp").stat().st_size
    assert report.psnr_yuv == pytest.approx(point.psnr_yuv)


def test_adaptation_report_files(adapted_run: tuple[Path, list[Point], list[Point]]) -> None:
    out, with_update, _ = adapted_run
    results = json.loads((out / "results.json").read_text())
    assert f"--adapt-steps={ADAPT_STEPS}" in results["command"]
    assert results["config"]["adapt_steps"] == ADAPT_STEPS
    (row,) = results["adaptation"]
    neural = [p for p in with_update if p.spec.option == 2]
    assert row["option"] == 2 and row["steps"] == [ADAPT_STEPS]
    assert row["sequences"]["pj_a"]["points"] == 2
    assert row["mean"]["gain_db"] == pytest.approx(sum(p.adapt_gain_db or 0 for p in neural) / 2)
    assert row["mean"]["used_share"] == sum(p.adapt_used for p in neural) / 2
    report = (out / "report.md").read_text()
    assert "## Content adaptation" in report and "| 2 post-1/2 | pj_a |" in report
    rows = list(csv.DictReader(io.StringIO((out / "points.csv").read_text())))
    assert {r["adapt_steps"] for r in rows} == {"0", str(ADAPT_STEPS)}
    for r in rows:
        assert (r["adapt_gain_db"] != "") == (r["option"] == "2"), r


def test_rows_without_the_update_are_the_run_without_adaptation(
    adapted_run: tuple[Path, list[Point], list[Point]],
) -> None:
    """The adapted run's points taken without their updates are the points of the same run
    without adaptation (same bitstreams), and so are their BD-rates in results.json."""
    out, with_update, without = adapted_run
    assert any(p.adapt_used for p in with_update)  # so that a rate is taken apart
    for a, p in zip(without_updates(with_update), without, strict=True):
        assert a.spec.option == p.spec.option and a.spec.qp == p.spec.qp
        assert a.bits == p.bits and a.kbps == pytest.approx(p.kbps)
        assert a.psnr_yuv == pytest.approx(p.psnr_yuv)
    expected = analyse(without, ["psnr_yuv"], "pchip")["post-only"]["psnr_yuv"]
    stored = json.loads((out / "results.json").read_text())["bd_rate_without_update"]
    assert set(stored) == {"post-only", "post + wrapper", "all options"}
    row = stored["post-only"]["psnr_yuv"]["pj_a"]
    assert row["envelope"]["bd_rate"] == pytest.approx(expected.value("pj_a", "envelope"))
    assert row["pareto"]["bd_rate"] == pytest.approx(expected.value("pj_a", "pareto"))
    assert "## Without the update: PSNR-YUV" in (out / "report.md").read_text()


def test_ssim_is_of_the_chosen_reconstruction(
    dataset: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    """A point that keeps its update measures SSIM on the output with the update."""
    require_backend("x264")
    config = BenchConfig(
        dataset=str(dataset / "pj_a.y4m"),
        codec="x264",
        qps=[16],
        preset="ultrafast",
        options=[2],
        metrics=["psnr", "ssim"],
        threads=1,
    )
    plain = next(s for s in plan(config)[0] if s.option == 2)
    adapted = plain.model_copy(update={"adapt_steps": ADAPT_STEPS})
    (a, p), _ = run_points([adapted, plain], point_cache(tmp_path / "c"))
    assert a.adapt_used and a.psnr_yuv != p.psnr_yuv
    assert a.ssim_y is not None and p.ssim_y is not None and a.ssim_y != p.ssim_y
