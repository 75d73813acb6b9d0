"""How much a post-processor can take back from a segment: an upper bound by overfitting.

Reads the first segment of a post-1/1 ``.wrp`` file, decodes its stream, and fits every
parameter of the segment's prior (float arithmetic, Adam, 4 crops of 128² a step) to every
``--every``-th frame against the source, with and without a luma stage at full resolution
after it (3×3 convolutions ``1→c→…→1``, its last layer starting at zero), then measures
PSNR-Y/U/V on those same frames against the decoded frames. Fitted on what it is measured
on, the figures bound what a network of that size gains on the segment::

    python scripts/luma_probe.py OUT.wrp SOURCE.y4m --steps 1000 --stages 8 32,32

With ``--temporal`` each luma stage is fitted a second time with the neighbouring decoded
frames as two more inputs (the frames before and after, each motion-compensated to the frame
by block matching of the decoded luma: 16×16 blocks, whole-sample vectors within ±12, what a
decoder can find without side information), to bound what the other frames of the segment
add: x265 codes its B frames a few QPs coarser than the P frames beside them. With
``--chroma-stages`` the prior is fitted with a chroma stage after it instead (3×3
convolutions on the output chroma and luma, the last starting at zero)::

    python scripts/luma_probe.py OUT.wrp SOURCE.y4m --steps 1000 --stages --chroma-stages 8 32,32
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wrapcodec import adapt
from wrapcodec.bank import get_bank
from wrapcodec.container import read_wrp, segment_bitdepth
from wrapcodec.decoder import bottleneck
from wrapcodec.nets import PostProcessor, mse_8bit, space_to_depth
from wrapcodec.options import OPTIONS
from wrapcodec.pipeline import to_tensors
from wrapcodec.y4m import Y4MReader

Picture = tuple[Tensor, Tensor]


def stage_convs(sizes: Sequence[int]) -> nn.ModuleList:
    """3×3 convolutions ``sizes[0] → … → sizes[-1]``, the last starting at zero (so a residual
    stage made of them starts as the identity)."""
    convs = [nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(sizes)]
    for param in convs[-1].parameters():
        nn.init.zeros_(param)
    return nn.ModuleList(convs)


def _run(convs: nn.ModuleList, x: Tensor) -> Tensor:
    for k, conv in enumerate(convs):
        x = conv(x) if k == len(convs) - 1 else F.relu(conv(x))
    return x


class LumaStage(nn.Module):
    """``post`` followed by a residual stage of 3×3 convolutions on the output luma."""

    def __init__(self, post: PostProcessor, widths: Sequence[int]) -> None:
        super().__init__()
        self.post = post
        self.convs = stage_convs([1, *widths, 1])

    def restore(self, y: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
        y_hat, uv_hat = self.post.restore(y, uv)
        return y_hat + _run(self.convs, y_hat), uv_hat


class TemporalStage(LumaStage):
    """A :class:`LumaStage` whose convolutions also see two more luma planes: its input ``y``
    has three channels, the frame and its two motion-compensated neighbours."""

    def __init__(self, post: PostProcessor, widths: Sequence[int]) -> None:
        # Built as the one-input stage, then its first convolution widened: the order of
        # random draws the figures in docs/measurements.md were made with.
        super().__init__(post, widths)
        self.convs[0] = nn.Conv2d(3, [*widths, 1][0], 3, padding=1)
        if len(self.convs) == 1:
            for param in self.convs[0].parameters():
                nn.init.zeros_(param)

    def restore(self, y: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
        y_hat, uv_hat = self.post.restore(y[:, :1], uv)
        return y_hat + _run(self.convs, torch.cat([y_hat, y[:, 1:]], dim=1)), uv_hat


class ChromaStage(nn.Module):
    """``post`` followed by a residual stage of 3×3 convolutions on the output chroma, which
    also sees the output luma (as four channels at chroma resolution)."""

    def __init__(self, post: PostProcessor, widths: Sequence[int], source: str = "both") -> None:
        super().__init__()
        self.post = post
        self.source = source  # "both": chroma and luma out; "luma": luma out; "input": luma in
        self.convs = stage_convs([6 if source == "both" else 4, *widths, 2])

    def restore(self, y: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
        y_hat, uv_hat = self.post.restore(y, uv)
        luma = space_to_depth(y if self.source == "input" else y_hat)
        x = torch.cat([uv_hat, luma], dim=1) if self.source == "both" else luma
        return y_hat, uv_hat + _run(self.convs, x)


def compensated(cur: Tensor, ref: Tensor, block: int = 16, radius: int = 12) -> Tensor:
    """``ref`` (1×1×H×W luma) moved onto ``cur`` block by block: each ``block``² block takes the
    whole-sample displacement within ±``radius`` of least absolute difference (edges padded)."""
    height, width = cur.shape[-2:]
    padded = F.pad(ref, (radius, radius, radius, radius), mode="replicate")
    best = torch.full((1, 1, height // block, width // block), math.inf)
    out = ref.clone()
    for dy, dx in itertools.product(range(-radius, radius + 1), repeat=2):
        moved = padded[..., radius + dy : radius + dy + height, radius + dx : radius + dx + width]
        sad = F.avg_pool2d((cur - moved).abs(), block)
        better = sad < best
        best = torch.where(better, sad, best)
        mask = better.repeat_interleave(block, -2).repeat_interleave(block, -1)
        out = torch.where(mask, moved, out)
    return out


def _with_neighbours(held: dict[int, Picture], picks: Sequence[int], count: int) -> list[Picture]:
    out = []
    for k in picks:
        y, uv = held[k]
        before = compensated(y, held[max(k - 1, 0)][0])
        after = compensated(y, held[min(k + 1, count - 1)][0])
        out.append((torch.cat([y, before, after], dim=1), uv))
    return out


def _frames(path: Path, every: int, bitdepth: int) -> list[Picture]:
    with Y4MReader(str(path)) as reader:
        return [to_tensors(f, bitdepth) for k, f in enumerate(reader) if k % every == 0]


def _psnr(model: nn.Module | None, decoded: list[Picture], sources: list[Picture]) -> list[float]:
    """PSNR-Y, -U, -V (normalised samples, peak-to-peak 2) over the frames."""
    se = [0.0, 0.0, 0.0]
    with torch.no_grad():
        for (y, uv), (ty, tuv) in zip(decoded, sources, strict=True):
            y_hat, uv_hat = model.restore(y, uv) if model is not None else (y, uv)  # type: ignore[operator]
            se[0] += float(((y_hat.clamp(-1, 1) - ty) ** 2).mean())
            for c in (0, 1):
                se[1 + c] += float(((uv_hat[:, c].clamp(-1, 1) - tuv[:, c]) ** 2).mean())
    return [10 * math.log10(4 / (e / len(decoded))) for e in se]


def fit(
    model: nn.Module, batches: Callable[[], tuple[Picture, Picture]], steps: int, lr: float
) -> None:
    """``steps`` Adam steps of ``model`` (every parameter) on the 6:1:1 MSE of ``batches()``."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        (y, uv), (ty, tuv) = batches()
        y_hat, uv_hat = model.restore(y, uv)  # type: ignore[operator]
        loss = mse_8bit(y_hat, uv_hat, ty, tuv)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _fit(model: nn.Module, decoded: list[Picture], sources: list[Picture], steps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    cfg = adapt.AdaptConfig()
    size = (cfg.crop, cfg.crop)
    fit(model, lambda: adapt._batch(decoded, sources, size, cfg, gen), steps, 1e-3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("wrp")
    ap.add_argument("source")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--stages", nargs="*", default=["8"], help="widths, e.g. 8 or 32,32")
    ap.add_argument("--temporal", action="store_true", help="also with the neighbours' luma")
    ap.add_argument(
        "--chroma-stages",
        nargs="*",
        default=[],
        help="chroma stages: widths (8, 32,32; 0: one convolution), then :luma to see the"
        " output luma alone, :input the decoded luma alone (default: output chroma and luma)",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    header, segments = read_wrp(args.wrp)
    seg = segments[0]
    if seg.option != 1:
        raise SystemExit(f"{args.wrp}: its first segment is option {seg.option}, not post-1/1")
    depth = segment_bitdepth(header, seg)
    picks = range(0, seg.frame_count, args.every)
    wanted = {j for k in picks for j in ((k - 1, k, k + 1) if args.temporal else (k,))}
    with bottleneck(args.wrp, header, seg) as (_, frames):
        held = {k: to_tensors(f, depth) for k, f in enumerate(frames) if k in wanted}
    decoded = [held[k] for k in picks]
    stacked = _with_neighbours(held, picks, seg.frame_count) if args.temporal else []
    del held
    with Y4MReader(args.source) as reader:
        source_depth = reader.info.bitdepth
    sources = _frames(Path(args.source), args.every, source_depth)[: len(decoded)]
    post = get_bank().processors(OPTIONS[1], seg.prior).post
    plain = _psnr(None, decoded, sources)
    print(f"{len(decoded)} frames, prior {seg.prior}, decoded PSNR-Y/U/V {plain}")
    models: list[tuple[str, nn.Module, list[Picture]]] = [
        ("post-1/1", copy.deepcopy(post), decoded)
    ]
    for stage in args.stages:
        widths = [int(w) for w in stage.split(",")]
        name = f"post-1/1 + luma {stage}"
        models.append((name, LumaStage(copy.deepcopy(post), widths), decoded))
        if args.temporal:
            stage_t = TemporalStage(copy.deepcopy(post), widths)
            models.append((f"{name}, with the neighbours", stage_t, stacked))
    for stage in args.chroma_stages:
        spec, _, source = stage.partition(":")
        widths = [int(w) for w in spec.split(",") if int(w) > 0]
        chroma = ChromaStage(copy.deepcopy(post), widths, source or "both")
        models.append((f"post-1/1 + chroma {stage}", chroma, decoded))
    for name, model, inputs in models:
        before = _psnr(model, inputs, sources)
        t0 = time.perf_counter()
        _fit(model, inputs, sources, args.steps)
        after = _psnr(model, inputs, sources)
        gain = ", ".join(f"{a - b:+.3f}" for a, b in zip(after, plain, strict=True))
        was = ", ".join(f"{a - b:+.3f}" for a, b in zip(before, plain, strict=True))
        print(f"{name}: before {was} dB; after {gain} dB ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
