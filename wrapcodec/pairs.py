"""Training pairs from the real codecs: what a post-processor sees at the decoder, on disk.

A post-processor needs no proxy: its input is whatever the codec decoded. This module makes
short *pseudo-videos* of the training photos (crops that pan, and some that zoom, so the codec
predicts between pictures as it does on video), codes each one through the encoder's own
pipeline (:func:`wrapcodec.pipeline.encode_stream`: the bilinear downsampling of the post-only
options, a 10-bit bottleneck or, asked for, an 8-bit one, the backend's arguments) at each
ratio and QP, decodes it as the decoder does, and keeps the decoded bottleneck beside its
source. Training
(:mod:`wrapcodec.train`, ``--pairs``) is then plain supervised learning with the RDO's 6:1:1
YUV MSE, thousands of steps for the price of one pass of encodes.

A wrapper's post-processor sees what the codec made of its own pre-processor's bottleneck:
its pairs are coded through that pre-processor (:func:`wrapper_pres`), and kept apart under the
digest of its weights (:func:`pre_digest`), so that a post-processor is only ever trained on
the bottlenecks of the pre-processor it will run behind.

Layout of a cache folder (every file written whole, then renamed: an interrupted build
resumes where it stopped)::

    CACHE/clips/NAME.y4m                          the pseudo-video of photo NAME (8-bit)
    CACHE/CODEC/RATIO/qpNN/NAME.npz               y (T,h,w), u, v (T,h/2,w/2) uint16, bits (int)
    CACHE/CODEC-8bit/RATIO/qpNN/NAME.npz          the same with an 8-bit bottleneck
    CACHE/CODEC/wrapper-RATIO-DIGEST/qpNN/NAME.npz  coded through a wrapper's pre-processor

RATIO is ``1``, ``1_2``, ``2_3`` or ``1_4``; DIGEST the first 12 hex digits of
:func:`pre_digest`. Never build a cache from evaluation sequences.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import Bank, Processors, option_for
from wrapcodec.dataset import Picture, image_files, read_picture
from wrapcodec.errors import InputError
from wrapcodec.nets import PostProcessor, PreProcessor, unit
from wrapcodec.options import OPTIONS, Option, parse_qps
from wrapcodec.paths import atomic_write
from wrapcodec.pipeline import Layout, decode_bottleneck, encode_stream
from wrapcodec.resample import resample_plane
from wrapcodec.y4m import Frame, VideoInfo, Y4MWriter, count_frames, iter_frames, read_info

log = logging.getLogger(__name__)

QPS = (22, 27, 32, 37, 42, 47)
"""The RDO's default QP ladder: the points a cache is coded at."""


@dataclass(frozen=True)
class ClipSpec:
    """How pseudo-videos are cut from a photo: ``frames`` crops of ``size``×``size``, moving
    by up to ``max_pan`` luma pixels a frame; one clip in ``zoom_every`` also zooms by up to
    ``max_zoom`` (relative size change a frame)."""

    frames: int = 8
    size: int = 256
    max_pan: int = 8
    zoom_every: int = 2
    max_zoom: float = 0.02

    def __post_init__(self) -> None:
        if self.size % 4:
            raise InputError(f"--size {self.size}: must be a multiple of 4")


def ratio_dir(ratio: Fraction) -> str:
    """``1``, ``1_2``, ``2_3``, ``1_4``: a ratio as a folder name."""
    return "1" if ratio == 1 else f"{ratio.numerator}_{ratio.denominator}"


def coding_option(ratio: Fraction) -> Option:
    """The linear option whose bitstream a post-only option of ``ratio`` shares (direct at
    r = 1, bilinear below; see :func:`wrapcodec.pipeline.stream_key`)."""
    kind = "direct" if ratio == 1 else "bilinear"
    for opt in OPTIONS.values():
        if opt.kind == kind and opt.ratio == ratio:
            return opt
    raise ValueError(f"no linear option for ratio {ratio}")


# -- pseudo-videos --------------------------------------------------------------------------


def _window(plane: np.ndarray, top: int, left: int, side: int, out: int) -> np.ndarray:
    """The ``side``×``side`` window at (top, left), resampled to ``out``×``out`` (Lanczos)."""
    crop = plane[top : top + side, left : left + side].astype(np.float64)
    if side == out:
        return crop
    return resample_plane(crop, out, out, "lanczos")


