"""Segments cut at scene changes: the pure rule (scores to cuts) on made-up scores, ffmpeg's
``scdet`` scores on a clip of two real contents joined, and ``--segment-frames auto`` end to
end on it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wrapcodec import ffmpeg, scenes
from wrapcodec.backend import get_backend
from wrapcodec.cli import cli
from wrapcodec.dataset import read_picture
from wrapcodec.encode.config import EncodeConfig, settings_for
from wrapcodec.encode.encoder import segmentation
from wrapcodec.errors import BackendError, InputError
from wrapcodec.metrics import measure_files
from wrapcodec.y4m import Frame, VideoInfo, Y4MWriter, iter_frames, read_info

KODAK = Path(__file__).parent / "data" / "images" / "kodak-kodim08-160.png"
WIDTH, HEIGHT, SCENE = 128, 96, 6  # each scene's frames
FPS = (3, 2)  # 1.5 fps: 12 frames last 8 s (a long clip), 1 s is 2 frames and 6 s 9


def _planes(y: np.ndarray, u: np.ndarray, v: np.ndarray, top: int, left: int) -> Frame:
    """The WIDTHxHEIGHT window at (top, left), both even, of 4:2:0 planes."""
    ct, cl, cw, ch = top // 2, left // 2, WIDTH // 2, HEIGHT // 2
    return Frame(
        y[top : top + HEIGHT, left : left + WIDTH].astype(np.uint16),
        u[ct : ct + ch, cl : cl + cw].astype(np.uint16),
        v[ct : ct + ch, cl : cl + cw].astype(np.uint16),
    )


@pytest.fixture(scope="module")
def two_scenes(parkjoy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames, 128x96, 8-bit at 1.5 fps: six of Park Joy (a pan through trees), then six
    of a pan across Kodak's kodim08 (houses), cropped to the same size."""
    info = read_info(parkjoy)
    out = VideoInfo(
        width=WIDTH,
        height=HEIGHT,
        bitdepth=8,
        fps_num=FPS[0],
        fps_den=FPS[1],
        aspect_num=1,
        aspect_den=1,
        chroma=info.chroma,
    )
    kodak = read_picture(KODAK)
    dest = tmp_path_factory.mktemp("scenes") / "two.y4m"
    with Y4MWriter(dest, out) as writer:
        for i, f in enumerate(iter_frames(parkjoy)):
            if i == SCENE:
                break
            writer.write(_planes(f.y, f.u, f.v, 0, 0))
        for t in range(SCENE):
            writer.write(_planes(kodak.y, kodak.uv[0], kodak.uv[1], 2 * t, 4 * t))
    return dest


# The rule, on made-up scores.


def _scores(frames: int, **at: float) -> list[float]:
    """``frames`` scores of 1 (motion within a scene), with ``f<i>=score`` where given."""
    scores = [0.0] + [1.0] * (frames - 1)
    for key, value in at.items():
        scores[int(key[1:])] = value
    return scores


def test_no_change_is_one_segment() -> None:
    assert scenes.scene_cuts(_scores(40), 5, 40) == []
    assert scenes.scene_cuts([], 5, 40) == []
    assert scenes.scene_cuts([0.0], 1, 2) == []


def test_a_change_is_a_cut() -> None:
    assert scenes.scene_cuts(_scores(40, f17=30.0), 5, 40) == [17]
    assert scenes.scene_cuts(_scores(40, f17=scenes.THRESHOLD), 5, 40) == [17]
    assert scenes.scene_cuts(_scores(40, f17=scenes.THRESHOLD - 0.01), 5, 40) == []
    assert scenes.scene_cuts(_scores(40, f17=5.0), 5, 40, threshold=4.0) == [17]


def test_cuts_too_close_keep_the_stronger() -> None:
    # scdet scores the frame after a cut high too: the cut itself wins
    assert scenes.scene_cuts(_scores(40, f17=16.0, f18=11.0), 5, 40) == [17]
    assert scenes.scene_cuts(_scores(40, f17=11.0, f20=16.0), 5, 40) == [20]
    # equal scores: the earlier frame
    assert scenes.scene_cuts(_scores(40, f17=12.0, f20=12.0), 5, 40) == [17]
    # exactly the minimum apart: both
    assert scenes.scene_cuts(_scores(40, f17=12.0, f22=12.0), 5, 40) == [17, 22]
    # a flash: in and out within the minimum, the stronger edge kept
    assert scenes.scene_cuts(_scores(40, f10=20.0, f12=25.0, f30=15.0), 5, 40) == [12, 30]


