"""x265 (H.265/HEVC) through ffmpeg's libx265, constant QP, Annex B elementary stream.

``-tune psnr`` turns off x265's psycho-visual rate-distortion tuning (psy-rd, psy-rdoq), which
spends bits on texture energy that lowers PSNR: wrapcodec's RDO judges by PSNR, as for the AV1
backends' PSNR tuning (what it is worth: docs/measurements.md, "The codecs tuned for PSNR").
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
    # qp= in -x265-params is constant QP; ffmpeg's -crf would be a rate factor, not a QP.
    params = f"qp={qp}:log-level=warning"
    if threads:
        params += f":pools={threads}:frame-threads={min(threads, 2)}"
    return ["-preset", preset, "-tune", "psnr", "-x265-params", params]


BACKEND = Backend(
    name="x265",
    codec_id=2,
    description="H.265/HEVC, x265 (libx265)",
    encoder="libx265",
    decoder="hevc",
    stream_format="hevc",
    extension=".265",
    codec_args=codec_args,
    presets=PRESETS,
    default_preset="medium",
    probe="ultrafast",
    qp_range=(0, 51),
    lambda_factor=0.57,
    slope_scale=3.16,
    lambda_source="HM reference encoder, λ = 0.57·2^((QP−12)/3) (JCTVC-L1002)",
    version_pattern=r"HEVC encoder version (\S+)",
    min_width=16,
    min_height=16,
)
