"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing half-written."""

from __future__ import annotations

import json
import signal
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from cli_errors import fails
from click.testing import CliRunner
from procs import start, wait_for

from wrapcodec import backend as backend_registry
from wrapcodec.cli import cli
from wrapcodec.container import pack, unpack


def enc(src: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        "encode",
        str(src),
        "-o",
        str(out),
        "--codec",
        "x264",
        "--qp",
        "30",
        "--preset",
        "ultrafast",
        *extra,
    ]


Y4M_HEADER = b"YUV4MPEG2 W32 H32 F25:1 Ip A1:1 C420jpeg\n"
FRAME_32 = b"FRAME\n" + bytes(32 * 32 * 3 // 2)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty file"),
        (b"RIFF....WAVEfmt ", "not a y4m"),
        (b"YUV4MPEG2 W32 H32 F25:1 C422\n" + b"FRAME\n" + bytes(2048), "C422"),
        (b"YUV4MPEG2 W32 H32 F25:1 C444\n", "C444"),
        (b"YUV4MPEG2 W32 H32 F25:1 It C420jpeg\n", "interlaced"),
        (b"YUV4MPEG2 W99999 H99999 F25:1 C420jpeg\nFRAME\n", "99999"),
        (Y4M_HEADER + FRAME_32 + FRAME_32[:700], "truncated frame 1"),
        (Y4M_HEADER, "no frames"),
    ],
)
def test_bad_y4m(runner: CliRunner, tmp_path: Path, content: bytes, fragment: str) -> None:
    src = tmp_path / "in.y4m"
    src.write_bytes(content)
    fails(runner, enc(src, tmp_path / "o.wrp"), fragment)
    assert not (tmp_path / "o.wrp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m"]


def test_missing_input(runner: CliRunner, tmp_path: Path) -> None:
    fails(runner, enc(tmp_path / "nope.y4m", tmp_path / "o.wrp"), "no such file")