def _to8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def pseudo_video(picture: Picture, spec: ClipSpec, rng: np.random.Generator) -> list[Frame]:
    """``spec.frames`` crops of ``picture`` along a straight pan with a steady zoom (none on
    most clips); window offsets and sides are even so chroma stays aligned."""
    n, out = spec.frames, spec.size
    zoom = (
        float(rng.uniform(-spec.max_zoom, spec.max_zoom))
        if rng.integers(spec.zoom_every) == 0
        else 0.0
    )
    sides = [2 * round(out * (1 + zoom) ** t / 2) for t in range(n)]
    big = max(sides)
    if big > min(picture.height, picture.width):
        sides, big = [out] * n, out
    room_y, room_x = picture.height - big, picture.width - big
    steps = max(1, n - 1)
    limit_y, limit_x = (room_y // steps) & ~1, (room_x // steps) & ~1  # even, ≥ 0
    vy, vx = (rng.integers(-spec.max_pan // 2, spec.max_pan // 2 + 1, size=2) * 2).tolist()
    vy, vx = int(np.clip(vy, -limit_y, limit_y)), int(np.clip(vx, -limit_x, limit_x))
    span_y, span_x = abs(vy) * (n - 1), abs(vx) * (n - 1)
    cy = 2 * int(rng.integers(0, (room_y - span_y) // 2 + 1)) + (span_y if vy < 0 else 0)
    cx = 2 * int(rng.integers(0, (room_x - span_x) // 2 + 1)) + (span_x if vx < 0 else 0)
    frames = []
    for t, side in enumerate(sides):
        # the window grows or shrinks about the centre of the largest one
        top = cy + t * vy + (big - side) // 2 & ~1
        left = cx + t * vx + (big - side) // 2 & ~1
        y = _window(picture.y, top, left, side, out)
        u, v = (_window(c, top // 2, left // 2, side // 2, out // 2) for c in picture.uv)
        frames.append(Frame(_to8(y), _to8(u), _to8(v)))
    return frames


def make_clips(folder: Path, cache: Path, spec: ClipSpec, seed: int = 0) -> list[Path]:
    """A pseudo-video per photo of ``folder`` at least ``spec.size`` on its shorter side, in
    ``cache/clips`` (kept where it exists). The clip of a photo depends only on its name, the
    spec and ``seed``."""
    out = cache / "clips"
    out.mkdir(parents=True, exist_ok=True)
    info = VideoInfo(spec.size, spec.size, 8, 25, 1)
    clips = []
    found = image_files(folder)
    if not found:
        raise InputError(f"{folder}: no images")
    for path in found:
        dest = out / f"{path.stem}.y4m"
        if not dest.exists():
            picture = read_picture(path)
            if min(picture.height, picture.width) < spec.size:
                log.info("%s: smaller than %d, skipped", path.name, spec.size)
                continue
            rng = np.random.default_rng([seed, *path.stem.encode()])
            with Y4MWriter(dest, info) as writer:
                for frame in pseudo_video(picture, spec, rng):
                    writer.write(frame)
        clips.append(dest)
    return clips


# -- coding ---------------------------------------------------------------------------------


CODING = 2
"""Revision of the codecs' settings the pairs were coded with, in their folder's name: pairs
coded otherwise are coded again, never mixed in. 2: x264 and x265 tuned for PSNR. Each folder
also records the preset and the backend's arguments its pairs were coded with
(:func:`claim_settings`), which a run with others is refused against."""


def codec_dir(codec: str, bitdepth: int) -> str:
    """A codec's folder in a cache: ``NAME-cN`` at 10 bits (the default), ``NAME-8bit-cN`` at
    8, N the :data:`CODING` revision."""
    name = codec if bitdepth == 10 else f"{codec}-{bitdepth}bit"
    return f"{name}-c{CODING}"


SETTINGS = "settings.json"
"""In each codec folder of a cache: the codec, the preset and the backend's
:meth:`~wrapcodec.backend.Backend.settings_digest` its pairs were coded with."""


def coding_settings(codec: str, preset: str | None = None) -> dict[str, str]:
    """What a codec folder records of pairs coded by ``codec`` at ``preset`` (default: the
    backend's); a preset the codec does not have is refused in one line."""
    backend = get_backend(codec)
    used = preset or backend.default_preset
    if used not in backend.presets:
        raise InputError(f"--preset {used!r}: {codec} presets are {', '.join(backend.presets)}")
    return {"codec": codec, "preset": used, "settings": backend.settings_digest(used)}


def claim_settings(
    cache: Path, points: Iterable[Point], preset: str | None = None, record: bool = True
) -> None:
    """Check, and ``record``, that the codec folders of ``points`` hold pairs coded at
    ``preset`` with the backends' arguments as they are: a folder that records other settings
    is refused in one line, so that pairs coded otherwise are never mixed in; one without a
    record (new, or made before folders kept one) records these."""
    for codec, bitdepth in sorted({(p.codec, p.bitdepth) for p in points}):
        want = coding_settings(codec, preset)
        path = cache / codec_dir(codec, bitdepth) / SETTINGS
        if not path.exists():
            if not record:
                continue
            atomic_write(path, partial(_write_record, want))
            continue
        have = _recorded(path)
        if have != want:
            raise InputError(
                f"{path.parent}: its pairs were coded by {have.get('codec')} at preset "
                f"{have.get('preset')} with settings {have.get('settings')}; this run codes "
                f"at preset {want['preset']} with settings {want['settings']}: use another cache"
            )


def _write_record(record: dict[str, str], dest: Path) -> None:
    dest.write_text(json.dumps(record, indent=2) + "\n")


def _recorded(path: Path) -> dict[str, str]:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable settings record ({e})") from None
    if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
        raise InputError(f"{path}: not a settings record")
    return record


def series_dir(codec: str, ratio: Fraction, bitdepth: int = 10, pre: str = "") -> Path:
    """The folder, relative to a cache, of the pairs of one codec, ratio and depth: coded
    behind bilinear downsampling, or through the pre-processor of digest ``pre``."""
    sub = ratio_dir(ratio) if not pre else f"wrapper-{ratio_dir(ratio)}-{pre}"
    return Path(codec_dir(codec, bitdepth)) / sub


def pre_digest(pre: PreProcessor) -> str:
    """12 hex digits naming a pre-processor's weights: the sha256 of its tensors' names,
    shapes and float32 bytes in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(pre.state_dict().items()):
        t = tensor.detach().to(torch.float32).contiguous().cpu()
        h.update(f"{name} {tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:12]


def wrapper_pres(
    bank: Bank, ratios: Iterable[Fraction]
) -> dict[Fraction, tuple[str, PreProcessor]]:
    """The pre-processors of ``bank``'s wrappers of ``ratios`` with their :func:`pre_digest`,
    by ratio (an :class:`~wrapcodec.errors.OptionError` where the bank lacks one)."""
    out = {}
    for ratio in ratios:
        opt = option_for("wrapper", Fraction(ratio))
        bank.require(opt)
        pre = bank.processors(opt).pre
        assert pre is not None
        out[Fraction(ratio)] = (pre_digest(pre), pre)
    return out


@dataclass(frozen=True)
class Point:
    """One operating point of a cache: codec, ratio, QP, the bottleneck's bit depth and,
    for a wrapper's pairs, the :func:`pre_digest` of the pre-processor coded through."""

    codec: str
    ratio: Fraction
    qp: int
    bitdepth: int = 10
    pre: str = ""

    def folder(self, cache: Path) -> Path:
        series = series_dir(self.codec, self.ratio, self.bitdepth, self.pre)
        return cache / series / f"qp{self.qp:02d}"


def code_clip(
    clip: Path, point: Point, preset: str | None = None, pre: PreProcessor | None = None
) -> dict[str, np.ndarray]:
    """``clip`` coded at ``point`` by the encoder's pipeline and decoded as the decoder does:
    the decoded bottleneck planes (uint16, cropped to the bottleneck size) and the bits.
    A wrapper's point is coded through ``pre`` (float arithmetic), whose digest it names."""
    backend = get_backend(point.codec)
    info = read_info(clip)
    frames = count_frames(clip)
    layout = Layout.make(info, coding_option(point.ratio), backend, bitdepth=point.bitdepth)
    if point.pre:
        if pre is None or pre_digest(pre) != point.pre:
            raise ValueError(f"pairs of pre-processor {point.pre} need that pre-processor")
        wrapper = option_for("wrapper", point.ratio)
        nets = Processors(PostProcessor(point.ratio), pre)
        layout = dataclasses.replace(layout, option=wrapper, processors=nets)
    settings = EncodeSettings(
        qp=point.qp, preset=preset or backend.default_preset, bitdepth=point.bitdepth, threads=1
    )
    backend.validate(settings)
    with tempfile.TemporaryDirectory(prefix="wrapcodec-pairs-") as tmp:
        stream = Path(tmp) / f"clip{backend.extension}"
        encode_stream(backend, settings, clip, layout, 0, frames, stream)
        bits = 8 * stream.stat().st_size
        decoded = list(decode_bottleneck(backend, stream, layout, frames))
    return {
        "y": np.stack([f.y for f in decoded]).astype(np.uint16),
        "u": np.stack([f.u for f in decoded]).astype(np.uint16),
        "v": np.stack([f.v for f in decoded]).astype(np.uint16),
        "bits": np.array(bits, np.int64),
    }


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))


def _code_one(
    clip: Path, point: Point, dest: Path, preset: str | None, pre: PreProcessor | None
) -> Path:
    _save(dest, code_clip(clip, point, preset, pre))
    return dest


def build(
    clips: Sequence[Path],
    cache: Path,
    points: Iterable[Point],
    jobs: int = 1,
    preset: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    pres: Mapping[str, PreProcessor] | None = None,
) -> int:
    """Code every clip at every point into ``cache``, ``jobs`` encodes at once, skipping what
    is there already; returns the number of pairs coded now. A wrapper's point is coded
    through the pre-processor of ``pres`` its digest names. A codec folder that records other
    settings than ``preset`` and the backend's arguments is refused before anything is coded
    (:func:`claim_settings`)."""
    pres = pres or {}
    points = list(points)
    claim_settings(cache, points, preset)
    todo = []
    for point in points:
        point.folder(cache).mkdir(parents=True, exist_ok=True)
        for clip in clips:
            dest = point.folder(cache) / f"{clip.stem}.npz"
            if not dest.exists():
                todo.append((clip, point, dest))
    done = 0
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(_code_one, c, p, d, preset, pres.get(p.pre)) for c, p, d in todo]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
                done += 1
                if progress is not None:
                    progress(done, len(todo))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return done


def points(
    codecs: Iterable[str],
    ratios: Iterable[Fraction],
    qps: Iterable[int],
    bitdepth: int = 10,
    pres: Mapping[Fraction, str] | None = None,
) -> list[Point]:
    """Every combination at ``bitdepth``, in a fixed order (codec, ratio, QP); with ``pres``
    (a pre-processor's digest by ratio), a wrapper's points, coded through it."""
    pres = pres or {}
    return [
        Point(c, Fraction(r), q, bitdepth, pres.get(Fraction(r), ""))
        for c in codecs
        for r in ratios
        for q in qps
    ]


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One coded pseudo-video as integer samples (a cache of a few thousand clips fits in
    memory; tensors are made per crop): decoded bottleneck and source, frame by frame."""

    decoded_y: np.ndarray  # (T,h,w) uint16, at ``bitdepth``
    decoded_uv: np.ndarray  # (T,2,h/2,w/2) uint16
    source_y: np.ndarray  # (T,H,W) uint8
    source_uv: np.ndarray  # (T,2,H/2,W/2) uint8
    qp: int
    bitdepth: int = 10  # of the decoded bottleneck


def _planes(frames: Sequence[Frame] | dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(frames, dict):
        return frames["y"], np.stack([frames["u"], frames["v"]], axis=1)
    return np.stack([f.y for f in frames]), np.stack([np.stack([f.u, f.v]) for f in frames])


def cached_qps(
    cache: Path,
    codecs: Sequence[str],
    ratio: Fraction,
    qp_min: int,
    qp_max: int,
    bitdepth: int = 10,
    pre: str = "",
) -> list[int]:
    """The QPs in ``qp_min``..``qp_max`` that ``cache`` holds pairs of for ``ratio``, with
    any of ``codecs`` at ``bitdepth`` (through the pre-processor of digest ``pre``, if
    given), ascending."""
    found = set()
    for codec in codecs:
        folder = cache / series_dir(codec, ratio, bitdepth, pre)
        for sub in folder.glob("qp*") if folder.is_dir() else []:
            if sub.name[2:].isdecimal() and qp_min <= int(sub.name[2:]) <= qp_max:
                found.add(int(sub.name[2:]))
    if not found:
        through = f" through pre-processor {pre}" if pre else ""
        make = "`wrapcodec pairs --wrappers`" if pre else "`wrapcodec pairs`"
        raise InputError(
            f"{cache}: no coded pairs for ratio {ratio}{through} at QPs {qp_min}-{qp_max} "
            f"with {', '.join(codecs)} at {bitdepth} bits (make them with {make})"
        )
    return sorted(found)


def load_pairs(
    cache: Path,
    codecs: Sequence[str],
    ratio: Fraction,
    qps: Sequence[int],
    bitdepth: int = 10,
    pre: str = "",
) -> list[Pair]:
    """Every pair of ``cache`` for ``ratio`` at ``qps`` with any of ``codecs`` at
    ``bitdepth`` (through the pre-processor of digest ``pre``, if given)."""
    sources: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    found = []
    for codec in codecs:
        for qp in qps:
            folder = Point(codec, ratio, qp, bitdepth, pre).folder(cache)
            for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
                if path.stem not in sources:
                    clip = cache / "clips" / f"{path.stem}.y4m"
                    sources[path.stem] = _planes(list(iter_frames(clip)))
                with np.load(path) as data:
                    decoded = _planes({k: data[k] for k in ("y", "u", "v")})
                found.append(Pair(*decoded, *sources[path.stem], qp, bitdepth))
    if not found:
        raise InputError(
            f"{cache}: no coded pairs for ratio {ratio} at QPs {list(qps)} with {', '.join(codecs)}"
        )
    return found


def _tensor(x: np.ndarray, bitdepth: int) -> Tensor:
    return unit(torch.from_numpy(x.astype(np.float32))[None], bitdepth)


def sample_batch(
    rng: np.random.Generator, pairs: Sequence[Pair], batch: int, crop: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``batch`` random ``crop``×``crop`` windows (even offsets) of random frames: the
    bilinear-upsampled decoded picture (what :meth:`PostProcessor.restore` takes) and the
    source, normalised. The whole frame is upsampled before cropping, as at the decoder."""
    xs_y, xs_uv, ts_y, ts_uv = [], [], [], []
    for _ in range(batch):
        pair = pairs[int(rng.integers(len(pairs)))]
        t = int(rng.integers(pair.source_y.shape[0]))
        height, width = pair.source_y.shape[-2:]
        depth = pair.bitdepth
        dy, duv = _tensor(pair.decoded_y[t : t + 1], depth), _tensor(pair.decoded_uv[t], depth)
        y, uv = PostProcessor.upsample(dy, duv, height, width)
        top = 2 * int(rng.integers((height - crop) // 2 + 1))
        left = 2 * int(rng.integers((width - crop) // 2 + 1))
        rows, cols = slice(top, top + crop), slice(left, left + crop)
        crows, ccols = slice(top // 2, (top + crop) // 2), slice(left // 2, (left + crop) // 2)
        xs_y.append(y[..., rows, cols])
        xs_uv.append(uv[..., crows, ccols])
        ts_y.append(_tensor(pair.source_y[t : t + 1, rows, cols], 8))
        ts_uv.append(_tensor(pair.source_uv[t, :, crows, ccols], 8))
    cat = torch.cat
    return (cat(xs_y), cat(xs_uv)), (cat(ts_y), cat(ts_uv))


def parse_ratios(ratios: str) -> list[Fraction]:
    """Ratios from a comma-separated list (the CLI's form); an :class:`InputError` names one
    that is not an option's."""
    out = []
    for text in ratios.split(","):
        if text not in {"1", "1/2", "2/3", "1/4"}:
            raise InputError(f"ratio {text!r} is not one of 1, 1/2, 2/3, 1/4")
        out.append(Fraction(text))
    return out


def iter_points_text(
    codecs: str,
    ratios: str,
    qps: str,
    bitdepth: int = 10,
    pres: Mapping[Fraction, str] | None = None,
) -> Iterator[Point]:
    """Points from comma-separated lists (the CLI's form) at ``bitdepth``, through the
    pre-processors ``pres`` names by ratio, if given; an :class:`InputError` names a ratio,
    QP or codec that is not one, or a codec that does not code that depth."""
    ratio_values = parse_ratios(ratios)
    backends = [get_backend(codec) for codec in codecs.split(",")]
    for backend in backends:
        if bitdepth not in backend.bitdepths:
            raise InputError(f"--bitdepth {bitdepth}: {backend.name} codes {backend.bitdepths}")
    qp_values: list[int] = []
    for backend in backends:  # the same QPs for every codec: each must take them all
        qp_values = parse_qps(qps, backend.name, backend.qp_range, minimum=1)
    yield from points(codecs.split(","), ratio_values, qp_values, bitdepth, pres)
