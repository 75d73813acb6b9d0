"""A model's validation: its option's RD curve on pictures against its rivals' (``wrapcodec
models install --val``), an application of the pipeline ``encode`` and ``bench`` measure with.

The validation pictures are coded as one clip by the real codec at each QP, with the model's
option and with the Lanczos and bilinear options of the same ratio (direct coding for r = 1,
and the post-only model for a wrapper when the bank has it); the card records the curves, the
BD-rate of the model against each rival and its PSNR gain at equal QP.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import Bank, ModelCard, RatePoint, Validation, option_for
from wrapcodec.bdrate import Curve, bd_rate
from wrapcodec.dataset import load_pictures
from wrapcodec.errors import InputError
from wrapcodec.options import OPTIONS, Option
from wrapcodec.pipeline import Layout, code_and_measure
from wrapcodec.y4m import ChromaTag, Frame, VideoInfo, Y4MWriter

VAL_QPS = (22, 27, 32, 37, 42, 47)


def _clip(pictures_dir: Path, path: Path) -> tuple[VideoInfo, int]:
    pictures = load_pictures(pictures_dir)
    size = {(p.width, p.height) for p in pictures}
    if len(size) != 1:
        raise InputError(f"{pictures_dir}: validation pictures must share one size")
    ((w, h),) = size
    info = VideoInfo(w, h, 8, 25, 1, chroma=ChromaTag.C420JPEG)
    with Y4MWriter(str(path), info) as writer:
        for p in pictures:
            writer.write(
                Frame(p.y.astype("uint16"), p.uv[0].astype("uint16"), p.uv[1].astype("uint16"))
            )
    return info, len(pictures)


def validate(
    bank: Bank,
    card: ModelCard,
    pictures: Path,
    codec: str = "x265",
    preset: str | None = None,
    about: str = "",
) -> Validation:
    """Code the pictures with the model's option and its linear rivals at every VAL_QP, at
    ``preset`` (None: the codec's default), with a 10-bit bottleneck, or the one a prior's
    card names."""
    backend = get_backend(codec)
    preset = preset or backend.default_preset
    depth = card.bitdepths[0] if card.bitdepths else 10
    opt = OPTIONS[card.option]
    rivals: list[Option] = (
        [OPTIONS[0]]
        if opt.ratio == 1
        else [option_for("lanczos", opt.ratio), option_for("bilinear", opt.ratio)]
    )
    if opt.kind == "wrapper" and bank.has(option_for("post", opt.ratio)):
        rivals.append(option_for("post", opt.ratio))
    curves: dict[str, list[RatePoint]] = {}
    with tempfile.TemporaryDirectory(prefix="wrapcodec-val-") as tmp:
        source = Path(tmp) / "val.y4m"
        info, count = _clip(pictures, source)
        for o in [opt, *rivals]:
            prior = card.prior if o == opt else 0  # a prior is validated over all the QPs
            layout = Layout.make(info, o, backend, depth, bank, prior=prior)
            points = []
            for qp in VAL_QPS:
                settings = EncodeSettings(qp=qp, preset=preset, bitdepth=depth)
                stream = Path(tmp) / f"o{int(o.code)}-q{qp}{backend.extension}"
                coded = code_and_measure(backend, settings, source, layout, 0, count, stream)
                bpp = 8 * coded.payload_bytes / (count * info.width * info.height)
                points.append(RatePoint(qp=qp, bpp=bpp, psnr_yuv=coded.psnr_yuv))
            curves[o.name] = points
    mine = curves[opt.name]
    bd: dict[str, float | None] = {}
    gain: dict[str, float] = {}
    for o in rivals:
        theirs = curves[o.name]
        bd[o.name] = bd_rate(
            Curve.of([p.bpp for p in theirs], [p.psnr_yuv for p in theirs]),
            Curve.of([p.bpp for p in mine], [p.psnr_yuv for p in mine]),
        ).bd_rate
        gain[o.name] = sum(
            a.psnr_yuv - b.psnr_yuv for a, b in zip(mine, theirs, strict=True)
        ) / len(mine)
    return Validation(
        data=about or pictures.name,
        pictures=count,
        codec=codec,
        preset=preset,
        bitdepth=depth,
        curves=curves,
        bd_rate=bd,
        psnr_gain_same_qp=gain,
    )
