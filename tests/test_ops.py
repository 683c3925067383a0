"""The native pipeline against independent references (numpy formulas, Pillow's libjpeg-turbo)."""

import numpy as np
import pytest

import fdjpeg
from fdjpeg import _core, tables

import reference

ODD_SIZES = [(1, 1), (7, 13), (17, 33), (224, 224), (223, 225), (300, 451)]


def crop(img, h, w):
    return np.ascontiguousarray(img[:h, :w])


# ------------------------------------------------------------------------------------------------
# Feature Distillation against the authors' formula


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_fd_matches_authors_formula_on_photos(photos, name):
    img = photos[name]
    got = fdjpeg.feature_distill(img).astype(np.float64)
    want = np.round(reference.feature_distill(img, tables.feature_distillation()))
    assert got.shape == img.shape
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("h,w", ODD_SIZES)
def test_fd_odd_sizes_pad_by_edge_replication(astronaut, h, w):
    img = crop(astronaut, h, w)
    got = fdjpeg.feature_distill(img).astype(np.float64)
    want = np.round(reference.feature_distill(img, tables.feature_distillation()))
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fd_float_in_float_out_not_rounded(astronaut, dtype):
    img = crop(astronaut, 100, 123)
    x = (img.astype(dtype) / 255).astype(dtype)
    got = fdjpeg.feature_distill(x)
    assert got.dtype == dtype and got.shape == x.shape
    want = reference.feature_distill(img, tables.feature_distillation()) / 255
    assert np.abs(got - want).max() <= 1 / 255
    # float output keeps sub-level precision: not all values sit on the 8-bit grid
    assert np.abs(got * 255 - np.round(got * 255)).max() > 0.01


def test_fd_batch_equals_images_one_by_one(photos):
    batch = np.stack([reference.pad_edges(p, 8)[:200, :296] for p in photos.values()])
    got = fdjpeg.feature_distill(batch)
    for i in range(len(batch)):
        np.testing.assert_array_equal(got[i], fdjpeg.feature_distill(batch[i]))


def test_fd_two_passes_is_fd_applied_twice(astronaut):
    once = fdjpeg.feature_distill(astronaut)
    np.testing.assert_array_equal(fdjpeg.feature_distill(astronaut, passes=2), fdjpeg.feature_distill(once))


def test_fd_custom_table(astronaut):
    q = tables.band(10, 60, 3)
    got = fdjpeg.feature_distill(astronaut, q).astype(np.float64)
    assert np.abs(got - np.round(reference.feature_distill(astronaut, q))).max() <= 1


# ------------------------------------------------------------------------------------------------
# JPEG against Pillow (libjpeg-turbo)


@pytest.mark.parametrize("quality", [30, 50, 75, 90])
@pytest.mark.parametrize("subsampling,limit", [("444", 0.5), ("420", 1.0), ("422", 1.0)])
def test_jpeg_matches_pillow(photos, quality, subsampling, limit):
    for name in ("astronaut", "chelsea", "coffee"):
        img = photos[name]
        got = fdjpeg.jpeg(img, quality, subsampling=subsampling).astype(np.float64)
        want = reference.pillow_jpeg(img, quality, subsampling).astype(np.float64)
        mad = np.abs(got - want).mean()
        assert mad < limit, f"{name} q{quality} {subsampling}: mean abs diff {mad:.3f}"


@pytest.mark.parametrize("h,w", [(5, 3), (17, 33), (223, 225)])
def test_jpeg_odd_sizes_match_pillow(astronaut, h, w):
    img = crop(astronaut, h, w)
    for subsampling, limit in (("444", 0.5), ("420", 1.0)):
        got = fdjpeg.jpeg(img, 75, subsampling=subsampling).astype(np.float64)
        want = reference.pillow_jpeg(img, 75, subsampling).astype(np.float64)
        assert np.abs(got - want).mean() < limit


def test_jpeg_grey_matches_pillow(astronaut):
    grey = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(astronaut).convert("L"))
    got = fdjpeg.jpeg(grey, 60).astype(np.float64)
    want = reference.pillow_jpeg(grey, 60, "420").astype(np.float64)
    assert got.shape == grey.shape
    assert np.abs(got - want).mean() < 0.5


