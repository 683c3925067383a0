"""Fuzzing the native entry points over shapes, strides, dtypes and options: never a crash, always
either a clear error or an image that equals the result on a contiguous copy."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fdjpeg
from fdjpeg import _core

settings.register_profile("fdjpeg", max_examples=150, deadline=None)
settings.load_profile("fdjpeg")


@st.composite
def strided_images(draw):
    n = draw(st.integers(1, 3))
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    c = draw(st.sampled_from([1, 3, 4]))
    dtype = draw(st.sampled_from([np.uint8, np.float32, np.float64]))
    step_h = draw(st.integers(1, 3))
    step_w = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, h * step_h, w * step_w, c), dtype=np.uint8)
    if dtype != np.uint8:
        base = (base / 255.0).astype(dtype)
    view = base[:, ::step_h, ::step_w]
    if draw(st.booleans()):
        view = view[:, ::-1]
    return view


@given(
    x=strided_images(),
    color=st.sampled_from(["none", "ycbcr"]),
    subsampling=st.sampled_from(["444", "422", "420"]),
    passes=st.integers(1, 2),
    threads=st.integers(1, 3),
    quality=st.integers(1, 100),
)
def test_any_layout_gives_the_contiguous_result(x, color, subsampling, passes, threads, quality):
    if color == "none":
        subsampling = "444"
    t = fdjpeg.tables.ijg(quality)
    got = fdjpeg.quantize(x, t, color=color, subsampling=subsampling, passes=passes, threads=threads)
    want = fdjpeg.quantize(np.ascontiguousarray(x), t, color=color, subsampling=subsampling, passes=passes, threads=1)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_array_equal(got, want)
    if x.dtype != np.uint8:
        assert got.min() >= 0 and got.max() <= 1


@given(
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=6),
    dtype=st.sampled_from([np.uint8, np.int8, np.uint16, np.float16, np.float32, np.float64, np.complex64]),
    fill=st.sampled_from([0.0, 0.5, 1.0, -1.0, 300.0, np.nan]),
)
def test_arbitrary_arrays_raise_or_work(shape, dtype, fill):
    with np.errstate(invalid="ignore"):
        x = np.full(shape, fill).astype(dtype)
    try:
        y = fdjpeg.feature_distill(x)
    except (ValueError, TypeError):
        return
    assert y.shape == x.shape and y.dtype == x.dtype


@given(
    n=st.integers(0, 2), h=st.integers(0, 9), w=st.integers(0, 9), c=st.integers(0, 5),
    sets=st.integers(0, 3), color=st.integers(-1, 2), sub=st.integers(-1, 3), passes=st.integers(-1, 2),
)
def test_raw_native_call_never_crashes(n, h, w, c, sets, color, sub, passes):
    x = np.zeros((n, h, w, c), np.uint8)
    q = np.ones((sets, 192), np.float32)
    try:
        _core.quantize(x, np.zeros_like(x), q, q, color, sub, True, passes)
    except ValueError:
        pass