def test_no_segment_shorter_than_the_minimum_at_the_ends() -> None:
    assert scenes.scene_cuts(_scores(40, f3=50.0), 5, 40) == []
    assert scenes.scene_cuts(_scores(40, f36=50.0), 5, 40) == []
    assert scenes.scene_cuts(_scores(40, f5=50.0, f35=50.0), 5, 40) == [5, 35]
    # frame 0 has no predecessor: never a cut, whatever its score
    assert scenes.scene_cuts([99.0] + [1.0] * 39, 1, 40) == []


def test_long_segments_are_split_evenly() -> None:
    assert scenes.scene_cuts(_scores(30), 5, 10) == [10, 20]
    assert scenes.scene_cuts(_scores(31), 5, 10) == [8, 16, 24]  # 8, 8, 8, 7
    assert scenes.scene_cuts(_scores(11), 5, 10) == [6]  # 6, 5
    # each side of a cut on its own
    assert scenes.scene_cuts(_scores(40, f12=30.0), 5, 10) == [6, 12, 22, 31]  # 6, 6; 10, 9, 9
    lengths = np.diff([0, *scenes.scene_cuts(_scores(1000, f333=40.0), 25, 150), 1000])
    assert lengths.min() >= 25 and lengths.max() <= 150


def test_every_segment_within_the_limits_on_random_scores() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        frames = int(rng.integers(1, 400))
        scores = (rng.exponential(3.0, frames) * (rng.random(frames) < 0.3)).tolist()
        lo = int(rng.integers(1, 30))
        hi = lo * 2 + int(rng.integers(0, 60))
        cuts = scenes.scene_cuts(scores, lo, hi)
        assert cuts == sorted(set(cuts)) and all(0 < c < frames for c in cuts)
        lengths = [count for _, count in scenes.ranges(frames, cuts)]
        assert sum(lengths) == frames and max(lengths) <= hi
        if frames >= lo:
            assert min(lengths) >= lo


def test_limits_checked() -> None:
    with pytest.raises(ValueError, match="2\\*min <= max"):
        scenes.scene_cuts(_scores(40), 5, 9)
    with pytest.raises(ValueError):
        scenes.scene_cuts(_scores(40), 0, 9)


def test_even_splits_ranges_and_fixed_cuts() -> None:
    assert scenes.even_splits(10, 10) == []
    assert scenes.even_splits(23, 10) == [8, 16]  # 8, 8, 7
    assert scenes.ranges(10, []) == [(0, 10)]
    assert scenes.ranges(10, [3, 7]) == [(0, 3), (3, 4), (7, 3)]
    assert scenes.fixed_cuts(4, 3) == [3]
    assert scenes.fixed_cuts(6, 3) == [3]
    assert scenes.fixed_cuts(6, 0) == []
    assert scenes.fixed_cuts(2, 5) == []


def test_seconds_to_frames() -> None:
    assert scenes.seconds_to_frames(scenes.MIN_SECONDS, 25, 1) == 25
    assert scenes.seconds_to_frames(scenes.MAX_SECONDS, 60000, 1001) == 360
    assert scenes.seconds_to_frames(1.0, 0, 0) == 25
    assert scenes.seconds_to_frames(0.01, 25, 1) == 1
    assert scenes.MAX_SECONDS >= 2 * scenes.MIN_SECONDS


# ffmpeg's scores and the encoder's segmentation.


def test_scene_args_and_parsing() -> None:
    args = ffmpeg.scene_args("ffmpeg", "in.y4m")
    assert args[args.index("-i") + 1] == "in.y4m"
    assert args[args.index("-vf") + 1].startswith("scdet,metadata=mode=print")
    assert args[-3:] == ["-f", "null", "-"]
    text = (
        "frame:0    pts:0       pts_time:0\nlavfi.scd.score=0.000\n"
        "frame:1    pts:2       pts_time:1\nlavfi.scd.score=16.036\nnoise\n"
        "frame:2    pts:4       pts_time:2\nlavfi.scd.score=nan?\n"
    )
    assert ffmpeg.parse_scene_scores(text) == {0: 0.0, 1: 16.036}


