"""AV1 through ffmpeg's libsvtav1 (SVT-AV1) at a fixed QP, written as a low-overhead OBU stream;
decoded by libdav1d, or by libaom's decoder where this ffmpeg has no dav1d.

**Fixed QP.** ``-svtav1-params rc=0:qp=q:aq-mode=0`` is SVT-AV1's CQP mode: with ``aq-mode=0``
the encoder turns TPL off ("TPL is disabled for aq_mode 0") and signals no superblock delta-q,
and every frame's qindex is 4q plus an offset fixed by its layer in the mini-GOP
(``cqp_qindex_calc`` in SVT-AV1's ``rc_crf_cqp.c``), the same for any content: measured with
ffmpeg's ``trace_headers`` on three clips at q 40 (SVT-AV1 4.2), key frame 67, then 105, 140,
151, 156 and 160 for the top layer, as HM and x265 lower the QP of lower layers. Its CRF mode
(``crf=``, ``aq-mode=2``) instead moves frame qindexes with TPL statistics and codes superblock
delta-q. ``enable-variance-boost=0`` (superblock qindex from variance; off by default),
``enable-tf=0`` (motion-compensated temporal filtering of alt-ref and key frames: it codes a
denoised picture instead of the source, an encoder-side pre-processor of its own next to
wrapcodec's; it leaves the qindexes as they are) and ``tune=1`` (PSNR) are set explicitly.
``-err_detect explode`` makes an SVT-AV1 that does not know one of these keys fail the encode
instead of ignoring it. Parameter names checked against the bundled SVT-AV1 4.2.0 (its parser
rejects unknown keys; ``enable-tpl-la`` no longer exists).

**QP mapping and λ.** Those of :mod:`wrapcodec.backends.av1`: both encoders code the same AV1
quantiser, so wrapcodec's QP goes to the same q (``qp=q``, qindex 4q for the top layer) and λ is
libaom's inter-frame rdmult / 2048, which SVT-AV1 shares: in SVT-AV1 4.2
(``Source/Lib/Codec/rc_process.c``) ``svt_aom_compute_rd_mult_based_on_qindex`` is
``q_dc² · (3.2 + 0.0015 · q_dc)``, then scaled by frame type (``rd_frame_type_factor``:
150–180/128 at 8 bits, 128–144/128 at 10 bits), as libaom scales it by pyramid level.

**Threads.** SVT-AV1 sizes its thread pools by a level of parallelism (``lp``, 1–6), not a thread
count, and ignores ffmpeg's ``-threads``; wrapcodec passes ``lp=min(threads, 6)``.

**Super-resolution (the rivals).** AV1 can code a frame at a reduced width and upscale it
inside the loop (normative horizontal upscaling after CDEF, then loop restoration at full
size; AV1 §7.16): the codec's own answer to what the wrapper does. SVT-AV1 exposes it through
``superres-mode``; the rivals code every frame with ``superres-mode=1`` (fixed) at a
denominator D of 9–16, i.e. a coded width of 8/D (``superres-denom`` and
``superres-kf-denom``), at the same QPs. Its QThreshold (3) and Auto (4) modes code no
frame with super-resolution at a fixed QP (measured: calendar at q 34 and 58, every frame
header says ``use_superres = 0``; the streams differ from plain CQP by 12–21 bytes and at
most 0.005 dB), so they are not offered. libaom's super-resolution is a field of its encoder
configuration (``rc_superres_mode``), not a control ``-aom-params`` reaches ("Cannot find aom
option superres-mode" from ffmpeg 9's libaom-av1), so the ``aom`` backend has no rival. With
super-resolution on, SVT-AV1 4.2 codes (and dav1d returns) the height rounded up to a multiple
of 8 (480×270 comes back 480×272), so the rivals pad pictures to multiples of 8 and crop back.

**Sizes.** SVT-AV1 4.2 codes pictures from 4×4, but older releases refuse pictures under 64×64,
so smaller pictures are padded to 64×64 and cropped back, as for VVenC.
"""

from collections.abc import Callable

from wrapcodec.backend import Rival

from .av1 import av1_backend, av1_quantizer

PRESETS = tuple(str(preset) for preset in range(14))  # SVT-AV1 presets 0 (slowest) .. 13


def codec_args(qp: int, preset: str, threads: int | None, extra: str = "") -> list[str]:
    """SVT-AV1 arguments for wrapcodec's ``qp``: CQP at q, no adaptive quantisation, no
    temporal filter (module docstring); ``extra``: more ``key=value`` parameters."""
    params = f"rc=0:qp={av1_quantizer(qp)}:aq-mode=0:enable-variance-boost=0:enable-tf=0:tune=1"
    if threads:
        params += f":lp={min(threads, 6)}"
    if extra:
        params += f":{extra}"
    return ["-err_detect", "explode", "-preset", preset, "-svtav1-params", params]


def superres_args(denominator: int) -> Callable[[int, str, int | None], list[str]]:
    """:func:`codec_args` with every frame coded at 8/``denominator`` of the width."""

    superres = f"superres-mode=1:superres-denom={denominator}:superres-kf-denom={denominator}"

    def args(qp: int, preset: str, threads: int | None) -> list[str]:
        return codec_args(qp, preset, threads, superres)

    return args


SUPERRES = tuple(
    Rival(
        name=f"superres-{label}",
        description=(
            f"AV1 super-resolution, SVT-AV1 superres-mode=1, denominator {denominator}: every "
            f"frame coded at {label} of the width, upscaled and loop-restored in the codec"
        ),
        codec_args=superres_args(denominator),
        align=8,
    )
    for denominator, label in ((10, "4/5"), (12, "2/3"), (16, "1/2"))
)

BACKEND = av1_backend(
    name="svtav1",
    codec_id=4,
    description=(
        "AV1, SVT-AV1 (libsvtav1), fixed QP: rc=0 qp=q aq-mode=0 (CQP: no TPL, no superblock "
        "delta-q, qindex offsets fixed per layer), variance boost and temporal filtering off; "
        "decoded by libdav1d (libaom-av1 if absent)"
    ),
    encoder="libsvtav1",
    codec_args=codec_args,
    presets=PRESETS,
    default_preset="8",
    version_pattern=r"SVT-AV1 Encoder Lib (v\S+)",
    min_size=64,
    rivals=SUPERRES,
    probe="12",
)
