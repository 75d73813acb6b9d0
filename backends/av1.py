"""What the two AV1 backends (:mod:`.svtav1`, :mod:`.aom`) share: the AV1 quantiser
arithmetic and the fields of a raw-OBU AV1 stream. Both encoders code the same AV1 quantiser,
so a wrapcodec QP gives both the same qindex and the same λ. Not a backend itself (no
``BACKEND``, no entry point).

**QP mapping.** wrapcodec's QP is the 8-bit HEVC scale: quantiser step 2^((QP − 4)/6) on an
orthonormal transform. AV1's steps are the specification's ``Dc_Qlookup``/``Ac_Qlookup`` tables
(libaom ``av1/common/quant_common.c``, ``dc_qlookup_QTX``/``ac_qlookup_QTX``) in units 8 times
the orthonormal scale ("the transform stages scale the coefficient values up by a factor of 8",
same file). Encoders take a quantiser q of 0–63 that maps to qindex 4q (62 → 249, 63 → 255;
libaom ``av1/encoder/av1_quantize.c``, ``quantizer_to_qindex``). :func:`av1_quantizer` takes the
q ≥ 1 whose AC step / 8 is nearest, in log, to the HEVC step (q 0 is lossless): QP 22, 27, 32,
37, 42, 47 → q 14, 25, 34, 42, 50, 58 (HEVC-equivalent QP 21.9, 26.8, 31.9, 36.8, 41.9, 47.2).
QPs 0–8 all give q 1 (qindex 4, HEVC-equivalent 6.8), the finest step short of lossless; from
QP 15 up every QP has its own q. The same q is used at 10 bits. AV1's 10-bit tables are 4 times
the 8-bit ones (the same step relative to the signal range) from qindex 96 up, within 2 %
(QP ≥ 26); below, they are finer: by the equivalent of 0.75 QP at QP 22 (qindex 56) and 3.6 QP
at qindex 20. So at 10 bits and low QPs the codec codes slightly finer than the QP says, and its
own λ is lower than the 8-bit one used here; the mapping and λ are the 8-bit ones at both depths.

**λ.** libaom ``av1/encoder/rd.c``, ``av1_compute_rd_mult_based_on_qindex``: for an inter frame
``rdmult = q_dc² · (3.2 + 0.0015 · q_dc)`` with ``q_dc = dc_qlookup_QTX[qindex]`` at 8 bits (at
10 bits the 10-bit table and ``>> 4``, the same value in 8-bit units from qindex 96 up), in
``RDCOST = R · rdmult / 2^9 + D · 2^7`` (``rd.h``) with R in 1/512 bits and D = 16 · SSE in 8-bit
units (``rdopt.c``: ``sse <<= 4``). So λ = rdmult / 2048 in 8-bit SSE per bit, what the RDO's
``J = D + λ·R`` takes. The relation is not of the HEVC form ``c·2^((QP − 12)/3)``: λ/λ_HM is
0.81 at QP 22 and 0.47 at QP 47, because AV1's DC step, which libaom's λ follows, grows more
slowly than its AC step at high qindex. Key and alt-ref frames use 3.3 and 3.25 instead of 3.2,
and in one-pass good quality with look-ahead libaom scales rdmult by the frame's pyramid level
(``rd_layer_depth_factor``); this is the base relation, as HM's 0.57 is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from wrapcodec.backend import Backend, Rival

# The AV1 specification's 8-bit quantiser tables (Dc_Qlookup[0], Ac_Qlookup[0]), indexed by
# qindex; libaom av1/common/quant_common.c dc_qlookup_QTX / ac_qlookup_QTX.
# fmt: off
DC_QLOOKUP: tuple[int, ...] = (
    4, 8, 8, 9, 10, 11, 12, 12, 13, 14, 15, 16, 17, 18, 19, 19,
    20, 21, 22, 23, 24, 25, 26, 26, 27, 28, 29, 30, 31, 32, 32, 33,
    34, 35, 36, 37, 38, 38, 39, 40, 41, 42, 43, 43, 44, 45, 46, 47,
    48, 48, 49, 50, 51, 52, 53, 53, 54, 55, 56, 57, 57, 58, 59, 60,
    61, 62, 62, 63, 64, 65, 66, 66, 67, 68, 69, 70, 70, 71, 72, 73,
    74, 74, 75, 76, 77, 78, 78, 79, 80, 81, 81, 82, 83, 84, 85, 85,
    87, 88, 90, 92, 93, 95, 96, 98, 99, 101, 102, 104, 105, 107, 108, 110,
    111, 113, 114, 116, 117, 118, 120, 121, 123, 125, 127, 129, 131, 134, 136, 138,
    140, 142, 144, 146, 148, 150, 152, 154, 156, 158, 161, 164, 166, 169, 172, 174,
    177, 180, 182, 185, 187, 190, 192, 195, 199, 202, 205, 208, 211, 214, 217, 220,
    223, 226, 230, 233, 237, 240, 243, 247, 250, 253, 257, 261, 265, 269, 272, 276,
    280, 284, 288, 292, 296, 300, 304, 309, 313, 317, 322, 326, 330, 335, 340, 344,
    349, 354, 359, 364, 369, 374, 379, 384, 389, 395, 400, 406, 411, 417, 423, 429,
    435, 441, 447, 454, 461, 467, 475, 482, 489, 497, 505, 513, 522, 530, 539, 549,
    559, 569, 579, 590, 602, 614, 626, 640, 654, 668, 684, 700, 717, 736, 755, 775,
    796, 819, 843, 869, 896, 925, 955, 988, 1022, 1058, 1098, 1139, 1184, 1232, 1282, 1336,
)

AC_QLOOKUP: tuple[int, ...] = (
    4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
    23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38,
    39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54,
    55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70,
    71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86,
    87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102,
    104, 106, 108, 110, 112, 114, 116, 118, 120, 122, 124, 126, 128, 130, 132, 134,
    136, 138, 140, 142, 144, 146, 148, 150, 152, 155, 158, 161, 164, 167, 170, 173,
    176, 179, 182, 185, 188, 191, 194, 197, 200, 203, 207, 211, 215, 219, 223, 227,
    231, 235, 239, 243, 247, 251, 255, 260, 265, 270, 275, 280, 285, 290, 295, 300,
    305, 311, 317, 323, 329, 335, 341, 347, 353, 359, 366, 373, 380, 387, 394, 401,
    408, 416, 424, 432, 440, 448, 456, 465, 474, 483, 492, 501, 510, 520, 530, 540,
    550, 560, 571, 582, 593, 604, 615, 627, 639, 651, 663, 676, 689, 702, 715, 729,
    743, 757, 771, 786, 801, 816, 832, 848, 864, 881, 898, 915, 933, 951, 969, 988,
    1007, 1026, 1046, 1066, 1087, 1108, 1129, 1151, 1173, 1196, 1219, 1243, 1267, 1292, 1317, 1343,
    1369, 1396, 1423, 1451, 1479, 1508, 1537, 1567, 1597, 1628, 1660, 1692, 1725, 1759, 1793, 1828,
)
# fmt: on

#: libaom av1/encoder/av1_quantize.c quantizer_to_qindex: the 0–63 quantiser encoders take.
QUANTIZER_TO_QINDEX: tuple[int, ...] = (*(4 * q for q in range(62)), 249, 255)

#: Bits of precision of the AV1 transform over an orthonormal one (quant_common.c: "Q3").
_TX_SCALE = 8.0


def hevc_step(qp: float) -> float:
    """HEVC's quantiser step at ``qp`` (8-bit scale, orthonormal transform): 2^((QP − 4)/6)."""
    return 2.0 ** ((qp - 4.0) / 6.0)


