"""Shared fixtures: small real clips cut from the bundled Park Joy clip.

Two tiers: ``pytest -m "not slow"`` runs the quick one (formats, networks, rules and error
paths, under a minute), plain ``pytest`` runs every test. A test is ``slow`` when it works on
real video or a real codec (it requests ``parkjoy``, which every clip here is cut from, or
``require_backend``), or when it is marked so by hand (training, the demo)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pydantic import BaseModel

from wrapcodec import ffmpeg
from wrapcodec.backend import get_backend
from wrapcodec.y4m import Frame, VideoInfo, Y4MWriter, iter_frames, read_info

# Requesting one of these (directly or through another fixture) means coding real video.
SLOW_FIXTURES = frozenset({"parkjoy", "require_backend"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that requests one of :data:`SLOW_FIXTURES`: coding real video
    is what takes the time, so the rule follows the fixtures, not the module a test is in."""
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def parkjoy() -> Path:
    """The bundled 480x270, 10-frame, 8-bit Park Joy clip."""
    with resources.as_file(resources.files("wrapcodec.data") / "parkjoy_480x270_10f.y4m") as p:
        return Path(p)


def cut(src: Path, dest: Path, width: int, height: int, frames: int, bitdepth: int) -> Path:
    """Top-left crop of the first ``frames`` frames, re-quantised to ``bitdepth``."""
    info = read_info(src)
    out = VideoInfo(
        width=width,
        height=height,
        bitdepth=bitdepth,
        fps_num=info.fps_num,
        fps_den=info.fps_den,
        aspect_num=info.aspect_num,
        aspect_den=info.aspect_den,
        chroma=info.chroma,
    )
    shift = bitdepth - info.bitdepth
    cw, ch = (width + 1) // 2, (height + 1) // 2
    with Y4MWriter(dest, out) as writer:
        for i, f in enumerate(iter_frames(src)):
            if i == frames:
                break
            planes = (f.y[:height, :width], f.u[:ch, :cw], f.v[:ch, :cw])
            writer.write(Frame(*(np.left_shift(p, shift).astype(np.uint16) for p in planes)))
    return dest


@pytest.fixture(scope="session")
def clip8(parkjoy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 frames, 192x108, 8-bit."""
    return cut(parkjoy, tmp_path_factory.mktemp("clips") / "pj8.y4m", 192, 108, 4, 8)


@pytest.fixture(scope="session")
def clip10_odd(parkjoy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 frames, 161x97 (odd), 10-bit."""
    return cut(parkjoy, tmp_path_factory.mktemp("clips") / "pj10.y4m", 161, 97, 3, 10)


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _require_backend(name: str) -> None:
    lacks = ffmpeg.missing(get_backend(name))
    if lacks:
        pytest.skip(f"ffmpeg lacks {', '.join(lacks)} for {name}")


@pytest.fixture()
def require_backend() -> Callable[[str], None]:
    """Call with a backend name: skips (with the reason) when this ffmpeg cannot run it."""
    return _require_backend


@pytest.fixture(scope="session")
def cut_clip() -> Callable[..., Path]:
    """``cut_clip(src, dest, width, height, frames, bitdepth)``: a crop of a real clip."""
    return cut


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Torch on one thread: tiny tensors run fastest so, and leave the other cores alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def first_bench_key() -> Callable[[BaseModel], str]:
    """A bench point's cache key as computed before ``PointSpec`` had the fields added later
    (``adapt_steps``, ``rival``, ``pre_arithmetic``, ``adapt_budget``, ``lam_scale``,
    ``update_scale``): a point at their neutral values must still hash to it, so older caches
    stay valid."""

    def key(spec: BaseModel) -> str:
        later = {
            "adapt_steps",
            "rival",
            "pre_arithmetic",
            "adapt_budget",
            "lam_scale",
            "update_scale",
        }
        old = spec.model_dump(exclude={"path", "sequence", "models", *later})
        return hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:24]

    return key
