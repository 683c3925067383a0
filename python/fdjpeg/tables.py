"""Quantization tables.

A table is a plain ``numpy.ndarray`` of shape ``(8, 8)`` and dtype float64 (the :data:`QuantTable`
type), in natural order: ``table[u, v]`` is the step for vertical frequency ``u`` and horizontal
frequency ``v`` (the order Pillow's ``qtables=`` takes, flattened row-major). Any 8x8 array-like of
positive steps can be passed where a table is expected.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

import numpy as np
import numpy.typing as npt

from ._checks import integer

QuantTable = npt.NDArray[np.float64]
"""An 8x8 float64 array of quantization steps, natural (row-major) order."""

TableLike = Union[QuantTable, Sequence[Sequence[float]]]

#: Smallest and largest step the core accepts.
MIN_STEP = 1e-3
MAX_STEP = 65535.0

# ITU-T T.81 Annex K, tables K.1 and K.2 (the IJG base tables).
IJG_LUMA_BASE: QuantTable = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float64,
)
IJG_CHROMA_BASE: QuantTable = np.array(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
    ],
    dtype=np.float64,
)


def validate(table: TableLike, name: str = "table") -> QuantTable:
    """Return ``table`` as an 8x8 float64 array, or raise ValueError/TypeError saying what is wrong."""
    arr = as_steps(table, name, "an 8x8 array")
    if arr.shape == (64,):
        arr = arr.reshape(8, 8)
    if arr.shape != (8, 8):
        raise ValueError(f"{name} must have shape (8, 8) (or 64 entries), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN or infinite steps")
    if arr.min() < MIN_STEP or arr.max() > MAX_STEP:
        raise ValueError(
            f"{name} steps must lie in [{MIN_STEP}, {MAX_STEP:g}], got min {arr.min():g}, max {arr.max():g}"
        )
    return arr.copy()


def as_steps(steps, name: str, what: str) -> np.ndarray:
    """``steps`` as a float64 array, or a TypeError unless they are real numbers (integer or float):
    complex steps would lose their imaginary part and bools would become steps of 0 and 1."""
    try:
        arr = np.asarray(steps)
    except (TypeError, ValueError) as exc:  # ragged nesting
        raise TypeError(f"{name} must be {what} of real numbers, got {type(steps).__name__}") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be {what} of real numbers (integer or float), got dtype {arr.dtype}")
    return arr.astype(np.float64)


def check_quality(quality: int) -> int:
    """``quality`` as an int in 1..100, or a TypeError/ValueError saying what was given."""
    return integer(quality, "quality", 1, 100)


def scale(base: TableLike, quality: int) -> QuantTable:
    """Scale a base table to a JPEG quality as libjpeg does (``jpeg_set_quality``, baseline).

    ``scale = 5000 / q`` for ``q < 50`` else ``200 - 2 q``; each entry becomes
    ``floor((base * scale + 50) / 100)`` clamped to 1..255.
    """
    q = check_quality(quality)
    factor = 5000 // q if q < 50 else 200 - 2 * q
    base_int = np.rint(validate(base, "base table")).astype(np.int64)
    return np.clip((base_int * factor + 50) // 100, 1, 255).astype(np.float64)


def ijg_luma(quality: int = 75) -> QuantTable:
    """libjpeg's luminance table at ``quality`` (what Pillow uses for ``quality=``)."""
    return scale(IJG_LUMA_BASE, quality)


def ijg_chroma(quality: int = 75) -> QuantTable:
    """libjpeg's chrominance table at ``quality``."""
    return scale(IJG_CHROMA_BASE, quality)


def ijg(quality: int = 75) -> tuple[QuantTable, QuantTable]:
    """``(luma, chroma)`` tables of standard JPEG at ``quality``."""
    return ijg_luma(quality), ijg_chroma(quality)


def band(low: float, high: float, radius: int) -> QuantTable:
    """Step ``low`` for frequencies with ``u + v <= radius``, ``high`` elsewhere.

    ``scale(band(1, 41, 4), quality)`` is the "DNN-oriented" band table seen in third-party
    Feature Distillation code.
    """
    if not 0 <= radius <= 14:
        raise ValueError(f"radius must be in 0..14, got {radius}")
    u, v = np.indices((8, 8))
    return validate(np.where(u + v <= radius, float(low), float(high)), "band table")


def feature_distillation(low: float = 25.0, high: float = 30.0, size: int = 4) -> QuantTable:
    """The Feature Distillation authors' table: ``low`` on the ``size x size`` lowest frequencies
    (u, v < 4), ``high`` on the other 48. Defaults 25 / 30 as in their code."""
    if not 1 <= size <= 8:
        raise ValueError(f"size must be in 1..8, got {size}")
    u, v = np.indices((8, 8))
    return validate(np.where((u < size) & (v < size), float(low), float(high)), "feature distillation table")


