"""Adam for content adaptation, without ``torch.optim``.

``torch.optim.Optimizer`` imports ``torch._dynamo`` on its first use, about 2 s of an encode
of a few seconds of video (py-spy's samples of a 120-frame 720p encode). This is Adam as
``torch.optim.Adam(params, lr)`` computes it on the CPU with its defaults (the single-tensor
path: no weight decay, AMSGrad or maximising), the same operations in the same order, so
its steps are equal to torch's bit for bit (``tests/test_adam.py``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class Adam:
    """Adam (Kingma and Ba) over ``params``, each stepped with its ``.grad`` (if set)."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr, self.eps = lr, eps
        self.beta1, self.beta2 = betas
        self.steps = [0] * len(self.params)  # per parameter, counting the steps it had a gradient
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        for k, (p, m, v) in enumerate(zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True)):
            if p.grad is None:
                continue
            self.steps[k] += 1
            t = float(self.steps[k])
            step_size = self.lr / (1 - self.beta1**t)
            correction2_sqrt = (1 - self.beta2**t) ** 0.5
            g = p.grad
            m.lerp_(g, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            denom = (v.sqrt() / correction2_sqrt).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)