def test_scdet_finds_the_change(two_scenes: Path) -> None:
    if not ffmpeg.has_filter("scdet"):
        pytest.skip("this ffmpeg has no scdet filter")
    scores = ffmpeg.scene_scores(two_scenes, 2 * SCENE)
    assert scores[SCENE] == max(scores) > scenes.THRESHOLD
    within = scores[2:SCENE] + scores[SCENE + 2 :]  # frame 1 scores its plain difference
    assert max(within) < scenes.THRESHOLD / 2
    assert scenes.scene_cuts(scores, 2, 9) == [SCENE]
    with pytest.raises(ffmpeg.FFmpegError, match="scored 12 frames, expected 11"):
        ffmpeg.scene_scores(two_scenes, 2 * SCENE - 1)


def test_long_clips_are_cut_at_scenes_by_default(two_scenes: Path) -> None:
    if not ffmpeg.has_filter("scdet"):
        pytest.skip("this ffmpeg has no scdet filter")
    info = read_info(two_scenes)
    cut = segmentation(two_scenes, 2 * SCENE, info, None)
    assert (cut.method, cut.cuts) == ("scenes", [SCENE])
    assert cut.ranges == [(0, SCENE), (SCENE, SCENE)]
    assert segmentation(two_scenes, 2 * SCENE, info, "auto") == cut
    assert segmentation(two_scenes, 2 * SCENE, info, 5).cuts == [5, 10]
    assert segmentation(two_scenes, 2 * SCENE, info, 0).method == "one"


def test_short_clips_stay_one_segment_without_detection(
    clip8: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object) -> list[float]:
        raise AssertionError("scenes detected on a short clip")

    monkeypatch.setattr(ffmpeg, "scene_scores", refuse)
    cut = segmentation(clip8, 4, read_info(clip8), None)
    assert (cut.method, cut.ranges, cut.cuts) == ("one", [(0, 4)], [])
    cut = segmentation(clip8, 4, read_info(clip8), 3)
    assert (cut.method, cut.ranges) == ("fixed", [(0, 3), (3, 1)])


def test_without_scdet_long_clips_fall_back_to_fixed_segments(
    two_scenes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ffmpeg, "has_filter", lambda name: False)
    info = read_info(two_scenes)
    cut = segmentation(two_scenes, 2 * SCENE, info, None)
    assert (cut.method, cut.cuts) == ("fixed", [4, 8])  # 3 s at 1.5 fps, rounded to even
    with pytest.raises(BackendError, match="no scdet filter"):
        segmentation(two_scenes, 2 * SCENE, info, "auto")


def test_segment_frames_values(runner: CliRunner, clip8: Path, tmp_path: Path) -> None:
    for bad, says in (("-1", "below 0"), ("scenes", "neither a number of frames nor auto")):
        args = ["encode", str(clip8), "-o", str(tmp_path / "x.wrp"), "--qp", "30"]
        result = runner.invoke(cli, [*args, "--segment-frames", bad])
        assert result.exit_code == 2 and says in result.output
    assert not (tmp_path / "x.wrp").exists()
    with pytest.raises(InputError, match="0 \\(one segment\\) or more, or auto"):
        backend = get_backend("x264")
        EncodeConfig(
            backend=backend,
            settings=settings_for(backend, 30, None, 8),
            options=(),
            segment_frames=-1,
        )


# End to end.


def test_auto_segments_split_at_the_change_and_decode(
    runner: CliRunner,
    tmp_path: Path,
    two_scenes: Path,
    require_backend: Callable[[str], None],
) -> None:
    require_backend("x264")
    if not ffmpeg.has_filter("scdet"):
        pytest.skip("this ffmpeg has no scdet filter")
    wrp, out = tmp_path / "two.wrp", tmp_path / "two.y4m"
    args = ["--codec", "x264", "--qp", "36", "--preset", "ultrafast", "--options", "0,10"]
    result = runner.invoke(
        cli,
        ["encode", str(two_scenes), "-o", str(wrp), "--json", "--segment-frames", "auto", *args],
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    report = json.loads(result.stdout)
    assert (report["segmentation"], report["cuts"]) == ("scenes", [SCENE])
    assert [s["frame_count"] for s in report["segments"]] == [SCENE, SCENE]
    meta = json.loads(runner.invoke(cli, ["info", str(wrp), "--json"]).stdout)
    assert [(s["first_frame"], s["frame_count"]) for s in meta["segments"]] == [
        (0, SCENE),
        (SCENE, SCENE),
    ]
    assert runner.invoke(cli, ["decode", str(wrp), "-o", str(out)]).exit_code == 0
    acc = measure_files(str(two_scenes), str(out))
    assert acc.frames == 2 * SCENE
    assert acc.psnr_yuv == pytest.approx(report["psnr_yuv"], abs=0.01)
