"""torch ``nn.Module`` wrappers of the defenses, and the straight-through autograd function.

Gradients pass straight through (BPDA with the identity, as in Athalye et al. 2018): the backward
pass of each module returns the incoming gradient unchanged. That is the gradient an adaptive
attacker uses against these non-differentiable defenses; do not read it as the true derivative.
:class:`StraightThrough` gives the same gradient to any function: ``StraightThrough.apply(x, fn)``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from . import ops
from . import tables as _tables
from ._autograd import StraightThrough


class Quantize(nn.Module):
    """:func:`fdjpeg.quantize` as a module (all keyword arguments as there)."""

    def __init__(self, tables: ops.Tables, **options) -> None:
        super().__init__()
        self.tables = tables
        self.options = options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.quantize(x, self.tables, **self.options)


class FeatureDistillation(nn.Module):
    """Feature Distillation (:func:`fdjpeg.feature_distill`) with a straight-through gradient."""

    def __init__(self, table: Optional[_tables.TableLike] = None, passes: int = 1, threads: Optional[int] = None):
        super().__init__()
        self.table = _tables.feature_distillation() if table is None else _tables.validate(table)
        self.passes = passes
        self.threads = threads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.feature_distill(x, self.table, passes=self.passes, threads=self.threads)

    def extra_repr(self) -> str:
        return f"passes={self.passes}"


class JPEG(nn.Module):
    """A JPEG round trip (:func:`fdjpeg.jpeg`) with a straight-through gradient."""

    def __init__(self, quality: int = 75, subsampling: str = "420", threads: Optional[int] = None):
        super().__init__()
        _tables.ijg(quality)  # validates quality now rather than at the first batch
        self.quality = quality
        self.subsampling = subsampling
        self.threads = threads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.jpeg(x, self.quality, subsampling=self.subsampling, threads=self.threads)

    def extra_repr(self) -> str:
        return f"quality={self.quality}, subsampling={self.subsampling!r}"


__all__ = ["Quantize", "FeatureDistillation", "JPEG", "StraightThrough"]
