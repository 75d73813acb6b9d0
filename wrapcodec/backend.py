"""Codec backends: what a codec is and how to call it, never how to run it.

A backend is a pure description: the ffmpeg encoder and decoder names, the raw elementary
stream format (Annex B, or AV1's low-overhead OBUs), the pixel formats it codes, its QP range
and presets, its minimum picture size and its QP→λ relation. :mod:`wrapcodec.ffmpeg` is the one
module that runs ffmpeg.

Backends register through the ``wrapcodec.backends`` entry-point group; the built-in x264,
x265, VVenC, SVT-AV1 and libaom backends use the same path as third-party ones. A plugin
exposes a :class:`Backend` instance, e.g. in its ``pyproject.toml``::

    [project.entry-points."wrapcodec.backends"]
    mycodec = "mypackage.backend:BACKEND"
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points

from pydantic import BaseModel, ConfigDict, Field

from wrapcodec.errors import BackendError, InputError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "wrapcodec.backends"


class EncodeSettings(BaseModel):
    """Rate point and speed of one encode (validated against the backend before use)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    qp: int = Field(ge=-12, le=81)
    preset: str
    bitdepth: int = Field(default=10, description="bit depth of the coded bottleneck")
    threads: int | None = Field(
        default=None, ge=1, description="encoder threads (None: codec default)"
    )


@dataclass(frozen=True)
class Rival:
    """A codec's own resolution tool (AV1 super-resolution, say), coded at the same QPs as
    the backend: the in-codec curve the wrapper's frontier is measured against in ``bench``.

    ``codec_args`` replaces the backend's (same signature); the stream decodes with the
    backend's decoder to the source size."""

    name: str
    description: str
    codec_args: Callable[[int, str, int | None], list[str]]
    align: int = 2  # coded sizes are padded to a multiple of this


