"""Where a clip is cut into segments at scene changes (``--segment-frames auto``).

The scores come from ffmpeg's ``scdet`` filter (:func:`wrapcodec.ffmpeg.scene_scores`): for
frame *i*, how much more the picture changed from frame *i*-1 than the change before it did
(0 to 100, whatever the bit depth). This module only turns scores into cut frames, so that the
rule is a pure function, tested on made-up scores:

1. a frame whose score reaches :data:`THRESHOLD` is a candidate cut;
2. candidates are taken strongest first, each kept only when it leaves at least ``min_frames``
   to every cut already kept and to both ends of the clip (a flash, or the frame after a cut,
   which ``scdet`` also scores high, does not make a segment of its own);
3. a segment longer than ``max_frames`` is split into the fewest equal parts (within a frame)
   that fit, so that a long scene still gets updates of its own as its content drifts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

THRESHOLD = 10.0
"""The score at which a frame starts a new scene: ``scdet``'s own default. On the bundled
Park Joy clip (a fast pan) the scores stay below 5; two different contents joined score 16."""
MIN_SECONDS = 1.0
"""Shortest segment at a scene change: each segment is a stream of its own that starts with
an intra picture and carries a record and perhaps an update (tens to hundreds of bytes), which
a second of payload amortises; and a flash or a burst of quick cuts must not fragment the
clip into segments too short to fit an update on."""
MAX_SECONDS = 6.0
"""Longest segment: as long as a clip the encoder already codes as one segment, so a long
scene without a cut is split where its content may have drifted from the first update's (the
next update is sent as a difference, or inherited, at little cost), and its frames held for a
fit are spread over no more than that; at least twice :data:`MIN_SECONDS`, so that splitting a
long segment evenly never leaves a part shorter than the minimum."""


def seconds_to_frames(seconds: float, fps_num: int, fps_den: int) -> int:
    """``seconds`` at the clip's frame rate, at least one frame (25 fps when the rate is
    unknown)."""
    fps = fps_num / fps_den if fps_den > 0 and fps_num > 0 else 25.0
    return max(1, round(seconds * fps))


def scene_cuts(
    scores: Sequence[float],
    min_frames: int,
    max_frames: int,
    threshold: float = THRESHOLD,
) -> list[int]:
    """The first frames of every segment after the first, ascending, for a clip of
    ``len(scores)`` frames: cuts where the score reaches ``threshold``
    (:func:`scene_changes`), no segment shorter than ``min_frames`` (unless the clip itself
    is) nor longer than ``max_frames``.

    ``max_frames`` must be at least twice ``min_frames`` (see :data:`MAX_SECONDS`)."""
    if max_frames < 2 * min_frames:
        raise ValueError(f"segment lengths {min_frames}..{max_frames}: need 1 <= 2*min <= max")
    frames = len(scores)
    changes = scene_changes(scores, min_frames, threshold)
    cuts: list[int] = []
    for first, end in pairwise([0, *changes, frames]):
        cuts.extend(first + split for split in even_splits(end - first, max_frames))
        if end < frames:
            cuts.append(end)
    return cuts


def scene_changes(
    scores: Sequence[float], min_frames: int, threshold: float = THRESHOLD
) -> list[int]:
    """The frames, ascending, where a new scene starts: rules 1 and 2 of the module's
    (ties between equal scores go to the earlier frame, so the result depends on the scores
    alone)."""
    if min_frames < 1:
        raise ValueError(f"shortest segment {min_frames}: need at least 1 frame")
    frames = len(scores)
    candidates = sorted(
        (i for i in range(1, frames) if scores[i] >= threshold), key=lambda i: (-scores[i], i)
    )
    kept = [0, frames]  # the clip's ends stand for cuts the minimum keeps away from
    for i in candidates:
        if all(abs(i - k) >= min_frames for k in kept):
            kept.append(i)
    return sorted(kept)[1:-1]


def even_splits(length: int, max_frames: int) -> list[int]:
    """Offsets inside a segment of ``length`` frames where it is split into the fewest parts
    of at most ``max_frames`` frames, the parts' lengths differing by at most one (the longer
    ones first); empty when it fits already."""
    parts = math.ceil(length / max_frames) if length > 0 else 1
    base, extra = divmod(length, parts)
    offsets, at = [], 0
    for part in range(parts - 1):
        at += base + (1 if part < extra else 0)
        offsets.append(at)
    return offsets


def ranges(frames: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """The segments ``(first frame, frame count)`` of a clip of ``frames`` frames cut before
    each frame of ``cuts`` (ascending, each inside the clip)."""
    bounds = [0, *cuts, frames]
    return [(first, end - first) for first, end in pairwise(bounds)]


def fixed_cuts(frames: int, step: int) -> list[int]:
    """The cuts of segments of ``step`` frames (the last one shorter); none for ``step`` 0."""
    return list(range(step, frames, step)) if step > 0 else []
