"""Decode fuzz: damaged and forged .wrp files, CRC recomputed, decoded by the real decoder.

Mutants of real small encodes (x264, x265 and, where this ffmpeg has it, VVenC; direct,
linear, neural and two-segment files, and neural files whose segment carries a post-processor
update: one the encoder fitted, and the pinned ``tests/data/update_example.bin``) with payload
bytes replaced, bits flipped, payloads cut, zeroed or spliced, a header field forged, or the
update's bytes changed: a tensor's int8 scale (infinities, NaN, overflowing and random
floats), its subset and quantisation ids, or its zlib body (bytes damaged, cut or extended,
or a body of another length recompressed). Each is decoded in a worker process that the
test kills when one decode outlives :data:`DECODE_TIMEOUT_S`. Required: no hang, no exception
(nor warning) but the package's own errors, a one-line message for every refusal, and no
output file (nor temporary file) left by a refused decode; a decode that succeeds writes
every frame.

``test_decode_fuzz_long`` (marked ``slow``) runs ``$WRAPCODEC_FUZZ_DECODES`` mutants (default
500) from seed ``$WRAPCODEC_FUZZ_SEED``; run it with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import pytest
import torch
from click.testing import CliRunner

from wrapcodec import ffmpeg
from wrapcodec.backend import get_backend
from wrapcodec.bank import get_bank
from wrapcodec.cli import cli
from wrapcodec.container import Segment, WrpHeader, pack, read_wrp, unpack
from wrapcodec.decoder import decode_file
from wrapcodec.errors import ContainerError, WrapcodecError
from wrapcodec.options import OPTIONS
from wrapcodec.update import SCALE, Quant, Subset, subset_names
from wrapcodec.y4m import count_frames

DECODE_TIMEOUT_S = 60.0
MUTATIONS = ("bytes", "bits", "truncate", "zeros", "splice", "header", "update")
UPDATE_MUTATIONS = ("scale", "ids", "zlib")
PINNED_UPDATE = Path(__file__).parent / "data" / "update_example.bin"
_SCALES = (
    float("inf"),
    float("-inf"),
    float("nan"),
    3.0e38,
    -3.0e38,
    3.4028234663852886e38,  # the largest float32
    1e-45,
    0.0,
)


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutant of the .wrp ``data``: its kind and bytes (a valid container, CRC fixed)."""
    header, segments = unpack(data)
    updated = [k for k, s in enumerate(segments) if s.update]
    kind = "update" if updated and rng.random() < 0.5 else rng.choice(MUTATIONS)
    if kind == "update":
        if updated:
            k = rng.choice(updated)
            sub, update = _damage_update(segments[k].update, segments[k].option, rng)
            try:
                return f"update-{sub}", pack(
                    header, [*segments[:k], replace(segments[k], update=update), *segments[k + 1 :]]
                )
            except ContainerError:  # e.g. an update emptied: nothing the decoder sees
                pass
        kind = "bytes"
    if kind == "header":
        try:
            return kind, pack(*_forge_header(header, segments, rng))
        except ContainerError:  # a forgery the container refuses tests nothing here
            kind = "bytes"
    k = rng.randrange(len(segments))
    payload = _damage(bytearray(segments[k].payload), kind, rng)
    segments[k] = replace(segments[k], payload=bytes(payload))
    return kind, pack(header, segments)


def _damage(p: bytearray, kind: str, rng: random.Random) -> bytearray:
    """``p`` damaged the ``kind`` way (never emptied: the container needs a payload)."""
    if kind == "bytes":
        for _ in range(rng.randint(1, 32)):
            p[rng.randrange(len(p))] = rng.randrange(256)
    elif kind == "bits":
        for _ in range(rng.randint(1, 16)):
            p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del p[rng.randrange(1, len(p)) :]
    elif kind == "zeros":
        start = rng.randrange(len(p))
        run = min(len(p) - start, rng.randint(1, 512))
        p[start : start + run] = bytes(run)
    elif kind == "splice":
        a, b = sorted(rng.sample(range(len(p) + 1), 2))
        at = rng.randrange(len(p) + 1)
        p[at:at] = p[a:b]
    return p


