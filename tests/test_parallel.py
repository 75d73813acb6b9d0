"""Segments coded at once: chains restart at scene changes, and local worker processes
(``--jobs``) and a real two-worker Dask ``LocalCluster`` (``--dask``) write the very bytes
that one process does; a work folder (``--resume``) takes up an encode killed with SIGKILL
and finishes it with those bytes too."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from procs import coders, killed, requires_proc, start, stopped, wait_for

from wrapcodec import ffmpeg
from wrapcodec.backend import get_backend
from wrapcodec.cli import cli
from wrapcodec.container import Segment, read_wrp
from wrapcodec.dataset import read_picture
from wrapcodec.encode.config import EncodeConfig, settings_for
from wrapcodec.encode.encoder import Segmentation
from wrapcodec.encode.parallel import chains_of
from wrapcodec.encode.parts import Parts, folder_for
from wrapcodec.encode.report import SegmentReport
from wrapcodec.encode.segments import SegmentDone
from wrapcodec.errors import InputError
from wrapcodec.metrics import measure_files
from wrapcodec.y4m import Frame, VideoInfo, Y4MReader, Y4MWriter, clip_bytes, iter_frames, read_info

KODAK = Path(__file__).parent / "data" / "images" / "kodak-kodim08-160.png"
WIDTH, HEIGHT, SCENE = 128, 96, 10  # each scene's frames: two segments of five
FPS = (3, 2)  # 1.5 fps: 1 s is 2 frames and 6 s 9, so a 10-frame scene is split in two
ARGS = [
    "--codec",
    "x264",
    "--qp",
    "18",
    "--preset",
    "ultrafast",
    "--options",
    "1",
    "--adapt-steps",
    "40",
]
"""Post-1/1 with a short content adaptation: on this clip each scene's second segment sends
a change to its first segment's update, or inherits it."""


