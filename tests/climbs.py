"""A climb of post-1/1 on a real x265 bitstream, alone or in rounds beside another candidate:
for the tests of adaptation in rounds."""

from __future__ import annotations

from pathlib import Path

from wrapcodec.adapt import AdaptConfig
from wrapcodec.adaptation import Climb, Segment, climb
from wrapcodec.backend import EncodeSettings, get_backend
from wrapcodec.bank import get_bank
from wrapcodec.encode.rounds import Rounds
from wrapcodec.options import OPTIONS
from wrapcodec.pipeline import Layout, code_and_measure
from wrapcodec.update import Subset
from wrapcodec.y4m import count_frames, read_info


def climb_beside(
    clip: Path, tmp_path: Path, other: float | None, count: int | None = None
) -> Climb:
    """Post-1/1 climbing two rungs on the first ``count`` frames of ``clip`` (None: all)
    coded by x265, J the MSE alone; in rounds beside a candidate of J ``other`` that climbs
    no rung (None: alone)."""
    backend = get_backend("x265")
    info, count = read_info(clip), count or count_frames(clip)
    layout = Layout.make(info, OPTIONS[1], backend, 10, get_bank())
    stream = tmp_path / "s.265"
    settings = EncodeSettings(qp=37, preset="ultrafast")
    plain = code_and_measure(backend, settings, clip, layout, 0, count, stream)
    seg = Segment(backend, stream, layout, clip, 0, count)
    plan = [(Subset.BIAS, 10), (Subset.BIAS_TAIL, 10)]
    cfg = AdaptConfig(steps=10, batch=2, crop=64)
    lam = backend.qp_to_lambda(37)
    if other is None:
        return climb(seg, cfg, plan, lam, None, lambda c, u: c.mse_8bit)
    rounds = Rounds([plain.mse_8bit, other], 2.0, 1)
    rounds.done(1)
    with rounds.turn(0) as pace:
        return climb(seg, cfg, plan, lam, None, lambda c, u: c.mse_8bit, pace)
