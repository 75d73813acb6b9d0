"""The encoder's rate-distortion cost and the one rule for keeping a post-processor update.

    J = D + λ(QP) · R

D is the 6:1:1-weighted YUV MSE in 8-bit units averaged over frames, R the bits of the whole
``.wrp`` file (header included) per source luma sample, and λ(QP) = c·2^((QP − 12)/3) the
reference-encoder relation of the codec (c = 0.85 for H.264/JM, 0.57 for HEVC/HM and VVC/VTM),
i.e. ``J · samples = SSE + λ · bits`` as in the reference encoders' mode decisions.
"""

from __future__ import annotations

from wrapcodec.y4m import VideoInfo


def rd_cost(mse_8bit: float, bits: int, frames: int, info: VideoInfo, lam: float) -> float:
    """``J = D + λ·R``: D the 6:1:1 MSE in 8-bit units, R bits per source luma sample."""
    return mse_8bit + lam * bits / (frames * info.width * info.height)


def keeps_update(cost_without: float, cost_with: float) -> bool:
    """Whether a candidate is sent with an update rather than without: only when its J with
    the update's bytes in R is strictly lower (on a tie the smaller file, without, wins)."""
    return cost_with < cost_without
