"""x264 (H.264/AVC) through ffmpeg's libx264, constant QP, Annex B elementary stream.

At 10 bits x264 takes its QP on the extended scale (0–81, offset 12), so wrapcodec adds the
offset: QP 32 means the same quantiser step at 8 and 10 bits, as for x265 and VVenC.

``-tune psnr`` turns off x264's psycho-visual optimisation (psy-rd), as for x265: wrapcodec's
RDO judges by PSNR.
"""

from wrapcodec.backend import Backend

PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


def codec_args(qp: int, preset: str, threads: int | None) -> list[str]:
    # -qp selects constant-QP rate control: no AQ, no rate control.
    args = ["-preset", preset, "-tune", "psnr", "-qp", str(qp)]
    return [*args, "-threads", str(threads)] if threads else args


BACKEND = Backend(
    name="x264",
    codec_id=1,
    description="H.264/AVC, x264 (libx264)",
    encoder="libx264",
    decoder="h264",
    stream_format="h264",
    extension=".264",
    codec_args=codec_args,
    presets=PRESETS,
    default_preset="medium",
    probe="superfast",
    qp_range=(0, 69),
    lambda_factor=0.85,
    slope_scale=1.86,
    lambda_source="JM reference encoder, λ_mode = 0.85·2^((QP−12)/3) (Wiegand et al., 2003)",
    high_bitdepth_qp_offset=True,
    version_pattern=r"x264 - core (\d+(?: r\d+ [0-9a-f]+)?)",
    min_width=16,
    min_height=16,
)
