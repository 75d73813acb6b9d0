"""VVenC (H.266/VVC) through ffmpeg's libvvenc, constant QP, Annex B elementary stream.

libvvenc takes 10-bit input only (Main10) and is decoded by ffmpeg's native VVC decoder.
QP adaptation is switched off so that the QP is the QP. Pictures under 64×64 are refused by
this build, so smaller pictures are padded up and cropped back.
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
    qp_range=(0, 63),
    lambda_factor=0.57,
    lambda_source="VTM reference encoder, λ = 0.57·2^((QP−12)/3) (JVET-N1002)",
    bitdepths=(10,),
    version_pattern=r"libvvenc version: (\S+)",
    min_width=64,
    min_height=64,
)
