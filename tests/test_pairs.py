"""Training pairs from the real codecs (wrapcodec.pairs) and supervised training on them."""

from __future__ import annotations

import copy
import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from banks import copy_bank
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from wrapcodec import ffmpeg, pairs
from wrapcodec.backend import get_backend
from wrapcodec.bank import Bank, option_for, shipped_folder
from wrapcodec.cli import cli
from wrapcodec.dataset import Picture
from wrapcodec.errors import InputError, WrapcodecError
from wrapcodec.metrics import mse, psnr
from wrapcodec.nets import PreProcessor, mse_8bit
from wrapcodec.options import OPTIONS, Option
from wrapcodec.pipeline import Layout, preprocess
from wrapcodec.resample import bottleneck_size
from wrapcodec.train import TrainConfig, Trainer
from wrapcodec.y4m import VideoInfo, iter_frames

IMAGES = Path(__file__).parent / "data" / "images"
SPEC = pairs.ClipSpec(frames=4, size=128)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three Kodak crops as 4-frame clips, coded with x264 at r = 1 and 1/2, QPs 22 and 42."""
    _require_backend("x264")
    folder = tmp_path_factory.mktemp("pairs")
    clips = pairs.make_clips(IMAGES, folder, SPEC)
    pts = pairs.points(["x264"], [Fraction(1), Fraction(1, 2)], [22, 42])
    assert pairs.build(clips, folder, pts, jobs=2) == 12
    return folder


def _require_backend(name: str) -> None:
    lacks = ffmpeg.missing(get_backend(name))
    if lacks:
        pytest.skip(f"ffmpeg lacks {', '.join(lacks)} for {name}")


def _picture(height: int, width: int, seed: int) -> Picture:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 256, (height, width), dtype=np.uint8)
    uv = rng.integers(0, 256, (2, height // 2, width // 2), dtype=np.uint8)
    return Picture(y, uv)


@pytest.mark.parametrize("seed", range(40))
def test_pseudo_video_frames_are_crops_of_the_photo(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = 2 * int(rng.integers(64, 200)), 2 * int(rng.integers(64, 200))
    picture = _picture(height, width, seed)
    frames = pairs.pseudo_video(picture, SPEC, np.random.default_rng(seed))
    assert len(frames) == SPEC.frames
    for f in frames:
        assert f.y.shape == (128, 128) and f.u.shape == f.v.shape == (64, 64)
        assert f.y.dtype == np.uint8


def test_a_pan_moves_the_window_by_whole_chroma_samples() -> None:
    """Without zoom, each frame is a crop of the photo itself, at an even offset."""
    picture = _picture(300, 400, 7)
    spec = pairs.ClipSpec(frames=4, size=128, zoom_every=10**9)  # zoom almost never
    for seed in range(10):
        frames = pairs.pseudo_video(picture, spec, np.random.default_rng(seed))
        for f in frames:
            hits = np.argwhere(picture.y[:, :-127] == f.y[0, 0])
            found = [
                (t, le)
                for t, le in hits
                if t + 128 <= 300 and np.array_equal(picture.y[t : t + 128, le : le + 128], f.y)
            ]
            assert found and all(t % 2 == 0 and le % 2 == 0 for t, le in found)


def test_clips_depend_only_on_the_photo_and_seed(tmp_path: Path) -> None:
    a = pairs.make_clips(IMAGES, tmp_path / "a", SPEC)
    b = pairs.make_clips(IMAGES, tmp_path / "b", SPEC)
    assert (
        [p.name for p in a]
        == [p.name for p in b]
        == [f"{p.stem}.y4m" for p in sorted(IMAGES.iterdir())]
    )
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    c = pairs.make_clips(IMAGES, tmp_path / "c", SPEC, seed=1)
    assert any(x.read_bytes() != y.read_bytes() for x, y in zip(a, c, strict=True))


def test_pairs_are_what_the_codec_decoded(cache: Path) -> None:
    """Decoded bottlenecks have the bottleneck size and 10-bit samples; the higher QP spends
    fewer bits and loses more; at r = 1 and QP 22 the decoded frames are close to the source."""
    clip = cache / "clips" / "kodak-kodim03-160.y4m"
    source = list(iter_frames(clip))
    for ratio in (Fraction(1), Fraction(1, 2)):
        w, h = bottleneck_size(128, 128, ratio)
        low = np.load(pairs.Point("x264", ratio, 22).folder(cache) / "kodak-kodim03-160.npz")
        high = np.load(pairs.Point("x264", ratio, 42).folder(cache) / "kodak-kodim03-160.npz")
        for data in (low, high):
            assert data["y"].shape == (4, h, w) and data["u"].shape == (4, h // 2, w // 2)
            assert data["y"].dtype == np.uint16 and int(data["y"].max()) < 1024
        assert 0 < int(high["bits"]) < int(low["bits"])
    low = np.load(pairs.Point("x264", Fraction(1), 22).folder(cache) / "kodak-kodim03-160.npz")
    for t, frame in enumerate(source):
        decoded_8bit = low["y"][t].astype(np.float64) / 4
        assert psnr(mse(frame.y.astype(np.float64), decoded_8bit), 8) > 35


def test_build_resumes_where_it_stopped(cache: Path) -> None:
    clips = sorted((cache / "clips").glob("*.y4m"))
    pts = pairs.points(["x264"], [Fraction(1), Fraction(1, 2)], [22, 42])
    assert pairs.build(clips, cache, pts) == 0
    victim = pts[0].folder(cache) / f"{clips[0].stem}.npz"
    before = victim.read_bytes()
    victim.unlink()
    assert pairs.build(clips, cache, pts) == 1
    assert victim.read_bytes() == before  # the codec is deterministic at one thread


def test_a_cache_records_its_coding_settings_and_refuses_others(
    cache: Path, runner: CliRunner
) -> None:
    """Each codec folder records the preset and the backend's arguments its pairs were coded
    with; a run at another preset is refused in one line before anything is coded, so that
    pairs coded otherwise are never mixed in."""
    record = json.loads((cache / pairs.codec_dir("x264", 10) / pairs.SETTINGS).read_text())
    assert record == pairs.coding_settings("x264") and record["preset"] == "medium"
    clips = sorted((cache / "clips").glob("*.y4m"))
    pts = pairs.points(["x264"], [Fraction(1)], [22, 27])  # QP 27: not coded yet
    with pytest.raises(InputError, match=r"preset medium .* this run codes at preset ultrafast"):
        pairs.build(clips, cache, pts, preset="ultrafast")
    assert not pts[1].folder(cache).exists() or not any(pts[1].folder(cache).iterdir())
    args = ["--size", "64", "--frames", "4", "--qps", "27", "--ratios", "1", "--codecs", "x264"]
    result = runner.invoke(
        cli, ["pairs", "--data", str(IMAGES), "--out", str(cache), "--preset", "fast", *args]
    )
    assert result.exit_code == 1 and "use another cache" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_settings_records_follow_the_backends_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x264 = get_backend("x264")
    assert x264.settings_digest() == x264.settings_digest("medium") != x264.settings_digest("fast")
    point = pairs.Point("x264", Fraction(1), 22)
    pairs.claim_settings(tmp_path, [point])  # a new folder records this run's settings
    pairs.claim_settings(tmp_path, [point])  # and takes a run with the same ones
    retuned = dataclasses.replace(x264, codec_args=lambda q, p, t: ["-preset", p, "-qp", str(q)])
    assert retuned.settings_digest() != x264.settings_digest()
    monkeypatch.setattr(pairs, "get_backend", lambda name: retuned)
    with pytest.raises(InputError, match="settings"):
        pairs.claim_settings(tmp_path, [point])
    monkeypatch.undo()
    record = tmp_path / pairs.codec_dir("x264", 10) / pairs.SETTINGS
    for bad in ("{", "[1, 2]", '{"preset": 3}'):
        record.write_text(bad)
        with pytest.raises(InputError, match="settings record"):
            pairs.claim_settings(tmp_path, [point])
    # a preset the codec lacks is refused before anything is recorded
    other = tmp_path / "other"
    with pytest.raises(InputError, match="--preset 'bogus': x264 presets are"):
        pairs.claim_settings(other, [point], "bogus")
    assert not other.exists()


def test_cached_qps_and_loading(cache: Path) -> None:
    assert pairs.cached_qps(cache, ["x264"], Fraction(1), 22, 47) == [22, 42]
    assert pairs.cached_qps(cache, ["x264"], Fraction(1), 23, 47) == [42]
    with pytest.raises(InputError, match="no coded pairs"):
        pairs.cached_qps(cache, ["x264"], Fraction(1, 4), 22, 47)
    loaded = pairs.load_pairs(cache, ["x264"], Fraction(1, 2), [42])
    assert len(loaded) == 3 and {p.qp for p in loaded} == {42}
    (y, uv), (ty, tuv) = pairs.sample_batch(np.random.default_rng(0), loaded, 5, 64)
    assert y.shape == ty.shape == (5, 1, 64, 64) and uv.shape == tuv.shape == (5, 2, 32, 32)
    # the upsampled decoded picture is close to its source (QP 42 at half size: blurred)
    assert float((y - ty).abs().mean()) < 0.15


@pytest.mark.slow  # trains
def test_training_on_pairs_learns(cache: Path, tmp_path: Path) -> None:
    """Supervised training on the coded pairs lowers the MSE on a fixed set of crops of them
    (from the bilinear start) within a hundred small steps."""
    torch.set_num_threads(1)
    cfg = TrainConfig(
        kind="post",
        ratio="1/2",
        data=str(cache),
        steps=100,
        batch=8,
        crop=64,
        proxy="pairs",
        codec="x264",
        lr=3e-3,
        val_every=1000,
    )
    trainer = Trainer(cfg, tmp_path / "post.safetensors")
    (y, uv), (ty, tuv) = pairs.sample_batch(np.random.default_rng(99), trainer.pairs, 32, 64)

    def held_out_mse() -> float:
        with torch.no_grad():
            return float(mse_8bit(*trainer.nets.post.restore(y, uv), ty, tuv))

    before = held_out_mse()
    trainer.run(lambda step, r, val: None)
    assert held_out_mse() < 0.95 * before
    assert trainer.step == 100 and (tmp_path / "post.safetensors").exists()


def test_pairs_train_post_processors_only(cache: Path) -> None:
    with pytest.raises(ValueError, match="post-processors only"):
        TrainConfig(kind="wrapper", ratio="1", data=str(cache), steps=1, proxy="pairs")
    with pytest.raises(ValueError, match="post-processors only"):  # the pre would learn
        TrainConfig(kind="wrapper", ratio="1", data=str(cache), steps=1, proxy="pairs", init="w")
    with pytest.raises(ValueError, match="pairs only"):
        TrainConfig(kind="post", ratio="1", data=str(cache), steps=1, codec="x264,x265")


def test_cli_pairs_refuses_bad_lists_in_one_line(runner: CliRunner, tmp_path: Path) -> None:
    for args, message in (
        (["--qps", "22,x"], "--qps: not a list of integers"),
        (["--qps", "22,99"], "--qps 99: x265 takes QPs 0..51"),
        (["--ratios", "1,3/4"], "ratio '3/4' is not one of"),
        (["--codecs", "nosuch"], "unknown codec backend 'nosuch'"),
        (["--codecs", "vvenc", "--bitdepth", "8"], "--bitdepth 8: vvenc codes (10,)"),
    ):
        result = runner.invoke(cli, ["pairs", "--data", str(IMAGES), "--out", str(tmp_path), *args])
        assert result.exit_code != 0 and message in result.output, result.output
        assert not (tmp_path / "clips").exists()


def test_cli_pairs_then_train(runner: CliRunner, tmp_path: Path) -> None:
    _require_backend("x264")
    cache = tmp_path / "cache"
    args = ["--size", "64", "--frames", "2", "--qps", "32", "--ratios", "1", "--codecs", "x264"]
    result = runner.invoke(cli, ["pairs", "--data", str(IMAGES), "--out", str(cache), *args])
    assert result.exit_code == 0, result.output
    assert "3 clips, 3 pairs coded now" in result.output
    out = tmp_path / "post.safetensors"
    train = ["train", "--kind", "post", "--ratio", "1", "--data", str(cache), "--proxy", "pairs"]
    train += ["--codec", "x264", "--steps", "3", "--crop", "64", "--batch", "2", "--out", str(out)]
    result = runner.invoke(cli, train)
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_pairs_at_8_bits_are_kept_apart_and_train_a_prior_for_8_bits(
    runner: CliRunner, tmp_path: Path
) -> None:
    """An 8-bit cache holds 8-bit samples in CODEC-8bit/, which 10-bit training does not see;
    a post-processor trained on it and installed as a prior serves 8-bit bottlenecks only."""
    _require_backend("x264")
    cache = tmp_path / "cache"
    args = ["--size", "64", "--frames", "2", "--qps", "22", "--ratios", "1", "--codecs", "x264"]
    made = ["pairs", "--data", str(IMAGES), "--out", str(cache), "--bitdepth", "8", *args]
    result = runner.invoke(cli, made)
    assert result.exit_code == 0, result.output
    folder = pairs.Point("x264", Fraction(1), 22, 8).folder(cache)
    assert folder == cache / "x264-8bit-c2" / "1" / "qp22"
    with np.load(folder / "kodak-kodim03-160.npz") as data:
        assert int(data["y"].max()) < 256 and int(data["y"].max()) > 128
    with pytest.raises(InputError, match="at 10 bits"):
        pairs.cached_qps(cache, ["x264"], Fraction(1), 22, 47)
    loaded = pairs.load_pairs(cache, ["x264"], Fraction(1), [22], bitdepth=8)
    assert {p.bitdepth for p in loaded} == {8}
    (y, _), (ty, _) = pairs.sample_batch(np.random.default_rng(0), loaded, 4, 64)
    assert float((y - ty).abs().mean()) < 0.02  # scaled as 8-bit samples: QP 22 is close

    out = tmp_path / "post.safetensors"
    train = ["train", "--kind", "post", "--ratio", "1", "--data", str(cache), "--proxy", "pairs"]
    train += ["--codec", "x264", "--qp-range", "22-22", "--bitdepth", "8", "--steps", "2"]
    result = runner.invoke(cli, [*train, "--crop", "64", "--batch", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    bank = tmp_path / "bank"
    copy_bank(bank, priors=False)
    install = ["models", "install", str(out), "--dest", str(bank), "--prior", "4"]
    result = runner.invoke(cli, [*install, "--codec", "x264", "--val", str(IMAGES)])
    assert result.exit_code == 0, result.output
    card = json.loads((bank / "post-1-p4.json").read_text())
    assert (card["codecs"], card["qp_band"], card["bitdepths"]) == (["x264"], [22, 22], [8])
    assert card["validation"]["bitdepth"] == 8  # validated at the depth it serves
    prior_bank = Bank(bank)
    assert prior_bank.prior_for(OPTIONS[1], "x264", 22, 8) == 4
    assert prior_bank.prior_for(OPTIONS[1], "x264", 22, 10) == 0
    # what a prior serves can be set at install: codecs beside its run's, and depths
    again = ["models", "install", str(out), "--dest", str(bank), "--prior", "5"]
    result = runner.invoke(cli, [*again, "--serves", "x264,x265", "--bitdepths", "8,10"])
    assert result.exit_code == 0, result.output
    card = json.loads((bank / "post-1-p5.json").read_text())
    assert (card["codecs"], card["bitdepths"]) == (["x264", "x265"], [8, 10])
    prior_bank = Bank(bank)
    assert prior_bank.prior_for(OPTIONS[1], "x264", 22, 8) == 4  # same band: the lower number
    assert prior_bank.prior_for(OPTIONS[1], "x265", 22, 10) == 5
    for extra, said in (
        (["--serves", "hevc"], "unknown codec backend 'hevc'"),
        (["--prior", "0", "--bitdepths", "8"], "apply to a prior"),
    ):
        result = runner.invoke(cli, [*again, *extra, "--dest", str(tmp_path / "other")])
        assert result.exit_code == 1 and said in result.output, result.output
        assert not (tmp_path / "other").exists()


def _wrapper_pre(ratio: Fraction) -> PreProcessor:
    pre = Bank(shipped_folder()).processors(option_for("wrapper", ratio)).pre
    assert pre is not None
    return pre


def test_wrapper_pairs_are_coded_through_its_pre_processor(cache: Path) -> None:
    """A wrapper's pairs hold what the codec decoded of its pre-processor's bottleneck, apart
    from the bilinear ones, under its weights' digest; another pre-processor has another."""
    ratio = Fraction(1, 2)
    pre = _wrapper_pre(ratio)
    digest = pairs.pre_digest(pre)
    assert pairs.wrapper_pres(Bank(shipped_folder()), [ratio])[ratio][0] == digest
    point = pairs.Point("x264", ratio, 22, pre=digest)
    assert point.folder(cache) == cache / "x264-c2" / f"wrapper-1_2-{digest}" / "qp22"
    clips = sorted((cache / "clips").glob("*.y4m"))
    assert pairs.build(clips, cache, [point], pres={digest: pre}) == 3
    name = "kodak-kodim03-160.npz"
    through = np.load(point.folder(cache) / name)
    bilinear = np.load(pairs.Point("x264", ratio, 22).folder(cache) / name)
    assert through["y"].shape == bilinear["y"].shape
    # each decoded bottleneck is nearer its own pre-processing than the other's
    clip = cache / "clips" / "kodak-kodim03-160.y4m"
    frame = next(iter_frames(clip))
    wrapper = _layout(ratio, option_for("wrapper", ratio))
    mine, other = preprocess(frame, wrapper).y / 4, preprocess(frame, _layout(ratio)).y / 4
    for decoded, own, rival in ((through, mine, other), (bilinear, other, mine)):
        near = psnr(mse(own, decoded["y"][0] / 4), 8)
        assert near > 40 and near > psnr(mse(rival, decoded["y"][0] / 4), 8) + 0.5
    assert pairs.cached_qps(cache, ["x264"], ratio, 22, 47, pre=digest) == [22]
    with pytest.raises(ValueError, match="need that pre-processor"):
        pairs.code_clip(clips[0], point, pre=_wrapper_pre(Fraction(2, 3)))
    changed = copy.deepcopy(pre)
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)
    assert pairs.pre_digest(changed) != digest


