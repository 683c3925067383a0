"""Guo et al.'s image quilting: the boundary cut against brute force, and quilting from a database
that holds every patch of the image gives the image back."""

import itertools

import numpy as np
import pytest

import fdjpeg
from fdjpeg import benchmarks

faiss = pytest.importorskip("faiss")
from fdjpeg.defenses import quilting  # noqa: E402


def brute_force_path(cost):
    rows, cols = cost.shape
    best = None
    for path in itertools.product(range(cols), repeat=rows):
        if all(abs(a - b) <= 1 for a, b in zip(path, path[1:])):
            total = sum(cost[r, c] for r, c in enumerate(path))
            if best is None or total < best[0]:
                best = (total, path)
    return best


@pytest.mark.parametrize("shape", [(5, 2), (6, 3), (4, 1), (3, 5)])
def test_min_error_path_is_the_brute_force_minimum(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.random(shape)
        total, path = brute_force_path(cost)
        got = quilting.min_error_path(cost)
        assert tuple(got) == path
        assert cost[np.arange(shape[0]), got].sum() == pytest.approx(total)


def test_keep_old_mask_is_left_of_and_above_the_cuts():
    rng = np.random.default_rng(0)
    old, new = rng.random((5, 5, 3)), rng.random((5, 5, 3))
    err = np.abs(old - new).sum(axis=2)
    col = quilting.min_error_path(err[:, :2])
    row = quilting.min_error_path(err[:2, :].T)
    keep = quilting.keep_old_mask(old, new, 2, top=True, left=True)
    for r in range(5):
        for c in range(5):
            assert keep[r, c] == (c < col[r] or r < row[c])
    assert not quilting.keep_old_mask(old, new, 2, top=False, left=False).any()


def exact_database(img):
    """A flat (exact) index holding every grid patch of ``img``."""
    patches = quilting.image_patches(img)
    index = faiss.IndexFlatL2(patches.shape[1])
    index.add(patches)
    return index, patches


@pytest.mark.parametrize("cut", quilting.CUTS)
def test_quilting_from_the_image_own_patches_gives_it_back(cut):
    img = benchmarks.images_for("224", 1)[0][:41, :35].astype(np.float32) / 255
    out = quilting.quilt(img, *exact_database(img), cut=cut)
    ys, xs = quilting.grid(*img.shape[:2])
    h, w = ys[-1] + quilting.PATCH_SIZE, xs[-1] + quilting.PATCH_SIZE
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[:h, :w], img[:h, :w])
    assert not out[h:].any() and not out[:, w:].any()  # past the last grid position: 0, as in their code


def test_defense_shapes_dtypes_and_random_top_k():
    rng = np.random.default_rng(2)
    x = (rng.random((2, 23, 26, 3)) * 255).astype(np.uint8)
    db = exact_database(x[0].astype(np.float32) / 255)
    defend = quilting.Quilting(db=db)
    assert not defend.random and not defend.differentiable
    y = defend(x)
    assert y.shape == x.shape and y.dtype == np.uint8
    np.testing.assert_array_equal(y[0, :20, :23], x[0, :20, :23])
    f = defend(x[1] / np.float32(255))
    assert f.dtype == np.float32 and f.shape == x[1].shape
    noisy = quilting.Quilting(k=3, db=db, seed=1)
    assert noisy.random
    np.testing.assert_array_equal(noisy(x), quilting.Quilting(k=3, db=db, seed=1)(x))
    with pytest.raises(ValueError, match="RGB"):
        defend(x[..., :1])
    with pytest.raises(ValueError, match="cut"):
        quilting.Quilting(cut="graph", db=db)
    with pytest.raises(TypeError, match="k"):
        quilting.Quilting(k=1.5, db=db)
    with pytest.raises(ValueError, match="num_patches"):
        fdjpeg.defenses.check("quilting", num_patches=10)


@pytest.mark.slow
def test_photo_database_is_deterministic_and_cached(tmp_path):
    a_index, a = quilting.database(51_200, 3, str(tmp_path / "a"), log=lambda line: None)
    b_index, b = quilting.database(51_200, 3, str(tmp_path / "b"), log=lambda line: None)
    np.testing.assert_array_equal(a, b)
    queries = a[:500].astype(np.float32) / 255
    np.testing.assert_array_equal(a_index.search(queries, 1)[1], b_index.search(queries, 1)[1])
    assert faiss.extract_index_ivf(a_index).nprobe == quilting.NPROBE
    c_index, c = quilting.database(51_200, 3, str(tmp_path / "a"), log=lambda line: pytest.fail("rebuilt"))
    np.testing.assert_array_equal(c, a)
    assert faiss.extract_index_ivf(c_index).nprobe == quilting.NPROBE
