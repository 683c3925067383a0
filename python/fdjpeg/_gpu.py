"""The CUDA back end: torch CUDA tensors to the CUDA module ``fdjpeg._cuda`` when it was built.

The kernel takes raw device pointers, shapes, element strides and the caller's current stream, so
nothing here links against libtorch and nothing waits for the GPU. The pipeline's parameters reach
this module as a :class:`fdjpeg._pipeline.PipelineSpec`, validated by ``ops.run_pipeline``.
"""

from __future__ import annotations

from typing import Any

from . import _pipeline

_DTYPE_NAMES = {"torch.uint8": "uint8", "torch.float32": "float32", "torch.float64": "float64"}


def cuda_module():
    """The CUDA extension module, or None if fdjpeg was built without a CUDA compiler."""
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _cuda


def apply_cuda(x: Any, spec: _pipeline.PipelineSpec) -> Any:
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
    import torch

    with torch.cuda.device(x.device):
        work = _pipeline.torch_operand(x)
        nchw = _pipeline.as_nchw_batch(work)
        n, c, h, w = nchw.shape
        out = torch.empty_like(work)  # same memory format (channels-last stays channels-last)
        out_nchw = _pipeline.as_nchw_batch(out)
        device = x.device.index if x.device.index is not None else torch.cuda.current_device()
        dtype = _DTYPE_NAMES[str(work.dtype)]
        block_map = spec.block_map(n, h, w, c)
        tables = (spec.quant, spec.dequant, spec.color, spec.subsampling, spec.level_shift, spec.passes, block_map)
        # Table sets, block map and the intermediate image of multi-pass subsampled runs come from
        # torch's caching allocator: freed after the call, the block is reused only in stream order.
        size = module.workspace_size(dtype, [n, h, w, c], *tables)
        workspace = torch.empty(size, dtype=torch.uint8, device=x.device) if size else None
        module.quantize(
            nchw.data_ptr(),
            out_nchw.data_ptr(),
            dtype,
            [n, h, w, c],
            list(_pipeline.nchw_to_nhwc(nchw).stride()),  # element strides in the kernel's N, H, W, C order
            list(_pipeline.nchw_to_nhwc(out_nchw).stride()),
            *tables,
            device,
            torch.cuda.current_stream(device).cuda_stream,
            workspace.data_ptr() if size else 0,
            size,
        )
    return _pipeline.like_input(out, x)
