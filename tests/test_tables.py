"""The encoder's table in an 80-column terminal: every option's full name, nothing cut, the
columns that do not fit left out and said so; a wide terminal shows them all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from wrapcodec.cli import cli
from wrapcodec.options import OPTIONS


def _encode(clip: Path, out: Path, columns: int) -> str:
    args = ["encode", str(clip), "-o", str(out), "-y", "--codec", "x264", "--qp", "32"]
    args += ["--effort", "fast", "--options", "all"]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def test_encode_table_fits_80_columns(
    clip8: Path, tmp_path: Path, require_backend: Callable[[str], None]
) -> None:
    require_backend("x264")
    narrow = _encode(clip8, tmp_path / "n.wrp", 80)
    table = narrow.split("\n\n")[0] if "\n\n" in narrow else narrow
    lines = [line for line in table.splitlines() if "│" in line or "┃" in line]
    assert lines and all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert "…" not in narrow
    names = {opt.name for opt in OPTIONS.values()}
    shown = {line.split("│")[1].strip(" ▶") for line in lines if line.startswith("│")}
    assert names <= shown, names - shown
    for header in ("option", "QP", "kbps", "PSNR-YUV", "J"):
        assert header in narrow
    assert "more columns on a wider terminal" in narrow
    wide = _encode(clip8, tmp_path / "w.wrp", 200)
    for header in ("PSNR-Y ", "enc s", "size", "code", "adapt dB", "update"):
        assert header in wide, header
    assert "more columns" not in wide


def _narrow(args: list[str]) -> list[str]:
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    rows = [line for line in result.output.splitlines() if line.startswith(("│", "┃", "┏", "└"))]
    assert rows and all(len(line) <= 80 for line in rows), "\n".join(rows)
    return rows


def test_models_table_fits_80_columns() -> None:
    rows = _narrow(["models"])
    names = {line.split("│")[2].strip() for line in rows if line.startswith("│")}
    assert {"post-1", "post-1_2", "wrapper-2_3"} <= names, names


def test_backends_table_fits_80_columns() -> None:
    rows = _narrow(["backends"])
    names = {line.split("│")[1].strip() for line in rows if line.startswith("│")}
    assert {"x264", "x265", "svtav1", "vvenc", "aom"} <= names, names
