"""The native modules' own contract, independent of the Python layer above them: arrays that crossed
a process, integer arguments of any size, the float range check and its one exception class, and
the environment switch to the portable kernels."""

import functools
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fdjpeg
from fdjpeg import _core, tables

import reference

FD = np.ascontiguousarray(tables.feature_distillation(), dtype=np.float32)
FD_SET = np.tile(FD.ravel(), 3)[None]  # 1 x 192: the FD table for all three components


def _crossed(x):
    """``x`` as another process receives it: through pickle, with a dtype object numpy rebuilt."""
    return pickle.loads(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL))


def _samples(photo, dtype):
    crop = photo[:37, :45]
    return crop if dtype == np.uint8 else (crop / np.float64(255)).astype(dtype)


# ------------------------------------------------------------------------------------------------
# Arrays from another process


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_pickled_arrays_give_the_results_of_the_originals(astronaut, dtype):
    x = _samples(astronaut, dtype)
    y = _crossed(x)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(fdjpeg.feature_distill(y), fdjpeg.feature_distill(x))
    np.testing.assert_array_equal(fdjpeg.jpeg(y, 50, subsampling="422"), fdjpeg.jpeg(x, 50, subsampling="422"))
    np.testing.assert_array_equal(fdjpeg.quantize(y, FD), fdjpeg.quantize(x, FD))
    # The native entry on its own, with a pickled output buffer too.
    want = np.empty_like(x[None])
    _core.quantize(x[None], want, FD_SET, FD_SET, 1, 2, True, 1)
    got = _crossed(np.zeros_like(x[None]))
    _core.quantize(_crossed(x[None]), got, FD_SET, FD_SET, 1, 2, True, 1)
    np.testing.assert_array_equal(got, want)


