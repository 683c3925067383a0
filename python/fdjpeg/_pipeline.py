"""What the CPU back end (``ops``) and the CUDA back end (``_gpu``) share: the description of one
validated pipeline call, the check of an image batch's geometry and tensor kind, and the
NCHW <-> NHWC views.

A leaf module: it imports neither back end, and torch only inside the functions that receive a
tensor, so numpy users never load torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from . import _core

COLORS = {"none": 0, "ycbcr": 1}
SUBSAMPLINGS = {"444": 0, "422": 1, "420": 2, "4:4:4": 0, "4:2:2": 1, "4:2:0": 2}

#: Most passes one call may ask for (a call cannot be interrupted); the native core's limit.
MAX_PASSES: int = _core.MAX_PASSES
#: Most worker threads one call may ask for; the native core's limit.
MAX_THREADS: int = _core.MAX_THREADS


@dataclass(frozen=True)
class PipelineSpec:
    """Validated parameters of one pipeline call (built by ``ops.run_pipeline``).

    ``quant`` / ``dequant`` are K x 192 float32 arrays (K table sets of 3 components x 64 steps);
    ``color`` and ``subsampling`` are the codes of :data:`COLORS` / :data:`SUBSAMPLINGS`;
    ``block_tables(n, rows, cols)``, if given, returns the uint8 map choosing a set per 8x8 block.
    """

    quant: np.ndarray
    dequant: np.ndarray
    color: int
    subsampling: int
    level_shift: bool
    passes: int
    block_tables: Optional[Callable[[int, int, int], np.ndarray]] = None

    def block_map(self, n: int, h: int, w: int, c: int) -> Optional[np.ndarray]:
        """The ``n x rows x cols`` uint8 table-set map for a batch of that shape, or None."""
        if self.block_tables is None:
            return None
        rows, cols = _core.padded_blocks(h, w, self.subsampling, self.color == 1 and c != 1)
        return np.ascontiguousarray(self.block_tables(n, rows, cols), dtype=np.uint8)


def check_geometry(nhwc: Tuple[int, int, int, int], layout: str, given: tuple) -> None:
    """ValueError unless the N x H x W x C batch ``nhwc`` (of an input of shape ``given``, in
    ``layout``) is non-empty with 1, 3 or 4 channels."""
    n, h, w, c = nhwc
    if c not in (1, 3, 4):
        raise ValueError(
            f"images must have 1, 3 or 4 channels ({layout} layout), got {c} channels in shape {given}"
        )
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"images must be non-empty, got shape {given}")


# ------------------------------------------------------------------------------------------------
# NCHW <-> NHWC


def nchw_to_nhwc(x: Any) -> Any:
    """The N x H x W x C view of an N x C x H x W numpy array or torch tensor (no copy)."""
    return x.transpose(0, 2, 3, 1) if isinstance(x, np.ndarray) else x.permute(0, 2, 3, 1)


def nhwc_to_nchw(x: Any) -> Any:
    """The N x C x H x W view of an N x H x W x C numpy array or torch tensor (no copy)."""
    return x.transpose(0, 3, 1, 2) if isinstance(x, np.ndarray) else x.permute(0, 3, 1, 2)


def as_nchw_batch(t: Any) -> Any:
    """A torch tensor or numpy array, HW, CHW or NCHW, as an N x C x H x W view (no copy)."""
    return t.reshape(1, 1, *t.shape) if t.ndim == 2 else (t[None] if t.ndim == 3 else t)


def nchw_shape(shape: Tuple[int, ...]) -> Tuple[int, int, int, int]:
    """The N x C x H x W shape of an HW, CHW or NCHW shape."""
    return (1, 1, *shape) if len(shape) == 2 else ((1, *shape) if len(shape) == 3 else tuple(shape))


# ------------------------------------------------------------------------------------------------
# torch inputs


def is_torch_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch for anything else)."""
    if not type(x).__module__.startswith("torch"):
        return False
    import torch

    return isinstance(x, torch.Tensor)


def check_torch_images(x: Any) -> None:
    """TypeError/ValueError unless the torch tensor ``x`` holds images the back ends take: dense,
    uint8 or real floating point, HW/CHW/NCHW, 1, 3 or 4 channels, non-empty."""
    import torch

    if x.is_nested:
        raise TypeError(
            "nested tensors are not supported: pass images of one size as one dense NCHW tensor, "
            "or call once per image"
        )
    if x.layout != torch.strided:
        raise TypeError(f"torch images must be dense (strided) tensors, got layout {x.layout}; use .to_dense()")
    if x.is_complex() or not (x.dtype == torch.uint8 or x.is_floating_point()):
        raise TypeError(f"torch images must be uint8 (0..255) or floating point (0..1), got {x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"torch images must be HW, CHW or NCHW, got {x.ndim} dimensions (shape {tuple(x.shape)})")
    n, c, h, w = nchw_shape(tuple(x.shape))
    check_geometry((n, h, w, c), "CHW" if x.ndim < 4 else "NCHW", tuple(x.shape))


def torch_operand(x: Any) -> Any:
    """The tensor ``x`` (checked by :func:`check_torch_images`) detached, in a sample type the
    kernels compute in (half precision is widened to float32)."""
    import torch

    work = x.detach()
    if work.dtype not in (torch.uint8, torch.float32, torch.float64):
        work = work.to(torch.float32)
    return work


def like_input(out: Any, x: Any) -> Any:
    """The result tensor ``out`` in the dtype of the input ``x``."""
    return out if out.dtype == x.dtype else out.to(x.dtype)
