"""The block-quantization operations over numpy arrays and torch tensors.

This module is the one place that turns "a numpy array or a torch tensor, uint8 or float, HWC/NHWC
(numpy) or CHW/NCHW (torch), on the CPU or a GPU" into a call of the native core, and the result
back into the same type, dtype, layout and device. Torch tensors that require grad get the
straight-through (BPDA, identity) gradient.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from . import _core, _gpu, _pipeline
from . import tables as _tables
from ._checks import flag, integer
from ._pipeline import COLORS, MAX_PASSES, MAX_THREADS, SUBSAMPLINGS, PipelineSpec

_NUMPY_DTYPES = (np.uint8, np.float32, np.float64)

Tables = Union[_tables.TableLike, Sequence[_tables.TableLike]]


# ------------------------------------------------------------------------------------------------
# Public operations


def quantize(
    x: Any,
    tables: Tables,
    *,
    color: str = "ycbcr",
    subsampling: str = "444",
    level_shift: bool = True,
    passes: int = 1,
    dequant_tables: Optional[Tables] = None,
    threads: Optional[int] = None,
) -> Any:
    """Block-quantize images: the general operation under every defense of fdjpeg.

    For each image: optional RGB -> YCbCr (JFIF, as libjpeg) and level shift (-128), chroma
    subsampling (``"444"``, ``"422"``, ``"420"``; needs ``color="ycbcr"``), 8x8 orthonormal DCT,
    ``round(coef / Qc) * Qd`` per block, inverse DCT, libjpeg's triangle-filter upsampling, colour
    back, clamp (and round for uint8). Sizes that are not whole blocks are padded by edge
    replication and cropped back; an alpha channel passes through untouched.

    Args:
        x: numpy uint8 ``HWC``/``NHWC``/``HW`` (0..255) or float32/float64 in [0, 1]; or a torch
            tensor, uint8 or float, ``CHW``/``NCHW``/``HW``, any strides (channels-last too).
        tables: quantization steps Qc: one 8x8 table for every component, or a sequence of 2
            (luma, chroma) or 3 (one per component/channel).
        color: ``"ycbcr"`` to quantize luma/chroma as JPEG does, ``"none"`` for each channel as is.
        subsampling: chroma subsampling, ``"444"``, ``"422"`` or ``"420"``.
        level_shift: subtract 128 before the DCT (JPEG does; Feature Distillation does not).
        passes: apply the whole operation this many times (``passes=2`` is FD-2P), 1 to
            :data:`MAX_PASSES`.
        dequant_tables: steps Qd to multiply the rounded indices by; defaults to ``tables``.
        threads: worker threads, 1 to :data:`MAX_THREADS`; ``None`` uses all cores.

    Returns:
        The result, of the same type, dtype, shape, layout and device as ``x``.
    """
    quant = _table_set(tables, "tables")
    dequant = quant if dequant_tables is None else _table_set(dequant_tables, "dequant_tables")
    return run_pipeline(
        x,
        quant[None],
        dequant[None],
        color=color,
        subsampling=subsampling,
        level_shift=level_shift,
        passes=passes,
        threads=threads,
    )


def feature_distill(
    x: Any,
    table: Optional[_tables.TableLike] = None,
    *,
    passes: int = 1,
    threads: Optional[int] = None,
) -> Any:
    """Feature Distillation (Liu et al., CVPR 2019) as the authors' code does it.

    Each RGB channel on its own (no YCbCr, no level shift, no subsampling), 8x8 orthonormal DCT,
    ``round(coef / Q) * Q`` with the authors' table (25 on the 4x4 low band, 30 elsewhere) unless
    ``table`` is given, inverse DCT, clamp. ``passes=2`` applies it twice (FD-2P).
    """
    if table is not None:
        spec = _fd_spec(_table_set(table, "table"), passes)
    else:  # the cached spec for plain ints only (other values may not hash, or would key a second entry)
        spec = (_fd_default_spec if type(passes) is int else _fd_default_spec.__wrapped__)(passes)
    return run_spec(x, spec, threads)


def jpeg(
    x: Any,
    quality: int = 75,
    *,
    subsampling: str = "420",
    threads: Optional[int] = None,
) -> Any:
    """A standard JPEG round trip (encode + decode, without the entropy coding that is lossless):
    libjpeg's tables at ``quality``, YCbCr, level shift, chroma ``subsampling``."""
    plain = type(quality) is int and type(subsampling) is str
    spec = (_jpeg_spec if plain else _jpeg_spec.__wrapped__)(quality, subsampling)
    return run_spec(x, spec, threads)