def test_ycbcr_float_matches_exact_formula(astronaut):
    x = crop(astronaut, 64, 88).astype(np.float32) / 255
    luma, chroma = tables.ijg(50)
    got = fdjpeg.quantize(x, [luma, chroma], color="ycbcr", subsampling="444", level_shift=True)
    want = reference.jpeg_444_float(x, luma, chroma)
    assert np.abs(got - want).max() <= 1 / 255


def test_dequant_tables_scale_the_indices(astronaut):
    q = tables.feature_distillation()
    halved = fdjpeg.quantize(astronaut, q, dequant_tables=q / 2, color="none", level_shift=False)
    normal = fdjpeg.quantize(astronaut, q, color="none", level_shift=False)
    # dequantising with half the steps halves every coefficient, so the image becomes ~half as bright
    assert abs(halved.mean() - normal.mean() / 2) < 1.0


def test_rgba_alpha_passes_through(astronaut):
    rgba = np.dstack([astronaut, np.arange(astronaut.size // 3, dtype=np.uint32).reshape(astronaut.shape[:2]) % 256])
    rgba = rgba.astype(np.uint8)
    got = fdjpeg.jpeg(rgba, 50)
    np.testing.assert_array_equal(got[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(got[..., :3], fdjpeg.jpeg(np.ascontiguousarray(rgba[..., :3]), 50))


def test_two_dimensional_grey(astronaut):
    grey = np.ascontiguousarray(astronaut[..., 1])
    got = fdjpeg.feature_distill(grey)
    assert got.shape == grey.shape
    np.testing.assert_array_equal(got, fdjpeg.feature_distill(grey[:, :, None])[..., 0])


# ------------------------------------------------------------------------------------------------
# Layouts, strides, threads, instruction sets


def test_strided_views_equal_contiguous(astronaut):
    view = astronaut[::2, ::3]  # non-contiguous
    np.testing.assert_array_equal(fdjpeg.jpeg(view, 60), fdjpeg.jpeg(np.ascontiguousarray(view), 60))
    planar = np.ascontiguousarray(astronaut.transpose(2, 0, 1)).transpose(1, 2, 0)  # channel stride H*W
    np.testing.assert_array_equal(fdjpeg.feature_distill(planar), fdjpeg.feature_distill(astronaut))
    flipped = astronaut[::-1, ::-1]  # negative strides
    np.testing.assert_array_equal(fdjpeg.jpeg(flipped), fdjpeg.jpeg(np.ascontiguousarray(flipped)))


def test_thread_counts_agree(photos):
    img = photos["retina"]
    one = fdjpeg.jpeg(img, 50, threads=1)
    np.testing.assert_array_equal(one, fdjpeg.jpeg(img, 50, threads=2))
    np.testing.assert_array_equal(one, fdjpeg.jpeg(img, 50, threads=7))
    batch = np.stack([photos["astronaut"], photos["ihc"]])
    np.testing.assert_array_equal(fdjpeg.feature_distill(batch, threads=1), fdjpeg.feature_distill(batch, threads=3))


def test_portable_kernels_equal_vector_kernels(photos):
    img = photos["chelsea"]
    fast = [fdjpeg.jpeg(img, 75, subsampling="420"), fdjpeg.feature_distill(img), fdjpeg.feature_distill(img / 255.0)]
    _core._force_baseline(True)
    try:
        assert _core.isa() == "baseline"
        slow = [fdjpeg.jpeg(img, 75, subsampling="420"), fdjpeg.feature_distill(img), fdjpeg.feature_distill(img / 255.0)]
    finally:
        _core._force_baseline(False)
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def test_input_is_not_modified(astronaut):
    copy = astronaut.copy()
    fdjpeg.jpeg(astronaut)
    np.testing.assert_array_equal(copy, astronaut)


# ------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "x,error,match",
    [
        (np.zeros((4, 4, 2), np.uint8), ValueError, "1, 3 or 4 channels"),
        (np.zeros((4, 4, 5), np.uint8), ValueError, "1, 3 or 4 channels"),
        (np.zeros((2, 2, 4, 4, 3), np.uint8), ValueError, "5 dimensions"),
        (np.zeros((4,), np.uint8), ValueError, "1 dimensions"),
        (np.zeros((0, 4, 3), np.uint8), ValueError, "non-empty"),
        (np.zeros((0, 4, 4, 3), np.uint8), ValueError, "non-empty"),
        (np.zeros((4, 4, 3), np.int16), TypeError, "int16"),
        (np.zeros((4, 4, 3), bool), TypeError, "bool"),
        ([[1, 2], [3, 4]], TypeError, "numpy array or a torch tensor"),
    ],
)
def test_bad_images_raise_clear_errors(x, error, match):
    with pytest.raises(error, match=match):
        fdjpeg.feature_distill(x)


@pytest.mark.parametrize(
    "value,match",
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (1.5, "max 1.5"), (-0.1, "min -0.1")],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_images_outside_the_range_name_it(value, match, dtype):
    img = np.full((4, 4, 3), 0.5, dtype)
    img[1, 2, 0] = value
    # the core's own error type and message, passed on as they are: ops matches on no message text
    with pytest.raises(_core.InputRangeError, match=r"values in \[0, 1\]; got .*" + match):
        fdjpeg.feature_distill(img)
    assert issubclass(_core.InputRangeError, ValueError)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(tables=np.ones((7, 8))), ValueError, r"8x8 table.*got shape \(7, 8\)"),
        (dict(tables=np.zeros((8, 8))), ValueError, "steps must lie"),
        (dict(tables=np.full((8, 8), -3.0)), ValueError, "steps must lie"),
        (dict(tables=np.full((8, 8), np.nan)), ValueError, "NaN"),
        (dict(tables=[np.ones((8, 8))] * 4), ValueError, "1, 2"),
        (dict(tables=np.ones((8, 8)), color="lab"), ValueError, "color must be one of"),
        (dict(tables=np.ones((8, 8)), subsampling="411"), ValueError, "subsampling must be one of"),
        (dict(tables=np.ones((8, 8)), color="none", subsampling="420"), ValueError, "needs color='ycbcr'"),
        (dict(tables=np.ones((8, 8)), passes=0), ValueError, r"passes must be in 1\.\.64, got 0"),
        (dict(tables=np.ones((8, 8)), passes=1.5), TypeError, r"passes must be an integer in 1\.\.64, got 1.5"),
        (dict(tables=np.ones((8, 8)), passes=65), ValueError, r"passes must be in 1\.\.64, got 65"),
        (dict(tables=np.ones((8, 8)), passes=2**31), ValueError, r"passes must be in 1\.\.64, got 2147483648"),
        (dict(tables=np.ones((8, 8)), passes=True), TypeError, "passes must be an integer"),
        (dict(tables=np.ones((8, 8)), threads=-1), ValueError, r"threads must be in 1\.\.1024, got -1"),
        (dict(tables=np.ones((8, 8)), threads=2**31), ValueError, r"threads must be in 1\.\.1024, got 2147483648"),
        (dict(tables=np.ones((8, 8)), threads="4"), TypeError, r"threads must be an integer in 1\.\.1024, got '4'"),
        # bool("no") is True: only a real bool may choose the level shift
        (dict(tables=np.ones((8, 8)), level_shift="no"), TypeError, "level_shift must be True or False, got 'no'"),
        (dict(tables=np.ones((8, 8)), level_shift=0), TypeError, "level_shift must be True or False, got 0"),
        (dict(tables=np.ones((8, 8)), subsampling=["420"]), TypeError, r"subsampling must be a string.*got \['420'\]"),
        (dict(tables=np.ones((8, 8)), subsampling=444), TypeError, "subsampling must be a string.*got 444"),
        (dict(tables=np.ones((8, 8)), color=None), TypeError, "color must be a string.*got None"),
        (dict(tables=np.ones((8, 8), complex)), TypeError, "real numbers.*complex128"),
        (dict(tables=np.ones((8, 8), bool)), TypeError, "real numbers.*bool"),
        (dict(tables=[np.ones((8, 8)), np.ones((8, 8), complex)]), TypeError, "real numbers.*complex128"),
        (dict(tables="q"), TypeError, "8x8"),
    ],
)
def test_bad_options_raise_clear_errors(astronaut, kwargs, error, match):
    tables_arg = kwargs.pop("tables")
    with pytest.raises(error, match=match):
        fdjpeg.quantize(astronaut[:16, :16], tables_arg, **kwargs)


def test_option_limits_and_numpy_scalars_are_accepted(astronaut):
    img = astronaut[:16, :16]
    q = tables.feature_distillation()
    half = fdjpeg.ops.MAX_PASSES // 2
    many = fdjpeg.quantize(img, q, color="none", level_shift=np.False_, passes=fdjpeg.ops.MAX_PASSES, threads=np.int64(1))
    twice = fdjpeg.quantize(img, q, color="none", level_shift=False, passes=half)
    np.testing.assert_array_equal(many, fdjpeg.quantize(twice, q, color="none", level_shift=False, passes=half))
    wide = fdjpeg.quantize(img, q, color="none", level_shift=False, threads=fdjpeg.ops.MAX_THREADS)
    np.testing.assert_array_equal(wide, fdjpeg.quantize(img, q, color="none", level_shift=False, threads=1))


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda img: fdjpeg.jpeg(img, 75.0), TypeError, r"quality must be an integer in 1\.\.100, got 75\.0"),
        (lambda img: fdjpeg.jpeg(img, True), TypeError, "quality must be an integer.*got True"),
        (lambda img: fdjpeg.jpeg(img, 101), ValueError, r"quality must be in 1\.\.100, got 101"),
        (lambda img: fdjpeg.jpeg(img, 75, subsampling="411"), ValueError, "subsampling must be one of"),
        (lambda img: fdjpeg.jpeg(img, 75, subsampling=["420"]), TypeError, "subsampling must be a string"),
        (lambda img: fdjpeg.jpeg(img, 75, threads=0), ValueError, r"threads must be in 1\.\.1024, got 0"),
        (lambda img: fdjpeg.feature_distill(img, passes=2.0), TypeError, "passes must be an integer.*got 2.0"),
        (lambda img: fdjpeg.feature_distill(img, passes=True), TypeError, "passes must be an integer.*got True"),
        (lambda img: fdjpeg.feature_distill(img, passes=0), ValueError, r"passes must be in 1\.\.64, got 0"),
    ],
)
def test_plain_calls_check_each_call_although_their_settings_are_cached(astronaut, call, error, match):
    """jpeg() and feature_distill() keep their checked settings per quality / passes: a value equal
    to a cached one (75.0 == 75, True == 1) must still meet the checks, before and after the cache
    holds the valid one."""
    img = astronaut[:16, :16]
    fdjpeg.jpeg(img, 75), fdjpeg.jpeg(img, 1), fdjpeg.feature_distill(img, passes=1), fdjpeg.feature_distill(img, passes=2)
    for _ in range(2):
        with pytest.raises(error, match=match):
            call(img)


