"""The CUDA pipeline: its tile code against the CPU core, and the public API on every device.

- emulation: the kernel's own tile code run on the CPU (``_cuda.emulate``) must give the CPU core's
  numbers exactly, over dtypes, layouts, odd sizes, subsamplings, passes, block tables, batches.
  These run wherever the CUDA module was built (CI compiles it without a GPU).
- no GPU: where no GPU is usable, a call says so clearly.
- every device (the ``device`` fixture): torch tensors through the public API against the numpy
  references of ``reference.py`` and Pillow, on the CPU here and on a GPU where there is one; on
  the GPU the result must also equal the CPU's exactly (half precision within a rounding).
- GPU only: the caller's stream, another device than the current one, bad pointers.
"""

import numpy as np
import pytest

import fdjpeg
from fdjpeg import _core, _gpu, ops, tables
from fdjpeg._pipeline import nchw_to_nhwc, nhwc_to_nchw

import reference
from reference import table_sets

torch = pytest.importorskip("torch")

cuda = _gpu.cuda_module()
needs_module = pytest.mark.skipif(cuda is None, reason="fdjpeg was built without the CUDA module")
gpu_usable = cuda is not None and torch.cuda.is_available() and cuda.device_problem() == ""

ODD_SIZES = [(1, 1), (7, 13), (17, 33), (64, 48), (223, 225)]
SUBSAMPLINGS = ["444", "422", "420"]

FD_SET = reference.fd_table_set()


