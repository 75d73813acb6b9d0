"""The wrapper options, their 4-bit codes, and the bottleneck-size rule.

Codes are fixed by the container format (docs/format.md): 0 direct; 1–4 bilinear down + neural
post and 5–8 neural pre + post pairs for r = 1, 1/2, 2/3, 1/4; 9–11 Lanczos down/up and 12–14
bilinear down/up for r = 1/2, 2/3, 1/4; 15 reserved.

Bottleneck size rule: each luma dimension is ``n·r`` rounded to the nearest even integer
(halves round up), so that 4:2:0 chroma is exactly half; for r = 1 it is the source size.
An option is skipped when its bottleneck is under ``MIN_BOTTLENECK`` samples in either
dimension. The picture actually sent to a codec is then padded (edge replication) to even
dimensions and to the codec's minimum picture size, and cropped back after decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from wrapcodec.container import OptionCode
from wrapcodec.errors import InputError, OptionError
from wrapcodec.resample import bottleneck_size

Kind = Literal["direct", "post", "wrapper", "lanczos", "bilinear"]
RATIOS = (Fraction(1), Fraction(1, 2), Fraction(2, 3), Fraction(1, 4))
MIN_BOTTLENECK = 16


@dataclass(frozen=True)
class Option:
    """One signalled wrapper option."""

    code: OptionCode
    kind: Kind
    ratio: Fraction

    @property
    def ratio_text(self) -> str:
        """The ratio as ``a/b``."""
        return f"{self.ratio.numerator}/{self.ratio.denominator}"

    @property
    def name(self) -> str:
        return "direct" if self.kind == "direct" else f"{self.kind}-{self.ratio_text}"

    @property
    def neural(self) -> bool:
        return self.kind in ("post", "wrapper")

    @property
    def label(self) -> str:
        """Human-readable description for tables."""
        return {
            "direct": "codec on the source",
            "post": "bilinear down + neural post",
            "wrapper": "neural pre + neural post",
            "lanczos": "Lanczos-4 down + Lanczos-4 up",
            "bilinear": "bilinear down + bilinear up",
        }[self.kind]


def _table() -> dict[int, Option]:
    table: dict[int, Option] = {0: Option(OptionCode.DIRECT, "direct", Fraction(1))}
    for i, ratio in enumerate(RATIOS):
        table[1 + i] = Option(OptionCode(1 + i), "post", ratio)
        table[5 + i] = Option(OptionCode(5 + i), "wrapper", ratio)
    for i, ratio in enumerate(RATIOS[1:]):
        table[9 + i] = Option(OptionCode(9 + i), "lanczos", ratio)
        table[12 + i] = Option(OptionCode(12 + i), "bilinear", ratio)
    return dict(sorted(table.items()))


OPTIONS: dict[int, Option] = _table()
LINEAR_CODES: tuple[int, ...] = (0, 9, 10, 11, 12, 13, 14)


def option(code: int) -> Option:
    """The option signalled by ``code``; :class:`OptionError` for 15 or out of range."""
    if code not in OPTIONS:
        raise OptionError(f"unknown option code {code} (valid: 0–14)")
    return OPTIONS[code]


def no_models(opt: Option) -> bool:
    """The ``has_model`` of a wrapcodec without a model bank."""
    return False


def require_available(
    opt: Option, has_model: Callable[[Option], bool] = no_models, where: str = "the model bank"
) -> None:
    """Refuse a neural option whose networks are not in the bank."""
    if opt.neural and not has_model(opt):
        raise OptionError(
            f"option {int(opt.code)} ({opt.name}: {opt.label}) needs neural models, "
            f"which {where} does not hold"
        )


def parse_options(
    text: str, has_model: Callable[[Option], bool] = no_models, where: str = "the model bank"
) -> list[Option]:
    """Parse ``--options``: comma-separated codes or names (``all`` = every option usable
    here: the linear ones and the neural ones ``has_model`` accepts).

    An empty entry (``0,,9``, a trailing comma) or an option given twice (``0,0``,
    ``0,direct``) is refused: it is more likely a typo than what was meant. Codes are ASCII
    digits only."""
    if text.strip() == "all":
        return [o for o in OPTIONS.values() if not o.neural or has_model(o)]
    if text.strip() == "linear":
        return [OPTIONS[c] for c in LINEAR_CODES]
    if not text.strip():
        raise OptionError("no option given")
    by_name = {opt.name: opt for opt in OPTIONS.values()}
    chosen: list[Option] = []
    for position, item in enumerate((part.strip() for part in text.split(",")), start=1):
        if not item:
            raise OptionError(f"--options {text!r}: entry {position} is empty")
        if item.isascii() and item.isdigit():  # not ²/٣/𝟓, which str.isdigit also takes
            opt = option(int(item))
        elif item in by_name:
            opt = by_name[item]
        else:
            raise OptionError(f"unknown option {item!r} (codes 0–14 or names like lanczos-1/2)")
        if opt in chosen:
            raise OptionError(
                f"--options {text!r}: option {int(opt.code)} ({opt.name}) is given twice"
            )
        require_available(opt, has_model, where)
        chosen.append(opt)
    return chosen


def skip_reason(opt: Option, width: int, height: int) -> str | None:
    """Why ``opt`` cannot be used on this source size, or None."""
    if opt.kind == "direct":
        return None
    bw, bh = bottleneck_size(width, height, opt.ratio)
    if bw < MIN_BOTTLENECK or bh < MIN_BOTTLENECK:
        return f"bottleneck {bw}x{bh} is under the {MIN_BOTTLENECK}x{MIN_BOTTLENECK} minimum"
    return None


def parse_qps(text: str, codec: str, qp_range: tuple[int, int], minimum: int = 0) -> list[int]:
    """Parse ``--qps``: comma-separated integers (empty entries ignored), each in ``codec``'s
    ``qp_range`` and at least ``minimum`` of them (2 for an RD curve)."""
    try:
        qps = [int(q) for q in text.split(",") if q.strip()]
    except ValueError:
        raise InputError(f"--qps: not a list of integers: {text!r}") from None
    if len(qps) < minimum:
        raise InputError(f"--qps needs at least {minimum} QPs for an RD curve")
    lo, hi = qp_range
    for qp in qps:
        if not lo <= qp <= hi:
            raise InputError(f"--qps {qp}: {codec} takes QPs {lo}..{hi}")
    return qps