def _layout(ratio: Fraction, opt: Option | None = None) -> Layout:
    """The layout of a 128×128 clip: the wrapper ``opt`` of the shipped bank, or bilinear."""
    info, x264 = VideoInfo(128, 128, 8, 25, 1), get_backend("x264")
    if opt is None:
        return Layout.make(info, pairs.coding_option(ratio), x264, 10)
    return Layout.make(info, opt, x264, 10, Bank(shipped_folder()), pre_arithmetic="float32")


@pytest.mark.slow  # trains
def test_a_wrappers_post_processor_trains_on_its_own_pairs(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`pairs --wrappers`, then `train --kind wrapper --freeze-pre` on them: the post-processor
    changes, the pre-processor does not; weights with another pre-processor find no pairs."""
    _require_backend("x264")
    cache = tmp_path / "cache"
    args = ["--size", "64", "--frames", "2", "--qps", "32", "--ratios", "1/2", "--codecs", "x264"]
    made = ["pairs", "--data", str(IMAGES), "--out", str(cache), "--wrappers", *args]
    result = runner.invoke(cli, made)
    assert result.exit_code == 0, result.output
    assert "3 clips, 3 pairs coded now" in result.output
    init = shipped_folder() / "wrapper-1_2.safetensors"
    out = tmp_path / "wrapper.safetensors"
    train = ["train", "--kind", "wrapper", "--ratio", "1/2", "--data", str(cache)]
    train += ["--proxy", "pairs", "--codec", "x264", "--freeze-pre", "--steps", "3"]
    train += ["--crop", "64", "--batch", "2", "--lr", "1e-2"]
    result = runner.invoke(cli, [*train, "--init", str(init), "--out", str(out)])
    assert result.exit_code == 0, result.output
    before, after = load_file(str(init)), load_file(str(out))
    for name, tensor in before.items():
        same = torch.equal(tensor, after[name])
        assert same == name.startswith("pre."), name
    other = tmp_path / "other.safetensors"  # the same wrapper with another pre-processor
    before["pre.head.bias"] = before["pre.head.bias"] + 1e-3
    save_file(before, str(other))
    result = runner.invoke(cli, [*train, "--init", str(other), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "through pre-processor" in result.output, result.output
    wrong = shipped_folder() / "wrapper-2_3.safetensors"  # another ratio's
    result = runner.invoke(cli, [*train, "--init", str(wrong), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not weights of this kind and ratio" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_pairs_through_a_wrapper_the_bank_lacks_are_refused_in_one_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    bank = copy_bank(tmp_path / "bank")
    (bank / "wrapper-1_2.json").unlink()
    with pytest.raises(WrapcodecError, match="wrapper-1/2"):
        pairs.wrapper_pres(Bank(bank), [Fraction(1, 2)])
    args = ["pairs", "--data", str(IMAGES), "--out", str(tmp_path / "cache"), "--wrappers"]
    result = runner.invoke(cli, [*args, "--ratios", "1,1/2", "--models", str(bank)])
    assert result.exit_code == 1 and "wrapper-1/2" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "cache").exists()