def test_pickled_arrays_match_the_numpy_reference(astronaut):
    img = astronaut[:24, :40]
    want = reference.feature_distill(img, tables.feature_distillation()) / 255
    got = fdjpeg.feature_distill(_crossed(img / 255.0))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_non_native_byte_order_is_a_type_error():
    x = np.zeros((1, 8, 8, 3), ">f4")
    with pytest.raises(TypeError, match=r"non-native byte order"):
        _core.quantize(x, np.zeros((1, 8, 8, 3), np.float32), FD_SET, FD_SET, 0, 0, False, 1)
    with pytest.raises(TypeError, match=r"uint8, float32 or float64 samples, got int16"):
        _core.quantize(np.zeros((1, 8, 8, 3), np.int16), np.zeros((1, 8, 8, 3), np.int16), FD_SET, FD_SET, 0, 0, False, 1)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_multiprocessing_pool(photos, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    inputs = [_samples(photos["chelsea"], np.uint8), _samples(photos["coffee"], np.float32), _samples(photos["astronaut"], np.float64)]
    jpeg50 = functools.partial(fdjpeg.jpeg, quality=50, subsampling="420")
    with multiprocessing.get_context(method).Pool(2) as pool:
        fd = pool.map(fdjpeg.feature_distill, inputs)
        jp = pool.map(jpeg50, inputs)
    for x, a, b in zip(inputs, fd, jp):
        np.testing.assert_array_equal(a, fdjpeg.feature_distill(x))
        np.testing.assert_array_equal(b, jpeg50(x))


class _DefendedCrops:
    """A dataset whose items are defended in the DataLoader's workers."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return fdjpeg.feature_distill(self.images[i])


def test_spawn_dataloader(photos):
    torch = pytest.importorskip("torch")
    images = [_samples(photos[name], np.float32) for name in ("chelsea", "coffee", "astronaut", "rocket")]
    loader = torch.utils.data.DataLoader(
        _DefendedCrops(images), batch_size=None, num_workers=2, multiprocessing_context="spawn"
    )
    got = [t.numpy() for t in loader]
    assert len(got) == len(images)
    for x, y in zip(images, got):
        np.testing.assert_array_equal(y, fdjpeg.feature_distill(x))


def test_ray_object_store(photos):
    try:
        import ray
    except ImportError as exc:
        pytest.skip(f"needs Ray (pip install 'fdjpeg[ray]'): {exc}")
    x = _samples(photos["chelsea"], np.uint8)
    f = _samples(photos["coffee"], np.float64)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        defend = ray.remote(fdjpeg.feature_distill)
        refs = [ray.put(x), ray.put(f)]
        # The driver gets the store's read-only, rebuilt-dtype arrays back, and so do the workers.
        local = [fdjpeg.jpeg(ray.get(r), 50) for r in refs]
        remote = ray.get([defend.remote(r) for r in refs])
    finally:
        if started:
            ray.shutdown()
    np.testing.assert_array_equal(local[0], fdjpeg.jpeg(x, 50))
    np.testing.assert_array_equal(local[1], fdjpeg.jpeg(f, 50))
    np.testing.assert_array_equal(remote[0], fdjpeg.feature_distill(x))
    np.testing.assert_array_equal(remote[1], fdjpeg.feature_distill(f))


# ------------------------------------------------------------------------------------------------
# Integer arguments


def _call(**kw):
    x = np.zeros((1, 8, 8, 3), np.uint8)
    args = dict(color=0, subsampling=0, passes=1, threads=0)
    args.update(kw)
    _core.quantize(x, np.zeros_like(x), FD_SET, FD_SET, args["color"], args["subsampling"], False, args["passes"], None, args["threads"])


@pytest.mark.parametrize(
    "kw,error,match",
    [
        (dict(passes=2**31), ValueError, r"passes must be in \[1, 64\], got 2147483648"),
        (dict(passes=2**80), ValueError, r"passes must be in \[1, 64\], got 1208925819614629174706176"),
        (dict(passes=65), ValueError, r"passes must be in \[1, 64\], got 65"),
        (dict(passes=0), ValueError, r"passes must be in \[1, 64\], got 0"),
        (dict(threads=2**31), ValueError, r"threads must be in \[0, 1024\] \(0: one per core\), got 2147483648"),
        (dict(threads=-1), ValueError, r"threads must be in \[0, 1024\].*got -1"),
        (dict(threads=-(2**70)), ValueError, r"threads must be in \[0, 1024\]"),
        (dict(color=2**40), ValueError, r"unknown color code 1099511627776 \(0: none, 1: ycbcr\)"),
        (dict(subsampling=3), ValueError, r"unknown subsampling code 3 \(0: 444, 1: 422, 2: 420\)"),
        (dict(passes=1.0), TypeError, r"passes must be an integer, got 1.0 \(float\)"),
        (dict(threads=True), TypeError, r"threads must be an integer, got True \(bool\)"),
        (dict(passes="2"), TypeError, r"passes must be an integer, got '2' \(str\)"),
    ],
)
def test_integer_arguments_of_any_size_are_checked(kw, error, match):
    with pytest.raises(error, match=match):
        _call(**kw)


def test_integer_arguments_at_their_limits(astronaut):
    assert (_core.MAX_PASSES, _core.MAX_THREADS) == (64, 1024)
    _call(passes=np.int64(_core.MAX_PASSES), threads=np.uint16(_core.MAX_THREADS))
    x = astronaut[None, :16, :16]
    once, twice = np.empty_like(x), np.empty_like(x)
    _core.quantize(x, once, FD_SET, FD_SET, 0, 0, False, 1)
    _core.quantize(once, twice, FD_SET, FD_SET, 0, 0, False, 1)
    got = np.empty_like(x)
    _core.quantize(x, got, FD_SET, FD_SET, np.int8(0), np.uint8(0), False, np.int32(2), None, np.int64(3))
    np.testing.assert_array_equal(got, twice)


# ------------------------------------------------------------------------------------------------
# The float range: checked on the samples in their own type, reported whole by the core


def _native(x):
    x = x[None] if x.ndim == 3 else x
    _core.quantize(x, np.empty_like(x), FD_SET, FD_SET, 0, 0, False, 1)


def test_input_range_error_is_a_value_error():
    assert issubclass(_core.InputRangeError, ValueError)
    try:
        from fdjpeg import _cuda
    except ImportError:
        return
    assert _cuda.InputRangeError is _core.InputRangeError


@pytest.mark.parametrize("excess", [5e-8, 6e-8, 2**-52])
def test_float64_just_above_one_is_rejected(astronaut, excess):
    x = astronaut[:16, :24] / 255.0
    x[3, 5, 1] = 1 + excess
    with pytest.raises(_core.InputRangeError, match=r"max " + repr(1 + excess).replace(".", r"\.") + "$"):
        _native(x)
    with pytest.raises(_core.InputRangeError):
        fdjpeg.feature_distill(x)  # and through the Python layer


def test_float64_inside_the_range_but_not_representable_in_float32_is_accepted(astronaut):
    x = astronaut[:16, :24] / 255.0
    x[0, 0, 0] = 1 - 1e-12  # rounds to 1.0 in float32: inside [0, 1] in its own type
    x[0, 1, 0] = 1e-300  # rounds to 0 in float32
    _native(x)


def test_smallest_negative_float_is_rejected():
    x = np.full((8, 8, 3), 0.5, np.float64)
    x[1, 1, 1] = -5e-324
    with pytest.raises(_core.InputRangeError, match=r"min -5e-324, max 0\.5$"):
        _native(x)


@pytest.mark.parametrize(
    "dtype,values,match",
    [
        (np.float32, {(0, 0, 0): -0.1}, r"^float images must hold values in \[0, 1\]; got min -0\.1, max 0\.5$"),
        (np.float32, {(2, 3, 2): 1.0000001}, r"; got min 0\.5, max 1\.0000001$"),
        (np.float64, {(1, 1, 1): np.nan}, r"; got NaN or infinite values, min 0\.5, max 0\.5$"),
        (np.float32, {(1, 1, 1): np.inf, (2, 2, 2): 7.25}, r"; got NaN or infinite values, min 0\.5, max 7\.25$"),
        (np.float64, {(y, x, c): np.nan for y in range(8) for x in range(8) for c in range(3)}, r"; got NaN or infinite values$"),
    ],
)
def test_range_message_is_complete(dtype, values, match):
    x = np.full((8, 8, 3), 0.5, dtype)
    for where, v in values.items():
        x[where] = v
    with pytest.raises(_core.InputRangeError, match=match):
        _native(x)


def test_alpha_is_not_range_checked_and_passes_through():
    x = np.full((1, 8, 8, 4), 0.5, np.float32)
    x[..., 3] = 3.0
    out = np.empty_like(x)
    _core.quantize(x, out, FD_SET, FD_SET, 0, 0, False, 1)
    np.testing.assert_array_equal(out[..., 3], 3.0)


def test_in_place_call_reports_the_samples_it_was_given():
    x = np.full((1, 8, 8, 3), 0.5, np.float32)
    x[0, 4, 4, 0] = 2.5
    with pytest.raises(_core.InputRangeError, match=r"min 0\.5, max 2\.5$"):
        _core.quantize(x, x, FD_SET, FD_SET, 0, 0, False, 1)
    assert x[0, 4, 4, 0] == 2.5 and (x == 0.5).sum() == x.size - 1  # untouched


# ------------------------------------------------------------------------------------------------
# The portable kernels, forced from the environment


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import fdjpeg
    from fdjpeg import datasets
    from fdjpeg import _core
    out = {}
    photos = datasets.sample_photos()
    for name, img in sorted(photos.items()):
        crop = img[:97, :131]  # odd sizes: partial blocks and MCUs on both axes
        for dtype in ("uint8", "float32"):
            x = crop if dtype == "uint8" else (crop / np.float32(255)).astype(np.float32)
            out[f"{name}/{dtype}/fd"] = fdjpeg.feature_distill(x, threads=1)
            for sub in ("420", "422", "444"):
                out[f"{name}/{dtype}/jpeg{sub}"] = fdjpeg.jpeg(x, 75, subsampling=sub, threads=1)
    np.savez(sys.argv[1], **out)
    print(json.dumps(_core.isa()))
    """
)


