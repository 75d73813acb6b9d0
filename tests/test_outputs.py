"""Outputs: what ``-o`` may name (a symlink, a FIFO, a device, ``-``, the input itself), what
happens when writing fails, and a Ctrl-C before the command line has even been imported.

Real files in a temporary folder, real subprocesses where the process matters (signals, file
size limits, pipes); nothing is written under /dev.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import pytest
from cli_errors import fails
from click.testing import CliRunner

from wrapcodec import ffmpeg
from wrapcodec.backend import get_backend
from wrapcodec.cli import cli
from wrapcodec.container import read_wrp, unpack, write_wrp
from wrapcodec.errors import ContainerError, InputError
from wrapcodec.paths import OutputFile, atomic_write, check_output, output_target
from wrapcodec.y4m import VideoInfo, Y4MWriter, format_header

ROOT = Path(__file__).resolve().parent.parent


# -- helpers -----------------------------------------------------------------------------------


def enc(src: Path | str, out: Path | str, *extra: str) -> list[str]:
    return [
        "encode", str(src), "-o", str(out), "--codec", "x264", "--qp", "30",
        "--preset", "ultrafast", "--options", "0", *extra,
    ]  # fmt: skip


OUTSIDE_CHECKOUT = tempfile.gettempdir()
"""Where child processes run: ``python -m wrapcodec`` in the repository's root would import
the source folder, which lacks the ``wrapcodec.models`` and ``wrapcodec.backends`` packages an
installed wrapcodec maps in, instead of the installed package the tests are about."""


def wrapcodec(
    *args: str, stdout: int | IO[bytes] = subprocess.PIPE, setup: Callable[[], None] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m wrapcodec ARGS`` as a real process; ``setup`` runs in the child first."""
    return subprocess.Popen(
        [sys.executable, "-m", "wrapcodec", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        preexec_fn=setup,
        cwd=OUTSIDE_CHECKOUT,
    )


def error_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.strip()]


def is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(os.stat(path, follow_symlinks=False).st_mode)


class FifoReader(threading.Thread):
    """Reads a FIFO to its end in the background, as the consumer at its other end would.

    It opens the FIFO through a second hard link, so that it reads the FIFO itself even if
    something renames a file over its name; :meth:`result` unblocks it if nobody ever opens
    the FIFO for writing."""

    def __init__(self, fifo: Path) -> None:
        super().__init__(daemon=True)
        self.keep = fifo.with_name(fifo.name + ".keep")
        os.link(fifo, self.keep)
        self.data = b""
        self.start()

    def run(self) -> None:
        with open(self.keep, "rb") as f:
            self.data = f.read()

    def result(self, timeout: float = 60) -> bytes:
        self.join(timeout)
        if self.is_alive():  # never opened by a writer: be that writer, so the read ends
            os.close(os.open(self.keep, os.O_WRONLY | os.O_NONBLOCK))
            self.join(5)
        return self.data


@pytest.fixture()
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "out.fifo"
    os.mkfifo(path)
    return path


@pytest.fixture(scope="module")
def x264() -> None:
    lacks = ffmpeg.missing(get_backend("x264"))
    if lacks:
        pytest.skip(f"ffmpeg lacks {', '.join(lacks)} for x264")


