"""WebP + flip (Yin et al., Int. J. Intell. Syst. 35(10), 2020).

Flip the image left-right, then compress it with WebP (the authors' example: quality 60). The flip
moves the perturbation away from where the classifier's features expect it; WebP's loop filter
smooths what is left without JPEG's block artefacts. Compression runs in Pillow's libwebp, one
image per worker thread (Pillow releases the GIL while encoding and decoding).

Options beyond the paper: the flip axis, flipping after compression instead of before, and
flipping back at the end for tasks where geometry matters (detection, segmentation).
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
from PIL import Image

from .. import ops
from .._checks import flag, integer

AXES = ("horizontal", "vertical", "none")
ORDERS = ("before", "after")


def webp(x: Any, quality: int = 60, *, method: int = 4, threads: Optional[int] = None) -> Any:
    """WebP round trip (lossy encode at ``quality``, decode) of each image of ``x``.

    ``x``: numpy uint8 / float HWC, NHWC or HW, or torch uint8 / float CHW, NCHW or HW (CPU or
    CUDA; CUDA tensors go through host memory); 1, 3 or 4 channels. Float images are rounded to
    8 bits first (WebP stores 8 bits) and come back as floats in [0, 1]. Torch inputs that require
    grad get the straight-through (BPDA) gradient.
    """
    quality = _quality(quality)
    method = _method(method)
    workers = (os.cpu_count() or 1) if threads is None else threads
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if _is_cuda_tensor(x):
        return webp(x.cpu(), quality, method=method, threads=threads).to(x.device)

    def native(src: np.ndarray, dst: np.ndarray) -> None:
        if src.dtype != np.uint8:
            lo, hi = float(np.nanmin(src)), float(np.nanmax(src))
            if not (np.isfinite(src).all() and 0.0 <= lo and hi <= 1.0):
                raise ValueError(f"float images must hold finite values in [0, 1]; got min {lo:.6g}, max {hi:.6g}")

        def one(i: int) -> None:
            img = src[i]
            if img.dtype != np.uint8:
                img = np.round(img * 255.0).astype(np.uint8)
            out = webp_roundtrip(img, quality, method)
            dst[i] = out if dst.dtype == np.uint8 else out / np.float32(255.0)

        with ThreadPoolExecutor(max_workers=min(workers, src.shape[0])) as pool:
            list(pool.map(one, range(src.shape[0])))

    return ops.apply_to_images(x, native)


def webp_roundtrip(img: np.ndarray, quality: int, method: int = 4) -> np.ndarray:
    """One uint8 H x W x C image (C = 1, 3 or 4) through Pillow's WebP encoder and decoder."""
    channels = img.shape[2]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    buf = io.BytesIO()
    Image.fromarray(img[:, :, 0] if channels == 1 else np.ascontiguousarray(img), mode).save(
        buf, "WEBP", quality=quality, method=method
    )
    buf.seek(0)
    with Image.open(buf) as decoded:
        out = np.asarray(decoded.convert(mode))
    return out[:, :, None] if channels == 1 else out


def flip(x: Any, axis: str = "horizontal") -> Any:
    """Flip images left-right (``"horizontal"``) or top-bottom (``"vertical"``), any layout fdjpeg takes.
    numpy HW/HWC/NHWC: width is the last axis for HW, else the one before the channels; torch: the last."""
    if _check(axis, AXES, "axis") == "none":
        return x
    if isinstance(x, np.ndarray):
        width_axis = -1 if x.ndim == 2 else -2
        return np.flip(x, axis=width_axis if axis == "horizontal" else width_axis - 1)
    dim = -1 if axis == "horizontal" else -2
    return x.flip(dim)


def webp_flip(x: Any, quality: int = 60, *, axis: str = "horizontal", order: str = "before",
              flip_back: bool = False, method: int = 4, threads: Optional[int] = None) -> Any:
    """The WebP + flip defense: flip (``axis``) ``order="before"`` or ``"after"`` the WebP round
    trip at ``quality``; ``flip_back=True`` flips again at the end so the geometry is restored.
    Same kind of object out as in (numpy NHWC / torch NCHW, dtype, device)."""
    _check(order, ORDERS, "order")
    _check(axis, AXES, "axis")
    flip_back = flag(flip_back, "flip_back")
    y = webp(flip(x, axis) if order == "before" else x, quality, method=method, threads=threads)
    if order == "after":
        y = flip(y, axis)
    if flip_back:
        y = flip(y, axis)
    return np.ascontiguousarray(y) if isinstance(y, np.ndarray) else y


class WebPFlip:
    """:func:`webp_flip` with its parameters bound (the registry's defense object).

    ``differentiable``: on a torch tensor that requires grad, the flips carry their exact gradient
    and only the WebP round trip is straight-through, so adaptive attacks see the real geometry.
    """

    differentiable = True

    random = False

    def __init__(self, quality: int = 60, *, axis: str = "horizontal", order: str = "before",
                 flip_back: bool = False, method: int = 4, threads: Optional[int] = None) -> None:
        self.quality = _quality(quality)
        self.axis = _check(axis, AXES, "axis")
        self.order = _check(order, ORDERS, "order")
        self.flip_back = flag(flip_back, "flip_back")
        self.method = _method(method)
        self.threads = threads

    def __call__(self, x: Any) -> Any:
        return webp_flip(x, self.quality, axis=self.axis, order=self.order, flip_back=self.flip_back,
                         method=self.method, threads=self.threads)

    def __repr__(self) -> str:
        return (f"WebPFlip(quality={self.quality}, axis={self.axis!r}, order={self.order!r}, "
                f"flip_back={self.flip_back})")


try:  # torch is optional
    import torch as _torch
except ImportError:  # pragma: no cover
    _torch = None

if _torch is not None:

    class WebPFlipModule(_torch.nn.Module):
        """WebP + flip as a torch module: the flips are exact, the WebP round trip is straight-through."""

        def __init__(self, quality: int = 60, **options) -> None:
            super().__init__()
            self.defense = WebPFlip(quality, **options)

        def forward(self, x):
            return self.defense(x)

        def extra_repr(self) -> str:
            return repr(self.defense)


def _quality(quality: Any) -> int:
    return integer(quality, "WebP quality", 0, 100)


def _method(method: Any) -> int:
    return integer(method, "method (libwebp's speed/size trade-off)", 0, 6)


def _check(value: str, options: tuple, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(options)}, got {value!r}")
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def _is_cuda_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and getattr(x, "is_cuda", False)


__all__ = ["webp", "webp_roundtrip", "flip", "webp_flip", "WebPFlip", "AXES", "ORDERS"]
if _torch is not None:
    __all__.append("WebPFlipModule")
