"""Route torch CUDA tensors to the CUDA module ``fdjpeg._cuda`` when it was built."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def cuda_module():
    """The CUDA extension module, or None if fdjpeg was built without a CUDA compiler."""
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _cuda


def apply_cuda(x: Any, native: Callable[[np.ndarray, np.ndarray], None]) -> Any:
    raise ValueError(
        f"got a tensor on {x.device}, but this build of fdjpeg has no CUDA kernel; "
        "move it to the CPU with .cpu() or install fdjpeg built with a CUDA compiler"
    )
