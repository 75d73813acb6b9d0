"""Where an encode's time goes: ``wrapcodec encode`` run with its main stages timed.

Each stage below is wrapped to record when it began and ended and on which thread; after the
encode (whatever its exit) one line per call goes to stderr: start, end and duration in
seconds from the script's start, the thread and the stage. The output file and report are the
encode's own.

    python scripts/encode_timeline.py encode CLIP.y4m -o OUT.wrp --qp 37
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

T0 = time.perf_counter()

STAGES = [
    ("wrapcodec.encode.encoder", "encode_file"),
    ("wrapcodec.encode.segments", "priced_at_best_depth"),
    ("wrapcodec.encode.search", "probed"),
    ("wrapcodec.encode.search", "_verify"),
    ("wrapcodec.encode.segments", "_adapted"),
    ("wrapcodec.encode.trials", "Clip.encode"),
    ("wrapcodec.encode.trials", "Clip.measure"),
    ("wrapcodec.adaptation", "climb"),
    ("wrapcodec.adaptation", "_held"),
    ("wrapcodec.adaptation", "Judge.coded"),
    ("wrapcodec.adaptation", "_measured"),
    ("wrapcodec.adapt", "fit_forms"),
    ("wrapcodec.adapt", "_train"),
    ("wrapcodec.adapt", "_encode"),
]

calls: list[tuple[float, float, str, str]] = []


def _timed(module: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter() - T0
        try:
            return fn(*args, **kwargs)
        finally:
            end = time.perf_counter() - T0
            thread = threading.current_thread().name
            calls.append((start, end, thread, f"{module.rsplit('.', 1)[-1]}.{name}"))

    return run


def _wrap(module: str, qualname: str) -> None:
    """Replace ``qualname`` in ``module`` and in every wrapcodec module that imported it."""
    owner: Any = importlib.import_module(module)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    fn = getattr(owner, name)
    timed = _timed(module, qualname, fn)
    setattr(owner, name, timed)
    if path:
        return
    for other in list(sys.modules.values()):
        if getattr(other, "__name__", "").startswith("wrapcodec") and vars(other).get(name) is fn:
            setattr(other, name, timed)


def _report() -> None:
    for start, end, thread, stage in sorted(calls):
        print(
            f"{start:7.2f} {end:7.2f} {end - start:6.2f}  {thread[:24]:24s} {stage}",
            file=sys.stderr,
        )


def main() -> None:
    import wrapcodec.cli  # noqa: F401  (every stage's module, imported as the command does)
    from wrapcodec import interrupt
    from wrapcodec.__main__ import main as wrapcodec_main

    for module, qualname in STAGES:
        _wrap(module, qualname)
    print(f"imports done at {time.perf_counter() - T0:.2f} s", file=sys.stderr)
    finish = interrupt.finish

    def report_and_finish(status: int) -> None:
        _report()
        finish(status)

    interrupt.finish = report_and_finish  # type: ignore[assignment]
    sys.argv = ["wrapcodec", *sys.argv[1:]]
    wrapcodec_main()


if __name__ == "__main__":
    main()
