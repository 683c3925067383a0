"""The CUDA pipeline against the CPU core (the reference).

Three kinds of tests:
- emulation: the kernel's own tile code run on the CPU (``_cuda.emulate``) must give the CPU core's
  numbers exactly, over dtypes, layouts, odd sizes, subsamplings, passes, block tables, batches.
  These run wherever the CUDA module was built (CI compiles it without a GPU).
- no GPU: where no GPU is usable, a call says so clearly.
- GPU: torch CUDA tensors through the public API against the same call on the CPU; skipped
  without a GPU.
"""

import numpy as np
import pytest

import fdjpeg
from fdjpeg import _core, _gpu, ops, tables

torch = pytest.importorskip("torch")

cuda = _gpu.cuda_module()
needs_module = pytest.mark.skipif(cuda is None, reason="fdjpeg was built without the CUDA module")
gpu_usable = cuda is not None and torch.cuda.is_available() and cuda.device_problem() == ""
needs_gpu = pytest.mark.skipif(not gpu_usable, reason="needs a usable CUDA GPU and the CUDA module")

ODD_SIZES = [(1, 1), (7, 13), (17, 33), (64, 48), (223, 225)]
SUBSAMPLINGS = ["444", "422", "420"]
DTYPES = [np.uint8, np.float32, np.float64]


def table_sets(*qualities):
    """K x 192 float32 IJG table sets (luma, chroma, chroma) at the given qualities."""
    sets = []
    for q in qualities:
        luma, chroma = tables.ijg(q)
        sets.append(np.concatenate([luma.ravel(), chroma.ravel(), chroma.ravel()]))
    return np.asarray(sets, dtype=np.float32)


FD_SET = np.tile(tables.feature_distillation().ravel(), 3).astype(np.float32)[None]


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
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
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
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h,w", ODD_SIZES)
@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_emulated_jpeg_equals_cpu_core(photos, rng, dtype, h, w, subsampling):
    x = photo_batch(photos, 2, h, w, 3, dtype, rng)
    want, got = run_both(x, table_sets(50), color=1, subsampling=subsampling, level_shift=True)
    np.testing.assert_array_equal(got, want)


@needs_module
@pytest.mark.parametrize("dtype", DTYPES)
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
# On a GPU: torch CUDA tensors through the public API against the CPU


@needs_module
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
def test_the_kernel_can_use_the_gpu_torch_sees():
    # e.g. a driver too old for the CUDA runtime fdjpeg was built with fails here, not as skips
    assert cuda.device_problem() == ""


def to_torch(x_nhwc, layout, device):
    """A torch N x C x H x W tensor on `device` holding x, in `layout`."""
    t = torch.from_numpy(np.ascontiguousarray(x_nhwc)).permute(0, 3, 1, 2).contiguous()
    if layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    t = t.to(device)
    if layout == "strided":
        big = torch.zeros(t.shape[0], t.shape[1], t.shape[2] * 2, t.shape[3] + 5, dtype=t.dtype, device=device)
        big[:, :, ::2, 2 : t.shape[3] + 2] = t
        t = big[:, :, ::2, 2 : t.shape[3] + 2]
    return t


def assert_close_to_cpu(got, want, dtype):
    assert got.device.type == "cuda" and got.dtype == want.dtype and got.shape == want.shape
    diff = (got.cpu().double() - want.double()).abs().max().item()
    assert diff <= (1 if dtype == np.uint8 else 1 / 255 + 1e-6), diff