def test_existing_output_needs_y(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    out = tmp_path / "o.wrp"
    out.write_bytes(b"keep")
    fails(runner, enc(clip8, out), "already exists (use -y")
    assert out.read_bytes() == b"keep"


def test_missing_output_directory(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    fails(runner, enc(clip8, tmp_path / "no" / "o.wrp"), "does not exist")


def test_qp_and_bitrate_exclusive(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    result = runner.invoke(cli, [*enc(clip8, tmp_path / "o.wrp"), "--bitrate", "100"])
    assert result.exit_code == 2 and "exactly one of --qp and --bitrate" in result.stderr


def test_neural_option_refused(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    empty = tmp_path / "bank"
    empty.mkdir()
    args = enc(clip8, tmp_path / "o.wrp", "--options", "0,6", "--models", str(empty))
    fails(runner, args, "needs neural models, which the model bank in")


def test_bad_preset_and_bitdepth(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    fails(runner, [*enc(clip8, tmp_path / "o.wrp"), "--preset", "warp"], "unknown preset")
    fails(
        runner,
        [
            "encode",
            str(clip8),
            "-o",
            str(tmp_path / "o.wrp"),
            "--codec",
            "vvenc",
            "--qp",
            "30",
            "--bitdepth",
            "8",
        ],
        "10-bit only",
    )


def test_backend_this_ffmpeg_lacks(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    fake = replace(
        backend_registry.get_backend("x265"), name="x266", codec_id=251, encoder="libx266"
    )
    backend_registry.register(fake)
    try:
        args = [
            "encode",
            str(clip8),
            "-o",
            str(tmp_path / "o.wrp"),
            "--codec",
            "x266",
            "--qp",
            "30",
        ]
        fails(runner, args, "has no encoder libx266")
        listing = runner.invoke(cli, ["backends", "--json"])
        rows = {r["name"]: r for r in json.loads(listing.stdout)["backends"]}
        assert rows["x266"]["usable"] is False
        assert rows["x266"]["missing"] == ["encoder libx266"]
        assert rows["x265"]["usable"] is True
    finally:
        backend_registry._registry.pop("x266")


def test_ffmpeg_failing_mid_stream(
    runner: CliRunner, tmp_path: Path, clip8: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ffmpeg that dies after reading part of the input: the error carries its stderr."""
    from wrapcodec import ffmpeg

    real = ffmpeg.ffmpeg_exe()
    script = tmp_path / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *pipe:*rawvideo*|*rawvideo*pipe:*) ;; *) exec "' + real + '" "$@";; esac\n'
        "head -c 20000 >/dev/null\n"
        'echo "Error: encoder exploded at frame 1" >&2\n'
        "exit 3\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("WRAPCODEC_FFMPEG", str(script))
    fails(runner, enc(clip8, tmp_path / "o.wrp"), "encoder exploded at frame 1")
    assert not (tmp_path / "o.wrp").exists()


@pytest.fixture()
def good_wrp(runner: CliRunner, tmp_path_factory: pytest.TempPathFactory, clip8: Path) -> bytes:
    out = tmp_path_factory.mktemp("wrp") / "g.wrp"
    result = runner.invoke(cli, enc(clip8, out, "--options", "0,9"))
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def _with_crc(data: bytes) -> bytes:
    body = data[:-4]
    return body + zlib.crc32(body).to_bytes(4, "little")


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: b"XXXX" + d[4:], "bad magic"),
        (lambda d: d[:4] + b"\x05" + d[5:], "unsupported .wrp version 5"),
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:-10] + bytes([d[-10] ^ 0xFF]) + d[-9:], "CRC mismatch"),
        (lambda d: _with_crc(d[:8] + b"\x07" + d[9:]), "codec id 7"),
        (lambda d: _with_crc(d[:8] + b"\xc8" + d[9:]), "no backend installed for codec id 200"),
        (lambda d: _with_crc(d[:42] + b"\xf0" + d[43:]), "reserved option code 15"),
        (lambda d: _with_crc(d[:42] + b"\x30" + d[43:]), "does not match option post-2/3"),
        (lambda d: _with_crc(d[:42] + b"\x10" + d[43:]), "made with model bank 0000000000000000"),
        (lambda d: b"", "empty file"),
    ],
)
def test_bad_wrp(
    runner: CliRunner,
    tmp_path: Path,
    good_wrp: bytes,
    mutate: Callable[[bytes], bytes],
    fragment: str,
) -> None:
    bad = tmp_path / "bad.wrp"
    bad.write_bytes(mutate(good_wrp))
    fails(runner, ["decode", str(bad), "-o", str(tmp_path / "o.y4m")], fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wrp"]
    if not any(f in fragment for f in ("empty file", "model bank", "no backend", "not match")):
        fails(runner, ["info", str(bad)], fragment)  # the container itself is refused


def test_frame_count_is_checked(runner: CliRunner, tmp_path: Path, good_wrp: bytes) -> None:
    """A header that promises more frames than the stream holds: the decoder's count check
    refuses it (exit codes alone would pass)."""
    header, segments = unpack(good_wrp)
    more = [replace(segments[0], frame_count=5)]
    bad = tmp_path / "more.wrp"
    bad.write_bytes(pack(replace(header, frame_count=5), more))
    fails(runner, ["decode", str(bad), "-o", str(tmp_path / "o.y4m")], "4 frames, expected 5")
    assert not (tmp_path / "o.y4m").exists()


def test_corrupt_bitstream(runner: CliRunner, tmp_path: Path, good_wrp: bytes) -> None:
    """A payload cut short (CRC recomputed to match): a clear decoder error, no output."""
    header, segments = unpack(good_wrp)
    seg = segments[0]
    bad = tmp_path / "short.wrp"
    bad.write_bytes(pack(header, [replace(seg, payload=seg.payload[: len(seg.payload) // 3])]))
    fails(runner, ["decode", str(bad), "-o", str(tmp_path / "o.y4m")], "h264")
    assert not (tmp_path / "o.y4m").exists()


def test_ctrl_c_leaves_no_temp_files(tmp_path: Path, parkjoy: Path) -> None:
    """SIGINT while ffmpeg is writing a candidate's stream: exit 130, no temporary file left
    in TMPDIR or beside the output."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    args = ["encode", str(parkjoy), "-o", str(out / "o.wrp"), "--codec", "x265", "--qp", "30"]
    proc = start([*args, "--preset", "slow"], tmp, tmp_path)
    wait_for(proc, lambda: bool(list(tmp.glob("wrapcodec-*/*.265"))), "encoding")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Interrupted" in err and b"Traceback" not in err
    assert list(tmp.iterdir()) == []
    assert list(out.iterdir()) == []
