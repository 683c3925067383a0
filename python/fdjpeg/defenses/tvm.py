"""Total variance minimisation as Guo et al. (ICLR 2018, "Countering Adversarial Images using Input
Transformations") ran it, from facebookresearch's adversarial_image_defenses:

* ``lib/constants.py``: ``TVM_WEIGHT = 0.03``, ``PIXEL_DROP_RATE = 0.5``, ``TVM_METHOD = 'bregman'``;
* ``lib/transformations/tvm.py``, ``reconstruct``: every value of the [0, 1] image (each pixel and
  channel independently) is set to 0 with probability ``drop_rate`` (scikit-image's
  ``random_noise(img, 's&p', amount=drop_rate, salt_vs_pepper=0)``); the mask keeps the values
  that did not change (``|noisy - img| < 1e-6``, so a value that was already 0 counts as kept).
  Then ``minimize_tv_bregman(noisy, mask, weight=1 / TVM_WEIGHT, gsiter=10, eps=0.01,
  isotropic=True)`` with its default ``maxiter=100``;
* ``lib/transformations/_tv_bregman.patch``: their patch of scikit-image's split-Bregman solver
  (``_denoise_tv_bregman``) that fits only the kept values. Per outer iteration: ``gs_iter``
  lexicographic Gauss-Seidel sweeps of the u-subproblem (a kept value solves
  ``(weight + n lam) u = lam (z + sum of its n neighbours) + weight f``, a dropped one takes
  ``(z + sum of its neighbours) / 4``, 4 even at the border, as the patch writes it), then the
  shrinkage of (d, b) on forward differences (zero past the last row/column) with scikit-image's
  isotropic rule, the divergence term z, and the stop test ``rmse(u - u_previous) > eps``.
  ``lam = 2 weight``; channels are independent; the iterate starts at the dropped image.

:func:`tv_bregman_masked` is that solver in numpy: each Gauss-Seidel sweep is one sparse lower
triangular solve, ``(D - L) u_new = rhs + U u_old``, which is the lexicographic sweep exactly (up to
float rounding order); the shrinkage is whole-array. With a mask of all ones it solves the same ROF
problem as scikit-image's ``denoise_tv_bregman`` (whose border reflects the input instead of
Neumann differences).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Tuple, Union

import numpy as np

from .. import ops

TVM_WEIGHT = 0.03  # lib/constants.py (the solver's weight is 1 / TVM_WEIGHT)
PIXEL_DROP_RATE = 0.5  # lib/constants.py
MAX_ITER = 100  # minimize_tv_bregman's default maxiter
GS_ITER = 10  # reconstruct(): gsiter=10
EPS = 0.01  # reconstruct(): eps=0.01 (the function's own default is 0.001)

Seed = Union[None, int, np.random.Generator]


def _positive(value: Any, name: str, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Real if kind is float else numbers.Integral):
        raise TypeError(f"{name} must be {'a number' if kind is float else 'an integer'}, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return kind(value)


def pixel_dropout(img: np.ndarray, drop_rate: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """``(noisy, mask)``: each value of the float image set to 0 with probability ``drop_rate``
    (scikit-image's pepper noise), and the mask of values left unchanged, as ``reconstruct`` does."""
    dropped = rng.random(img.shape) < drop_rate
    noisy = np.where(dropped, 0.0, img)
    return noisy, np.abs(noisy - img) < 1e-6


def _sweep_matrices(mask: np.ndarray, weight: float, lam: float):
    """The lower-triangular ``D - L`` (CSR) of one lexicographic Gauss-Seidel sweep over
    ``mask`` (C x H x W), and the per-value coefficient of the neighbours (lam kept, 1 dropped)."""
    from scipy import sparse

    c, h, w = mask.shape
    n = mask.size
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    neighbours = (rows > 0).astype(np.float64) + (rows < h - 1) + (cols > 0) + (cols < w - 1)
    coef = np.where(mask, lam, 1.0)
    diag = np.where(mask, weight + neighbours * lam, 4.0)
    idx = np.arange(n).reshape(mask.shape)
    up = np.broadcast_to(rows > 0, mask.shape)
    left = np.broadcast_to(cols > 0, mask.shape)
    r = np.concatenate([idx.ravel(), idx[up], idx[left]])
    k = np.concatenate([idx.ravel(), idx[up] - w, idx[left] - 1])
    v = np.concatenate([diag.ravel(), -coef[up], -coef[left]])
    lower = sparse.csr_matrix((v, (r, k)), shape=(n, n))
    lower.sort_indices()
    return lower, coef


def tv_bregman_masked(
    image: np.ndarray, mask: np.ndarray, weight: float, max_iter: int = MAX_ITER, gs_iter: int = GS_ITER,
    eps: float = 0.001, isotropic: bool = True,
) -> np.ndarray:
    """Split-Bregman TV reconstruction fitting only the values where ``mask`` is true (Guo et al.'s
    patched ``_denoise_tv_bregman``; see the module). ``image``: float H x W x C (or H x W),
    ``mask``: the same shape. Returns float64 of the same shape (not clipped)."""
    from scipy.sparse.linalg import splu

    image = np.asarray(image, dtype=np.float64)
    mask = np.asarray(mask)
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be H x W or H x W x C, got shape {image.shape}")
    weight = _positive(weight, "weight")
    max_iter, gs_iter = _positive(max_iter, "max_iter", int), _positive(gs_iter, "gs_iter", int)
    eps = _positive(eps, "eps")
    f = np.moveaxis(np.atleast_3d(image), -1, 0).copy()  # C x H x W: each channel is independent
    kept = np.moveaxis(np.atleast_3d(mask.astype(bool)), -1, 0)
    lam = 2 * weight
    lower, coef = _sweep_matrices(kept, weight, lam)
    # a triangular matrix in its natural order factors without fill or pivoting: each sweep is
    # then one compiled forward substitution
    sweep = splu(lower.tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0).solve
    data = np.where(kept, weight * f, 0.0)
    u = f.copy()
    dx, dy, bx, by, z = (np.zeros_like(f) for _ in range(5))
    ux, uy = np.zeros_like(f), np.zeros_like(f)
    uprev = f.copy()
    i, rmse = 0, math.inf
    while i < max_iter and rmse > eps:
        rhs_fixed = coef * z + data
        for _ in range(gs_iter):
            upper = np.zeros_like(u)  # the neighbours not yet updated in this sweep
            upper[:, :-1, :] += u[:, 1:, :]
            upper[:, :, :-1] += u[:, :, 1:]
            u = sweep((rhs_fixed + coef * upper).ravel()).reshape(f.shape)
        ux[:, :, :-1] = u[:, :, 1:] - u[:, :, :-1]
        uy[:, :-1, :] = u[:, 1:, :] - u[:, :-1, :]
        if isotropic:
            s = np.sqrt((ux + bx) ** 2 + (uy + by) ** 2)
            dx = s * lam * (ux + bx) / (s * lam + 1)
            dy = s * lam * (uy + by) / (s * lam + 1)
        else:
            dx = _shrink(ux + bx, 1 / lam)
            dy = _shrink(uy + by, 1 / lam)
        bx += ux - dx
        by += uy - dy
        z = -dx - dy + bx + by
        z[:, 1:, :] += dy[:, :-1, :] - by[:, :-1, :]
        z[:, :, 1:] += dx[:, :, :-1] - bx[:, :, :-1]
        rmse = math.sqrt(np.mean((u - uprev) ** 2))
        uprev = u
        i += 1
    out = np.moveaxis(u, 0, -1)
    return out.reshape(image.shape)


def _shrink(s: np.ndarray, t: float) -> np.ndarray:
    return np.where(s > t, s - t, np.where(s < -t, s + t, 0.0))


class TVMinimization:
    """Guo et al.'s TVM defense: random pixel dropout, then the masked split-Bregman TV fit.

    Args:
        drop_rate: probability that a value is dropped (``PIXEL_DROP_RATE``, 0.5: keep 0.5).
        weight: the TV weight of their constants (``TVM_WEIGHT``, 0.03); the solver runs at
            ``1 / weight`` as ``reconstruct`` passes it.
        max_iter, gs_iter, eps: the solver's outer iterations, Gauss-Seidel sweeps per iteration
            and stop tolerance (100, 10, 0.01 as they ran it).
        seed: an int, a ``numpy.random.Generator`` (used as is) or None (fresh entropy).

    Images are numpy uint8/float NHWC/HWC or torch (the same kind out); floats in [0, 1]. The
    result is clipped to [0, 1] (uint8: rounded), which their float output was not.
    """

    random = True
    differentiable = False  # adaptive attacks take it as the identity (BPDA)

    def __init__(self, drop_rate: float = PIXEL_DROP_RATE, weight: float = TVM_WEIGHT, *, max_iter: int = MAX_ITER,
                 gs_iter: int = GS_ITER, eps: float = EPS, seed: Seed = None) -> None:
        if isinstance(drop_rate, bool) or not isinstance(drop_rate, numbers.Real):
            raise TypeError(f"drop_rate must be a number in [0, 1), got {drop_rate!r}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.drop_rate = float(drop_rate)
        self.weight = _positive(weight, "weight")
        self.max_iter = _positive(max_iter, "max_iter", int)
        self.gs_iter = _positive(gs_iter, "gs_iter", int)
        self.eps = _positive(eps, "eps")
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    def defend_one(self, img: np.ndarray) -> np.ndarray:
        """One float H x W x C image in [0, 1] -> the float64 reconstruction (not clipped)."""
        noisy, mask = pixel_dropout(img, self.drop_rate, self.rng)
        return tv_bregman_masked(noisy, mask, 1 / self.weight, self.max_iter, self.gs_iter, self.eps)

    def __call__(self, x: Any) -> Any:
        def native(src: np.ndarray, dst: np.ndarray) -> None:
            for i in range(src.shape[0]):
                img = src[i] / 255.0 if src.dtype == np.uint8 else src[i].astype(np.float64)
                out = np.clip(self.defend_one(img), 0.0, 1.0)
                dst[i] = np.round(out * 255) if dst.dtype == np.uint8 else out

        return ops.apply_to_images(x, native)

    def __repr__(self) -> str:
        return f"TVMinimization(drop_rate={self.drop_rate}, weight={self.weight}, max_iter={self.max_iter})"


__all__ = ["TVMinimization", "tv_bregman_masked", "pixel_dropout", "TVM_WEIGHT", "PIXEL_DROP_RATE"]