OPERATIONS = {
    "fd": lambda x: fdjpeg.feature_distill(x),
    "fd2": lambda x: fdjpeg.feature_distill(x, passes=2),
    "jpeg420": lambda x: fdjpeg.jpeg(x, 50),
    "jpeg422": lambda x: fdjpeg.jpeg(x, 75, subsampling="422"),
    "jpeg444": lambda x: fdjpeg.jpeg(x, 90, subsampling="444"),
    "jpeg420x2": lambda x: fdjpeg.quantize(x, list(tables.ijg(40)), subsampling="420", passes=2),
}


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("h,w", ODD_SIZES)
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_gpu_matches_cpu(photos, rng, dtype, layout, h, w, op):
    x = photo_batch(photos, 3, h, w, 3, dtype, rng)
    cpu = to_torch(x, "contiguous", "cpu")
    gpu = to_torch(x, layout, "cuda")
    got = OPERATIONS[op](gpu)
    assert_close_to_cpu(got, OPERATIONS[op](cpu), dtype)
    if layout == "channels_last":
        assert got.is_contiguous(memory_format=torch.channels_last)


@needs_gpu
@pytest.mark.parametrize("shape", [(224, 224), (3, 17, 33), (1, 4, 31, 40), (5, 1, 16, 16)])
def test_gpu_ranks_and_channels(photos, rng, shape):
    x = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
    for op in (OPERATIONS["jpeg420"], OPERATIONS["fd"]):
        assert_close_to_cpu(op(x.cuda()), op(x), np.uint8)


@needs_gpu
@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_gpu_block_tables_match_cpu(photos, rng, subsampling):
    x = photo_batch(photos, 4, 61, 90, 3, np.uint8, rng)
    sets = table_sets(10, 50, 90).reshape(3, 3, 64)
    maps = {}

    def block_tables(n, rows, cols):  # same map for both calls
        if (n, rows, cols) not in maps:
            maps[(n, rows, cols)] = rng.integers(0, 3, (n, rows, cols), dtype=np.uint8)
        return maps[(n, rows, cols)]

    def run(t):
        return ops.run_pipeline(
            t, sets, sets, color="ycbcr", subsampling=subsampling, level_shift=True, passes=1,
            threads=None, block_tables=block_tables,
        )

    assert_close_to_cpu(run(to_torch(x, "contiguous", "cuda")), run(to_torch(x, "contiguous", "cpu")), np.uint8)


@needs_gpu
def test_gpu_large_batch_half_precision_and_gradient(photos, rng):
    x = photo_batch(photos, 64, 224, 224, 3, np.float32, rng)
    cpu = to_torch(x, "contiguous", "cpu")
    gpu = cpu.cuda().half().requires_grad_()
    got = fdjpeg.jpeg(gpu, 75)
    assert got.dtype == torch.float16
    assert (got.float().cpu() - fdjpeg.jpeg(cpu.half().float(), 75)).abs().max().item() <= 2 / 255
    got.float().sum().backward()
    assert torch.equal(gpu.grad, torch.ones_like(gpu))  # straight-through (BPDA)


@needs_gpu
def test_gpu_runs_on_the_current_stream(photos, rng):
    x = to_torch(photo_batch(photos, 8, 224, 224, 3, np.uint8, rng), "contiguous", "cuda")
    want = fdjpeg.jpeg(x, 50)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = fdjpeg.jpeg(x, 50)
        same = torch.equal(got, want)  # ordered after the kernel on this stream
    torch.cuda.current_stream().wait_stream(stream)
    assert same


@needs_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_gpu_tensor_on_another_device_than_the_current_one(photos, rng):
    x = photo_batch(photos, 2, 40, 40, 3, np.uint8, rng)
    with torch.cuda.device(0):
        got = fdjpeg.jpeg(to_torch(x, "contiguous", "cuda:1"), 50)
    assert got.device == torch.device("cuda:1")
    assert_close_to_cpu(got, fdjpeg.jpeg(to_torch(x, "contiguous", "cpu"), 50), np.uint8)


@needs_gpu
def test_gpu_bad_pointer_is_a_clear_error():
    with pytest.raises(ValueError, match="not device memory"):
        host = np.zeros((1, 8, 8, 3), np.uint8)
        cuda.quantize(
            host.ctypes.data, host.ctypes.data, "uint8", [1, 8, 8, 3], [192, 24, 3, 1], [192, 24, 3, 1],
            table_sets(50), table_sets(50), 1, 0, True, 1, None, torch.cuda.current_device(),
        )
