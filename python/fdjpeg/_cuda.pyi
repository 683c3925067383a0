"""Type stubs of the CUDA module (cuda/bindings.cpp); present only in builds with a CUDA compiler."""

from typing import Optional, Sequence

import numpy as np
import numpy.typing as npt

from ._core import InputRangeError as InputRangeError

def quantize(
    input_ptr: int,
    output_ptr: int,
    dtype: str,
    shape: Sequence[int],
    input_strides: Sequence[int],
    output_strides: Sequence[int],
    quant: npt.NDArray[np.float32],
    dequant: npt.NDArray[np.float32],
    color: int,
    subsampling: int,
    level_shift: bool,
    passes: int,
    block_tables: Optional[npt.NDArray[np.uint8]] = None,
    device: int = 0,
    stream: int = 0,
    workspace: int = 0,
    workspace_bytes: int = 0,
) -> None:
    """Enqueue the pipeline on `stream` of `device`: device pointers, N x H x W x C shape and
    element strides; host tables (K x 192) and block map; a device workspace of
    ``workspace_size()`` bytes (used on `stream` only). Does not wait for the GPU; the current
    device is the same afterwards.

    ``passes`` in [1, fdjpeg._core.MAX_PASSES]. Errors are raised as by the CPU core: ValueError
    (arguments), MemoryError, RuntimeError (no usable GPU, CUDA runtime errors)."""

def workspace_size(
    dtype: str,
    shape: Sequence[int],
    quant: npt.NDArray[np.float32],
    dequant: npt.NDArray[np.float32],
    color: int,
    subsampling: int,
    level_shift: bool,
    passes: int,
    block_tables: Optional[npt.NDArray[np.uint8]] = None,
) -> int:
    """Bytes of device workspace ``quantize`` needs for this call (often 0)."""

def occupancy(dtype: str, shape: Sequence[int], color: int, subsampling: int, level_shift: bool, device: int = 0) -> int:
    """CTAs of the kernel for such a call that fit on one multiprocessor of `device`
    (``cudaOccupancyMaxActiveBlocksPerMultiprocessor``)."""

def emulate(
    input: npt.NDArray[np.generic],
    output: npt.NDArray[np.generic],
    quant: npt.NDArray[np.float32],
    dequant: npt.NDArray[np.float32],
    color: int,
    subsampling: int,
    level_shift: bool,
    passes: int,
    block_tables: Optional[npt.NDArray[np.uint8]] = None,
    seed: Optional[int] = None,
    drop_barrier: int = -1,
) -> None:
    """Run the kernel's tile code on the CPU over numpy N x H x W x C arrays (for tests): 256
    emulated threads per tile, shared memory NaN at the start of each; with ``seed``, tiles,
    threads, warps and lanes in a shuffled order; ``drop_barrier`` (0, 1, 2) leaves out a barrier
    of the tile to show that a comparison catches it."""

def device_problem() -> str:
    """Why no GPU can be used ('' when one can)."""
