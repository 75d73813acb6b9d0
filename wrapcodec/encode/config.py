"""What one encode is asked to do (:class:`EncodeConfig`), checked before anything is coded."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wrapcodec.adapt import AdaptConfig, check_steps
from wrapcodec.backend import Backend, EncodeSettings
from wrapcodec.bank import Bank
from wrapcodec.encode.efforts import EFFORTS, AdaptBudget, Effort
from wrapcodec.errors import InputError
from wrapcodec.nets import PRE_ARITHMETICS, default_pre_arithmetic
from wrapcodec.options import Option


class EncodeConfig(BaseModel):
    """An encode: the codec and its settings, the candidate options and how hard the search
    works on them. A bad value is an :class:`~wrapcodec.errors.InputError` naming the CLI
    option that sets it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    backend: Backend
    settings: EncodeSettings
    options: tuple[Option, ...]
    bitrate_kbps: float | None = None
    """A bitrate budget in kbps instead of ``settings.qp``."""
    segment_frames: int | Literal["auto"] | None = None
    """Frames per segment; 0: one segment whatever the length; ``auto``: cut at scene changes
    (:mod:`wrapcodec.scenes`); None: one segment, or ``auto`` for a clip over
    :data:`~wrapcodec.encode.encoder.LONG_CLIP_SECONDS`
    (:func:`~wrapcodec.encode.encoder.segmentation`)."""
    bank: Bank | None = None
    """Where neural options take their networks; its id goes into the header when the file
    uses one."""
    adapt: AdaptConfig | None = None
    """With steps > 0, each neural candidate coded in full is also tried with its
    post-processor fitted to the segment."""
    adapt_budget: AdaptBudget | Literal["effort"] | None = "effort"
    """The rungs adaptation may fit (``"effort"``: the effort level's; None: no bound)."""
    effort: str = "exhaustive"
    """The search's level (:data:`~wrapcodec.encode.efforts.EFFORTS`)."""
    chains: Literal["scenes", "one"] = "scenes"
    """Where a segment's update stops building on the previous segment's: at each scene
    change (``scenes``: the scenes' segments can be coded at once), or nowhere (``one``)."""
    jobs: int | None = None
    """Segments coded at once on local processes where there are several chains, else
    candidates coded at once [:func:`~wrapcodec.encode.trials.default_jobs`]; the result does
    not depend on it. The processes are spawned, so a script that calls
    :func:`~wrapcodec.encode.encode_file` with several needs the
    ``if __name__ == "__main__":`` guard of :mod:`multiprocessing`."""
    dask: str | None = None
    """The address of a Dask scheduler whose workers code the segments (instead of
    ``jobs``); the result does not depend on it."""
    resume: bool = False
    """Keep each segment coded in a work folder beside the output and take up the segments
    found there (:mod:`wrapcodec.encode.parts`)."""
    pre_arithmetic: str = Field(default_factory=default_pre_arithmetic)
    """Of the wrappers' pre-processors [:func:`~wrapcodec.nets.default_pre_arithmetic`]."""
    auto_bitdepth: bool = False
    """Choose each segment's bottleneck bit depth among the backend's (``--bitdepth auto``):
    direct coding at each depth, the lowest J's depth for every candidate
    (:func:`~wrapcodec.encode.segments.at_best_depth`). Under a bitrate budget, and for a
    backend of one depth, ``settings.bitdepth`` is used."""
    lam: Literal["model", "measured"] = "model"
    """The price of a bit in each segment's J (``--lambda``): the backend's λ(QP) relation,
    or measured on direct coding's RD curve (:mod:`~wrapcodec.encode.lagrange`)."""

    @field_validator("bitrate_kbps")
    @classmethod
    def _positive_budget(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and v > 0):
            raise InputError(f"--bitrate {v:g}: must be a positive, finite number of kbps")
        return v

    @field_validator("segment_frames")
    @classmethod
    def _segment_frames(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v < 0:
            raise InputError("--segment-frames must be 0 (one segment) or more, or auto")
        return v

    @field_validator("jobs")
    @classmethod
    def _jobs(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise InputError("--jobs must be 1 or more")
        return v

    @field_validator("adapt")
    @classmethod
    def _adapt_steps(cls, v: AdaptConfig | None) -> AdaptConfig | None:
        if v is not None and v.steps < 0:
            raise InputError("--adapt-steps must be 0 or more")
        return v

    @field_validator("effort")
    @classmethod
    def _known_effort(cls, v: str) -> str:
        if v not in EFFORTS:
            raise InputError(f"--effort {v!r}: one of {', '.join(EFFORTS)}")
        return v

    @field_validator("pre_arithmetic", mode="before")
    @classmethod
    def _pre_arithmetic(cls, v: str | None) -> str:
        v = v or default_pre_arithmetic()
        if v not in PRE_ARITHMETICS:
            raise InputError(f"--pre-arithmetic {v!r}: one of {', '.join(PRE_ARITHMETICS)}")
        return v

    @property
    def bitdepths(self) -> tuple[int, ...]:
        """The bottleneck bit depths a segment may be coded at, ``settings.bitdepth`` first."""
        depth = self.settings.bitdepth
        if not self.auto_bitdepth or self.bitrate_kbps is not None:
            return (depth,)
        return (depth, *(d for d in self.backend.bitdepths if d != depth))

    def measures_lambda(self, usable: tuple[Option, ...]) -> bool:
        """Whether a segment with the ``usable`` options measures its λ: asked to, at a QP,
        and with something to choose by J at it (an option or an update; the depth is
        chosen at the codec's λ(QP))."""
        if self.lam != "measured" or self.bitrate_kbps is not None:
            return False
        adapted = self.adaptation is not None and any(o.neural for o in usable)
        return len(usable) > 1 or adapted

    @property
    def level(self) -> Effort:
        """The effort level."""
        return EFFORTS[self.effort]

    @property
    def budget(self) -> AdaptBudget | None:
        """The adaptation's time budget per neural candidate and segment (None: no bound)."""
        if isinstance(self.adapt_budget, str):
            return self.level.adapt_budget
        return self.adapt_budget

    @property
    def adaptation(self) -> AdaptConfig | None:
        """How neural candidates are adapted; None when they are not (no steps, or no time)."""
        budget = self.budget
        if budget is not None and budget.value == 0:
            return None
        if self.adapt is None or self.adapt.steps <= 0:
            return None
        return self.adapt


def settings_for(
    backend: Backend, qp: int | None, preset: str | None, bitdepth: int
) -> EncodeSettings:
    """The codec settings of an encode: ``qp`` checked against the backend's range, or under
    a bitrate budget (None) the backend's lowest QP, which the bitrate search replaces per
    option; the backend's default preset unless one is given."""
    if qp is not None:
        backend.check_qp(qp)
    return EncodeSettings(
        qp=backend.qp_range[0] if qp is None else qp,
        preset=preset or backend.default_preset,
        bitdepth=bitdepth,
    )


def adaptation_for(effort: str, steps: int | None) -> AdaptConfig:
    """Content adaptation as ``--adapt-steps`` asks: the effort level's steps, grown with the
    segment's size (None), or ``steps`` per update rung, as given."""
    check_steps(steps)
    if steps is None:
        return AdaptConfig(steps=EFFORTS[effort].adapt_steps, grow=True)
    return AdaptConfig(steps=steps)
