"""Guo et al.'s TVM: the masked split-Bregman solver against a line-by-line transcription of their
patched scikit-image solver, and against scikit-image's own solver where no value is dropped."""

import math

import numpy as np
import pytest

import fdjpeg
from fdjpeg import benchmarks
from fdjpeg.defenses import tvm


def patched_solver_loops(image, mask, weight, max_iter, gs_iter, eps, isotropic):
    """_tv_bregman.patch (adversarial_image_defenses) as scalar loops, in its order of updates."""
    rows, cols, dims = image.shape
    u = image.copy()
    dx, dy, bx, by, z = (np.zeros_like(u) for _ in range(5))
    uprev, lam, rmse, i = image.copy(), 2 * weight, math.inf, 0
    while i < max_iter and rmse > eps:
        for _ in range(gs_iter):
            for k in range(dims):
                for r in range(rows):
                    for c in range(cols):
                        inner, nb = z[r, c, k], 0
                        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                            if 0 <= rr < rows and 0 <= cc < cols:
                                inner += u[rr, cc, k]
                                nb += 1
                        if mask[r, c, k]:
                            u[r, c, k] = (lam * inner + weight * image[r, c, k]) / (weight + nb * lam)
                        else:
                            u[r, c, k] = inner / 4
        rmse = 0.0
        for k in range(dims):
            for r in range(rows):
                for c in range(cols):
                    ux = 0.0 if c == cols - 1 else u[r, c + 1, k] - u[r, c, k]
                    uy = 0.0 if r == rows - 1 else u[r + 1, c, k] - u[r, c, k]
                    sx, sy = ux + bx[r, c, k], uy + by[r, c, k]
                    if isotropic:
                        s = math.sqrt(sx * sx + sy * sy)
                        dxx, dyy = s * lam * sx / (s * lam + 1), s * lam * sy / (s * lam + 1)
                    else:
                        t = 1 / lam
                        dxx = sx - t if sx > t else (sx + t if sx < -t else 0.0)
                        dyy = sy - t if sy > t else (sy + t if sy < -t else 0.0)
                    dx[r, c, k], dy[r, c, k] = dxx, dyy
                    bx[r, c, k] += ux - dxx
                    by[r, c, k] += uy - dyy
                    z[r, c, k] = -dxx - dyy + bx[r, c, k] + by[r, c, k]
                    if r > 0:
                        z[r, c, k] += dy[r - 1, c, k] - by[r - 1, c, k]
                    if c > 0:
                        z[r, c, k] += dx[r, c - 1, k] - bx[r, c - 1, k]
                    rmse += (u[r, c, k] - uprev[r, c, k]) ** 2
        rmse = math.sqrt(rmse / u.size)
        uprev = u.copy()
        i += 1
    return u


@pytest.mark.parametrize("isotropic", [True, False])
def test_masked_solver_equals_the_patched_loops(isotropic):
    rng = np.random.default_rng(3)
    noisy, mask = tvm.pixel_dropout(rng.random((7, 9, 2)), 0.5, rng)
    want = patched_solver_loops(noisy, mask, 1 / 0.03, 6, 3, 1e-12, isotropic)
    got = tvm.tv_bregman_masked(noisy, mask, 1 / 0.03, 6, 3, 1e-12, isotropic)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # their settings: stops on eps=0.01 after a few iterations
    want = patched_solver_loops(noisy, mask, 1 / 0.03, 100, 10, 0.01, True)
    np.testing.assert_allclose(tvm.tv_bregman_masked(noisy, mask, 1 / 0.03, eps=0.01), want, rtol=0, atol=1e-12)


def test_all_ones_mask_converges_to_scikit_image_solution():
    from skimage.restoration import denoise_tv_bregman

    img = benchmarks.images_for("224", 1)[0][100:140, 100:140] / 255.0
    weight = 1 / tvm.TVM_WEIGHT
    ref = denoise_tv_bregman(img, weight=weight, max_num_iter=5000, eps=1e-12, channel_axis=-1)
    got = tvm.tv_bregman_masked(img, np.ones(img.shape, bool), weight, max_iter=5000, gs_iter=1, eps=1e-12)
    # scikit-image's border reflects the input, this one takes Neumann differences: the same ROF
    # minimiser away from the border
    m = 14
    np.testing.assert_allclose(got[m:-m, m:-m], ref[m:-m, m:-m], rtol=0, atol=1e-5)


def test_pixel_dropout_masks_changed_values_only():
    rng = np.random.default_rng(0)
    img = rng.random((64, 64, 3))
    img[:8] = 0.0
    noisy, mask = tvm.pixel_dropout(img, 0.5, rng)
    assert mask[:8].all()  # a value that was already 0 is unchanged, so kept (as their |r| < 1e-6)
    assert abs((~mask[8:]).mean() - 0.5) < 0.02
    assert (noisy[~mask] == 0).all() and (noisy[mask] == img[mask]).all()


def test_defense_shapes_seeds_and_parameters():
    x = (np.random.default_rng(1).random((2, 24, 20, 3)) * 255).astype(np.uint8)
    defend = fdjpeg.defenses.build("tvm", seed=7)
    assert defend.random and not defend.differentiable
    y = defend(x)
    assert y.shape == x.shape and y.dtype == np.uint8
    np.testing.assert_array_equal(fdjpeg.defenses.build("tvm", seed=7)(x), y)
    f = fdjpeg.defenses.build("tvm", seed=7)(x[0] / np.float32(255))
    assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 1
    with pytest.raises(ValueError, match="drop_rate"):
        fdjpeg.defenses.check("tvm", drop_rate=1.5)
    with pytest.raises(TypeError, match="max_iter"):
        fdjpeg.defenses.check("tvm", max_iter=2.5)
    with pytest.raises(ValueError, match="mask shape"):
        tvm.tv_bregman_masked(np.zeros((4, 4)), np.ones((4, 5), bool), 1.0)
    with pytest.raises(ValueError, match="weight"):
        tvm.tv_bregman_masked(np.zeros((4, 4)), np.ones((4, 4), bool), -1.0)
