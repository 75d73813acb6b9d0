"""The model bank: shipped weights, their cards, and the id written into every ``.wrp``.

A bank is a folder of ``NAME.safetensors`` weights, each with a ``NAME.json`` card
(:class:`ModelCard`). The shipped bank is the installed ``wrapcodec.models`` package;
``--models DIR`` selects another. Each card holds the sha256 of its weights, checked before
they are loaded (safetensors: loading never runs code), and every weight must be a finite
number. A card whose fields are out of range (an activation exponent outside ``±MAX_EXP``,
an option code that is not its kind and ratio's, an architecture too large to build, a
weights file outside the folder) is refused when the bank is read. The bank id is the first
8 bytes of the sha256 of the sorted ``name sha256`` lines of its cards: the encoder writes it
into the container whenever a neural option is used, and the decoder refuses a file made
with other weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file

from wrapcodec.container import MAX_PRIOR, NO_MODEL_BANK
from wrapcodec.errors import InputError
from wrapcodec.exact import ARITHMETIC_VERSION, MAX_EXP, ExactPost, quantize_post
from wrapcodec.nets import PostConfig, PostProcessor, PreConfig, PreProcessor
from wrapcodec.options import OPTIONS, RATIOS, Option, require_available
from wrapcodec.paths import sha256_file
from wrapcodec.prefilter import PreFilter

#: Size at which the cards' MACs per pixel are counted.
MAC_WIDTH, MAC_HEIGHT = 1920, 1080

#: Largest channel count and blocks per level a card may give its networks (the shipped ones
#: have 12-32 and 1-3): a forged card cannot make the bank build a network that fills memory.
MAX_CHANNELS, MAX_BLOCKS = 512, 32

Exponent = Annotated[int, Field(ge=-MAX_EXP, le=MAX_EXP)]
Count = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class RatePoint(BaseModel):
    """One QP of a validation run: mean PSNR-YUV (6:1:1) and bits per source pixel."""

    model_config = ConfigDict(extra="forbid")

    qp: int
    bpp: float
    psnr_yuv: float


class Validation(BaseModel):
    """The model against the linear options of the same ratio, through the real codec."""

    model_config = ConfigDict(extra="forbid")

    data: str
    pictures: int
    codec: str
    preset: str
    bitdepth: int = 10  # of the coded bottleneck
    curves: dict[str, list[RatePoint]]  # option name → points
    bd_rate: dict[str, float | None]  # the model against each other option, % (PSNR-YUV)
    psnr_gain_same_qp: dict[str, float]  # mean dB over the QPs against each other option


class Arithmetic(BaseModel):
    """The post-processor's integer arithmetic: version and activation exponents."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=ARITHMETIC_VERSION, ge=1)
    exponents: dict[str, Exponent]  # exact.calibrate: per residual level and depthwise output
    calibration: str = ""  # the pictures the exponents were measured on
    reference: str = ""  # sha256 of cards.reference_digest's output, made where calibrated