def isa() -> str:
    """The instruction set the CPU kernels run with here (``"avx512vbmi"``, ``"avx512"``, ``"avx2"`` or ``"baseline"``)."""
    return _core.isa()


# ------------------------------------------------------------------------------------------------
# The shared path into the core


def run_pipeline(
    x: Any,
    quant_sets: np.ndarray,
    dequant_sets: np.ndarray,
    *,
    color: str,
    subsampling: str,
    level_shift: bool,
    passes: int,
    threads: Optional[int],
    block_tables: Optional[Callable[[int, int, int], np.ndarray]] = None,
) -> Any:
    """Run the core with K table sets (``K x 3 x 64`` arrays). ``block_tables(n, rows, cols)``, if
    given, returns the ``n x rows x cols`` uint8 map choosing a table set for each 8x8 block."""
    spec = pipeline_spec(
        quant_sets, dequant_sets, color=color, subsampling=subsampling, level_shift=level_shift, passes=passes,
        block_tables=block_tables,
    )
    return run_spec(x, spec, threads)


def pipeline_spec(
    quant_sets: np.ndarray,
    dequant_sets: np.ndarray,
    *,
    color: str,
    subsampling: str,
    level_shift: bool,
    passes: int,
    block_tables: Optional[Callable[[int, int, int], np.ndarray]] = None,
) -> PipelineSpec:
    """The checked parameters of a core call (see :func:`run_pipeline`)."""
    color_code = _choice(color, COLORS, "color")
    sub_code = subsampling_code(subsampling)
    if color_code == 0 and sub_code != 0:
        raise ValueError(f"subsampling={subsampling!r} needs color='ycbcr' (chroma is what gets subsampled)")
    return PipelineSpec(
        np.ascontiguousarray(quant_sets, dtype=np.float32).reshape(-1, 192),
        np.ascontiguousarray(dequant_sets, dtype=np.float32).reshape(-1, 192),
        color_code,
        sub_code,
        flag(level_shift, "level_shift"),
        integer(passes, "passes", 1, MAX_PASSES),
        block_tables,
    )


def run_spec(x: Any, spec: PipelineSpec, threads: Optional[int]) -> Any:
    """Run the core on ``x`` with a checked ``spec``."""
    thread_count = 0 if threads is None else integer(threads, "threads", 1, MAX_THREADS)

    def native(src: np.ndarray, dst: np.ndarray) -> None:
        # a float input outside [0, 1] raises the core's own ValueError, which names the range
        _core.quantize(
            src, dst, spec.quant, spec.dequant, spec.color, spec.subsampling, spec.level_shift, spec.passes,
            spec.block_map(*src.shape), thread_count,
        )

    return apply_to_images(x, native, spec)