def test_plain_calls_equal_the_general_operation(astronaut):
    img = astronaut[:40, :56]
    luma, chroma = tables.ijg(80)
    general = fdjpeg.quantize(img, [luma, chroma], color="ycbcr", subsampling="422", level_shift=True)
    np.testing.assert_array_equal(fdjpeg.jpeg(img, 80, subsampling="4:2:2"), general)
    np.testing.assert_array_equal(fdjpeg.jpeg(img, np.int64(80), subsampling="422"), general)
    fd = tables.feature_distillation()
    np.testing.assert_array_equal(fdjpeg.feature_distill(img, passes=2), fdjpeg.quantize(img, fd, color="none", level_shift=False, passes=2))


@pytest.mark.parametrize("quality", [0, 101, 2.5, "75", True])
def test_bad_quality(astronaut, quality):
    with pytest.raises((ValueError, TypeError), match="quality"):
        fdjpeg.jpeg(astronaut[:8, :8], quality)


def test_native_entry_rejects_mismatched_buffers():
    a = np.zeros((1, 8, 8, 3), np.uint8)
    q = np.ones((1, 192), np.float32)
    with pytest.raises(ValueError, match="shapes differ"):
        _core.quantize(a, np.zeros((1, 8, 9, 3), np.uint8), q, q, 0, 0, False, 1)
    with pytest.raises(ValueError, match="sample types differ"):
        _core.quantize(a, np.zeros((1, 8, 8, 3), np.float32), q, q, 0, 0, False, 1)
    with pytest.raises(ValueError, match="read-only"):
        out = np.zeros_like(a)
        out.flags.writeable = False
        _core.quantize(a, out, q, q, 0, 0, False, 1)
    with pytest.raises(ValueError, match="unknown color"):
        _core.quantize(a, np.zeros_like(a), q, q, 7, 0, False, 1)
    with pytest.raises(ValueError, match="block table map must be"):
        _core.quantize(a, np.zeros_like(a), q, q, 0, 0, False, 1, np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="table set that does not exist"):
        _core.quantize(a, np.zeros_like(a), q, q, 0, 0, False, 1, np.full((1, 1, 1), 3, np.uint8))
