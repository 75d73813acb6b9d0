"""``python -m wrapcodec`` and the ``wrapcodec`` console script.

The command line imports torch, numpy, scipy and the rest, which takes a second or more. A
Ctrl-C or SIGTERM in that second must end like one later on, with ``Interrupted.`` (exit
status 130) or ``Terminated.`` (143), not a traceback from deep inside an import. So this
module imports nothing heavy itself, installs the signal handlers of
:mod:`wrapcodec.interrupt` first and imports the command line inside the guard.
"""

from __future__ import annotations

import os
import sys
import tempfile

from wrapcodec import allocator, interrupt

EXIT_INTERRUPTED = interrupt.EXIT_INTERRUPTED
"""128 + SIGINT, as a shell reports a command that Ctrl-C ended."""


def _no_compiler_cache_folder() -> None:
    """torch makes its compiler's cache folder (``$TMPDIR/torchinductor_USER``) as it first
    imports the compiler, which content adaptation's optimiser does. wrapcodec compiles
    nothing, so the folder would only be left behind, empty: point the cache at the
    temporary folder itself, which exists (a setting of the user's own is kept)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.gettempdir())


def main() -> None:
    """Import the command line and run it; a Ctrl-C or SIGTERM while importing, or after the
    command, exits 130 or 143 with one line."""
    interrupt.install()
    allocator.keep_freed_memory()
    _no_compiler_cache_folder()
    status = 0
    try:
        from wrapcodec.cli import main as cli_main

        stop = interrupt.received()
        if stop is not None:  # it came inside the imports, where its exception was lost
            raise stop
        cli_main()
    except KeyboardInterrupt as exc:  # while importing, or outside the command itself
        interrupt.hold()
        sys.stderr.write(interrupt.message(exc) + "\n")
        status = interrupt.exit_status(exc)
    except Exception:
        # A signal inside an import can leave a half-initialised module behind (numpy's, for
        # one), and whoever imports it next fails with some other error: once a signal has
        # come, any error is the signal's consequence and ends as the signal does.
        stop = interrupt.received()
        if stop is None:
            raise
        interrupt.hold()
        sys.stderr.write(interrupt.message(stop) + "\n")
        status = interrupt.exit_status(stop)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            sys.stderr.write(exc.code + "\n")
            status = 1
        else:
            status = exc.code or 0
    interrupt.finish(status)


if __name__ == "__main__":
    main()
