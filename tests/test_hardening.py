"""Hostile environments and inputs: an ffmpeg that prints bytes that are not UTF-8, model banks
with broken weights or cards, updates whose scale overflows, odd ``--options`` digits, outputs
that are loops, slashes, FIFOs or over the file-size limit, odd y4m headers, ``decode -``, and
limits. Each gets one line and a non-zero exit, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import resource
import stat
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest
from banks import copy_bank
from cli_errors import fails
from click.testing import CliRunner

from wrapcodec import ffmpeg
from wrapcodec.cli import cli


def enc(src: Path | str, out: Path | str, *extra: str) -> list[str]:
    args = ["encode", str(src), "-o", str(out), "--codec", "x264", "--qp", "30"]
    return [*args, "--preset", "ultrafast", "--options", "0", *extra]


def run_cli(
    args: list[str], *, env: dict[str, str] | None = None, **kw: object
) -> subprocess.CompletedProcess[bytes]:
    """``python -m wrapcodec ARGS`` in a real process, run outside the checkout (whose
    wrapcodec/ folder would shadow the installed package)."""
    kw.setdefault("cwd", tempfile.gettempdir())
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


# --- model banks with broken weights or cards -------------------------------------------------


def test_bank_with_a_nan_weight(tmp_path: Path, clip8: Path) -> None:
    """A NaN in the weights, the card's sha256 made to match: refused in one line, no file."""
    import torch
    from safetensors.torch import load_file, save_file

    from wrapcodec.paths import sha256_file

    bank = copy_bank(tmp_path / "bank")
    weights = bank / "post-1_2.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.startswith("post.") and k.endswith("weight"))
    tensors[name].view(-1)[0] = torch.nan
    save_file(tensors, str(weights))
    card = json.loads((bank / "post-1_2.json").read_text())
    card["sha256"] = sha256_file(weights)
    (bank / "post-1_2.json").write_text(json.dumps(card))
    out = tmp_path / "o.wrp"
    args = [*enc(clip8, out)[:-1], "2", "--adapt-steps", "0", "--models", str(bank)]
    one_line(run_cli(args), str(weights), f"weight {name} holds a value that is not finite")
    assert not out.exists()


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        (("arithmetic", "exponents", "level0"), 200, "level0: Input should be less than or equal"),
        (("arithmetic", "exponents", "level1"), -200, "level1: Input should be greater than"),
        (("option",), 3, "option 3 is not post 1/2's (2)"),
        (("ratio",), "3/7", "ratio 3/7 is not one of"),
        (("post", "channels"), [12, 24, 10**7], "post channels"),
        (("file",), "../post-1_2.safetensors", "is not a file name in the bank's folder"),
        (("macs_per_pixel",), float("nan"), "macs_per_pixel"),
    ],
)
def test_bank_card_out_of_range(
    runner: CliRunner, tmp_path: Path, field: tuple[str, ...], value: object, fragment: str
) -> None:
    bank = copy_bank(tmp_path / "bank")
    path = bank / "post-1_2.json"
    card = json.loads(path.read_text())
    node = card
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = value
    path.write_text(json.dumps(card))
    fails(runner, ["models", "--json", "--models", str(bank)], str(path), fragment)


# --- an update whose float32 scale overflows ------------------------------------------------


