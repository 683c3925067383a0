import numpy as np
import pytest

from fdjpeg import tables

import reference


@pytest.mark.parametrize("quality", [1, 10, 25, 49, 50, 51, 75, 90, 95, 100])
def test_ijg_tables_equal_libjpeg_via_pillow(quality):
    luma, chroma = reference.pillow_qtables(quality)
    np.testing.assert_array_equal(tables.ijg_luma(quality), luma)
    np.testing.assert_array_equal(tables.ijg_chroma(quality), chroma)


def test_feature_distillation_table():
    t = tables.feature_distillation()
    assert t.shape == (8, 8) and t.dtype == np.float64
    assert (t[:4, :4] == 25).all() and (t == 30).sum() == 48


def test_band_table():
    t = tables.band(1, 41, 4)
    u, v = np.indices((8, 8))
    assert ((t == 1) == (u + v <= 4)).all() and (t == 1).sum() == 15


def test_from_statistics_maps_busier_frequencies_to_finer_steps(photos):
    t = tables.from_statistics(list(photos.values())[:4])
    assert t.shape == (8, 8) and (t >= 5).all() and (t <= 255).all()
    # low frequencies vary most in natural images: DC and its neighbours get the finest steps
    assert t[0, 0] == t.min() and t[7, 7] > t[0, 1]


def test_from_statistics_follows_the_piecewise_rule():
    # A single block pattern with known coefficient spread: constant images of two levels give
    # DC std = 8 * 50 / 2 = 200 > t2 -> q_min; every AC std is 0 -> step a.
    imgs = [np.full((8, 8, 1), 50, np.uint8), np.full((8, 8, 1), 150, np.uint8)]
    t = tables.from_statistics(imgs)
    assert t[0, 0] == 5 and (t.ravel()[1:] == 255).all()


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.ones((4, 4)), "shape"),
        (np.zeros((8, 8)), "lie in"),
        (np.full((8, 8), np.inf), "NaN or infinite"),
        ("x", "8x8"),
        # numpy would drop the imaginary part, and turn bools into steps of 1 (and 0)
        (np.full((8, 8), 10 + 1j), "real numbers.*complex128"),
        (np.ones((8, 8), bool), "real numbers.*bool"),
        ([[True] * 8] * 8, "real numbers.*bool"),
    ],
)
def test_validate_rejects(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tables.validate(bad)


def test_validate_accepts_integer_and_float_steps():
    for steps in (np.arange(1, 65, dtype=np.uint8), np.arange(1, 65).reshape(8, 8), list(range(1, 65))):
        np.testing.assert_array_equal(tables.validate(steps), np.arange(1.0, 65.0).reshape(8, 8))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_statistics_rejects_non_finite_images(photos, bad, dtype):
    img = photos["astronaut"][:64, :64] / np.asarray(255, dtype)
    img[3, 5, 1] = bad
    with pytest.raises(ValueError, match="finite"):
        tables.from_statistics([photos["coffee"][:64, :64], img])