def apply_to_images(
    x: Any, native: Callable[[np.ndarray, np.ndarray], None], spec: Optional[PipelineSpec] = None
) -> Any:
    """Call ``native(src, dst)`` on 4-D N x H x W x C views of ``x`` and of a new output of the
    same kind, and return that output; torch CUDA tensors go to the CUDA kernel with ``spec``.
    Dispatches on numpy / torch and gives torch inputs that require grad the straight-through
    gradient (:class:`fdjpeg.torch.StraightThrough`)."""
    if isinstance(x, np.ndarray):
        return _apply_numpy(x, native)
    if _pipeline.is_torch_tensor(x):
        import torch

        _pipeline.check_torch_images(x)
        device = x.device.type
        if device == "cuda" and spec is None:
            raise ValueError(f"this operation runs on the CPU only; got a tensor on {x.device}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"torch images must be on the CPU or a CUDA device, got device {x.device}")
        run = (lambda t: _gpu.apply_cuda(t, spec)) if device == "cuda" else (lambda t: _apply_torch(t, native))
        if x.requires_grad and torch.is_grad_enabled():
            from ._autograd import StraightThrough

            return StraightThrough.apply(x, run)
        return run(x)
    raise TypeError(
        f"expected a numpy array or a torch tensor, got {type(x).__module__}.{type(x).__name__}"
    )


# ------------------------------------------------------------------------------------------------
# numpy and torch (CPU) adapters


def _apply_numpy(x: np.ndarray, native: Callable[[np.ndarray, np.ndarray], None]) -> np.ndarray:
    if x.dtype not in _NUMPY_DTYPES:
        raise TypeError(f"numpy images must be uint8 (0..255) or float32/float64 (0..1), got {x.dtype}")
    if x.ndim == 2:
        view = x[None, :, :, None]
    elif x.ndim == 3:
        view = x[None]
    elif x.ndim == 4:
        view = x
    else:
        raise ValueError(f"numpy images must be HW, HWC or NHWC, got {x.ndim} dimensions (shape {x.shape})")
    _pipeline.check_geometry(view.shape, "HWC" if x.ndim < 4 else "NHWC", x.shape)
    out = np.empty(x.shape, dtype=x.dtype)
    native(view, out.reshape(view.shape))
    return out


def _apply_torch(x: Any, native: Callable[[np.ndarray, np.ndarray], None]) -> Any:
    import torch

    work = _pipeline.torch_operand(x)
    out = torch.empty_like(work)  # same memory format (channels-last stays channels-last)
    # the numpy views share the tensors' memory and strides; numpy rearranges views more cheaply
    src, dst = (_pipeline.nchw_to_nhwc(_pipeline.as_nchw_batch(t.numpy())) for t in (work, out))
    native(src, dst)
    return _pipeline.like_input(out, x)


# ------------------------------------------------------------------------------------------------
# Argument checks


@functools.lru_cache(maxsize=None)
def _fd_default_set() -> np.ndarray:
    return _readonly(_table_set(_tables.feature_distillation(), "table"))


# The specs of the plain calls, checked once: a small image's call costs tens of microseconds of
# argument checks otherwise. typed=True keeps 75.0 and True from finding the spec of 75 and 1, so
# they still meet the checks and their TypeError.
@functools.lru_cache(maxsize=None, typed=True)
def _fd_default_spec(passes: int) -> PipelineSpec:
    return _fd_spec(_fd_default_set(), passes)


def _fd_spec(steps: np.ndarray, passes: int) -> PipelineSpec:
    """Feature Distillation's settings with the 3 x 64 table set ``steps``."""
    return pipeline_spec(steps[None], steps[None], color="none", subsampling="444", level_shift=False, passes=passes)


@functools.lru_cache(maxsize=512, typed=True)
def _jpeg_spec(quality: int, subsampling: str) -> PipelineSpec:
    steps = ijg_table_set(_tables.check_quality(quality))
    return pipeline_spec(steps[None], steps[None], color="ycbcr", subsampling=subsampling, level_shift=True, passes=1)


@functools.lru_cache(maxsize=128)
def ijg_table_set(quality: int) -> np.ndarray:
    """libjpeg's (luma, chroma, chroma) tables at ``quality`` as a read-only 3 x 64 float32 set."""
    return _readonly(_table_set(list(_tables.ijg(quality)), "tables"))


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _table_set(tables: Tables, name: str) -> np.ndarray:
    """One table, or 1-3 tables -> 3 x 64 float32 steps (luma, chroma, chroma / channels 0, 1, 2)."""
    arr = _tables.as_steps(tables, name, "an 8x8 table or a sequence of 8x8 tables")
    if arr.shape in ((8, 8), (64,)):
        checked = [_tables.validate(arr, name)] * 3
    elif (arr.ndim == 3 and arr.shape[1:] == (8, 8)) or (arr.ndim == 2 and arr.shape[1] == 64):
        items = [_tables.validate(t, f"{name}[{i}]") for i, t in enumerate(arr)]
        if len(items) == 1:
            checked = items * 3
        elif len(items) == 2:
            checked = [items[0], items[1], items[1]]
        elif len(items) == 3:
            checked = items
        else:
            raise ValueError(f"{name} must hold 1, 2 (luma, chroma) or 3 tables, got {len(items)}")
    else:
        raise ValueError(f"{name} must be an 8x8 table or a sequence of 1-3 of them, got shape {arr.shape}")
    return np.stack(checked).reshape(3, 64).astype(np.float32)


def subsampling_code(value: Any) -> int:
    """The core's code for a subsampling name (``"444"``, ``"4:2:0"`` ...), or a ValueError."""
    return _choice(value, SUBSAMPLINGS, "subsampling")


def _choice(value: Any, options: dict, name: str) -> int:
    code = options.get(value.lower()) if isinstance(value, str) else None
    if code is not None:
        return code
    names = sorted(set(k for k in options if ":" not in k))
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {names}, got {value!r} ({type(value).__name__})")
    if value.lower() not in options:
        raise ValueError(f"{name} must be one of {names}, got {value!r}")
    return options[value.lower()]