class ModelCard(BaseModel):
    """What a shipped model is, how it was made and how it did."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["post", "wrapper"]
    ratio: str
    option: int
    file: str
    sha256: str
    post: PostConfig
    pre: PreConfig | None = None
    macs_per_pixel: Count  # post-processor, per output luma pixel
    params: int = Field(ge=0)  # post-processor
    pre_macs_per_pixel: Count | None = None  # per source luma pixel
    pre_params: int | None = Field(default=None, ge=0)
    training_data: str = ""  # what the pictures of --data were
    training: list[dict[str, object]]  # one entry per stage: config, steps, last validation
    validation: Validation | None = None
    arithmetic: Arithmetic | None = None  # the post-processor's integer arithmetic
    # A prior (1-7; 0: the option's default model) is the option's model for an operating
    # point: segments coded by one of ``codecs`` (None: any) at a QP within ``qp_band``, with
    # a bottleneck of one of ``bitdepths`` (None: either).
    prior: int = Field(default=0, ge=0, le=MAX_PRIOR)
    codecs: list[str] | None = None
    qp_band: tuple[int, int] | None = None
    bitdepths: list[Literal[8, 10]] | None = None

    @model_validator(mode="after")
    def _in_range(self) -> ModelCard:
        """Fields that must agree with each other or stay within what can be built."""
        if self.prior and (self.kind != "post" or self.qp_band is None):
            raise ValueError("a prior is a post-only model with a qp_band")
        if self.qp_band is not None and self.qp_band[0] > self.qp_band[1]:
            raise ValueError(f"qp_band {self.qp_band} is reversed")
        try:
            ratio = Fraction(self.ratio)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"ratio {self.ratio!r} is not a fraction") from None
        if ratio not in RATIOS:
            raise ValueError(f"ratio {self.ratio} is not one of the options' ratios")
        code = int(option_for(self.kind, ratio).code)
        if self.option != code:
            raise ValueError(f"option {self.option} is not {self.kind} {self.ratio}'s ({code})")
        if self.file in ("", ".", "..") or "/" in self.file or "\\" in self.file:
            raise ValueError(f"file {self.file!r} is not a file name in the bank's folder")
        for name, config in (("post", self.post), ("pre", self.pre)):
            if config is None:
                continue
            channels = (*config.channels, *([config.mlp] if isinstance(config, PreConfig) else []))
            blocks = config.blocks if isinstance(config, PostConfig) else ()
            if not all(1 <= c <= MAX_CHANNELS for c in channels):
                raise ValueError(f"{name} channels {channels} outside 1..{MAX_CHANNELS}")
            if not all(0 <= b <= MAX_BLOCKS for b in blocks):
                raise ValueError(f"{name} blocks {blocks} outside 0..{MAX_BLOCKS}")
        return self

    @property
    def fraction(self) -> Fraction:
        return Fraction(self.ratio)

    def serves(self, codec: str, qp: int, bitdepth: int) -> bool:
        """This prior is the model for segments coded by ``codec`` at ``qp`` with a
        ``bitdepth``-bit bottleneck."""
        assert self.qp_band is not None
        lo, hi = self.qp_band
        depth = self.bitdepths is None or bitdepth in self.bitdepths
        return (self.codecs is None or codec in self.codecs) and lo <= qp <= hi and depth

    @property
    def key(self) -> str:
        """What determines the model's numbers: the weights' sha256, and the arithmetic."""
        if self.arithmetic is None:
            return self.sha256
        fields = self.arithmetic.model_dump(exclude={"calibration", "reference"})
        exps = json.dumps(fields, sort_keys=True)
        return f"{self.sha256}:{hashlib.sha256(exps.encode()).hexdigest()[:16]}"


@dataclass
class Processors:
    """The loaded networks of one neural option; ``exact``: the post-processor in integer
    arithmetic, with the ``exponents`` it was quantised with (None: the card has none)."""

    post: PostProcessor
    pre: PreProcessor | None
    exponents: dict[str, int] | None = None
    exact: ExactPost | None = None

    def with_post(self, post: PostProcessor) -> Processors:
        """These processors with another post-processor (an adapted one), quantised alike."""
        exps = self.exponents
        return Processors(post, self.pre, exps, None if exps is None else quantize_post(post, exps))


def model_name(kind: str, ratio: str) -> str:
    return f"{kind}-{ratio.replace('/', '_')}"


def option_for(kind: str, ratio: Fraction) -> Option:
    return next(o for o in OPTIONS.values() if o.kind == kind and o.ratio == ratio)


class Bank:
    """The models in ``folder``, by option code."""

    def __init__(
        self,
        folder: Path,
        cards: dict[int, ModelCard] | None = None,
        priors: dict[tuple[int, int], ModelCard] | None = None,
    ) -> None:
        """The bank in ``folder``, with its cards read from there or given as ``cards`` (the
        options' default models) and ``priors`` (by option code and prior)."""
        self.folder = folder
        self.cards: dict[int, ModelCard] = {} if cards is None else dict(cards)
        self.priors: dict[tuple[int, int], ModelCard] = dict(priors or {})
        if not folder.is_dir():
            raise InputError(f"{folder}: no such model folder")
        for path in sorted(folder.glob("*.json")) if cards is None else []:
            try:
                card = ModelCard.model_validate_json(path.read_text())
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                msg = first["msg"].removeprefix("Value error, ")
                raise InputError(
                    f"{path}: not a model card ({where + ': ' if where else ''}{msg})"
                ) from None
            if card.prior:
                self.priors[card.option, card.prior] = card
            else:
                self.cards[card.option] = card
        for code, prior in self.priors:
            if code not in self.cards:
                raise InputError(f"{folder}: prior {prior} of option {code} has no default model")
        self._loaded: dict[tuple[int, int], Processors] = {}

    @functools.cached_property
    def id(self) -> bytes:
        """8-byte bank id in float arithmetic (NO_MODEL_BANK for an empty bank)."""
        return self.id_for(integer=False)

    @property
    def integer(self) -> bool:
        """Every card carries this wrapcodec's integer arithmetic (the encoder then uses it)."""
        return bool(self.cards) and all(
            c.arithmetic is not None and c.arithmetic.version == ARITHMETIC_VERSION
            for c in self.all_cards()
        )

    def all_cards(self) -> list[ModelCard]:
        """Every card: the default models by option code, then the priors."""
        return [
            *(self.cards[k] for k in sorted(self.cards)),
            *(self.priors[k] for k in sorted(self.priors)),
        ]

    def prior_for(self, opt: Option, codec: str, qp: int, bitdepth: int) -> int:
        """The prior a segment of ``opt`` coded by ``codec`` at ``qp`` with a ``bitdepth``-bit
        bottleneck uses: of those that serve that operating point, the one with the narrowest
        QP band (the most specialised), then the lowest-numbered; 0 (the default model) where
        none does."""
        serving = [
            (card.qp_band[1] - card.qp_band[0], prior)
            for (code, prior), card in self.priors.items()
            if code == int(opt.code)
            and card.qp_band is not None
            and card.serves(codec, qp, bitdepth)
        ]
        return min(serving)[1] if serving else 0

    def id_for(self, integer: bool) -> bytes:
        """8-byte id of this bank in float or integer arithmetic: the first 8 bytes of the
        sha256 of its cards' sorted ``name sha256`` lines, to which the integer id adds the
        arithmetic's version and exponents."""
        if not self.cards:
            return NO_MODEL_BANK
        if integer and not self.integer:
            raise InputError(f"the models in {self.folder} have no integer arithmetic")
        lines = []
        for c in self.all_cards():
            line = f"{c.name} {c.sha256}"
            if integer:
                assert c.arithmetic is not None
                exps = json.dumps(c.arithmetic.exponents, sort_keys=True)
                line += f" integer-v{c.arithmetic.version} {exps}"
            lines.append(line)
        return hashlib.sha256("\n".join(sorted(lines)).encode()).digest()[:8]

    def has(self, opt: Option) -> bool:
        return not opt.neural or int(opt.code) in self.cards

    @property
    def where(self) -> str:
        return f"the model bank in {self.folder}"

    def require(self, opt: Option) -> None:
        require_available(opt, self.has, self.where)

    def card(self, opt: Option, prior: int = 0) -> ModelCard:
        """The card of ``opt``'s model ``prior`` (0: its default)."""
        self.require(opt)
        code = int(opt.code)
        if prior == 0:
            return self.cards[code]
        if (code, prior) not in self.priors:
            raise InputError(f"{self.where} has no prior {prior} for {opt.name}")
        return self.priors[code, prior]

    def processors(self, opt: Option, prior: int = 0) -> Processors:
        """Load (once) and return the networks of ``opt``'s model ``prior`` (0: the default),
        after checking their sha256."""
        card = self.card(opt, prior)
        key = (int(opt.code), prior)
        if key not in self._loaded:
            self._loaded[key] = load_processors(self.folder, card)
        return self._loaded[key]


def checked_weights(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file whose sha256 its card gives, every float finite; an
    :class:`InputError` (one line) for a missing, altered, unreadable or non-finite file."""
    if not path.is_file():
        raise InputError(f"{path}: model weights missing")
    digest = sha256_file(path)
    if digest != sha256:
        raise InputError(f"{path}: sha256 {digest[:16]}… does not match its card")
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        raise InputError(f"{path}: unreadable weights ({exc})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"{path}: weight {name} holds a value that is not finite")
    return tensors


def load_processors(folder: Path, card: ModelCard) -> Processors:
    path = folder / card.file
    tensors = checked_weights(path, card.sha256)
    post = PostProcessor(card.fraction, card.post)
    pre = PreProcessor(card.fraction, card.pre) if card.kind == "wrapper" else None
    try:
        post.load_state_dict(split_weights(tensors, "post"))
        if pre is not None:
            pre.load_state_dict(split_weights(tensors, "pre"))
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit the card's architecture ({exc})") from None
    post.eval()
    if pre is not None:
        # its full 3×3 convolutions run about twice as fast on CPUs in channels-last layout
        pre.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if card.arithmetic is None:
        return Processors(post, pre)
    exps = card.arithmetic.exponents
    try:
        exact = quantize_post(post, exps)
    except KeyError as exc:
        raise InputError(f"{path}: its card's arithmetic lacks the exponent {exc}") from None
    return Processors(post, pre, exps, exact)


def split_weights(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The ``prefix.*`` tensors of a model file (``post`` or ``pre``), without the prefix."""
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def shipped_folder() -> Path:
    return Path(str(resources.files("wrapcodec.models")))


@functools.cache
def _bank(folder: str) -> Bank:
    return Bank(Path(folder))


def get_bank(folder: str | Path | None = None) -> Bank:
    """The bank in ``folder``, or the shipped one; loaded once per process."""
    return _bank(str(Path(folder).resolve()) if folder else str(shipped_folder()))


# -- pre-filters of standard streams --------------------------------------------------------

STANDARD_FOLDER = "standard"
"""The bank's subfolder of pre-filters (``encode --standard``): ``prefilter-CODEC-METRIC``."""


class PreFilterCard(BaseModel):
    """What a pre-filter is (its architecture, codec, metric and QPs), its weights' sha256,
    and how it was trained and validated (free-form: figures with their commands)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    file: str
    sha256: str
    codec: str
    metric: Literal["psnr", "ms-ssim"]
    width: Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
    layers: Annotated[int, Field(ge=2, le=MAX_BLOCKS)]
    qp_range: tuple[int, int]
    training: dict[str, object] = {}
    validation: dict[str, object] = {}

    @model_validator(mode="after")
    def _plain_file(self) -> PreFilterCard:
        if Path(self.file).name != self.file or not self.file.endswith(".safetensors"):
            raise ValueError(f"weights file {self.file!r} is not a .safetensors in the folder")
        return self


def prefilter_name(codec: str, metric: str) -> str:
    return f"prefilter-{codec}-{metric}"


def _read_prefilter_card(path: Path) -> PreFilterCard:
    try:
        return PreFilterCard.model_validate_json(path.read_text())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{path}: not a pre-filter card ({where}: {first['msg']})") from None


def prefilter_card(folder: Path, codec: str, metric: str) -> PreFilterCard | None:
    """The card of ``codec``'s pre-filter for ``metric`` in the bank ``folder``, or None."""
    path = folder / STANDARD_FOLDER / f"{prefilter_name(codec, metric)}.json"
    return _read_prefilter_card(path) if path.is_file() else None


def prefilter_cards(folder: Path) -> list[PreFilterCard]:
    """Every pre-filter card of the bank ``folder``, by name."""
    found = sorted((folder / STANDARD_FOLDER).glob("prefilter-*.json"))
    return [_read_prefilter_card(path) for path in found]


def load_prefilter(folder: Path, card: PreFilterCard) -> PreFilter:
    """The pre-filter of ``card`` in the bank ``folder``, its weights checked against the card
    (sha256, finite values, the architecture)."""
    path = folder / STANDARD_FOLDER / card.file
    tensors = checked_weights(path, card.sha256)
    net = PreFilter(card.width, card.layers)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit the card's architecture ({exc})") from None
    return net.eval()


def bank_folder(folder: str | Path | None = None) -> Path:
    """``folder``, or the shipped bank's."""
    return Path(folder) if folder else shipped_folder()