def _run_child(tmp_path, env_update, tag):
    env = dict(os.environ)
    for key in ("FDJPEG_FORCE_PORTABLE", "FDJPEG_ISA"):
        env.pop(key, None)
    env.update(env_update)
    path = tmp_path / f"{tag}.npz"
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), np.load(path)


def test_environment_forces_the_portable_kernels_with_identical_results(tmp_path):
    default_isa, default = _run_child(tmp_path, {}, "default")
    assert default_isa == _core.isa()
    portable_isa, portable = _run_child(tmp_path, {"FDJPEG_FORCE_PORTABLE": "1"}, "portable")
    assert portable_isa == "baseline"
    assert sorted(default.files) == sorted(portable.files) and len(default.files) > 0
    for key in default.files:
        a, b = default[key], portable[key]
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=key)  # bit for bit


@pytest.mark.parametrize(
    "env,isa",
    [
        ({"FDJPEG_ISA": "baseline"}, "baseline"),
        ({"FDJPEG_FORCE_PORTABLE": "0"}, None),
        ({"FDJPEG_ISA": "avx512vbmi"}, None),  # the widest this machine has
        ({"FDJPEG_ISA": "avx512"}, "avx512" if _core.isa() == "avx512vbmi" else None),
        ({"FDJPEG_ISA": "avx2"}, "baseline" if _core.isa() == "baseline" else "avx2"),
    ],
)
def test_environment_values(env, isa):
    script = "import fdjpeg, numpy as np; fdjpeg.feature_distill(np.zeros((8, 8, 3), np.uint8)); print(fdjpeg.isa())"
    full = {k: v for k, v in os.environ.items() if k not in ("FDJPEG_FORCE_PORTABLE", "FDJPEG_ISA")}
    full.update(env)
    done = subprocess.run([sys.executable, "-c", script], env=full, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (isa or _core.isa())
