"""Adam for per-picture adaptation, without ``torch.optim``'s first-use cost.

``torch.optim.Optimizer`` imports ``torch._dynamo`` the first time an optimizer is built
(its methods are wrapped to disable the compiler): about 1 s on the project's CPU, paid by
every ``itmfilter encode`` of a still and the first frame of every video encode, half the
adaptation's own time at 1080p. This is the same algorithm as ``torch.optim.Adam``'s
single-tensor path (the one torch uses for CPU tensors; no weight decay, no AMSGrad), op
for op, so the results are bit-identical to it on the CPU (``tests/test_adapt.py``).

D. P. Kingma and J. Ba, "Adam: A method for stochastic optimization", ICLR 2015.
"""

from __future__ import annotations

import torch


class Adam:
    """``Adam(params, lr, betas=(0.9, 0.999), eps=1e-8)``: ``zero_grad()`` then ``step()``."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("Adam got an empty parameter list")
        self.lr, (self.beta1, self.beta2), self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self._m = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self._v = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self._steps = [0] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.beta1, self.beta2
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue  # as torch: a parameter without a gradient is not stepped
            self._steps[i] += 1
            step = float(self._steps[i])
            m, v = self._m[i], self._v[i]
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            step_size = self.lr / (1 - b1**step)
            denom = (v.sqrt() / (1 - b2**step) ** 0.5).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)


__all__ = ["Adam"]
