"""Every kernel variant of the native core (baseline, AVX2, AVX-512, AVX-512 with VBMI) gives bit-identical results.

Each variant runs in its own process, chosen with FDJPEG_ISA (read once, at the first dispatch),
over real photos: Feature Distillation (passes 1-3), JPEG 4:2:0 / 4:2:2 / 4:4:4, stochastic local
quantization (per-block table maps), uint8 / float32 / float64, 1, 3 and 4 channels, odd sizes,
a strided view, a batch, and one image split across two threads; and noise and pure primaries at
the coarsest tables, whose samples overshoot 0..255 most before the clamp. A variant the CPU lacks
runs as the widest one it has below it, so on any machine the comparison covers what it can run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fdjpeg import _core

ISAS = ("baseline", "avx2", "avx512", "avx512vbmi")

_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import fdjpeg
    from fdjpeg import _core, datasets
    from fdjpeg.defenses import slq
    photos = datasets.sample_photos()
    out = {}

    def views(img):
        crop = img[:97, :147]  # odd sizes: partial blocks and MCUs; 19 blocks a row: 4 x 4 + 2 + 1
        yield "rgb", crop
        yield "grey", crop.mean(axis=2).round().astype(np.uint8)[..., None]
        alpha = (np.arange(crop.shape[0] * crop.shape[1]) % 251).astype(np.uint8).reshape(crop.shape[:2] + (1,))
        yield "rgba", np.concatenate([crop, alpha], axis=2)
        yield "strided", img[1:160:2, 3:300:3]

    for name in ("astronaut", "chelsea"):
        for view, x8 in views(photos[name]):
            for dtype in ("uint8", "float32", "float64"):
                x = x8 if dtype == "uint8" else (x8 / 255.0).astype(dtype)
                key = f"{name}/{view}/{dtype}"
                for passes in (1, 2, 3):
                    out[f"{key}/fd{passes}"] = fdjpeg.feature_distill(x, passes=passes, threads=1)
                if x.shape[2] == 1:
                    continue
                for sub in ("420", "422", "444"):
                    out[f"{key}/jpeg{sub}"] = fdjpeg.jpeg(x, 75, subsampling=sub, threads=1)
                for sub in ("420", "444"):
                    out[f"{key}/slq{sub}"] = slq.slq(x, subsampling=sub, seed=7, threads=1)
    batch = np.stack([photos["astronaut"][:120, :200], photos["coffee"][:120, :200]])
    out["batch/jpeg420"] = fdjpeg.jpeg(batch, 50, threads=2)
    big = photos["hubble_deep_field"][:501, :733]  # one image split across two threads
    out["threads2/jpeg420"] = fdjpeg.jpeg(big, 75, threads=2)
    out["threads2/fd2"] = fdjpeg.feature_distill(big, passes=2, threads=2)
    out["threads2/slq420"] = slq.slq(big, subsampling="420", seed=3, threads=2)
    # samples far outside 0..255 before the final clamp (the byte writes may saturate instead of
    # clamping): noise and pure primaries at the coarsest tables
    noise = np.random.default_rng(0).integers(0, 256, (61, 83, 3), dtype=np.uint8)
    primaries = np.zeros((64, 96, 3), np.uint8)
    for c in range(3):
        primaries[:, 32 * c : 32 * c + 32, c] = 255
    for label, img in (("noise", noise), ("primaries", primaries)):
        for q in (1, 10):
            for sub in ("420", "444"):
                out[f"{label}/q{q}/jpeg{sub}"] = fdjpeg.jpeg(img, q, subsampling=sub, threads=1)
        out[f"{label}/fd_step255"] = fdjpeg.quantize(img, np.full((8, 8), 255.0), color="none", level_shift=False)
    np.savez(sys.argv[1], **out)
    print(json.dumps(_core.isa()))
    """
)


def _env(isa):
    env = {k: v for k, v in os.environ.items() if k not in ("FDJPEG_FORCE_PORTABLE", "FDJPEG_ISA")}
    env["FDJPEG_ISA"] = isa
    return env


def _expected(isa):
    """What FDJPEG_ISA=isa gives here: the request, capped at the widest variant of this machine."""
    widest = ISAS.index(_core.isa()) if "FDJPEG_ISA" not in os.environ else len(ISAS) - 1
    return ISAS[min(ISAS.index(isa), widest)]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = {}
    for isa in ISAS:
        path = tmp_path_factory.mktemp(isa) / "out.npz"
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)], env=_env(isa), capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr
        out[isa] = (json.loads(done.stdout.strip().splitlines()[-1]), np.load(path))
    return out


@pytest.mark.parametrize("isa", ISAS)
def test_variant_is_chosen(results, isa):
    if "FDJPEG_ISA" not in os.environ and "FDJPEG_FORCE_PORTABLE" not in os.environ:
        assert results[isa][0] == _expected(isa)
    else:
        assert results[isa][0] in ISAS


