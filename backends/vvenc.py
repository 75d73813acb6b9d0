"""VVenC (H.266/VVC) through ffmpeg's libvvenc, constant QP, Annex B elementary stream.

libvvenc takes 10-bit input only (Main10) and is decoded by ffmpeg's native VVC decoder.
QP adaptation is switched off so that the QP is the QP. Pictures under 64×64 are refused by
this build, so smaller pictures are padded up and cropped back.

**No in-codec resampling rival.** VVC's reference picture resampling (RPR) lets a stream
change resolution at a random-access point with references resampled across the change.
libvvenc 1.15 exposes it through ``-vvenc-params`` only as ``RPR`` (0–2: allow or prepare a
stream for such switches, made by whoever changes the input size); it has no mode in which
the encoder itself codes pictures at a reduced size (``GOPBasedRPR`` is unknown to it), and
``RPR=1`` left a 30-frame calendar encode at QP 40 1 byte shorter, the same pictures. A
fixed-resolution VVC stream at a lower size is what the linear options already code, so
VVenC has no rival for ``bench --rivals``.
"""

from wrapcodec.backend import Backend

PRESETS = ("faster", "fast", "medium", "slow", "slower")


def codec_args(qp: int, preset: str, threads: int | None) -> list[str]:
    args = ["-preset", preset, "-qp", str(qp), "-qpa", "0"]
    return [*args, "-threads", str(threads)] if threads else args


BACKEND = Backend(
    name="vvenc",
    codec_id=3,
    description="H.266/VVC, VVenC (libvvenc), native VVC decoder",
    encoder="libvvenc",
    decoder="vvc",
    stream_format="vvc",
    extension=".266",
    codec_args=codec_args,
    presets=PRESETS,
    default_preset="medium",
    probe="faster",
    qp_range=(0, 63),
    lambda_factor=0.57,
    lambda_source="VTM reference encoder, λ = 0.57·2^((QP−12)/3) (JVET-N1002)",
    bitdepths=(10,),
    version_pattern=r"libvvenc version: (\S+)",
    min_width=64,
    min_height=64,
)
