"""Training and validation pictures: RGB photos → YUV 4:2:0, random crops and pan clips.

Photos are converted once with the BT.601 limited-range matrix (what ffmpeg uses by default
for SD content, and what the y4m test sequences carry) and chroma is the mean of each 2×2
block. A *pan clip* is ``clip_len`` crops of one photo whose window moves by a constant
random step per picture, so the real codec in the loop sees the inter-coded pictures it
emits on video rather than intra-only pictures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from wrapcodec.errors import InputError
from wrapcodec.nets import unit

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")


@dataclass(frozen=True)
class Picture:
    """One 8-bit 4:2:0 picture with even luma dimensions."""

    y: np.ndarray  # (H, W) uint8
    uv: np.ndarray  # (2, H/2, W/2) uint8

    @property
    def height(self) -> int:
        return int(self.y.shape[0])

    @property
    def width(self) -> int:
        return int(self.y.shape[1])


def rgb_to_yuv420(rgb: np.ndarray) -> Picture:
    """BT.601 limited-range YCbCr 4:2:0 of an (H, W, 3) uint8 image, cropped to even size."""
    h, w = rgb.shape[0] & ~1, rgb.shape[1] & ~1
    x = rgb[:h, :w].astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    cb = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    cr = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    chroma = np.stack([cb, cr]).reshape(2, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    return Picture(_to8(y), _to8(chroma))


def _to8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def image_files(folder: Path) -> list[Path]:
    """The files of ``folder`` with an image suffix, sorted by name."""
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of images")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_pictures(folder: Path, min_size: int = 0) -> list[Picture]:
    """Every image in ``folder`` (sorted by name) as a :class:`Picture`.

    A file with an image suffix that PIL cannot read (corrupt, truncated, not an image) is
    refused with an :class:`InputError` naming it, rather than skipped: a training set that
    silently shrinks would change the results without a word."""
    pictures = []
    for path in image_files(folder):
        pic = read_picture(path)
        if min(pic.height, pic.width) >= min_size:
            pictures.append(pic)
    if not pictures:
        raise InputError(f"{folder}: no images of at least {min_size}x{min_size} pixels")
    log.info("loaded %d pictures from %s", len(pictures), folder)
    return pictures


def read_picture(path: Path) -> Picture:
    """One image file as a :class:`Picture`; an unreadable one is an :class:`InputError`."""
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    # UnidentifiedImageError and truncated files are OSErrors; some decoders raise the others.
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if isinstance(exc, UnidentifiedImageError):
            reason = "not a known image format, or corrupt"
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: cannot read this image ({reason})") from exc
    return rgb_to_yuv420(rgb)


def to_tensors(pictures: list[Picture]) -> tuple[Tensor, Tensor]:
    """Stack same-size pictures as normalised (N,1,H,W) and (N,2,H/2,W/2) tensors."""
    y = torch.from_numpy(np.stack([p.y[None] for p in pictures]).astype(np.float32))
    uv = torch.from_numpy(np.stack([p.uv for p in pictures]).astype(np.float32))
    return unit(y, 8), unit(uv, 8)


def pan_clip(
    rng: np.random.Generator, picture: Picture, size: int, clip_len: int, max_step: int
) -> list[Picture]:
    """``clip_len`` ``size``×``size`` crops of ``picture`` along a straight pan, randomly
    flipped; steps are even so chroma moves by whole samples."""
    step = max(0, min(max_step, (min(picture.height, picture.width) - size) // max(1, clip_len)))
    dy, dx = (2 * rng.integers(-(step // 2), step // 2 + 1, size=2)).tolist()
    span_y, span_x = abs(dy) * (clip_len - 1), abs(dx) * (clip_len - 1)
    y0 = 2 * int(rng.integers(0, (picture.height - size - span_y) // 2 + 1))
    x0 = 2 * int(rng.integers(0, (picture.width - size - span_x) // 2 + 1))
    y0 += span_y if dy < 0 else 0
    x0 += span_x if dx < 0 else 0
    flip_h, flip_v = bool(rng.integers(2)), bool(rng.integers(2))
    clip = []
    for t in range(clip_len):
        top, left = y0 + t * dy, x0 + t * dx
        y = picture.y[top : top + size, left : left + size]
        uv = picture.uv[:, top // 2 : (top + size) // 2, left // 2 : (left + size) // 2]
        if flip_h:
            y, uv = y[:, ::-1], uv[:, :, ::-1]
        if flip_v:
            y, uv = y[::-1], uv[:, ::-1]
        clip.append(Picture(np.ascontiguousarray(y), np.ascontiguousarray(uv)))
    return clip


def sample_batch(
    rng: np.random.Generator,
    pictures: list[Picture],
    batch: int,
    size: int,
    clip_len: int = 1,
    max_step: int = 8,
) -> tuple[Tensor, Tensor]:
    """A batch of ``batch`` crops made of ``batch / clip_len`` pan clips."""
    crops: list[Picture] = []
    while len(crops) < batch:
        pic = pictures[int(rng.integers(len(pictures)))]
        crops += pan_clip(rng, pic, size, clip_len, max_step)
    return to_tensors(crops[:batch])


def center_crops(pictures: list[Picture], size: int) -> list[Picture]:
    """The central ``size``×``size`` crop (even offsets) of every picture."""
    out = []
    for p in pictures:
        top, left = (p.height - size) // 2 & ~1, (p.width - size) // 2 & ~1
        out.append(
            Picture(
                p.y[top : top + size, left : left + size],
                p.uv[:, top // 2 : (top + size) // 2, left // 2 : (left + size) // 2],
            )
        )
    return out
