"""Making model cards: install trained weights into a bank, time them, calibrate them.

``wrapcodec models install`` copies ``TRAINED.safetensors`` into a bank folder under its option
name and writes its card (architecture, MACs per pixel, parameters, the training stages read
from the ``.train.json`` files of the run and of the runs it started from, the weights'
sha256); its validation with the codec is :mod:`wrapcodec.validation`'s.

``wrapcodec models calibrate`` measures the activation exponents of each post-processor's
integer arithmetic (:func:`wrapcodec.exact.calibrate`) on decoded-bottleneck stand-ins made
from pictures (:func:`calibrate`) and writes them into the cards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from wrapcodec.backend import get_backend
from wrapcodec.bank import (
    MAC_HEIGHT,
    MAC_WIDTH,
    Arithmetic,
    Bank,
    ModelCard,
    Processors,
    model_name,
    option_for,
)
from wrapcodec.dataset import Picture, center_crops, load_pictures, to_tensors
from wrapcodec.errors import InputError
from wrapcodec.exact import calibrate as calibrate_post
from wrapcodec.nets import (
    PostProcessor,
    PreProcessor,
    bilinear_bottleneck,
    bottleneck_dims,
    count_macs,
    count_params,
    from_unit,
    unit,
)
from wrapcodec.options import OPTIONS, Option
from wrapcodec.paths import atomic_write, sha256_file
from wrapcodec.pipeline import Layout, postprocess, preprocess
from wrapcodec.y4m import ChromaTag, Frame, VideoInfo


def training_stages(weights: Path) -> list[dict[str, object]]:
    """The ``.train.json`` records of a run and of the runs it was initialised from.

    A run started from a bank's model (``--init models/post-1.safetensors``) has no
    ``.train.json`` there; its card, if it describes those very weights (same sha256), gives
    the stages before."""
    stages: list[dict[str, object]] = []
    path: Path | None = weights
    while path is not None:
        meta_path = path.with_suffix(".train.json")
        if not meta_path.is_file():
            carded = _card_stages(path)
            if carded is None:
                raise InputError(f"{meta_path}: missing (written by wrapcodec train)")
            return carded + stages
        meta = json.loads(meta_path.read_text())
        history = meta.get("history") or [{}]
        stages.insert(0, {"config": meta["config"], "steps": meta["step"], "last": history[-1]})
        init = meta["config"].get("init")
        path = (
            (meta_path.parent / init)
            if init and not Path(init).is_absolute()
            else (Path(init) if init else None)
        )
    return stages


def _card_stages(weights: Path) -> list[dict[str, object]] | None:
    """The training stages of the model card beside ``weights``, if it is theirs."""
    card_path = weights.with_suffix(".json")
    if not (card_path.is_file() and weights.is_file()):
        return None
    try:
        card = ModelCard.model_validate_json(card_path.read_text())
    except ValueError:
        return None
    if card.sha256 != sha256_file(weights):
        return None
    return list(card.training)


def install(
    weights: Path,
    dest: Path,
    training_data: str = "",
    prior: int = 0,
    *,
    serves: Sequence[str] | None = None,
    bitdepths: Sequence[int] | None = None,
) -> ModelCard:
    """Copy trained weights into the bank ``dest`` and write their card (no validation).

    With ``prior`` (1-7) a post-processor becomes the option's prior of that number for the
    codecs and QP band its last training stage drew from (``NAME-pN``), and for the bottleneck
    bit depth it trained at where the stage says one (stages before ``bitdepth`` existed were
    10-bit runs, and their priors serve either depth, as they always did). ``serves`` and
    ``bitdepths`` replace the codecs and depths a prior serves (one trained on x265's output
    may serve x264 too, where it measures better there than x264's own)."""
    if not prior and (serves or bitdepths):
        raise InputError("--serves and --bitdepths apply to a prior (--prior N)")
    stages = training_stages(weights)
    cfg = stages[-1]["config"]
    assert isinstance(cfg, dict)
    kind, ratio = str(cfg["kind"]), str(cfg["ratio"])
    fraction = Fraction(ratio)
    name = model_name(kind, ratio) + (f"-p{prior}" if prior else "")
    codecs: list[str] | None = None
    qp_band: tuple[int, int] | None = None
    depths: list[Literal[8, 10]] | None = None
    if prior:
        if kind != "post":
            raise InputError(f"{weights}: only post-processors are installed as priors")
        codecs = list(serves) if serves else str(cfg.get("codec", "x265")).split(",")
        qp_band = (int(str(cfg["qp_min"])), int(str(cfg["qp_max"])))
        if bitdepths:
            depths = [8 if d == 8 else 10 for d in sorted(set(bitdepths))]
        elif "bitdepth" in cfg:
            depths = [8] if str(cfg["bitdepth"]) == "8" else [10]
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{name}.safetensors"
    atomic_write(target, lambda p: shutil.copyfile(weights, p))
    post = PostProcessor(fraction)
    pre = PreProcessor(fraction) if kind == "wrapper" else None
    card = ModelCard(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        ratio=ratio,
        option=int(option_for(kind, fraction).code),
        file=target.name,
        sha256=sha256_file(target),
        post=post.config,
        pre=pre.config if pre else None,
        macs_per_pixel=round(count_macs(post, MAC_WIDTH, MAC_HEIGHT), 1),
        params=count_params(post),
        pre_macs_per_pixel=round(count_macs(pre, MAC_WIDTH, MAC_HEIGHT), 1) if pre else None,
        pre_params=count_params(pre) if pre else None,
        training_data=training_data,
        training=stages,
        prior=prior,
        codecs=codecs,
        qp_band=qp_band,
        bitdepths=depths,
    )
    write_card(dest, card)
    return card


def write_card(dest: Path, card: ModelCard) -> None:
    text = card.model_dump_json(indent=1) + "\n"
    atomic_write(dest / f"{card.name}.json", lambda p: p.write_text(text))


def _noise_frame(rng: np.random.Generator, width: int, height: int, peak: int) -> Frame:
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return Frame(
        rng.integers(0, peak + 1, (height, width), dtype=np.uint16),
        rng.integers(0, peak + 1, (ch, cw), dtype=np.uint16),
        rng.integers(0, peak + 1, (ch, cw), dtype=np.uint16),
    )


WARM_UP_FRAMES = 2


def _fps(step: Callable[[], object], frames: int) -> float:
    for _ in range(WARM_UP_FRAMES):  # compiled kernels loaded, the allocator's pools grown
        step()
    t = time.perf_counter()
    for _ in range(frames):
        step()
    return frames / (time.perf_counter() - t)


def speed(
    bank: Bank,
    opt: Option,
    width: int,
    height: int,
    frames: int = 5,
    pre_arithmetic: str = "float32",
) -> tuple[float, float | None]:
    """Frames per second of the decoder's post-processing (``pipeline.postprocess`` in the
    bank's arithmetic, conversions included) of a 10-bit bottleneck into a
    ``width``×``height`` 8-bit picture, and of the encoder's pre-processing
    (``pipeline.preprocess``, in ``pre_arithmetic``) for a wrapper (None otherwise).
    Timings do not depend on the content: noise pictures."""
    info = VideoInfo(width, height, 8, 25, 1, chroma=ChromaTag.C420JPEG)
    layout = Layout.make(info, opt, get_backend("x265"), 10, bank, pre_arithmetic=pre_arithmetic)
    rng = np.random.default_rng(0)
    decoded = _noise_frame(rng, *layout.bottleneck, 1023)
    post_fps = _fps(lambda: postprocess(decoded, layout), frames)
    if opt.kind != "wrapper":
        return post_fps, None
    source = _noise_frame(rng, width, height, 255)
    return post_fps, _fps(lambda: preprocess(source, layout), frames)


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (each at least 16) as a pair; anything else is an InputError."""
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()) or min(int(width), int(height)) < 16:
        raise InputError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080")
    return int(width), int(height)


def speed_rows(
    bank: Bank, sizes: list[tuple[int, int]], frames: int, pre_arithmetic: str
) -> list[dict[str, object]]:
    """One row per option of the bank: its arithmetic, whether this machine's
    post-processor gives the bytes its card records (None: the card records none), and the
    :func:`speed` of post- and pre-processing at each size (``post_fps_WxH``, ``pre_fps_WxH``,
    None for a pre-processor the option does not have)."""
    rows: list[dict[str, object]] = []
    for code, card in sorted(bank.cards.items()):
        arith = card.arithmetic if bank.integer else None
        same = None
        if arith is not None and arith.reference:
            same = reference_digest(bank, OPTIONS[code]) == arith.reference
        row: dict[str, object] = {
            "model": card.name,
            "arithmetic": f"integer v{arith.version}" if arith else "float",
            "matches_reference": same,
        }
        for pw, ph in sizes:
            post, pre = speed(bank, OPTIONS[code], pw, ph, frames, pre_arithmetic)
            row[f"post_fps_{pw}x{ph}"] = round(post, 2)
            row[f"pre_fps_{pw}x{ph}"] = None if pre is None else round(pre, 2)
        rows.append(row)
    return rows


#: The picture whose post-processed bytes a card records (:func:`reference_digest`).
REFERENCE_SIZE = (352, 288)


def reference_digest(bank: Bank, opt: Option, prior: int = 0) -> str:
    """sha256 of what the decoder makes of a fixed 10-bit bottleneck (seeded noise over a
    gradient) for a ``REFERENCE_SIZE`` 8-bit picture in the bank's integer arithmetic: the
    same on every machine, so a card can record it and any machine check itself against it."""
    width, height = REFERENCE_SIZE
    info = VideoInfo(width, height, 8, 25, 1, chroma=ChromaTag.C420JPEG)
    layout = Layout.make(info, opt, get_backend("x265"), 10, bank, integer=True, prior=prior)
    bw, bh = layout.bottleneck
    noise = _noise_frame(np.random.default_rng(2026), bw, bh, 255)
    ramp = [np.add.outer(np.arange(p.shape[0]), np.arange(p.shape[1])) * 3 for p in noise]
    decoded = Frame(*((p + r) % 1024 for p, r in zip(noise, ramp, strict=True)))
    out = postprocess(Frame(*(p.astype(np.uint16) for p in decoded)), layout)
    digest = hashlib.sha256()
    for plane in out:
        digest.update(np.ascontiguousarray(plane, dtype="<u2").tobytes())
    return digest.hexdigest()


CALIBRATION_BITDEPTH = 10


def _bottleneck_10bit(t: torch.Tensor) -> torch.Tensor:
    """A normalised picture as a 10-bit bottleneck would hold it (rounded samples)."""
    samples = from_unit(t, CALIBRATION_BITDEPTH).round()
    return unit(samples, CALIBRATION_BITDEPTH)


def _bottlenecks(
    pictures: list[Picture], nets: Processors, ratio: Fraction, batch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, int]]:
    """Batches of ``pictures`` taken to the bottleneck as the option does and rounded to
    10-bit samples, with the output size."""
    height, width = pictures[0].height, pictures[0].width
    bw, bh = bottleneck_dims(width, height, ratio)
    for first in range(0, len(pictures), batch):
        y, uv = to_tensors(pictures[first : first + batch])
        with torch.no_grad():
            if nets.pre is not None:
                yb, uvb = nets.pre(y, uv, (bw, bh))
            else:
                yb, uvb = bilinear_bottleneck(y, uv, bw, bh)
        yield _bottleneck_10bit(yb), _bottleneck_10bit(uvb), height, width


def calibrate(
    bank: Bank, data: Path, count: int = 64, crop: int = 256, batch: int = 8
) -> list[ModelCard]:
    """Measure and write every card's integer arithmetic (:class:`Arithmetic`).

    The post-processors see what they see in use, short of the codec: the first ``count``
    pictures of ``data`` (sorted by name) at least ``crop`` pixels on each side, cut to their
    ``crop``×``crop`` centres, taken to the bottleneck by the option's pre-stage (the
    wrapper's pre-processor, bilinear otherwise) and rounded to 10-bit samples. Returns the
    cards written."""
    pictures = center_crops(load_pictures(data, crop)[:count], crop)
    about = (
        f"{len(pictures)} centre crops {crop}x{crop} of {data.name}, bottleneck at "
        f"{CALIBRATION_BITDEPTH} bits"
    )
    written = []
    for card in bank.all_cards():
        nets = bank.processors(OPTIONS[card.option], card.prior)
        exponents = calibrate_post(nets.post, _bottlenecks(pictures, nets, card.fraction, batch))
        arithmetic = Arithmetic(exponents=exponents, calibration=about)
        written.append(card.model_copy(update={"arithmetic": arithmetic}))  # bank's stay as read
    calibrated = Bank(
        bank.folder,
        {c.option: c for c in written if not c.prior},
        {(c.option, c.prior): c for c in written if c.prior},
    )
    for card in written:
        assert card.arithmetic is not None
        card.arithmetic.reference = reference_digest(calibrated, OPTIONS[card.option], card.prior)
        write_card(bank.folder, card)
    return written
