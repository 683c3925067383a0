"""Type stubs of the native core (csrc/bindings.cpp)."""

from typing import Optional, Tuple

import numpy as np
import numpy.typing as npt

MAX_PASSES: int
"""Largest ``passes`` one call takes (64): a call cannot be interrupted once started."""

MAX_THREADS: int
"""Largest ``threads`` one call takes (1024); 0 means one per core."""

class InputRangeError(ValueError):
    """Float image samples outside [0, 1], NaN or infinite. The message is complete: whether NaN
    or infinite values occur, and the smallest and largest finite sample, printed in the samples'
    own type (shortest text that reads back as the same value). The CUDA module raises this class
    too (``fdjpeg._cuda.InputRangeError is fdjpeg._core.InputRangeError``)."""

def quantize(
    input: npt.NDArray[np.generic],
    output: npt.NDArray[np.generic],
    quant: npt.NDArray[np.float32],
    dequant: npt.NDArray[np.float32],
    color: int,
    subsampling: int,
    level_shift: bool,
    passes: int,
    block_tables: Optional[npt.NDArray[np.uint8]] = None,
    threads: int = 0,
) -> None:
    """Run the pipeline from `input` into `output` (both N x H x W x C, any strides).

    Samples are uint8, float32 or float64 in native byte order, compared by kind and size (so
    arrays that crossed a process are accepted). ``color``: 0 none, 1 ycbcr; ``subsampling``:
    0 444, 1 422, 2 420; ``passes`` in [1, MAX_PASSES]; ``threads`` in [0, MAX_THREADS], 0 for one
    per core. Integers of any size are accepted and checked.

    Raises TypeError (sample type, non-integer codes), ValueError (arguments out of range, shapes,
    tables), InputRangeError (float samples outside [0, 1] in their own type, NaN or infinite) and
    MemoryError."""

def padded_blocks(height: int, width: int, subsampling: int, subsampled: bool) -> Tuple[int, int]:
    """Size of the padded luma plane in 8x8 blocks (the shape of a block table map)."""

def isa() -> str:
    """Instruction set of the kernels in use: ``"avx512vbmi"``, ``"avx512"``, ``"avx2"`` or
    ``"baseline"``, the widest the CPU and OS support. ``FDJPEG_ISA`` (one of those names) caps it, and
    ``FDJPEG_FORCE_PORTABLE`` (any value but "" or "0") forces ``"baseline"``; both are read once,
    at the first call into the kernels, for the whole process."""

def _force_baseline(force: bool) -> None:
    """Use the portable kernels whatever the CPU (for tests)."""
