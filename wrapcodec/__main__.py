"""``python -m wrapcodec`` and the ``wrapcodec`` console script.

The command line imports torch, numpy, scipy and the rest, which takes a second or more. A
Ctrl-C in that second must end like one later on, with ``Interrupted.`` and exit status 130,
not a traceback from deep inside an import. So this module imports nothing heavy itself and
imports the command line inside the guard.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports a command that Ctrl-C ended."""


def main() -> None:
    """Import the command line and run it; a Ctrl-C while importing exits 130 quietly."""
    try:
        from wrapcodec.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    cli_main()


if __name__ == "__main__":
    main()
