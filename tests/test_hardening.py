"""Hostile environments and inputs: an ffmpeg that prints bytes that are not UTF-8, model banks
with broken weights or cards, updates whose scale overflows, odd ``--options`` digits, outputs
that are loops, slashes, FIFOs or over the file-size limit, odd y4m headers, ``decode -``, and
limits. Each gets one line and a non-zero exit, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from wrapcodec import ffmpeg
from wrapcodec.cli import cli


def enc(src: Path | str, out: Path | str, *extra: str) -> list[str]:
    args = ["encode", str(src), "-o", str(out), "--codec", "x264", "--qp", "30"]
    return [*args, "--preset", "ultrafast", "--options", "0", *extra]


def run_cli(
    args: list[str], *, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    """``python -m wrapcodec ARGS`` in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "wrapcodec", *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=600,
        **kw,  # type: ignore[arg-type]
    )


def one_line(proc: subprocess.CompletedProcess[bytes], *fragments: str) -> str:
    """The process failed with exactly one ``Error:`` line holding every fragment."""
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode not in (0, None), err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def small_wrp(clip8: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wrp") / "s.wrp"
    result = CliRunner().invoke(cli, [*enc(clip8, out), "--json"])
    assert result.exit_code == 0, result.output
    return out


# --- an ffmpeg that prints bytes that are not UTF-8 -----------------------------------------


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_ffmpeg_printing_bytes_that_are_not_utf8(
    tmp_path: Path, clip8: Path, small_wrp: Path, command: str
) -> None:
    """Not an ffmpeg at all, and garbled: one line saying this ffmpeg is not usable."""
    fake = _script(tmp_path / "ffmpeg", "printf '\\377\\376 ffmpeg \\351t\\351\\n V....D x\\n'\n")
    args = (
        enc(clip8, tmp_path / "o.wrp")
        if command == "encode"
        else ["decode", str(small_wrp), "-o", str(tmp_path / "o.y4m")]
    )
    proc = run_cli(args, env={"WRAPCODEC_FFMPEG": str(fake)})
    one_line(proc, f"this ffmpeg ({fake}) is not usable", "nor UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ffmpeg"]


def test_ffmpeg_listing_with_bytes_that_are_not_utf8(
    tmp_path: Path, clip8: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ffmpeg whose listings end in bytes that are not UTF-8 is still read."""
    real = ffmpeg.ffmpeg_exe()
    fake = _script(
        tmp_path / "ffmpeg",
        'case "$2" in -version|-encoders|-decoders|-muxers|-demuxers)\n'
        f'  "{real}" "$@"; printf "\\377\\376\\351\\n";;\n'
        f'*) exec "{real}" "$@";;\nesac\n',
    )
    monkeypatch.setenv("WRAPCODEC_FFMPEG", str(fake))
    result = CliRunner().invoke(cli, [*enc(clip8, tmp_path / "o.wrp"), "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o.wrp").stat().st_size > 0