def from_statistics(
    images: Iterable[np.ndarray] | np.ndarray,
    *,
    color: str = "none",
    a: float = 255.0,
    k1: float = 9.75,
    t1: float = 20.0,
    b: float = 80.0,
    k2: float = 1.0,
    t2: float = 60.0,
    q_min: float = 5.0,
) -> QuantTable:
    """Data-derived, DNN-oriented table in the manner of DeepN-JPEG (Liu et al., DAC 2018).

    The standard deviation ``s`` of each of the 64 DCT coefficients is measured over all 8x8 blocks
    of ``images`` (uint8 HWC/NHWC or float in [0, 1]; with ``color="ycbcr"`` over the luma plane,
    otherwise over every channel), then mapped to a step by DeepN-JPEG's piecewise-linear rule:
    frequencies that vary more carry more of what a classifier uses and get finer steps::

        step = a - k1 * s   if s <= t1
             = b - k2 * s   if t1 < s <= t2
             = q_min        if s > t2

    rounded to whole steps and clamped to [q_min, a]. The defaults are the paper's constants
    (the rule is continuous at ``t1``).
    """
    if color not in ("none", "ycbcr"):
        raise ValueError(f"color must be 'none' or 'ycbcr', got {color!r}")
    if isinstance(images, np.ndarray):
        images = [images] if images.ndim <= 3 else list(images)
    total = np.zeros(64)
    total_sq = np.zeros(64)
    count = 0
    for img in images:
        blocks = _dct_blocks(_planes_for_statistics(np.asarray(img), color))
        total += blocks.sum(axis=0)
        total_sq += (blocks * blocks).sum(axis=0)
        count += blocks.shape[0]
    if count == 0:
        raise ValueError("from_statistics needs at least one image of 8x8 pixels or more")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0)).reshape(8, 8)
    step = np.where(std <= t1, a - k1 * std, np.where(std <= t2, b - k2 * std, q_min))
    return validate(np.clip(np.rint(step), q_min, a), "derived table")


def derived_table(train_images) -> QuantTable:
    """Feature Distillation table derived from clean training images (DeepN-JPEG's rule), given as
    uint8 N x H x W (grey) or N x H x W x C."""
    if train_images is None or len(train_images) == 0:
        raise ValueError("a derived table needs clean training images, and none were given")
    images = np.asarray(train_images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"training images must be N x H x W or N x H x W x C, got shape {images.shape}")
    return from_statistics(images, color="none")


def _planes_for_statistics(img: np.ndarray, color: str) -> np.ndarray:
    """Image -> stack of 2-D planes in 0..255 (level-shifted luma for ycbcr)."""
    if img.dtype == np.uint8:
        x = img.astype(np.float64)
    elif img.dtype in (np.float32, np.float64):
        if not np.isfinite(img).all():  # NaN statistics would silently give a table of q_min
            raise ValueError("images must hold finite values, got NaN or infinite values")
        x = img.astype(np.float64) * 255.0
    else:
        raise TypeError(f"images must be uint8 or float arrays, got {img.dtype}")
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise ValueError(f"each image must be H x W x C with C in (1, 3, 4), got shape {img.shape}")
    x = x[:, :, :3] if x.shape[2] == 4 else x
    if color == "ycbcr" and x.shape[2] == 3:
        luma = x @ np.array([0.299, 0.587, 0.114]) - 128.0
        return luma[None]
    return np.moveaxis(x, 2, 0)


def _dct_blocks(planes: np.ndarray) -> np.ndarray:
    """All whole 8x8 blocks of the planes -> (blocks, 64) orthonormal DCT coefficients."""
    c, h, w = planes.shape
    h8, w8 = h // 8 * 8, w // 8 * 8
    if h8 == 0 or w8 == 0:
        return np.zeros((0, 64))
    blocks = planes[:, :h8, :w8].reshape(c, h8 // 8, 8, w8 // 8, 8).transpose(0, 1, 3, 2, 4).reshape(-1, 8, 8)
    basis = dct_matrix()
    return (basis @ blocks @ basis.T).reshape(-1, 64)


def dct_matrix() -> np.ndarray:
    """The orthonormal 8-point DCT-II matrix ``C`` (``coef = C @ block @ C.T``), as JPEG uses."""
    k = np.arange(8)
    m = np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / 16) * 0.5
    m[0] = np.sqrt(1 / 8)
    return m