@dataclass(frozen=True)
class Backend:
    """How to call one codec through ffmpeg with a fixed QP.

    ``codec_args`` maps (codec QP, preset, threads) to the encoder arguments that follow the encoder
    name; see :meth:`codec_qp` for the QP scale.
    ``lambda_factor`` is ``c`` in the codec's reference-encoder relation
    ``λ = c · 2^((QP − 12) / 3)`` (SSE in 8-bit units per bit), used by the encoder RDO.
    ``qp_lambda``, when set, replaces that relation for a codec whose λ is not of this form (AV1:
    from its quantiser tables); ``lambda_factor`` is then the ``c`` that gives the same λ at
    QP 32, for comparison only.
    ``slope_scale`` is the price of a bit in an update's quantisation over that relation
    (``--lambda model``; :func:`~wrapcodec.encode.segments.priced_at_best_depth`): the
    median, over the training clips' direct coding at every QP of the pair cache, of the
    secant slope of their RD curves over λ(QP) (``scripts/slope_scale.py``); 1 where it was
    not measured. The relation prices a bit for the codec's mode decisions, within pictures
    that later ones predict from; a whole segment's RD curve falls more steeply (x265: 3.16
    times, stable from QP 22 to 47), and BD-rate judges a candidate against that curve. (Every
    J stays at the relation: a clip's own slope may lie far below the median, and the choice
    between options goes wrong there.)
    ``decoder_fallbacks`` are other ffmpeg decoders of the same bitstream, used in this order
    when the ffmpeg at hand lacks ``decoder`` (:attr:`decoders`).
    ``rivals`` are the codec's own resolution tools, for ``bench`` (:meth:`with_rival`).
    ``probe`` is the preset the encoder's effort levels below exhaustive code their probes at
    (:meth:`probe_preset`).
    """

    name: str
    codec_id: int
    description: str
    encoder: str
    decoder: str
    stream_format: str
    extension: str
    codec_args: Callable[[int, str, int | None], list[str]]
    presets: tuple[str, ...]
    default_preset: str
    qp_range: tuple[int, int]
    lambda_factor: float
    lambda_source: str
    bitdepths: tuple[int, ...] = (8, 10)
    high_bitdepth_qp_offset: bool = False
    version_pattern: str = ""  # regex on the encoder's log or stream header; group 1 = version
    min_width: int = 16
    min_height: int = 16
    notes: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    qp_lambda: Callable[[float], float] | None = None
    slope_scale: float = 1.0
    decoder_fallbacks: tuple[str, ...] = ()
    rivals: tuple[Rival, ...] = ()
    align: int = 2  # coded sizes are padded to a multiple of this (even for 4:2:0)
    probe: str | None = None  # the preset the encoder's probes are coded at [the user's]
    fastest_first: bool = True  # ``presets`` run from fastest to slowest (else the reverse)

    @property
    def decoders(self) -> tuple[str, ...]:
        """Every ffmpeg decoder that reads this backend's streams, the preferred one first."""
        return (self.decoder, *self.decoder_fallbacks)

    def with_rival(self, name: str) -> Backend:
        """This backend coding with the arguments of its rival ``name``."""
        for rival in self.rivals:
            if rival.name == name:
                align = max(self.align, rival.align)
                return replace(self, codec_args=rival.codec_args, rivals=(), align=align)
        known = ", ".join(r.name for r in self.rivals) or "none"
        raise BackendError(f"{self.name} has no rival {name!r} (known: {known})")

    def probe_preset(self, preset: str) -> str:
        """The preset an encode at ``preset`` codes its probes at: :attr:`probe`, or
        ``preset`` itself when that is as fast."""
        order = self.presets if self.fastest_first else self.presets[::-1]
        return min(self.probe or preset, preset, key=order.index)

    def settings_digest(self, preset: str | None = None) -> str:
        """12 hex digits naming how this backend codes at ``preset`` (default: its default
        preset): the sha256 of its encoder and of :attr:`codec_args` at every QP of
        :attr:`qp_range` and every bit depth it takes. Arguments that change at any QP
        change it, so what a cache holds can say which settings coded it."""
        preset = preset or self.default_preset
        lo, hi = self.qp_range
        args = [
            [depth, qp, self.codec_args(self.codec_qp(settings), preset, None)]
            for depth in self.bitdepths
            for qp in range(lo, hi + 1)
            for settings in [EncodeSettings(qp=qp, preset=preset, bitdepth=depth)]
        ]
        text = json.dumps({"encoder": self.encoder, "args": args}, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def check_qp(self, qp: int, what: str = "--qp") -> None:
        """Refuse a QP outside :attr:`qp_range` in one line naming the option ``what``, before
        anything is done."""
        lo, hi = self.qp_range
        if not lo <= qp <= hi:
            raise InputError(f"{what} {qp}: {self.name} takes QPs {lo}..{hi}")

    def validate(self, settings: EncodeSettings) -> None:
        """Raise :class:`BackendError` when the settings are outside what this codec takes."""
        lo, hi = self.qp_range
        if not lo <= settings.qp <= hi:
            raise BackendError(f"{self.name}: QP {settings.qp} outside {lo}..{hi}")
        if settings.preset not in self.presets:
            choices = ", ".join(self.presets)
            raise BackendError(f"{self.name}: unknown preset {settings.preset!r} ({choices})")
        if settings.bitdepth not in self.bitdepths:
            depths = " or ".join(str(d) for d in self.bitdepths)
            raise BackendError(
                f"{self.name} codes {depths}-bit only; got --bitdepth {settings.bitdepth}"
            )

    def ffmpeg_needs(self, *, decode_only: bool = False) -> tuple[tuple[str, str], ...]:
        """The ffmpeg components this backend calls, as (kind, name) pairs, kind one of
        ``encoder``, ``decoder``, ``muxer``, ``demuxer``.

        Encoding needs all four (the encoder decodes what it coded to measure it); decoding a
        .wrp needs only the decoder and the demuxer of the raw stream (``decode_only``)."""
        decoding = (("decoder", self.decoder), ("demuxer", self.stream_format))
        if decode_only:
            return decoding
        return ("encoder", self.encoder), decoding[0], ("muxer", self.stream_format), decoding[1]

    def codec_qp(self, settings: EncodeSettings) -> int:
        """The QP to hand the codec for the user's QP.

        wrapcodec's QP is on the 8-bit scale for every codec and bit depth. HEVC and VVC
        encoders apply the bit-depth offset themselves; x264 at high bit depth takes its QP
        on the extended scale (QP + 6·(d − 8)), so the same QP gives the same step size.
        """
        if self.high_bitdepth_qp_offset:
            return settings.qp + 6 * (settings.bitdepth - 8)
        return settings.qp

    def qp_to_lambda(self, qp: float) -> float:
        """Lagrange multiplier for sequence-level RDO, in 8-bit SSE per bit."""
        if self.qp_lambda is not None:
            return self.qp_lambda(qp)
        return self.lambda_factor * 2.0 ** ((qp - 12.0) / 3.0)

    def coded_size(self, width: int, height: int) -> tuple[int, int]:
        """Picture size sent to the codec: a multiple of :attr:`align` (even, for 4:2:0) and at
        least the codec minimum."""
        return (
            max(self.min_width, width + -width % self.align),
            max(self.min_height, height + -height % self.align),
        )


_registry: dict[str, Backend] = {}
_loaded = False
_loading = threading.RLock()


def register(backend: Backend) -> None:
    """Register a backend in this process (entry points do this on first use)."""
    for other in _registry.values():
        if other.codec_id == backend.codec_id and other.name != backend.name:
            raise BackendError(
                f"backend {backend.name!r} reuses codec id {backend.codec_id} of {other.name!r}"
            )
    _registry[backend.name] = backend


def _load_entry_points() -> None:
    global _loaded
    with _loading:  # another thread that asks meanwhile waits for the whole registry
        if not _loaded:
            _loaded = True
            _register_entry_points()


def _register_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break the built-ins
            log.warning("cannot load backend %s (%s): %s", ep.name, ep.value, exc)
            continue
        if isinstance(obj, Backend):
            register(obj)
        else:
            log.warning("entry point %s does not point to a Backend", ep.name)


def backends() -> dict[str, Backend]:
    """All registered backends by name."""
    _load_entry_points()
    return dict(sorted(_registry.items()))


def get_backend(name: str) -> Backend:
    """The backend called ``name``; :class:`BackendError` if unknown."""
    found = backends()
    if name not in found:
        raise BackendError(f"unknown codec backend {name!r} (known: {', '.join(found)})")
    return found[name]


def backend_for_codec_id(codec_id: int) -> Backend:
    """The backend whose container codec id is ``codec_id``."""
    for backend in backends().values():
        if backend.codec_id == codec_id:
            return backend
    raise BackendError(f"no backend installed for codec id {codec_id}")