@pytest.fixture(scope="module")
def neural_wrp(clip8: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clip8 through post-1/2 (bilinear down, neural post), no update of its own."""
    out = tmp_path_factory.mktemp("wrp") / "n.wrp"
    args = [*enc(clip8, out)[:-1], "2", "--adapt-steps", "0", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


def test_update_scale_overflow(tmp_path: Path, neural_wrp: Path) -> None:
    """A finite float32 scale whose product with q overflows: the one line, no numpy warning
    before it, no output."""
    from dataclasses import replace

    from wrapcodec.container import pack, unpack

    update = bytearray((Path(__file__).parent / "data" / "update_example.bin").read_bytes())
    body = bytearray(zlib.decompress(bytes(update[2:])))
    body[0:4] = struct.pack("<f", 3e38)  # the first tensor's scale; its q are 127
    header, segments = unpack(neural_wrp.read_bytes())
    forged = bytes(update[:2]) + zlib.compress(bytes(body))
    bad = tmp_path / "bad.wrp"
    bad.write_bytes(pack(header, [replace(segments[0], update=forged)]))
    out = tmp_path / "o.y4m"
    one_line(run_cli(["decode", str(bad), "-o", str(out)]), "holds a value that is not finite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wrp"]


# --- --options digits, QP ranges and step limits --------------------------------------------


@pytest.mark.parametrize("digits", ["²", "٣", "𝟓", "0,¹"])
def test_options_take_ascii_digits_only(
    runner: CliRunner, tmp_path: Path, clip8: Path, digits: str
) -> None:
    """Digits str.isdigit takes but are not ASCII: refused, never a traceback nor a code."""
    out = tmp_path / "o.wrp"
    fails(runner, [*enc(clip8, out)[:-1], digits], "unknown option")
    assert not out.exists()


@pytest.mark.parametrize(
    ("codec", "qp", "fragment"),
    [
        ("x264", "-1", "--qp -1: x264 takes QPs 0..69"),
        ("x264", "999999999999", "--qp 999999999999: x264 takes QPs 0..69"),
        ("x264", "70", "--qp 70: x264 takes QPs 0..69"),
        ("x265", "52", "--qp 52: x265 takes QPs 0..51"),
        ("x265", "-12", "--qp -12: x265 takes QPs 0..51"),
    ],
)
def test_qp_range_per_codec(
    runner: CliRunner, tmp_path: Path, clip8: Path, codec: str, qp: str, fragment: str
) -> None:
    args = ["encode", str(clip8), "-o", str(tmp_path / "o.wrp"), "--codec", codec, "--qp", qp]
    fails(runner, args, fragment)
    assert list(tmp_path.iterdir()) == []


def test_qps_of_bench_in_range(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    fails(runner, ["bench", str(clip8), "--codec", "x264", "--qps", "22,70"], "--qps 70: x264")


def test_adapt_steps_bounded(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    out = tmp_path / "o.wrp"
    fails(runner, [*enc(clip8, out), "--adapt-steps", "999999999999"], "at most 10000")
    assert not out.exists()


# --- outputs: loops, slashes, the file-size limit, FIFOs, modes --------------------------------


def test_symlink_loop_output_refused(runner: CliRunner, tmp_path: Path, clip8: Path) -> None:
    """A loop given as -o with -y is refused, not replaced by a regular file."""
    a, b = tmp_path / "a.wrp", tmp_path / "b.wrp"
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    fails(runner, [*enc(clip8, a), "-y"], f"{a}: too many levels of symbolic links")
    assert a.is_symlink() and b.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wrp", "b.wrp"]


@pytest.mark.parametrize("existing", [False, True])
def test_output_with_a_trailing_slash_refused(
    runner: CliRunner, tmp_path: Path, clip8: Path, small_wrp: Path, existing: bool
) -> None:
    """``-o out.wrp/`` names a directory: refused, whether out.wrp exists (as a file) or not."""
    if existing:
        (tmp_path / "out.wrp").write_bytes(b"keep")
    fails(runner, [*enc(clip8, f"{tmp_path}/out.wrp/"), "-y"], "out.wrp/: not a directory")
    decode = ["decode", str(small_wrp), "-o", f"{tmp_path}/out.y4m/", "-y"]
    fails(runner, decode, "out.y4m/: not a directory")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == (["out.wrp"] if existing else [])
    if existing:
        assert (tmp_path / "out.wrp").read_bytes() == b"keep"


def _file_size_limit(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="no RLIMIT_FSIZE here")
def test_encode_over_the_file_size_limit(tmp_path: Path, clip8: Path) -> None:
    """``ulimit -f`` stops ffmpeg's temporary bitstream (SIGXFSZ): 'cannot write …: File too
    large', not ffmpeg's banner; no temporary folder, no output."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the file-size limit is already {hard} bytes")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "o.wrp"
    proc = run_cli(
        enc(clip8, out), env={"TMPDIR": str(tmp)}, preexec_fn=lambda: _file_size_limit(4096)
    )
    line = one_line(proc, "cannot write ", ": File too large")
    assert "Side data" not in line and "failed (exit" not in line
    assert list(tmp.iterdir()) == []
    assert not out.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_output_without_a_reader(tmp_path: Path, clip8: Path) -> None:
    """A FIFO nobody reads: the wait for a reader is bounded (FIFO_WAIT_S, 1 s here) and
    said in one line, instead of blocking forever."""
    fifo = tmp_path / "o.wrp"
    os.mkfifo(fifo)
    script = (
        "import sys; import wrapcodec.paths as p; p.FIFO_WAIT_S = 1.0; "
        "from wrapcodec.__main__ import main; main()"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, *enc(clip8, fifo), "-y"],
            capture_output=True,
            cwd=tempfile.gettempdir(),  # not the checkout, which would shadow the package
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the encode waited for a reader of the FIFO for ever")
    one_line(proc, f"cannot write {fifo}: no process opened this FIFO for reading within 1 s")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.wrp"]