@pytest.mark.parametrize("isa", ISAS[1:])
def test_variant_is_bit_identical_to_baseline(results, isa):
    _, base = results["baseline"]
    _, other = results[isa]
    assert sorted(base.files) == sorted(other.files) and len(base.files) > 150
    for key in base.files:
        a, b = base[key], other[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=key)  # bit for bit


def test_cpu_support_caps_the_request():
    """FDJPEG_ISA names a ceiling; unknown values are ignored, FDJPEG_FORCE_PORTABLE wins."""
    script = "import fdjpeg, numpy as np; fdjpeg.jpeg(np.zeros((8, 8, 3), np.uint8)); print(fdjpeg.isa())"
    widest = _core.isa() if "FDJPEG_ISA" not in os.environ else None
    for env, want in [({"FDJPEG_ISA": "sse9"}, widest), ({"FDJPEG_ISA": "avx512", "FDJPEG_FORCE_PORTABLE": "1"}, "baseline")]:
        full = _env("")
        full.pop("FDJPEG_ISA")
        full.update(env)
        done = subprocess.run([sys.executable, "-c", script], env=full, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        if want is not None:
            assert done.stdout.strip() == want


# ------------------------------------------------------------------------------------------------
# One image on several threads: each thread holds a ring of stripes over its band of rows


def test_bands_of_threads_match_one_thread_in_place_too():
    from fdjpeg import datasets
    from fdjpeg.defenses import slq

    img = datasets.sample_photos()["hubble_deep_field"][:861, :999]  # 54 stripes of 4:2:0 MCUs, odd edges
    for threads in (2, 3, 5):
        np.testing.assert_array_equal(
            fdjpeg_call(img, threads, "jpeg420"), fdjpeg_call(img, 1, "jpeg420"), err_msg=str(threads)
        )
        np.testing.assert_array_equal(slq.slq(img, subsampling="420", seed=1, threads=threads), slq.slq(img, subsampling="420", seed=1, threads=1))
    # In place, several passes: each pass reads what the previous one wrote, band boundaries included.
    q = np.concatenate([np.full(64, 20.0), np.full(128, 40.0)]).astype(np.float32)[None]
    one = img[None].copy()
    _core.quantize(one, one, q, q, 1, 2, True, 3, None, 1)
    for threads in (2, 4):
        many = img[None].copy()
        _core.quantize(many, many, q, q, 1, 2, True, 3, None, threads)
        np.testing.assert_array_equal(many, one, err_msg=str(threads))


def fdjpeg_call(img, threads, kind):
    import fdjpeg

    return fdjpeg.jpeg(img, 75, subsampling="420", threads=threads) if kind == "jpeg420" else fdjpeg.feature_distill(img, threads=threads)


_PEAK = textwrap.dedent(
    """
    import ctypes, json, sys
    import numpy as np
    from fdjpeg import _core, tables

    def status(key):  # kB
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

    h, w, threads, sub = (int(v) for v in sys.argv[1:5])
    fd = np.tile(tables.feature_distillation().astype(np.float32).ravel(), 3)[None]
    band = (np.arange(125 * w * 3, dtype=np.uint32) * 2654435761 >> 24).astype(np.uint8).reshape(125, w, 3)
    x = np.empty((1, h, w, 3), np.uint8)
    for y in range(0, h, 125):
        x[0, y : y + 125] = band[: h - y]
    out = np.ones_like(x)  # touched: its pages count before the call
    del band
    try:  # freed heap back to the system, so that the call's buffers show as new pages
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS := RSS now
    except OSError:
        print(json.dumps(None))
        sys.exit()
    before = status("VmRSS")
    _core.quantize(x, out, fd, fd, 1 if sub else 0, sub, bool(sub), 1, None, threads)
    print(json.dumps((status("VmHWM") - before) * 1024))
    """
)


def _extra_bytes(h, w, threads, sub):
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(h), str(w), str(threads), str(sub)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    extra = json.loads(done.stdout.strip().splitlines()[-1])
    if extra is None:
        pytest.skip("peak RSS cannot be reset here (/proc/self/clear_refs)")
    return extra


@pytest.mark.parametrize("sub", [2, 0])  # 4:2:0 (band boundaries made first) and 4:4:4
def test_memory_of_one_large_image_is_a_few_stripes_per_thread(sub):
    """A 12 MP image on 2 threads used to take whole-image float planes (137 MiB beyond its output)."""
    mib = 1 << 20
    big = _extra_bytes(3000, 4000, 2, sub)
    assert big < 16 * mib, big / mib
    # Independent of the image's height: the same width, a quarter of the rows.
    small = _extra_bytes(750, 4000, 2, sub)
    assert big - small < 2 * mib, (big / mib, small / mib)