def _window(frame: Frame, top: int, left: int) -> Frame:
    ct, cl = top // 2, left // 2
    return Frame(
        frame.y[top : top + HEIGHT, left : left + WIDTH].astype(np.uint16),
        frame.u[ct : ct + HEIGHT // 2, cl : cl + WIDTH // 2].astype(np.uint16),
        frame.v[ct : ct + HEIGHT // 2, cl : cl + WIDTH // 2].astype(np.uint16),
    )


@pytest.fixture(scope="module")
def scenes(parkjoy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 frames, 128x96, 8-bit at 1.5 fps: ten of Park Joy (its ten frames, a window at the
    middle), then ten of a pan across Kodak's kodim08 (``scdet`` scores the change 19)."""
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
    picture = read_picture(KODAK)
    kodak = Frame(picture.y, picture.uv[0], picture.uv[1])
    dest = tmp_path_factory.mktemp("parallel") / "scenes.y4m"
    with Y4MWriter(dest, out) as writer:
        for f in iter_frames(parkjoy):
            writer.write(_window(f, 100, 200))
        for t in range(SCENE):
            writer.write(_window(kodak, 2 * t, 2 * t))
    return dest


@pytest.fixture()
def needs(require_backend: Callable[[str], None]) -> None:
    require_backend("x264")
    if not ffmpeg.has_filter("scdet"):
        pytest.skip("this ffmpeg has no scdet filter")


def _encode(runner: CliRunner, source: Path, out: Path, *extra: str) -> bytes:
    result = runner.invoke(cli, ["encode", str(source), "-o", str(out), *ARGS, *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out.read_bytes()


# Chains, pure.


def test_chains_restart_at_scene_changes() -> None:
    ranges = [(0, 5), (5, 5), (10, 5), (15, 5), (20, 3)]
    assert chains_of(ranges, [10, 20]) == [[0, 1], [2, 3], [4]]
    assert chains_of(ranges, []) == [[0, 1, 2, 3, 4]]
    cut = Segmentation("scenes", ranges, (10, 20))
    assert cut.chains("scenes") == [[0, 1], [2, 3], [4]]
    assert cut.chains("one") == [[0, 1, 2, 3, 4]]
    assert Segmentation("fixed", ranges).chains("scenes") == [[0, 1, 2, 3, 4]]


def test_a_segment_is_sent_as_a_y4m_file_of_its_own(parkjoy: Path, tmp_path: Path) -> None:
    data = clip_bytes(parkjoy, 3, 4)
    part = tmp_path / "part.y4m"
    part.write_bytes(data)
    assert read_info(part) == read_info(parkjoy)
    whole = list(iter_frames(parkjoy))
    got = list(iter_frames(part))
    assert len(got) == 4
    for a, b in zip(got, whole[3:7], strict=True):
        assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert len(list(iter_frames(parkjoy, 8))) == 2
    assert clip_bytes(parkjoy, 8, 5).count(b"FRAME\n") == 2


# The same bytes whatever codes the segments.


@pytest.fixture(scope="module")
def reference(scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The file of one process coding one segment after another."""
    lacks = ffmpeg.missing(get_backend("x264"))
    if lacks:
        pytest.skip(f"ffmpeg lacks {', '.join(lacks)} for x264")
    if not ffmpeg.has_filter("scdet"):
        pytest.skip("this ffmpeg has no scdet filter")
    out = tmp_path_factory.mktemp("reference") / "one.wrp"
    return _encode(CliRunner(), scenes, out, "--jobs", "1")


def test_the_clip_is_four_segments_in_two_chains(reference: bytes, tmp_path: Path) -> None:
    path = tmp_path / "one.wrp"
    path.write_bytes(reference)
    _, segments = read_wrp(path)
    assert [(s.first_frame, s.frame_count) for s in segments] == [(0, 5), (5, 5), (10, 5), (15, 5)]
    # each scene's first segment starts afresh; its second builds on the first's update
    assert not segments[0].inherit and not segments[2].inherit
    assert all(s.update or s.inherit for s in segments)


def test_local_processes_write_the_same_bytes(
    runner: CliRunner, scenes: Path, reference: bytes, tmp_path: Path
) -> None:
    assert _encode(runner, scenes, tmp_path / "two.wrp", "--jobs", "2") == reference


def test_a_dask_cluster_writes_the_same_bytes(
    runner: CliRunner, scenes: Path, reference: bytes, tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        got = _encode(runner, scenes, tmp_path / "dask.wrp", "--dask", cluster.scheduler_address)
    assert got == reference


# Resuming.


def _done(index: int, payload: bytes) -> SegmentDone:
    depth = (10, 8)[index % 2]  # segments of one file may be coded at different depths
    segment = Segment(1, 5 * index, 5, 128, 96, payload, b"\x01\x02", False, 0, depth)
    report = SegmentReport(
        first_frame=5 * index, frame_count=5, option=1, option_name="post-1/1", candidates=[]
    )
    return SegmentDone(index, segment, report, 3, 0.5, 0.25)


def _config(**kw: object) -> EncodeConfig:
    backend = get_backend("x264")
    return EncodeConfig(
        backend=backend, settings=settings_for(backend, 30, None, 8), options=(), **kw
    )


def test_a_work_folder_keeps_whole_segments(tmp_path: Path) -> None:
    folder = tmp_path / "out.wrp.parts"
    parts = Parts(folder, "a" * 64)
    parts.store(_done(0, b"payload zero"))
    parts.store(_done(1, b"payload one"))
    assert Parts(folder, "a" * 64).load() == {
        0: _done(0, b"payload zero"),
        1: _done(1, b"payload one"),
    }
    (folder / "1.payload").write_bytes(b"payload 1ne")  # not what its record says
    (folder / "2.json").write_text("{")  # cut short
    assert list(Parts(folder, "a" * 64).load()) == [0]
    with pytest.raises(InputError, match="holds the work of another encode"):
        Parts(folder, "b" * 64)
    parts.remove()
    assert not folder.exists()
    assert folder_for("x/out.wrp") == Path("x/out.wrp.parts")


def test_resume_refuses_a_folder_of_another_encode(
    runner: CliRunner, scenes: Path, tmp_path: Path, needs: None
) -> None:
    out = tmp_path / "out.wrp"
    Parts(folder_for(str(out)), "0" * 64)
    result = runner.invoke(cli, ["encode", str(scenes), "-o", str(out), *ARGS, "--resume"])
    assert result.exit_code == 1
    assert "holds the work of another encode" in result.output
    assert not out.exists()
    result = runner.invoke(cli, ["encode", str(scenes), "-o", "-", *ARGS, "--resume"])
    assert result.exit_code == 1 and "--resume needs an output file" in result.output


@requires_proc
def test_killed_then_resumed_gives_the_same_bytes(
    scenes: Path, reference: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "out.wrp"
    folder = folder_for(str(out))
    args = ["encode", str(scenes), "-o", str(out), *ARGS, "--resume"]
    proc = start(args, tmp_path, tmp_path)
    try:
        wait_for(proc, lambda: (folder / "1.json").exists(), "two segments kept")
    finally:
        killed(proc)  # its segment workers end with it
    assert not out.exists() and (folder / "0.json").exists()
    rerun = subprocess.run(
        [sys.executable, "-m", "wrapcodec", *args, "--json"],
        cwd=tmp_path,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert out.read_bytes() == reference
    assert not folder.exists()
    assert json.loads(rerun.stdout)["resumed"] >= 2  # the segments kept were not coded again


def _two_workers(scenes: Path, tmp_path: Path) -> tuple[list[str], Path, Path]:
    """An encode whose two worker processes each code a scene for a while (VVenC, preset
    slower), its temporary folder and its output's folder, both made empty."""
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out.mkdir()
    args = ["encode", str(scenes), "-o", str(out / "o.wrp"), "--codec", "vvenc"]
    args += ["--preset", "slower", "--qp", "30", "--options", "0", "--jobs", "2"]
    return args, tmp, out


@requires_proc
@pytest.mark.parametrize(
    ("sig", "line", "status"),
    [(signal.SIGTERM, "Terminated.", 143), (signal.SIGINT, "Interrupted.", 130)],
)
def test_a_signal_stops_the_segment_workers(
    scenes: Path,
    tmp_path: Path,
    require_backend: Callable[[str], None],
    sig: signal.Signals,
    line: str,
    status: int,
) -> None:
    """A signal while two worker processes each code a scene: the command ends at once with
    one line, the workers and their ffmpeg with it, and neither a temporary folder nor an
    output is left."""
    require_backend("vvenc")
    args, tmp, out = _two_workers(scenes, tmp_path)
    stopped(start(args, tmp, tmp_path), 2, sig, line, status)
    assert list(tmp.iterdir()) == []
    assert list(out.iterdir()) == []


@requires_proc
def test_the_segment_workers_end_with_a_killed_encode(
    scenes: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    """SIGKILL leaves the encode no time to stop its two worker processes: they end all the
    same, their ffmpeg with them, and the pipes of whoever started the encode close (a
    worker that outlived it would code on for no one and hold them open)."""
    require_backend("vvenc")
    args, tmp, out = _two_workers(scenes, tmp_path)
    proc = start(args, tmp, tmp_path)
    try:
        wait_for(proc, lambda: len(coders(proc.pid)) >= 2, "2 ffmpeg running")
    finally:
        killed(proc)
    # the workers removed their temporary files; the encode's own folder, which SIGKILL left
    # it no time to remove, holds none
    assert [p for p in tmp.rglob("*") if not p.is_dir()] == []
    assert list(out.iterdir()) == []


class _Sink:
    """Records what a progress display is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def start(self, total: int) -> None:
        self.calls.append(("start", total))

    def advance(self, label: str) -> None:
        self.calls.append(("advance",))

    def begin_segment(self, index: int, label: str, total: int) -> None:
        self.calls.append(("begin", index, label, total))

    def advance_segment(self, index: int) -> None:
        self.calls.append(("step", index))

    def end_segment(self, index: int) -> None:
        self.calls.append(("end", index))


def test_progress_counts_each_candidate_once_per_segment() -> None:
    from wrapcodec.encode.parallel import _Tracker

    sink = _Sink()
    tracker = _Tracker(sink, per_segment=3, segments=4)
    tracker.begin(2, 10)
    tracker.event(2, "a")
    tracker.end(2, "done")  # a worker that reported one candidate of three: topped up
    tracker.event(2, "late")  # a report that arrives after the result: ignored
    tracker.resumed("kept")  # a segment taken up from the work folder
    assert sink.calls[0] == ("begin", 2, "segment 3/4 @10", 3)
    assert sink.calls.count(("advance",)) == 6
    assert sink.calls.count(("step", 2)) == 3
    assert sink.calls[-4] == ("end", 2)


# Standard input, a segment at a time.


def test_copy_frames_cuts_a_stream_into_segment_files(parkjoy: Path, tmp_path: Path) -> None:
    whole = list(iter_frames(parkjoy))
    got: list[Frame] = []
    with Y4MReader(parkjoy) as reader:
        counts = [reader.copy_frames(4, tmp_path / f"{k}.y4m") for k in range(4)]
    assert counts == [4, 4, 2, 0]
    assert not (tmp_path / "3.y4m").exists()
    for k in range(3):
        assert read_info(tmp_path / f"{k}.y4m") == read_info(parkjoy)
        got += list(iter_frames(tmp_path / f"{k}.y4m"))
    assert len(got) == len(whole)
    for a, b in zip(got, whole, strict=True):
        assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def test_standard_input_is_coded_a_segment_at_a_time(
    runner: CliRunner, scenes: Path, tmp_path: Path, needs: None
) -> None:
    """Read five frames at a time, coded as one chain: the same segments, and here the same
    bytes, as the file read whole; the decoder shows what the encoder measured."""
    args = [*ARGS, "--segment-frames", "5", "--json"]
    out, whole, decoded = tmp_path / "in.wrp", tmp_path / "file.wrp", tmp_path / "in.y4m"
    result = runner.invoke(cli, ["encode", "-", "-o", str(out), *args], input=scenes.read_bytes())
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(result.stdout)
    assert (report["segmentation"], report["cuts"], report["chains"]) == ("fixed", [5, 10, 15], 1)
    assert report["frames"] == 20 and report["input"] == "-"
    assert runner.invoke(cli, ["encode", str(scenes), "-o", str(whole), *args]).exit_code == 0
    assert out.read_bytes() == whole.read_bytes()
    assert runner.invoke(cli, ["decode", str(out), "-o", str(decoded)]).exit_code == 0
    assert measure_files(str(scenes), str(decoded)).psnr_yuv == pytest.approx(
        report["psnr_yuv"], abs=1e-9
    )
    result = runner.invoke(
        cli, ["encode", "-", "-o", str(out), *args, "-y", "--resume"], input=scenes.read_bytes()
    )
    assert result.exit_code == 1 and "--resume needs an input it can read again" in result.output
    empty = runner.invoke(cli, ["encode", "-", "-o", str(tmp_path / "e.wrp"), *args], input=b"")
    assert empty.exit_code == 1 and not (tmp_path / "e.wrp").exists()
