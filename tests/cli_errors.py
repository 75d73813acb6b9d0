"""The command line's promise for bad input, checked the same way by every test module."""

from __future__ import annotations

from click.testing import CliRunner

from wrapcodec.cli import cli


def fails(runner: CliRunner, args: list[str], *fragments: str, input: bytes | None = None) -> str:
    """Run the command line; it must fail with exactly one ``Error:`` line on stderr that
    holds every fragment, and no traceback. Returns that line."""
    result = runner.invoke(cli, args, input=input)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