def test_trained_weights_have_a_new_file_mode(runner: CliRunner, tmp_path: Path) -> None:
    """train --out writes its weights with 0666 less the umask, as every other output."""
    images = Path(__file__).parent / "data" / "images"
    out = tmp_path / "m.safetensors"
    args = ["train", "--kind", "post", "--ratio", "1/4", "--data", str(images), "--steps", "1"]
    args += ["--batch", "2", "--crop", "64", "--out", str(out)]
    old = os.umask(0o022)
    try:
        result = runner.invoke(cli, args)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for path in (out, out.with_suffix(".train.json")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# --- y4m headers ----------------------------------------------------------------------------

FRAME_32 = b"FRAME\n" + bytes(32 * 32 * 3 // 2)


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (b"W32 H32 F25:1 A99999:1", "pixel aspect 'A99999:1' out of range (each term 0..65535)"),
        (b"W32 H32 F25:1 A1:70000", "pixel aspect 'A1:70000' out of range"),
        (b"W32 H32 F4294967296:1", "frame rate 'F4294967296:1' out of range"),
        (b"W32 H32 F25:1 XCOLORRANGE=PURPLE", "unknown colour range 'XCOLORRANGE=PURPLE'"),
        (b"W\xc3\xa9\xff H32 F25:1", r"bad width 'W\xc3\xa9\xff'"),
        (b"W32 H32 F25:1 C420jpeg\r", "header line ends in CR LF"),
    ],
)
def test_y4m_header_refused_up_front(
    runner: CliRunner, tmp_path: Path, header: bytes, fragment: str
) -> None:
    """Refused when the header is read, naming the file and the tag as its bytes are (escaped),
    before anything is encoded."""
    src = tmp_path / "in.y4m"
    src.write_bytes(b"YUV4MPEG2 " + header + b"\n" + FRAME_32)
    line = fails(runner, enc(src, tmp_path / "o.wrp"), f"{src}: ", fragment)
    assert "\ufffd" not in line and "\r" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m"]


# --- decode - and info - ----------------------------------------------------------------------


def test_decode_reads_standard_input(tmp_path: Path, small_wrp: Path) -> None:
    """``decode -`` reads the .wrp on standard input, as a file; the same frames come out."""
    from wrapcodec.y4m import count_frames

    out, ref = tmp_path / "o.y4m", tmp_path / "ref.y4m"
    with small_wrp.open("rb") as stdin:
        proc = run_cli(["decode", "-", "-o", str(out)], stdin=stdin)
    assert proc.returncode == 0, proc.stderr.decode()
    assert run_cli(["decode", str(small_wrp), "-o", str(ref)]).returncode == 0
    assert count_frames(out) == 4
    assert out.read_bytes() == ref.read_bytes()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "standard input: empty"),
        (b"not a wrp at all, no", "standard input: not a .wrp file (bad magic)"),
    ],
)
def test_decode_of_bad_standard_input(
    runner: CliRunner, tmp_path: Path, data: bytes, fragment: str
) -> None:
    fails(runner, ["decode", "-", "-o", str(tmp_path / "o.y4m")], fragment, input=data)
    fails(runner, ["info", "-"], fragment, input=data)
    assert list(tmp_path.iterdir()) == []


def test_info_reads_standard_input(runner: CliRunner, small_wrp: Path) -> None:
    result = runner.invoke(cli, ["info", "-", "--json"], input=small_wrp.read_bytes())
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["path"], info["frames"], info["codec"]) == ("standard input", 4, "x264")
