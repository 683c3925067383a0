"""The straight-through (BPDA) autograd function, public as :class:`fdjpeg.torch.StraightThrough`.

Its own module so that ``ops`` can give torch inputs this gradient without importing
``fdjpeg.torch`` (which imports ``ops``).
"""

from __future__ import annotations

from typing import Any, Callable

import torch


class StraightThrough(torch.autograd.Function):
    """``StraightThrough.apply(x, fn)``: ``fn(x)`` forward, the identity backward.

    BPDA with the identity (Athalye et al. 2018): the gradient an adaptive attacker uses to attack
    through a non-differentiable defense ``fn``, which must return a tensor of ``x``'s shape.
    ``fn`` receives ``x`` detached.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return fn(x.detach())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        return grad, None
