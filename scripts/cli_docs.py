"""Write docs/cli.md, the command-line reference, from the commands' own ``--help``.

The reference is the help click prints for ``wrapcodec`` and every command and subcommand
under it, in the order ``wrapcodec --help`` lists them, each at a fixed width of
:data:`WIDTH` columns, so the text does not depend on the terminal it is made in. Writing it
from the command tree keeps one source for what an option does: the help text.

    python scripts/cli_docs.py           # write docs/cli.md
    python scripts/cli_docs.py --check   # exit 1 when docs/cli.md is not what it would write
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from wrapcodec.cli import cli

WIDTH = 80
"""Columns the help is wrapped to."""

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"

HEADER = """\
# Command-line reference

The `--help` of every `wrapcodec` command, as the program prints it. This file is generated
by `python scripts/cli_docs.py` from the commands themselves; do not edit it by hand (a test
fails when it is out of date). The [README](../README.md) has examples, and
[effort.md](effort.md) how the encoder chooses an option.
"""


def _contexts(
    command: click.Command, name: str, parent: click.Context | None
) -> Iterator[click.Context]:
    """A context for ``command`` (invoked as ``name`` under ``parent``) and, for a group,
    for each of its visible subcommands in listing order, depth first."""
    ctx = click.Context(
        command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH
    )
    yield ctx
    if isinstance(command, click.Group):
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not sub.hidden:
                yield from _contexts(sub, sub_name, ctx)


def render(root: click.Command = cli, prog: str = "wrapcodec") -> str:
    """The text of docs/cli.md for the command tree under ``root``."""
    parts = [HEADER]
    for ctx in _contexts(root, prog, None):
        parts.append(f"\n## {ctx.command_path}\n\n```text\n{ctx.get_help()}\n```\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write docs/cli.md, or with ``--check`` compare it with what would be written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else None
        if current != text:
            print(f"{DOC} is out of date: run python scripts/cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