def _numels(option: int, subset: Subset) -> list[int]:
    """Sizes of the tensors an update of ``subset`` carries for ``option``'s post-processor."""
    post = get_bank().processors(OPTIONS[option]).post
    params = dict(post.named_parameters())
    return [params[name].numel() for name in subset_names(post, subset)]


def _damage_update(update: bytes, option: int, rng: random.Random) -> tuple[str, bytes]:
    """``update`` with its scales, ids or zlib body changed; the kind of change and the bytes."""
    kind = rng.choice(UPDATE_MUTATIONS)
    ids, packed = bytearray(update[:2]), update[2:]
    int8 = len(update) > 2 and update[1] == Quant.INT8 and update[0] in set(Subset)
    if kind == "scale" and int8:
        body = bytearray(zlib.decompress(packed))
        offsets, at = [], 0
        for n in _numels(option, Subset(update[0])):
            offsets.append(at)
            at += SCALE.size + n
        for _ in range(rng.randint(1, 3)):
            at = rng.choice(offsets)
            if rng.random() < 0.3:
                body[at : at + 4] = rng.randbytes(4)
            else:
                body[at : at + 4] = struct.pack("<f", rng.choice(_SCALES))
        return kind, bytes(ids) + zlib.compress(bytes(body))
    if kind in ("scale", "ids"):
        ids[rng.randrange(2)] = rng.choice((0, 1, 2, 3, 4, rng.randrange(256)))
        return "ids", bytes(ids) + packed
    way = rng.choice(("bytes", "truncate", "extend", "relength"))
    if way == "relength" and int8:
        body = zlib.decompress(packed)
        cut = rng.randint(1, 64)
        body = body[:-cut] if rng.random() < 0.5 else body + rng.randbytes(cut)
        return kind, bytes(ids) + zlib.compress(body)
    if way == "extend":
        return kind, bytes(ids) + packed + rng.randbytes(rng.randint(1, 16))
    if way == "truncate" and len(packed) > 1:
        return kind, bytes(ids) + packed[: rng.randrange(1, len(packed))]
    body = bytearray(packed)
    for _ in range(rng.randint(1, 8)):
        body[rng.randrange(len(body))] = rng.randrange(256)
    return kind, bytes(ids) + bytes(body)


def _forge_header(
    header: WrpHeader, segments: list[Segment], rng: random.Random
) -> tuple[WrpHeader, list[Segment]]:
    """``header`` with one field the decoder must check against the stream changed."""
    name = rng.choice(
        ("bottleneck_bitdepth", "bitdepth", "codec_id", "frame_count", "chroma", "model_bank_id")
    )
    if name in ("bottleneck_bitdepth", "bitdepth"):
        return replace(header, **{name: 18 - getattr(header, name)}), segments
    if name == "codec_id":
        others = [c for c in (1, 2, 3, 200) if c != header.codec_id]  # 200: no backend
        return replace(header, codec_id=rng.choice(others)), segments
    if name == "chroma":
        return replace(header, chroma=(header.chroma + rng.randint(1, 3)) % 4), segments
    if name == "model_bank_id":
        return replace(header, model_bank_id=rng.randbytes(8)), segments
    delta = rng.choice((-1, 1))
    last = replace(segments[-1], frame_count=segments[-1].frame_count + delta)
    return replace(header, frame_count=header.frame_count + delta), [*segments[:-1], last]


# --- the worker: decodes the files it is sent, one JSON line each ------------------------------


def worker(lines: IO[str], out: IO[str]) -> None:
    """Decode each ``{"wrp": ..., "out": ...}`` line of ``lines``; answer one JSON line each.
    A warning (numpy's overflow, say) is a crash: it would print lines before the error's."""
    torch.set_num_threads(1)
    warnings.simplefilter("error")
    for line in lines:
        job = json.loads(line)
        t0 = time.monotonic()
        answer: dict[str, Any] = {"outcome": "ok"}
        try:
            decode_file(job["wrp"], job["out"])
        except WrapcodecError as exc:
            answer = {"outcome": "refused", "error": type(exc).__name__, "message": str(exc)}
        except Exception as exc:  # what the fuzz is here to find
            answer = {"outcome": "crash", "error": type(exc).__name__, "message": repr(exc)}
        answer["seconds"] = time.monotonic() - t0
        out.write(json.dumps(answer) + "\n")
        out.flush()


