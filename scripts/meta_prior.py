"""Does a prior trained for content adaptation adapt better? First-order MAML against the prior.

``train`` continues a post-1/1 prior on a pair cache (:mod:`wrapcodec.pairs`) with first-order
MAML: each outer step copies the network, adapts the copy's biases, tail and chroma
convolution (:data:`Subset.BIAS_TAIL`, what the encoder's first rung fits) to one clip-QP pair
for ``--inner`` Adam steps, and applies the gradient of the copy's loss on fresh crops of the
same pair to the network (``--body``: to all but those parameters, plus the network's own
loss before adaptation). ``--plain`` trains the same number of steps without adaptation.

``eval`` measures weights as the encoder uses them: each validation pair (e.g. the Kodak pan
clips coded by the real codec, ``wrapcodec pairs``) adapted for ``--steps`` Adam steps at the
encoder's rate (batch 4, 128×128 crops of its own frames), PSNR-YUV (6:1:1, the pooled MSE of
every frame) before and after, per QP::

    python scripts/meta_prior.py train models/post-1-p7.safetensors --pairs CACHE \\
        --bitdepth 8 --outer 1000 --inner 30 --inner-lr 2e-3 --body --out meta.safetensors
    python scripts/meta_prior.py eval meta.safetensors --pairs VALCACHE --bitdepth 8 \\
        --qps 27,37,47 --steps 150
"""

from __future__ import annotations

import argparse
import copy
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from prior_eval import load_post
from safetensors.torch import save_file
from torch import Tensor

from wrapcodec import pairs as coded_pairs
from wrapcodec.adam import Adam
from wrapcodec.nets import PEAK_8BIT, PostProcessor, mse_8bit
from wrapcodec.update import Subset, subset_names

Batch = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]


def whole(pair: coded_pairs.Pair) -> Batch:
    """Every frame of ``pair``: the upsampled decoded pictures and the sources, normalised."""
    depth = pair.bitdepth
    y = coded_pairs._tensor(pair.decoded_y, depth).permute(1, 0, 2, 3)
    uv = coded_pairs._tensor(pair.decoded_uv, depth)[0]
    height, width = pair.source_y.shape[-2:]
    y, uv = PostProcessor.upsample(y, uv, height, width)
    ty = coded_pairs._tensor(pair.source_y, 8).permute(1, 0, 2, 3)
    tuv = coded_pairs._tensor(pair.source_uv, 8)[0]
    return (y, uv), (ty, tuv)


def adapt(
    post: PostProcessor, names: list[str], pair: coded_pairs.Pair, steps: int, lr: float, seed: int
) -> None:
    """``steps`` Adam steps on ``names`` of ``post`` (in place), batches of 4 crops of 128."""
    params = dict(post.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in names)
    trained = [params[n] for n in names]
    opt = Adam(trained, lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        (y, uv), (ty, tuv) = coded_pairs.sample_batch(rng, [pair], 4, 128)
        loss = mse_8bit(*post.restore(y, uv), ty, tuv)
        for p, g in zip(trained, torch.autograd.grad(loss, trained), strict=True):
            p.grad = g
        opt.step()


@torch.no_grad()
def whole_mse(post: PostProcessor, pair: coded_pairs.Pair) -> float:
    (y, uv), (ty, tuv) = whole(pair)
    return float(mse_8bit(*post.restore(y, uv), ty, tuv))


def evaluate(post: PostProcessor, val: list[coded_pairs.Pair], steps: int) -> None:
    names = subset_names(post, Subset.BIAS_TAIL)
    by_qp: dict[int, list[tuple[float, float]]] = {}
    for i, pair in enumerate(val):
        fitted = copy.deepcopy(post)
        adapt(fitted, names, pair, steps, 1e-3, i)
        by_qp.setdefault(pair.qp, []).append((whole_mse(post, pair), whole_mse(fitted, pair)))
    means = []
    for qp, values in sorted(by_qp.items()):
        mses = zip(*values, strict=True)
        before, after = (10 * math.log10(PEAK_8BIT**2 / np.mean(v)) for v in mses)
        means.append((before, after))
        print(f"QP {qp}: {before:.3f} -> {after:.3f} dB ({after - before:+.3f})", flush=True)
    before, after = (float(np.mean(v)) for v in zip(*means, strict=True))
    print(f"mean over QPs: {before:.4f} -> {after:.4f} dB")


def train(post: PostProcessor, data: list[coded_pairs.Pair], args: argparse.Namespace) -> None:
    names = subset_names(post, Subset.BIAS_TAIL)
    opt = torch.optim.Adam(post.parameters(), lr=args.outer_lr)
    rng = np.random.default_rng(0)
    for step in range(args.outer):
        pair = data[int(rng.integers(len(data)))]
        fast = post
        if not args.plain:
            fast = copy.deepcopy(post)
            adapt(fast, names, pair, args.inner, args.inner_lr, int(rng.integers(1 << 30)))
            fast.requires_grad_(True)
        (y, uv), (ty, tuv) = coded_pairs.sample_batch(rng, [pair], 16 if args.plain else 8, 128)
        loss = mse_8bit(*fast.restore(y, uv), ty, tuv)
        grads = list(torch.autograd.grad(loss, list(fast.parameters())))
        if args.body and not args.plain:
            base = mse_8bit(*post.restore(y, uv), ty, tuv)
            own = torch.autograd.grad(base, list(post.parameters()))
            named = [n for n, _ in post.named_parameters()]
            grads = [o if n in names else g + o for n, g, o in zip(named, grads, own, strict=True)]
        for p, g in zip(post.parameters(), grads, strict=True):
            p.grad = g
        opt.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: loss {loss.item():.3f}", flush=True)
    weights = {f"post.{k}": v.detach().contiguous() for k, v in post.state_dict().items()}
    save_file(weights, str(args.out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["train", "eval"])
    ap.add_argument("weights", type=Path)
    ap.add_argument("--pairs", type=Path, required=True, help="a pair cache")
    ap.add_argument("--codec", default="x265")
    ap.add_argument("--bitdepth", type=int, choices=(8, 10), default=8)
    ap.add_argument("--qps", default="22,27,32,37,42,47")
    ap.add_argument("--steps", type=int, default=150, help="eval: adaptation steps a pair")
    ap.add_argument("--outer", type=int, default=1000)
    ap.add_argument("--inner", type=int, default=30)
    ap.add_argument("--inner-lr", type=float, default=5e-3)
    ap.add_argument("--outer-lr", type=float, default=1e-4)
    ap.add_argument("--body", action="store_true")
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("meta.safetensors"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    post = load_post(args.weights, Fraction(1))
    qps = [int(q) for q in args.qps.split(",")]
    found = coded_pairs.load_pairs(args.pairs, [args.codec], Fraction(1), qps, args.bitdepth)
    if args.command == "eval":
        evaluate(post, found, args.steps)
    else:
        post.train()
        train(post, found, args)


if __name__ == "__main__":
    main()
