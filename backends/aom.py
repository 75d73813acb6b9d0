"""AV1 through ffmpeg's libaom-av1 (AOM's reference encoder) at a fixed quantiser, written as a
low-overhead OBU stream (AV1 specification §5, ffmpeg's ``obu`` muxer and demuxer); decoded by
libdav1d, or by libaom's own decoder where this ffmpeg has no dav1d.

**Fixed QP.** ``-crf q -b:v 0`` selects libaom's constant-quality mode (``end-usage=q``,
``cq-level=q``), in which libaom still gives key frames and (alt-)golden frames a lower qindex
from boosts it estimates on the content from its look-ahead (measured with ffmpeg's
``trace_headers``, cq-level 40: key frames at qindex 60–62 and alt-refs at 105–125 depending on
the clip, other frames at 160). ffmpeg cannot reach libaom's ``use_fixed_qp_offsets`` (an
encoder configuration field, not a control ``-aom-params`` can set), so ``-qmin q -qmax q``
pins every frame's qindex to q's; the price is that lower pyramid layers get no lower qindex
(8–14 % more rate at equal PSNR-YUV than with libaom's own boosts, measured on 17-frame 256×144
crops of three clips). ``-aom-params`` then turns off what moves the quantiser or λ inside a
frame: ``aq-mode=0`` (segment-based adaptive quantisation), ``deltaq-mode=0`` (superblock qindex
deltas, on by default: every frame of a default encode signals ``delta_q_present``),
``enable-tpl-model=0`` (with those two off, TPL still rescales λ per superblock of alt-ref
frames: ``adjust_rdmult_tpl_model`` in libaom ``av1/encoder/encodeframe.c``), and the temporal
filters ``enable-keyframe-filtering=0`` and ``arnr-strength=0``: they code a denoised picture
instead of the source, an encoder-side pre-processor of its own next to wrapcodec's. ``-tune
psnr`` keeps libaom's λ the PSNR one. An ``-aom-params`` key the library does not know fails the
encode.

The QP mapping and λ are those of :mod:`wrapcodec.backends.av1`.

**No super-resolution rival.** libaom's super-resolution is set by fields of its encoder
configuration (``rc_superres_mode``, ``rc_superres_denominator``), which ffmpeg's libaom-av1
wrapper does not fill and ``-aom-params`` cannot reach (it calls ``aom_codec_set_option``:
"Cannot find aom option superres-mode", ffmpeg 9, libaom 3.15.1). The super-resolution
rivals are SVT-AV1's (:mod:`.svtav1`), which codes the same AV1 tool.
"""

from __future__ import annotations

from .av1 import av1_backend, av1_quantizer

PRESETS = tuple(str(speed) for speed in range(9))  # libaom cpu-used 0 (slowest) .. 8


def codec_args(qp: int, preset: str, threads: int | None) -> list[str]:
    """libaom arguments for wrapcodec's ``qp``: every frame at the same qindex, nothing that
    moves it or λ inside a frame, no temporal filter (module docstring)."""
    q = str(av1_quantizer(qp))
    params = (
        "aq-mode=0:deltaq-mode=0:enable-tpl-model=0:enable-keyframe-filtering=0:arnr-strength=0"
    )
    args = ["-cpu-used", preset, "-crf", q, "-b:v", "0", "-qmin", q, "-qmax", q]
    args += ["-tune", "psnr", "-aom-params", params]
    return [*args, "-threads", str(threads)] if threads else args


BACKEND = av1_backend(
    name="aom",
    codec_id=5,
    description=(
        "AV1, libaom (libaom-av1), fixed QP: -crf q -b:v 0 with -qmin q -qmax q (every frame at "
        "qindex 4q), aq-mode=0, deltaq-mode=0, enable-tpl-model=0, temporal filters off; "
        "decoded by libdav1d (libaom-av1 if absent)"
    ),
    encoder="libaom-av1",
    codec_args=codec_args,
    presets=PRESETS,
    default_preset="6",
    version_pattern=r"\[libaom-av1 @ \S+\] (v\d+\.\d+\.\d+\S*)",
    min_size=16,
    probe="8",
)