class Worker:
    """A decoding worker process, restarted after a decode that hangs."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[str | None] = queue.Queue()

    def _start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        answers: queue.Queue[str | None] = queue.Queue()
        stdout = proc.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                answers.put(line)
            answers.put(None)

        threading.Thread(target=pump, daemon=True).start()
        self._proc, self._answers = proc, answers
        return proc

    def decode(self, wrp: Path, out: Path) -> dict[str, Any]:
        """The worker's answer for ``wrp``, or ``{"outcome": "hang"}`` after the timeout."""
        proc = self._proc if self._proc and self._proc.poll() is None else self._start()
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"wrp": str(wrp), "out": str(out)}) + "\n")
        proc.stdin.flush()
        t0 = time.monotonic()
        try:
            line = self._answers.get(timeout=DECODE_TIMEOUT_S + 30)  # + the worker's start
        except queue.Empty:
            line = None
        if line is None:
            self.close()
            return {"outcome": "hang", "seconds": time.monotonic() - t0}
        answer: dict[str, Any] = json.loads(line)
        if answer["seconds"] > DECODE_TIMEOUT_S:
            answer["outcome"] = "hang"
        return answer

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


# --- the run --------------------------------------------------------------------------------


@dataclass
class Figures:
    """What a fuzz run found."""

    mutants: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    max_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [
            f"{self.mutants} mutants, {self.mutants} decodes, max decode {self.max_seconds:.2f} s",
            "mutations: " + ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())),
        ]
        lines += [f"{n:5d}  {what}" for what, n in self.outcomes.most_common()]
        return "\n".join(lines)


def _reason(message: str) -> str:
    """A refusal's gist, for counting: past the file and segment, before ffmpeg's words,
    numbers replaced by N."""
    gist = message.split("; ffmpeg said:")[0]
    gist = re.sub(r"^.*?\): ", "", gist) if "): " in gist else gist.split(": ", 1)[-1]
    gist = re.sub(r"\b[0-9a-f]{16}\b", "ID", gist)
    return re.sub(r"(?<![A-Za-wyz_.\d])\d+", "N", gist)[:100]


def _check_output(answer: dict[str, Any], wrp: Path, out: Path, figures: Figures) -> None:
    """A refusal is one line and leaves nothing; a success wrote every frame."""
    outcome = answer["outcome"]
    if outcome == "refused":
        message: str = answer["message"]
        figures.outcomes[f"{answer['error']}: {_reason(message)}"] += 1
        if "\n" in message or "\r" in message:
            figures.failures.append(f"{wrp.name}: message of several lines: {message!r}")
        if out.exists():
            figures.failures.append(f"{wrp.name}: refused but left {out.name}")
        return
    figures.outcomes[outcome] += 1
    if outcome == "ok":
        frames = read_wrp(wrp)[0].frame_count
        if count_frames(out) != frames:
            figures.failures.append(f"{wrp.name}: decoded, but not {frames} frames")
        out.unlink()
    else:
        figures.failures.append(f"{wrp.name}: {outcome}: {answer.get('message', '')}")


def run_fuzz(bases: list[Path], count: int, seed: int, workdir: Path) -> Figures:
    """Decode ``count`` mutants of ``bases`` (round robin) and collect the figures."""
    rng = random.Random(seed)
    figures = Figures()
    originals = [b.read_bytes() for b in bases]
    worker = Worker()
    try:
        for i in range(count):
            kind, data = mutate(originals[i % len(originals)], rng)
            wrp, out = workdir / f"mutant{i}.wrp", workdir / f"mutant{i}.y4m"
            wrp.write_bytes(data)
            answer = worker.decode(wrp, out)
            figures.mutants += 1
            figures.kinds[kind] += 1
            figures.max_seconds = max(figures.max_seconds, answer["seconds"])
            _check_output(answer, wrp, out, figures)
            if not figures.failures:
                wrp.unlink()
    finally:
        worker.close()
    leftovers = sorted(p.name for p in workdir.iterdir() if p.suffix != ".wrp")
    if leftovers:  # temporary files of refused decodes
        figures.failures.append(f"left behind: {leftovers}")
    return figures


