"""Type stubs of the native core (csrc/bindings.cpp)."""

from typing import Optional, Tuple

import numpy as np
import numpy.typing as npt

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
    """Run the pipeline from `input` into `output` (both N x H x W x C, any strides)."""

def padded_blocks(height: int, width: int, subsampling: int, subsampled: bool) -> Tuple[int, int]:
    """Size of the padded luma plane in 8x8 blocks (the shape of a block table map)."""

def isa() -> str:
    """Instruction set of the kernels in use."""

def _force_baseline(force: bool) -> None: ...
