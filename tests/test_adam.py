"""Content adaptation's Adam: torch's steps, bit for bit, without importing torch._dynamo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from wrapcodec.adam import Adam


def test_steps_equal_torchs_adam_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(16, 8, 3, 3), (16,), (3, 5)]
    ours = [torch.randn(s, generator=gen) for s in shapes]
    theirs = [p.clone() for p in ours]
    start = [p.clone() for p in ours]
    mine, ref = Adam(ours, lr=2e-3), torch.optim.Adam(theirs, lr=2e-3)
    for step in range(200):
        for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            skip = k == 2 and step % 3 == 0  # a parameter without a gradient on some steps
            g = None if skip else torch.randn(a.shape, generator=gen)
            a.grad = None if g is None else g.clone()
            b.grad = None if g is None else g.clone()
        mine.step()
        ref.step()
    for a, b, before in zip(ours, theirs, start, strict=True):
        assert torch.equal(a, b) and not torch.equal(a, before)


FIT = """
import sys
import torch
from wrapcodec.adapt import AdaptConfig, fit
from wrapcodec.bank import get_bank
from wrapcodec.options import OPTIONS
post = get_bank().processors(OPTIONS[2]).post
gen = torch.Generator().manual_seed(0)
y = torch.rand(1, 1, 64, 96, generator=gen) * 2 - 1
uv = torch.rand(1, 2, 32, 48, generator=gen) * 2 - 1
source, decoded = (y, uv), (y[..., ::2, ::2] + 0.05, uv[..., ::2, ::2])
fitted = fit(post, [decoded], [source], AdaptConfig(steps=3, crop=32, batch=2))
assert fitted.update
print("torch._dynamo" in sys.modules)
"""


def test_a_fit_does_not_import_the_compiler(tmp_path: Path) -> None:
    """torch.optim imports torch._dynamo on its first step, about 2 s of an encode."""
    # cwd outside the checkout: a source wrapcodec/ folder there would shadow the installed one
    out = subprocess.run(
        [sys.executable, "-c", FIT], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
