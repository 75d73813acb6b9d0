"""Long decode fuzz, outside CI: container mutants checked up to the codec, then full decodes.

    nohup .venv/bin/python scripts/fuzz_long.py --container 10000 --decodes 500 --seed 1 \\
        --workdir /tmp/wrapcodec-fuzz > fuzz_long.log 2>&1 &

Bases are the small real encodes of ``tests/test_decode_fuzz.py`` (x264, x265, VVenC where
this ffmpeg has it; direct, linear, neural, two-segment, and neural files whose segment
carries an update: one fitted by the encoder and the pinned ``tests/data/update_example.bin``).

1. Container mutants, in this process: a mutant of ``test_decode_fuzz.mutate`` (payload,
   header and update bytes, CRC fixed), or the file's raw bytes damaged (CRC not fixed), is
   given to ``decode_file`` itself, stopped where the codec would start (its
   ``reconstruct`` raises): the container, the backend, the bank, each segment's option and
   bottleneck, and each update, parsed and applied. Only wrapcodec's own one-line errors may
   come out, no numpy warning (turned into errors here), and no output or temporary file may
   be left.
2. Full decodes: ``test_decode_fuzz.run_fuzz`` in its worker process (a hang is a decode that
   outlives ``DECODE_TIMEOUT_S``): no hang, no crash, one-line refusals, nothing left behind,
   and every frame from a decode that succeeds.

Prints the figures of both phases; exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from conftest import cut  # noqa: E402
from test_decode_fuzz import mutate, run_fuzz  # noqa: E402

from wrapcodec import decoder, ffmpeg  # noqa: E402
from wrapcodec.backend import get_backend  # noqa: E402
from wrapcodec.cli import cli  # noqa: E402
from wrapcodec.container import pack, read_wrp  # noqa: E402
from wrapcodec.errors import WrapcodecError  # noqa: E402

PLANS = [
    ("x264", "0", "10", []),
    ("x265", "0", "10", []),
    ("vvenc", "0", "10", []),
    ("x264", "9", "8", []),
    ("x265", "2", "10", []),
    ("x264", "0,12", "8", ["--segment-frames", "2"]),
    ("x265", "2", "10", ["--adapt-steps", "100"]),
    ("x264", "2", "8", ["--adapt-steps", "100", "--segment-frames", "2"]),
]


def make_bases(workdir: Path) -> list[Path]:
    """The fuzz's bases (as the test fixture makes them), and the pinned update on a copy of
    the neural file."""
    clip = cut(
        Path(__file__).resolve().parent.parent / "wrapcodec" / "data" / "parkjoy_480x270_10f.y4m",
        workdir / "clip.y4m",
        192,
        108,
        4,
        8,
    )
    made = []
    for k, (codec, options, depth, extra) in enumerate(PLANS):
        if ffmpeg.missing(get_backend(codec)):
            continue
        out = workdir / f"base{k}-{codec}.wrp"
        preset = "faster" if codec == "vvenc" else "ultrafast"
        args = ["encode", str(clip), "-o", str(out), "--codec", codec, "--qp", "32"]
        args += ["--preset", preset, "--bitdepth", depth, "--options", options]
        result = CliRunner().invoke(cli, [*args, "--adapt-steps", "0", "--json", *extra])
        if result.exit_code != 0:
            raise SystemExit(f"base {out.name}: {result.output}")
        made.append(out)
    neural = next(p for p in made if read_wrp(p)[1][0].option == 2)
    header, segments = read_wrp(neural)
    pinned = workdir / "base-pinned-update.wrp"
    update = (TESTS / "data" / "update_example.bin").read_bytes()
    pinned.write_bytes(pack(header, [replace(segments[0], update=update)]))
    made.append(pinned)
    return made


class CodecReached(Exception):
    """Raised where ``decode_file`` would start the codec: everything before it passed."""


def _stop(*args: object, **kwargs: object) -> None:
    raise CodecReached


def prepare(data: bytes, workdir: Path) -> None:
    """``decode_file`` on ``data`` up to the codec; CodecReached if it got there."""
    wrp, out = workdir / "mutant.wrp", workdir / "mutant.y4m"
    wrp.write_bytes(data)
    decoder.reconstruct = _stop  # type: ignore[assignment]
    decoder.decode_file(str(wrp), str(out))


def raw_damage(data: bytes, rng: random.Random) -> bytes:
    """``data`` with bytes changed or cut, its CRC left as it was."""
    b = bytearray(data)
    if rng.random() < 0.3:
        return bytes(b[: rng.randrange(len(b))])
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def container_phase(
    bases: list[Path], count: int, seed: int, workdir: Path
) -> tuple[Counter[str], list[str]]:
    rng = random.Random(seed)
    workdir.mkdir(exist_ok=True)
    originals = [b.read_bytes() for b in bases]
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    for i in range(count):
        original = originals[i % len(originals)]
        if rng.random() < 0.2:
            kind, data = "raw", raw_damage(original, rng)
        else:
            kind, data = mutate(original, rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                prepare(data, workdir)
            failures.append(f"mutant {i} ({kind}): decode_file never reached the codec")
        except CodecReached:
            outcomes[f"{kind}: accepted"] += 1
        except WrapcodecError as exc:
            outcomes[f"{kind}: refused"] += 1
            if "\n" in str(exc) or "\r" in str(exc):
                failures.append(f"mutant {i} ({kind}): message of several lines: {exc!r}")
        except Exception as exc:  # what the fuzz is here to find (a warning included)
            failures.append(f"mutant {i} ({kind}): {type(exc).__name__}: {exc!r}")
        left = sorted(p.name for p in workdir.iterdir() if p.name != "mutant.wrp")
        if left:
            failures.append(f"mutant {i} ({kind}): left behind {left}")
            for name in left:
                (workdir / name).unlink()
    return outcomes, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", type=int, default=10_000)
    parser.add_argument("--decodes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.monotonic()
    bases = make_bases(args.workdir)
    print(f"{len(bases)} bases: {', '.join(b.name for b in bases)}", flush=True)
    updates = sum(bool(s.update) for b in bases for s in read_wrp(b)[1])
    print(f"{updates} segments carry an update", flush=True)

    outcomes, failures = container_phase(
        bases, args.container, args.seed, args.workdir / "container"
    )
    print(f"\ncontainer phase: {args.container} mutants, {time.monotonic() - t0:.0f} s", flush=True)
    for what, n in sorted(outcomes.items()):
        print(f"{n:6d}  {what}")

    t1 = time.monotonic()
    fuzzdir = args.workdir / "decodes"
    fuzzdir.mkdir(exist_ok=True)
    figures = run_fuzz(bases, args.decodes, args.seed, fuzzdir)
    print(f"\ndecode phase: seed {args.seed}, {time.monotonic() - t1:.0f} s\n{figures.report()}")
    failures += figures.failures
    print(f"\n{len(failures)} failures")
    for failure in failures[:50]:
        print("  " + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