@pytest.fixture(scope="module")
def coded(x264: None, clip8: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A real .wrp of the 4-frame clip (x264, direct) and the y4m its decode writes."""
    folder = tmp_path_factory.mktemp("coded")
    runner = CliRunner()
    wrp, y4m = folder / "g.wrp", folder / "g.y4m"
    result = runner.invoke(cli, enc(clip8, wrp))
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["decode", str(wrp), "-o", str(y4m)])
    assert result.exit_code == 0, result.output
    return wrp, y4m.read_bytes()


INFO = VideoInfo(16, 8, 8, 25, 1)


def write_y4m(path: Path | str, frames: int = 2) -> bytes:
    """Write a small y4m through :class:`Y4MWriter`; returns the bytes it should hold."""
    plane = np.arange(16 * 8, dtype=np.uint16).reshape(8, 16)
    chroma = np.full((4, 8), 7, dtype=np.uint16)
    with Y4MWriter(path, INFO) as writer:
        for _ in range(frames):
            writer.write((plane, chroma, chroma))  # type: ignore[arg-type]
    body = b"FRAME\n" + plane.astype(np.uint8).tobytes() + bytes([7]) * 64
    return format_header(INFO) + body * frames


# -- the rule: regular files are replaced, everything else is written in place ---------------


def test_output_target_rule(tmp_path: Path, fifo: Path) -> None:
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    to_fifo = tmp_path / "to.fifo"
    to_fifo.symlink_to(fifo)
    to_null = tmp_path / "null"
    to_null.symlink_to(os.devnull)
    assert output_target(real) == (real.resolve(), False)
    assert output_target(link) == (real.resolve(), False)  # the file the link points to
    assert output_target(tmp_path / "new.bin") == ((tmp_path / "new.bin").resolve(), False)
    assert output_target(fifo) == (fifo, True)
    assert output_target(to_fifo) == (to_fifo, True)
    assert output_target(to_null) == (to_null, True)


def test_y4m_writer_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.y4m"
    real.write_bytes(b"old")
    link = tmp_path / "link.y4m"
    link.symlink_to(real)
    expected = write_y4m(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.y4m", "real.y4m"]


def test_y4m_writer_to_a_fifo(fifo: Path) -> None:
    reader = FifoReader(fifo)
    expected = write_y4m(fifo, frames=40)  # more than a pipe holds: the reader must be there
    assert reader.result() == expected
    assert is_fifo(fifo)


def test_y4m_writer_to_a_device_through_a_symlink(tmp_path: Path) -> None:
    to_null = tmp_path / "null"
    to_null.symlink_to(os.devnull)
    write_y4m(to_null)
    assert to_null.is_symlink() and stat.S_ISCHR(os.stat(to_null).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_y4m_writer_reports_a_reader_that_went_away(fifo: Path) -> None:
    """The FIFO's reader closes after the header: EPIPE is one InputError naming the file."""
    opened, close = threading.Event(), threading.Event()

    def reader() -> None:
        with open(fifo, "rb"):
            opened.set()
            close.wait(30)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    writer = Y4MWriter(fifo, INFO)  # the header stays in the buffer
    assert opened.wait(30)
    close.set()
    thread.join(30)
    frame = np.zeros((8, 16), np.uint16), np.zeros((4, 8), np.uint16), np.zeros((4, 8), np.uint16)
    message = rf"^cannot write {re.escape(str(fifo))}: Broken pipe$"
    with pytest.raises(InputError, match=message), writer:
        for _ in range(100):
            writer.write(frame)  # type: ignore[arg-type]
    assert is_fifo(fifo)


def test_atomic_write_through_a_symlink_and_to_a_fifo(tmp_path: Path, fifo: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write(link, lambda p: p.write_text("new"))
    assert link.is_symlink() and real.read_text() == "new"

    reader = FifoReader(fifo)
    atomic_write(fifo, lambda p: p.write_bytes(b"through the fifo"))
    assert reader.result() == b"through the fifo"
    assert is_fifo(fifo)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_write_wrp_through_a_symlink_and_to_a_fifo(tmp_path: Path, fifo: Path) -> None:
    example = ROOT / "tests" / "data" / "format_v2_example.wrp"
    header, segments = read_wrp(example)
    real = tmp_path / "real.wrp"
    real.write_bytes(b"old")
    link = tmp_path / "link.wrp"
    link.symlink_to(real)
    write_wrp(link, header, segments)
    assert link.is_symlink() and real.read_bytes() == example.read_bytes()

    reader = FifoReader(fifo)
    write_wrp(fifo, header, segments)
    assert reader.result() == example.read_bytes()
    assert is_fifo(fifo)


def test_output_file_failure_is_one_typed_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^cannot write .*missing/x\.bin: No such file"):
        OutputFile(tmp_path / "missing" / "x.bin")
    with pytest.raises(ContainerError, match=r"^cannot write .*missing/x\.wrp: No such file"):
        header, segments = read_wrp(ROOT / "tests" / "data" / "format_v2_example.wrp")
        write_wrp(tmp_path / "missing" / "x.wrp", header, segments)


# -- the commands ------------------------------------------------------------------------------


def test_decode_to_a_fifo_with_y(coded: tuple[Path, bytes], fifo: Path) -> None:
    wrp, decoded = coded
    reader = FifoReader(fifo)
    proc = wrapcodec("decode", str(wrp), "-o", str(fifo), "-y")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert is_fifo(fifo)  # not replaced by a regular file
    assert reader.result() == decoded


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_y_writes_through_symlinks(
    runner: CliRunner, tmp_path: Path, clip8: Path, coded: tuple[Path, bytes], command: str
) -> None:
    wrp, decoded = coded
    real = tmp_path / "real.out"
    real.write_bytes(b"old")
    link = tmp_path / "link.out"
    link.symlink_to(real)
    to_null = tmp_path / "null"
    to_null.symlink_to(os.devnull)
    for out in (link, to_null):
        args = (
            enc(clip8, out, "-y")
            if command == "encode"
            else ["decode", str(wrp), "-o", str(out), "-y"]
        )
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert out.is_symlink()
    assert stat.S_ISCHR(os.stat(to_null).st_mode)
    if command == "encode":
        assert unpack(real.read_bytes())[0].frame_count == 4
    else:
        assert real.read_bytes() == decoded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.out", "null", "real.out"]


@pytest.mark.parametrize("as_json", [True, False])
def test_encode_to_stdout(
    runner: CliRunner,
    tmp_path: Path,
    clip8: Path,
    x264: None,
    monkeypatch: pytest.MonkeyPatch,
    as_json: bool,
) -> None:
    """``-o -`` writes the .wrp file to stdout, byte for byte, and the report to stderr."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, enc(clip8, "-", *(["--json"] if as_json else [])))
    assert result.exit_code == 0, result.stderr
    header, segments = unpack(result.stdout_bytes)
    assert header.frame_count == 4 and len(segments) == 1
    if as_json:
        report = json.loads(result.stderr)
        assert report["bits"] == 8 * len(result.stdout_bytes)
        assert report["output"] == "-"
    else:
        assert "chosen: option 0" in result.stderr and "standard output" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no file named "-"


@pytest.mark.parametrize("command", ["encode", "decode"])
@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_output_is_the_input(
    runner: CliRunner,
    tmp_path: Path,
    clip8: Path,
    coded: tuple[Path, bytes],
    command: str,
    how: str,
) -> None:
    """Refused before any work, ``-y`` or not, and the input is left as it was."""
    source = tmp_path / ("in.y4m" if command == "encode" else "in.wrp")
    source.write_bytes(clip8.read_bytes() if command == "encode" else coded[0].read_bytes())
    before = source.read_bytes()
    out = {"same path": source, "symlink": tmp_path / "link", "hard link": tmp_path / "hard"}[how]
    if how == "symlink":
        out.symlink_to(source)
    elif how == "hard link":
        os.link(source, out)
    base = enc(source, out) if command == "encode" else ["decode", str(source), "-o", str(out)]
    for extra in ([], ["-y"]):
        fails(runner, [*base, *extra], "is the input file", "would destroy the input")
    assert source.read_bytes() == before


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_empty_output_path(runner: CliRunner, clip8: Path, command: str) -> None:
    args = enc(clip8, "") if command == "encode" else ["decode", str(clip8), "-o", ""]
    fails(runner, args, "the output path is empty")


def _can_limit_file_size(tmp_path: Path) -> str | None:
    """Why this runner cannot test a file-size limit, or None when it can."""
    try:
        import resource
    except ImportError:
        return "no resource module on this platform"
    if not hasattr(signal, "SIGXFSZ"):
        return "no SIGXFSZ on this platform"
    probe = tmp_path / "probe"
    proc = subprocess.run(
        [sys.executable, "-c", f"with open({str(probe)!r}, 'wb') as f: f.write(bytes(2000))"],
        preexec_fn=_file_size_limit(1000),
        capture_output=True,
        check=False,
    )
    probe.unlink(missing_ok=True)
    if b"File too large" not in proc.stderr:
        return f"RLIMIT_FSIZE is not enforced here ({resource.getrlimit(resource.RLIMIT_FSIZE)})"
    return None


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead

    return apply


@pytest.mark.parametrize("to_stdout", [False, True])
def test_decode_onto_a_full_disk(
    coded: tuple[Path, bytes], tmp_path: Path, to_stdout: bool
) -> None:
    """A write that fails half-way (here a file-size limit, as a full disk would): one line
    naming the output and the reason, no traceback, and no file or temporary file left."""
    reason = _can_limit_file_size(tmp_path)
    if reason:
        pytest.skip(reason)
    wrp, decoded = coded
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.y4m"
    limit = len(decoded) // 3
    assert len(wrp.read_bytes()) < limit  # the decoder's own temporary stream fits
    if to_stdout:
        with out.open("wb") as sink:
            proc = wrapcodec(
                "decode", str(wrp), "-o", "-", stdout=sink, setup=_file_size_limit(limit)
            )
            _, err = proc.communicate(timeout=120)
        name = "standard output"
    else:
        proc = wrapcodec("decode", str(wrp), "-o", str(out), setup=_file_size_limit(limit))
        _, err = proc.communicate(timeout=120)
        name = str(out)
        assert list(out_dir.iterdir()) == []
    assert proc.returncode == 1, err
    assert error_lines(err) == [f"Error: cannot write {name}: File too large"]


def test_decode_to_a_pipe_whose_reader_closes(coded: tuple[Path, bytes]) -> None:
    wrp, _ = coded
    proc = wrapcodec("decode", str(wrp), "-o", "-")
    assert proc.stdout is not None
    proc.stdout.close()  # nobody reads: the first write gets EPIPE
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert error_lines(err) == ["Error: cannot write standard output: Broken pipe"]


# -- standard input in messages, arguments checked up front -----------------------------------


TEN_BIT = b"YUV4MPEG2 W16 H16 F25:1 Ip C420p10\n"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"YUV4MPEG2 W16 H16 F25:1 C444\n", "standard input: unsupported chroma format"),
        (b"YUV4MPEG2 W16 H16 F25:1\n", "standard input: no frames"),
        (b"YUV4MPEG2 W16 H16 F25:1\nFRAME\n" + bytes(100), "standard input: truncated frame 0"),
        (TEN_BIT + b"FRAME\n" + b"\xff\xff" * 384, "standard input: 10-bit sample value 65535"),
    ],
)
def test_stdin_is_named_standard_input(
    runner: CliRunner, tmp_path: Path, x264: None, data: bytes, fragment: str
) -> None:
    line = fails(runner, enc("-", tmp_path / "o.wrp"), fragment, input=data)
    assert "wrapcodec-" not in line and "input.y4m" not in line  # not the spool file
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bitrate", ["0", "-5", "nan", "inf", "-inf"])
def test_bitrate_checked_before_any_encode(
    runner: CliRunner,
    tmp_path: Path,
    clip8: Path,
    monkeypatch: pytest.MonkeyPatch,
    bitrate: str,
) -> None:
    marker = tmp_path / "ffmpeg-ran"
    script = tmp_path / "ffmpeg"
    script.write_text(f'#!/bin/sh\ntouch "{marker}"\nexec "{ffmpeg.ffmpeg_exe()}" "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("WRAPCODEC_FFMPEG", str(script))
    args = [
        "encode", str(clip8), "-o", str(tmp_path / "o.wrp"), "--codec", "x264",
        "--bitrate", bitrate, "--options", "0,9",
    ]  # fmt: skip
    fails(runner, args, f"--bitrate {bitrate}", "positive, finite number of kbps")
    assert not marker.exists()  # no encode, not even ffmpeg's capability probe
    assert not (tmp_path / "o.wrp").exists()


def test_check_output_leaves_special_files_alone(tmp_path: Path, fifo: Path) -> None:
    check_output(str(fifo), overwrite=True)
    with pytest.raises(InputError, match="already exists"):
        check_output(str(fifo), overwrite=False)
    with pytest.raises(InputError, match="is a directory"):
        check_output(str(tmp_path), overwrite=True)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="already exists"):
        check_output(str(dangling), overwrite=False)
    check_output(str(dangling), overwrite=True)
    assert is_fifo(fifo)


# -- Ctrl-C while the modules import ----------------------------------------------------------


@pytest.mark.parametrize(
    "launcher",
    [["-m", "wrapcodec"], ["-c", "from wrapcodec.__main__ import main; main()"]],
    ids=["python -m", "console script"],
)
def test_ctrl_c_while_importing(launcher: list[str]) -> None:
    """SIGINT while torch is being imported: ``Interrupted.`` and exit 130, no traceback.

    ``-X importtime`` prints a line as each module finishes importing, which says when the
    process is inside the heavy imports; the test waits for torch's first submodule."""
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", *launcher, "backends"],
        cwd=OUTSIDE_CHECKOUT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        # A runner started in the background ignores SIGINT, and children inherit that;
        # a user's terminal does not, so give the child the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    seen = []
    for raw in proc.stderr:
        seen.append(raw.decode())
        if re.search(r"\|\s+torch\.", seen[-1]) or time.monotonic() > deadline:
            break
    assert any("torch." in line for line in seen), "".join(seen[-5:])
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest.decode()
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode == 130, err[-3000:]
    others = [line for line in err.splitlines() if not line.startswith("import time:")]
    assert others == ["Interrupted."]


def test_console_script_guards_the_imports() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert re.findall(r"^wrapcodec\s*=.*$", scripts, re.M) == [
        'wrapcodec = "wrapcodec.__main__:main"'
    ]