@pytest.fixture(scope="module")
def bases(clip8: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Small real encodes of the 4-frame 192x108 clip to mutate."""
    tmp = tmp_path_factory.mktemp("fuzz")
    made = []
    plans = [
        ("x264", "0", "10", []),
        ("x265", "0", "10", []),
        ("vvenc", "0", "10", []),
        ("x264", "9", "8", []),  # LANCZOS_1_2
        ("x265", "2", "10", []),  # POST_1_2, the neural post-processor
        ("x264", "0,12", "8", ["--segment-frames", "2"]),  # two segments
        ("x265", "2", "10", ["--adapt-steps", "100"]),  # an update fitted by the encoder
    ]
    for k, (codec, options, depth, extra) in enumerate(plans):
        if ffmpeg.missing(get_backend(codec)):
            continue
        out = tmp / f"base{k}-{codec}.wrp"
        preset = "faster" if codec == "vvenc" else "ultrafast"
        args = ["encode", str(clip8), "-o", str(out), "--codec", codec, "--qp", "32"]
        args += ["--preset", preset, "--bitdepth", depth, "--options", options]
        result = CliRunner().invoke(cli, [*args, "--adapt-steps", "0", "--json", *extra])
        assert result.exit_code == 0, result.output
        made.append(out)
    if not made:
        pytest.skip("this ffmpeg codes none of x264, x265, VVenC")
    neural = next((p for p in made if "-x265" in p.name and read_wrp(p)[1][0].option == 2), None)
    if neural is not None:  # the pinned update on the neural file: an update in every run
        header, segments = read_wrp(neural)
        pinned = tmp / "base-pinned-update.wrp"
        update = PINNED_UPDATE.read_bytes()
        pinned.write_bytes(pack(header, [replace(segments[0], update=update)]))
        made.append(pinned)
    return made


def test_decode_fuzz(bases: list[Path], tmp_path: Path) -> None:
    """40 mutants: no hang, no crash, one-line refusals, nothing left behind."""
    figures = run_fuzz(bases, 40, seed=0, workdir=tmp_path)
    print(figures.report())
    assert not figures.failures, "\n".join(figures.failures)
    assert figures.outcomes["ok"] < figures.mutants  # the damage is seen


def test_decode_fuzz_updates(bases: list[Path], tmp_path: Path) -> None:
    """24 mutants of the files whose segments carry an update, half of them of its bytes."""
    updated = [b for b in bases if any(s.update for s in read_wrp(b)[1])]
    assert updated, "no base carries an update"
    figures = run_fuzz(updated, 24, seed=0, workdir=tmp_path)
    print(figures.report())
    assert not figures.failures, "\n".join(figures.failures)
    assert sum(n for k, n in figures.kinds.items() if k.startswith("update-")) >= 6
    assert figures.outcomes["ok"] < figures.mutants


@pytest.mark.slow
def test_decode_fuzz_long(bases: list[Path], tmp_path: Path) -> None:
    """``$WRAPCODEC_FUZZ_DECODES`` mutants (default 500) from ``$WRAPCODEC_FUZZ_SEED``."""
    count = int(os.environ.get("WRAPCODEC_FUZZ_DECODES", "500"))
    seed = int(os.environ.get("WRAPCODEC_FUZZ_SEED", "1"))
    t0 = time.monotonic()
    figures = run_fuzz(bases, count, seed, tmp_path)
    print(f"seed {seed}, {time.monotonic() - t0:.0f} s wall\n{figures.report()}")
    assert not figures.failures, "\n".join(figures.failures)


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker(sys.stdin, sys.stdout)
