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
    """``Adam(params, lr, betas=(0.9, 0.999), eps=1e-8)``: ``zero_grad()`` then ``step()``.

    ``flat=True`` (all parameters of one dtype and device): the parameters and their
    gradients are moved into one contiguous buffer each (the parameters become views of
    it; autograd accumulates into the gradient views in place), so a step is seven tensor
    ops instead of seven per parameter tensor; per-element arithmetic is unchanged, so the
    results are the same bits. It matters when steps are small: at 1080p, 1000 steps of
    1024 pixels spent ~0.4 ms a step in per-tensor Adam ops. In flat mode every parameter
    is stepped every step (a zero gradient where backward did not reach it; torch skips a
    parameter with no gradient), ``zero_grad`` zeroes in place, and :meth:`release` gives
    each parameter its own storage back (call it before saving a state dict).
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 flat: bool = False) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("Adam got an empty parameter list")
        self.lr, (self.beta1, self.beta2), self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.flat = flat and len({(p.dtype, p.device) for p in self.params}) == 1
        if self.flat:
            first = self.params[0]
            total = sum(p.numel() for p in self.params)
            data = torch.empty(total, dtype=first.dtype, device=first.device)
            grad = torch.zeros(total, dtype=first.dtype, device=first.device)
            offset = 0
            for p in self.params:
                n = p.numel()
                data[offset:offset + n].copy_(p.detach().reshape(-1))
                p.data = data[offset:offset + n].view_as(p)
                p.grad = grad[offset:offset + n].view_as(p)
                offset += n
            self._data, self._grad = data, grad
            tensors = [data]
        else:
            tensors = self.params
        self._m = [torch.zeros_like(t, memory_format=torch.preserve_format) for t in tensors]
        self._v = [torch.zeros_like(t, memory_format=torch.preserve_format) for t in tensors]
        self._steps = [0] * len(tensors)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.flat:
            self._grad.zero_()
            return
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def release(self) -> None:
        """Flat mode: give every parameter its own storage again (and no gradient)."""
        if self.flat:
            for p in self.params:
                p.data = p.data.clone()
                p.grad = None
            self.flat = False

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.beta1, self.beta2
        pairs = [(self._data, self._grad)] if self.flat else [(p, p.grad) for p in self.params]
        for i, (p, g) in enumerate(pairs):
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