def av1_quantizer(qp: float) -> int:
    """The AV1 quantiser q (1–63) whose AC step is nearest, in log, to HEVC's at ``qp``.

    q 0 would be lossless, not a rate point, so the finest is q 1. Ties go to the finer q."""
    target = math.log(_TX_SCALE * hevc_step(qp))
    return min(
        range(1, 64), key=lambda q: abs(math.log(AC_QLOOKUP[QUANTIZER_TO_QINDEX[q]]) - target)
    )


def av1_qindex(qp: float) -> int:
    """The qindex (0–255) the encoders code for wrapcodec's ``qp``."""
    return QUANTIZER_TO_QINDEX[av1_quantizer(qp)]


def av1_lambda(qp: float) -> float:
    """λ in 8-bit SSE per bit at wrapcodec's ``qp``: libaom's inter-frame rdmult / 2048.

    ``rdmult = q_dc² · (3.2 + 0.0015 · q_dc)`` (libaom av1/encoder/rd.c,
    ``av1_compute_rd_mult_based_on_qindex``); see the module docstring for the units."""
    q_dc = DC_QLOOKUP[av1_qindex(qp)]
    return q_dc * q_dc * (3.2 + 0.0015 * q_dc) / 2048.0


#: Shared by both AV1 backends (``lambda_source``).
AV1_LAMBDA_SOURCE = (
    "libaom inter-frame rdmult / 2048: λ = q_dc²·(3.2 + 0.0015·q_dc)/2048, q_dc = "
    "Dc_Qlookup[qindex] (8-bit) at the qindex 4q whose AC step / 8 is nearest HEVC's "
    "2^((QP−4)/6) (libaom av1/encoder/rd.c av1_compute_rd_mult_based_on_qindex; "
    "av1/common/quant_common.c; av1/encoder/av1_quantize.c)"
)

#: The c of λ = c·2^((QP−12)/3) that gives the AV1 λ at QP 32, for comparison with HM's 0.57.
AV1_LAMBDA_FACTOR_AT_QP32 = av1_lambda(32) / 2.0 ** ((32 - 12) / 3)


def av1_backend(
    *,
    name: str,
    codec_id: int,
    description: str,
    encoder: str,
    codec_args: Callable[[int, str, int | None], list[str]],
    presets: tuple[str, ...],
    default_preset: str,
    version_pattern: str,
    min_size: int,
    rivals: tuple[Rival, ...] = (),
    probe: str | None = None,
) -> Backend:
    """An AV1 backend: a raw low-overhead OBU stream (AV1 §5, ffmpeg's ``obu`` muxer and
    demuxer) decoded by libdav1d, or by libaom's decoder where ffmpeg has no dav1d, at the
    quantiser and λ of this module."""
    return Backend(
        name=name,
        codec_id=codec_id,
        description=description,
        encoder=encoder,
        decoder="libdav1d",
        decoder_fallbacks=("libaom-av1",),
        stream_format="obu",
        extension=".obu",
        codec_args=codec_args,
        presets=presets,
        default_preset=default_preset,
        qp_range=(0, 51),
        lambda_factor=AV1_LAMBDA_FACTOR_AT_QP32,
        lambda_source=AV1_LAMBDA_SOURCE,
        qp_lambda=av1_lambda,
        version_pattern=version_pattern,
        min_width=min_size,
        min_height=min_size,
        rivals=rivals,
        probe=probe,
        fastest_first=False,  # presets 0 (slowest) upwards
    )