def photo_batch(photos, n, h, w, channels, dtype, rng):
    """n real photo crops (tiled where the photo is smaller), N x H x W x C of `dtype`."""
    names = sorted(photos)
    imgs = []
    for i in range(n):
        p = photos[names[i % len(names)]]
        if p.ndim == 2:
            p = np.repeat(p[..., None], 3, axis=2)
        reps = (-(-h // p.shape[0]), -(-w // p.shape[1]), 1)
        imgs.append(np.tile(p, reps)[:h, :w, :3])
    x = np.stack(imgs)
    if channels == 1:
        x = x[..., :1]
    elif channels == 4:
        x = np.concatenate([x, rng.integers(0, 256, (n, h, w, 1), dtype=np.uint8)], axis=-1)
    return x if dtype == np.uint8 else (x / 255.0).astype(dtype)


def in_layout(x, layout):
    """The same N x H x W x C values held in another memory layout (a view of new storage)."""
    if layout == "nhwc":
        return np.ascontiguousarray(x)
    if layout == "nchw":
        return nchw_to_nhwc(np.ascontiguousarray(nhwc_to_nchw(x)))
    big = np.zeros((x.shape[0], x.shape[1] * 2, x.shape[2] + 3, x.shape[3] + 1), dtype=x.dtype)
    big[:, ::2, 1 : x.shape[2] + 1, : x.shape[3]] = x  # "strided": every other row, offset, padded
    return big[:, ::2, 1 : x.shape[2] + 1, : x.shape[3]]


def run_both(x, quant, *, color, subsampling, level_shift, passes=1, block_map=None, out_layout="nhwc"):
    """(CPU core result, emulated kernel result) for the same call."""
    sub = ops.SUBSAMPLINGS[subsampling]
    want = np.empty(x.shape, x.dtype)
    _core.quantize(x, want, quant, quant, color, sub, level_shift, passes, block_map, 1)
    got = in_layout(np.zeros(x.shape, x.dtype), out_layout)
    cuda.emulate(x, got, quant, quant, color, sub, level_shift, passes, block_map)
    return want, got


# ------------------------------------------------------------------------------------------------
# The kernel's tile code, emulated on the CPU, against the CPU core


@needs_module
@pytest.mark.parametrize("h,w", ODD_SIZES)
@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_emulated_jpeg_equals_cpu_core(photos, rng, dtype, h, w, subsampling):
    x = photo_batch(photos, 2, h, w, 3, dtype, rng)
    want, got = run_both(x, table_sets(50), color=1, subsampling=subsampling, level_shift=True)
    np.testing.assert_array_equal(got, want)


@needs_module
@pytest.mark.parametrize("passes", [1, 2, 3])
@pytest.mark.parametrize("setup", ["fd", "jpeg420", "jpeg422"])
def test_emulated_passes_equal_cpu_core(photos, rng, dtype, passes, setup):
    x = photo_batch(photos, 2, 37, 70, 3, dtype, rng)
    if setup == "fd":
        want, got = run_both(x, FD_SET, color=0, subsampling="444", level_shift=False, passes=passes)
    else:
        want, got = run_both(x, table_sets(30), color=1, subsampling=setup[4:], level_shift=True, passes=passes)
    np.testing.assert_array_equal(got, want)


@needs_module
@pytest.mark.parametrize("layout", ["nhwc", "nchw", "strided"])
@pytest.mark.parametrize("out_layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_emulated_layouts_and_channels_equal_cpu_core(photos, rng, layout, out_layout, channels):
    x = in_layout(photo_batch(photos, 3, 29, 45, channels, np.uint8, rng), layout)
    want, got = run_both(x, table_sets(75), color=1, subsampling="420", level_shift=True, out_layout=out_layout)
    np.testing.assert_array_equal(got, want)
    if channels == 4:
        np.testing.assert_array_equal(got[..., 3], x[..., 3])


@needs_module
@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_emulated_block_tables_equal_cpu_core(photos, rng, subsampling, dtype):
    x = photo_batch(photos, 3, 50, 77, 3, dtype, rng)
    rows, cols = _core.padded_blocks(50, 77, ops.SUBSAMPLINGS[subsampling], True)
    block_map = rng.integers(0, 3, (3, rows, cols), dtype=np.uint8)
    want, got = run_both(
        x, table_sets(10, 50, 90), color=1, subsampling=subsampling, level_shift=True, passes=2, block_map=block_map
    )
    np.testing.assert_array_equal(got, want)


@needs_module
def test_emulated_large_image_spans_many_tiles(photos, rng):
    # several tiles each way: the chroma ring around every tile is exercised on all four sides
    x = photo_batch(photos, 1, 300, 451, 3, np.uint8, rng)
    want, got = run_both(x, table_sets(20), color=1, subsampling="420", level_shift=True)
    np.testing.assert_array_equal(got, want)


@needs_module
def test_emulated_bad_arguments_are_value_errors(rng):
    x = rng.integers(0, 256, (1, 8, 8, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        cuda.emulate(x, np.empty_like(x), table_sets(50), table_sets(50), 1, 0, True, 1)
    x = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="block table map must be 1 x 1"):
        cuda.emulate(x, np.empty_like(x), table_sets(50), table_sets(50), 1, 0, True, 1, np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="table set that does not exist"):
        cuda.emulate(x, np.empty_like(x), table_sets(50), table_sets(50), 1, 0, True, 1, np.ones((1, 1, 1), np.uint8))
    with pytest.raises(TypeError, match="uint8, float32 or float64"):
        y = x.astype(np.int16)
        cuda.emulate(y, np.empty_like(y), table_sets(50), table_sets(50), 1, 0, True, 1)


# ------------------------------------------------------------------------------------------------
# Without a GPU: a clear error


@needs_module
@pytest.mark.skipif(gpu_usable, reason="a GPU is usable here")
def test_without_gpu_a_call_says_no_usable_gpu():
    assert cuda.device_problem().startswith("no usable GPU")
    with pytest.raises(RuntimeError, match="no usable GPU"):
        cuda.quantize(
            4096, 8192, "uint8", [1, 8, 8, 3], [192, 24, 3, 1], [192, 24, 3, 1],
            table_sets(50), table_sets(50), 1, 0, True, 1,
        )


# ------------------------------------------------------------------------------------------------
# Every device: torch tensors through the public API against the references


@needs_module
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
def test_the_kernel_can_use_the_gpu_torch_sees():
    # e.g. a driver too old for the CUDA runtime fdjpeg was built with fails here, not as skips
    assert cuda.device_problem() == ""


LAYOUTS = ["contiguous", "channels_last", "strided"]


def to_torch(x_nhwc, layout, device):
    """A torch N x C x H x W tensor on `device` holding x, in `layout`."""
    t = nhwc_to_nchw(torch.from_numpy(np.ascontiguousarray(x_nhwc))).contiguous()
    if layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    t = t.to(device)
    if layout == "strided":
        big = torch.zeros(t.shape[0], t.shape[1], t.shape[2] * 2, t.shape[3] + 5, dtype=t.dtype, device=device)
        big[:, :, ::2, 2 : t.shape[3] + 2] = t
        t = big[:, :, ::2, 2 : t.shape[3] + 2]
    return t


def to_numpy(t):
    """A torch N x C x H x W result as numpy N x H x W x C."""
    return nchw_to_nhwc(t.detach().cpu()).numpy()


def check_result(got, x, op):
    """``got = op(x)`` kept x's dtype, shape, device and memory format; on a GPU it equals the CPU's
    result exactly (the kernel runs the CPU core's arithmetic), within a rounding in half precision."""
    assert got.dtype == x.dtype and got.shape == x.shape and got.device == x.device
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert got.is_contiguous(memory_format=torch.channels_last)
    if x.device.type == "cuda":
        want = op(x.cpu())
        if x.dtype in (torch.float16, torch.bfloat16):
            torch.testing.assert_close(got.cpu(), want)  # the float32 results cast to half, within a rounding
        else:
            assert torch.equal(got.cpu(), want)


def within(got, want, dtype, float_tolerance=1 / 255):
    """Per-sample agreement with a float64 reference: a uint8 result is the reference rounded
    (off by one where the reference sits near a half), a float one is within ``float_tolerance``."""
    if np.dtype(dtype) == np.uint8:
        assert np.abs(got.astype(np.float64) - np.round(want)).max() <= 1
    else:
        assert np.abs(got.astype(np.float64) - want).max() <= float_tolerance


def fd_reference(x_nhwc):
    """The FD authors' formula on each image (0..255 float64, or float input scaled back to [0, 1])."""
    img = x_nhwc if x_nhwc.dtype == np.uint8 else np.round(x_nhwc.astype(np.float64) * 255)  # whole levels: exact ties
    want = np.stack([reference.feature_distill(i, tables.feature_distillation()) for i in img])
    return want if x_nhwc.dtype == np.uint8 else want / 255


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("h,w", ODD_SIZES)
def test_fd_matches_the_authors_formula(photos, rng, device, dtype, layout, h, w):
    x_np = photo_batch(photos, 2, h, w, 3, dtype, rng)
    if dtype != np.uint8:  # float input on the 8-bit grid, so the reference sees the same values
        x_np = (np.round(x_np * 255) / 255).astype(dtype)
    x = to_torch(x_np, layout, device)
    got = fdjpeg.feature_distill(x)
    check_result(got, x, fdjpeg.feature_distill)
    within(to_numpy(got), fd_reference(x_np), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("h,w", [(7, 13), (64, 48), (223, 225)])
def test_jpeg_444_matches_the_exact_formula(photos, rng, device, layout, h, w):
    x_np = photo_batch(photos, 2, h, w, 3, np.float64, rng)
    x = to_torch(x_np, layout, device)
    luma, chroma = tables.ijg(50)

    def op(t):
        return fdjpeg.quantize(t, [luma, chroma], color="ycbcr", subsampling="444", level_shift=True)

    got = op(x)
    check_result(got, x, op)
    within(to_numpy(got), np.stack([reference.jpeg_444_float(i, luma, chroma) for i in x_np]), np.float64)


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("quality", [30, 75])
@pytest.mark.parametrize("h,w", [(17, 33), (223, 225)])
def test_jpeg_matches_pillow(photos, rng, device, subsampling, quality, h, w):
    x_np = photo_batch(photos, 3, h, w, 3, np.uint8, rng)
    x = to_torch(x_np, "contiguous", device)

    def op(t):
        return fdjpeg.jpeg(t, quality, subsampling=subsampling)

    got = op(x)
    check_result(got, x, op)
    # libjpeg-turbo's integer DCT and upsampling differ from the exact ones by a fraction of a level
    want = np.stack([reference.pillow_jpeg(i, quality, subsampling) for i in x_np]).astype(np.float64)
    assert np.abs(to_numpy(got).astype(np.float64) - want).mean() < (0.5 if subsampling == "444" else 1.0)


@pytest.mark.parametrize("setup", ["fd", "jpeg420", "jpeg422"])
def test_passes_apply_the_operation_again(photos, rng, device, dtype, setup):
    x = to_torch(photo_batch(photos, 2, 37, 70, 3, dtype, rng), "contiguous", device)
    if setup == "fd":
        def op(t, passes=1):
            return fdjpeg.feature_distill(t, passes=passes)
    else:
        def op(t, passes=1):
            return fdjpeg.quantize(t, list(tables.ijg(40)), subsampling=setup[4:], passes=passes)

    got = op(x, passes=3)
    check_result(got, x, lambda t: op(t, passes=3))
    assert torch.equal(got, op(op(op(x))))


@pytest.mark.parametrize("shape", [(31, 40), (1, 17, 33), (3, 17, 33), (4, 17, 33), (5, 1, 16, 16), (2, 4, 31, 40)])
def test_ranks_and_channels(rng, device, shape):
    x = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8)).to(device)
    for op in (fdjpeg.feature_distill, lambda t: fdjpeg.jpeg(t, 50)):
        got = op(x)
        check_result(got, x, op)
        # each image of a batch, and a grey HW image, as a single HWC image through the numpy path
        images = x.reshape(-1, *x.shape[-3:]) if x.ndim >= 3 else x[None, None]
        for i in range(images.shape[0]):
            hwc = np.ascontiguousarray(images[i].cpu().numpy().transpose(1, 2, 0))
            np.testing.assert_array_equal(got.reshape(images.shape)[i].cpu().numpy().transpose(1, 2, 0), op(hwc))
        if x.ndim >= 3 and x.shape[-3] == 4:
            assert torch.equal(got[..., 3, :, :], x[..., 3, :, :])  # alpha passes through


def test_block_tables_choose_a_table_set_per_block(photos, rng, device, dtype):
    # Feature Distillation quantizes each 8x8 block on its own, so a map of table sets must give,
    # block by block, the result of the whole image quantized with that block's set
    x = to_torch(photo_batch(photos, 3, 50, 77, 3, dtype, rng), "contiguous", device)
    sets = np.stack([np.stack([t] * 3).reshape(3, 64) for t in (tables.band(5, 30, 3), tables.feature_distillation(), tables.band(40, 90, 1))])
    maps = {}

    def block_tables(n, rows, cols):  # the same map for every call of this shape
        return maps.setdefault((n, rows, cols), rng.integers(0, 3, (n, rows, cols), dtype=np.uint8))

    def run(t, quant=sets, chooser=block_tables):
        return ops.run_pipeline(
            t, quant, quant, color="none", subsampling="444", level_shift=False, passes=1, threads=None,
            block_tables=chooser,
        )

    got = run(x)
    check_result(got, x, run)
    (block_map,) = maps.values()
    per_pixel = torch.from_numpy(block_map).repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None, :50, :77]
    for k in range(len(sets)):
        whole = run(x, sets[k : k + 1], None)
        chosen = (per_pixel == k).expand_as(got).to(device)
        assert torch.equal(got[chosen], whole[chosen])


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_block_tables_with_subsampled_chroma(photos, rng, device, subsampling):
    x = to_torch(photo_batch(photos, 4, 61, 90, 3, np.uint8, rng), "contiguous", device)
    sets = table_sets(10, 50, 90).reshape(3, 3, 64)
    maps = {}

    def random_map(n, rows, cols):  # the same map for every call of this shape
        return maps.setdefault((n, rows, cols), rng.integers(0, 3, (n, rows, cols), dtype=np.uint8))

    def run(t, chooser=random_map):
        return ops.run_pipeline(
            t, sets, sets, color="ycbcr", subsampling=subsampling, level_shift=True, passes=1, threads=None,
            block_tables=chooser,
        )

    check_result(run(x), x, run)
    # a map that picks set 1 (quality 50) everywhere is JPEG at quality 50
    everywhere_50 = run(x, lambda n, rows, cols: np.ones((n, rows, cols), np.uint8))
    assert torch.equal(everywhere_50, fdjpeg.jpeg(x, 50, subsampling=subsampling))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(photos, rng, device, half):
    x = to_torch(photo_batch(photos, 2, 40, 56, 3, np.float32, rng), "contiguous", device).to(half)

    def op(t):
        return fdjpeg.jpeg(t, 75)

    got = op(x)
    check_result(got, x, op)
    torch.testing.assert_close(got, op(x.float()).to(half), rtol=0, atol=0)


def test_gradient_passes_straight_through(photos, rng, device):
    x = to_torch(photo_batch(photos, 2, 40, 56, 3, np.float32, rng), "channels_last", device).requires_grad_()
    got = fdjpeg.jpeg(x, 75)
    assert got.requires_grad
    weights = torch.randn_like(got)
    (got * weights).sum().backward()
    assert torch.equal(x.grad, weights)  # straight-through (BPDA)


# ------------------------------------------------------------------------------------------------
# GPU only


@pytest.mark.cuda
def test_gpu_kernel_runs_on_the_callers_stream(photos, rng):
    src = to_torch(photo_batch(photos, 4, 224, 224, 3, np.uint8, rng), "contiguous", "cuda")
    want = fdjpeg.jpeg(src, 50)
    x = torch.zeros_like(src)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        # the side stream is held by a sleep, then fills x: a kernel on that stream reads the
        # photos; one on any other stream would start at once and read zeros
        torch.cuda._sleep(1 << 30)
        x.copy_(src)
        got = fdjpeg.jpeg(x, 50)
        # the call returned without waiting for the GPU: the sleep (about half a second) is
        # still pending (a sync inside the call would have let it finish)
        pending = not side.query()
    side.synchronize()
    assert pending
    assert torch.equal(got, want)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_gpu_tensor_on_another_device_than_the_current_one(photos, rng):
    x = photo_batch(photos, 2, 40, 40, 3, np.uint8, rng)
    with torch.cuda.device(0):
        got = fdjpeg.jpeg(to_torch(x, "contiguous", "cuda:1"), 50)
    assert got.device == torch.device("cuda:1")
    assert torch.equal(got.cpu(), fdjpeg.jpeg(to_torch(x, "contiguous", "cpu"), 50))


@pytest.mark.cuda
def test_gpu_bad_pointer_is_a_clear_error():
    with pytest.raises(ValueError, match="not device memory"):
        host = np.zeros((1, 8, 8, 3), np.uint8)
        cuda.quantize(
            host.ctypes.data, host.ctypes.data, "uint8", [1, 8, 8, 3], [192, 24, 3, 1], [192, 24, 3, 1],
            table_sets(50), table_sets(50), 1, 0, True, 1, None, torch.cuda.current_device(),
        )
