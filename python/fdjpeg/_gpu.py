"""Route torch CUDA tensors to the CUDA module ``fdjpeg._cuda`` when it was built.

The kernel takes raw device pointers, shapes, element strides and the caller's current stream, so
nothing here links against libtorch and nothing waits for the GPU. The pipeline's parameters reach
this module as a :class:`PipelineSpec`, built by ``ops.run_pipeline`` after it validated them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

_DTYPE_NAMES = {"torch.uint8": "uint8", "torch.float32": "float32", "torch.float64": "float64"}


@dataclass(frozen=True)
class PipelineSpec:
    """Validated parameters of one pipeline call (see ``ops.run_pipeline``).

    ``quant`` / ``dequant`` are K x 192 float32 arrays (K table sets of 3 components x 64 steps);
    ``color`` and ``subsampling`` are the codes of ``ops.COLORS`` / ``ops.SUBSAMPLINGS``;
    ``block_tables(n, rows, cols)``, if given, returns the uint8 map choosing a set per 8x8 block.
    """

    quant: np.ndarray
    dequant: np.ndarray
    color: int
    subsampling: int
    level_shift: bool
    passes: int
    block_tables: Optional[Callable[[int, int, int], np.ndarray]] = None


def cuda_module():
    """The CUDA extension module, or None if fdjpeg was built without a CUDA compiler."""
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _cuda


def apply_cuda(x: Any, spec: Any) -> Any:
    """Run the pipeline described by ``spec`` on the torch CUDA tensor ``x`` (HW, CHW or NCHW, any
    strides, channels-last included) and return a new tensor of the same dtype, shape, memory
    format and device, computed on the current stream of ``x``'s device without a host sync.

    Unlike the CPU path, float values outside [0, 1] are not reported (that check would need a
    host synchronisation); they are processed as they are and the result is clamped to [0, 1].
    """
    module = cuda_module()
    if module is None:
        raise ValueError(
            f"got a tensor on {x.device}, but this build of fdjpeg has no CUDA kernel; "
            "move it to the CPU with .cpu() or install fdjpeg built with a CUDA compiler"
        )
    if not isinstance(spec, PipelineSpec):
        raise ValueError(
            f"got a tensor on {x.device}, but this operation passed no pipeline parameters to the "
            "CUDA path (fdjpeg.ops.run_pipeline must hand a PipelineSpec to apply_to_images)"
        )
    import torch

    from . import _core
    from .ops import _check_geometry

    with torch.cuda.device(x.device):
        work = x.detach()
        if work.dtype not in (torch.uint8, torch.float32, torch.float64):
            work = work.to(torch.float32)  # half precision in, computed in float32, cast back
        nchw = _as_nchw(work)
        n, c, h, w = nchw.shape
        _check_geometry((n, h, w, c), "CHW" if x.ndim < 4 else "NCHW", tuple(x.shape))
        out = torch.empty_like(work)  # same memory format (channels-last stays channels-last)
        block_map = None
        if spec.block_tables is not None:
            rows, cols = _core.padded_blocks(h, w, spec.subsampling, spec.color == 1 and c != 1)
            block_map = np.ascontiguousarray(spec.block_tables(n, rows, cols), dtype=np.uint8)
        device = x.device.index if x.device.index is not None else torch.cuda.current_device()
        module.quantize(
            nchw.data_ptr(),
            _as_nchw(out).data_ptr(),
            _DTYPE_NAMES[str(work.dtype)],
            [n, h, w, c],
            _nhwc_strides(nchw),
            _nhwc_strides(_as_nchw(out)),
            spec.quant,
            spec.dequant,
            spec.color,
            spec.subsampling,
            bool(spec.level_shift),
            spec.passes,
            block_map,
            device,
            torch.cuda.current_stream(device).cuda_stream,
        )
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _as_nchw(t: Any) -> Any:
    return t.reshape(1, 1, *t.shape) if t.ndim == 2 else (t[None] if t.ndim == 3 else t)


def _nhwc_strides(nchw: Any) -> list:
    """Element strides of an N x C x H x W tensor in the kernel's N, H, W, C order."""
    s = nchw.stride()
    return [s[0], s[2], s[3], s[1]]
