"""The CUDA kernel's tile code in GPU order, on the CPU, against the CPU core.

``_cuda.emulate(..., seed=s)`` runs the kernel's own per-tile code with its 256 threads: tiles,
the threads of each phase and the blocks of the transform in a shuffled order, shared memory
filled with NaN before every tile, outputs pre-filled with a poison value. Every case must give the CPU core's bytes exactly. A run with one of the tile's barriers left
out (``drop_barrier``) must not: the comparison catches a missing barrier.

Sizes are drawn (seeded) from 1-257, odd and not multiples of 16, over 1/3/4 channels, every
subsampling, colour or not, level shift or not, 1-3 passes, block maps and memory layouts (4-pixel
vector paths and strided ones); the draw is small enough for CI (a few seconds).
"""

import numpy as np
import pytest
from fdjpeg import _core, _gpu, tables

from reference import fd_table_set, table_sets

cuda = _gpu.cuda_module()
pytestmark = pytest.mark.skipif(
    cuda is None, reason="fdjpeg was built without the CUDA module"
)

POISON = {np.uint8: 0xA5, np.float32: np.nan, np.float64: np.nan}

FD_SET = fd_table_set()


def odd_size(rng):
    """A size in 1..257 that is odd and not a multiple of 16 (partial MCUs, blocks and tiles)."""
    return int(rng.choice(np.arange(1, 258, 2)))


def layout(x, kind):
    """The same N x H x W x C values in another memory layout."""
    if kind == "nhwc":
        return np.ascontiguousarray(x)
    if kind == "nchw":  # column stride 1: the kernel's vector loads and stores
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)
    n, h, w, c = x.shape  # every other row, offset by one column, channels padded
    big = np.zeros((n, 2 * h, w + 3, c + 1), dtype=x.dtype)
    big[:, ::2, 1 : w + 1, :c] = x
    return big[:, ::2, 1 : w + 1, :c]


def image(rng, n, h, w, c, dtype):
    """Smooth content with noise (real-looking blocks: many coefficients survive quantization)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 90 * np.sin(
        xx[None, ..., None] / 7.0 + np.arange(c) + yy[None, ..., None] / 11.0
    )
    x = np.clip(base + rng.normal(0, 25, (n, h, w, c)), 0, 255).astype(np.uint8)
    return x if dtype == np.uint8 else (x / 255.0).astype(dtype)


def run_both(
    x,
    quant,
    color,
    subsampling,
    level_shift,
    passes,
    block_map,
    seed,
    out_kind="nhwc",
    drop=-1,
):
    want = np.empty(x.shape, x.dtype)
    _core.quantize(
        x, want, quant, quant, color, subsampling, level_shift, passes, block_map, 1
    )
    got = layout(np.full(x.shape, POISON[x.dtype.type], x.dtype), out_kind)
    cuda.emulate(
        x,
        got,
        quant,
        quant,
        color,
        subsampling,
        level_shift,
        passes,
        block_map,
        seed=seed,
        drop_barrier=drop,
    )
    return want, got


def same_bytes(a, b):
    return np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)
    )


def draw_case(rng):
    channels = int(rng.choice([1, 3, 4]))
    color = int(rng.integers(0, 2))
    case = {
        "h": odd_size(rng),
        "w": odd_size(rng),
        "channels": channels,
        "dtype": [np.uint8, np.float32, np.float64][
            int(rng.choice(3, p=[0.6, 0.3, 0.1]))
        ],
        "color": color,
        "subsampling": int(rng.integers(0, 3)),
        "level_shift": bool(color or rng.integers(0, 2)),
        "passes": int(rng.integers(1, 4)),
        "block_map": bool(rng.integers(0, 4) == 0),
        "in_kind": str(rng.choice(["nhwc", "nchw", "strided"])),
        "out_kind": str(rng.choice(["nhwc", "nchw", "strided"])),
    }
    return case


CASES = [draw_case(np.random.default_rng(1000 + i)) for i in range(150)]


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: "{h}x{w}x{channels}-{color}-{subsampling}-p{passes}".format(**c),
)
def test_gpu_order_equals_cpu_core(case):
    rng = np.random.default_rng(case["h"] * 1000 + case["w"])
    c = case
    x = layout(image(rng, 2, c["h"], c["w"], c["channels"], c["dtype"]), c["in_kind"])
    quant = (
        FD_SET if c["color"] == 0 and not c["level_shift"] else table_sets(15, 50, 90)
    )
    block_map = None
    if c["block_map"]:
        rows, cols = _core.padded_blocks(
            c["h"], c["w"], c["subsampling"], c["color"] == 1 and c["channels"] != 1
        )
        block_map = rng.integers(0, len(quant), (2, rows, cols), dtype=np.uint8)
    want, got = run_both(
        x,
        quant,
        c["color"],
        c["subsampling"],
        c["level_shift"],
        c["passes"],
        block_map,
        seed=c["h"],
        out_kind=c["out_kind"],
    )
    assert same_bytes(got, want), f"{int((got != want).sum())} samples differ"


@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_several_tiles_each_way_in_gpu_order(subsampling, dtype):
    # 300 x 451: 3 x 4 tiles at 4:2:0, partial at the right and the bottom; the ring on all sides
    rng = np.random.default_rng(7)
    x = layout(image(rng, 1, 300, 451, 3, dtype), "nchw")
    want, got = run_both(
        x, table_sets(20), 1, subsampling, True, 1, None, seed=subsampling
    )
    assert same_bytes(got, want)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_orders_give_the_same_bytes(seed):
    rng = np.random.default_rng(seed)
    x = image(rng, 1, 77, 131, 3, np.uint8)
    runs = [
        run_both(x, table_sets(30), 1, 2, True, 2, None, seed=s)[1]
        for s in (seed, seed + 10)
    ]
    assert same_bytes(runs[0], runs[1])


# A tile's barriers: 0 after the load (the transform reads what other threads loaded), 1 after
# the transform (the store reads other warps' blocks), 2 at the end of a pass.
BROKEN = [
    (0, {"color": 1, "subsampling": 2, "level_shift": True, "passes": 1}),
    (0, {"color": 0, "subsampling": 0, "level_shift": False, "passes": 2}),
    (1, {"color": 1, "subsampling": 2, "level_shift": True, "passes": 1}),
    (1, {"color": 0, "subsampling": 0, "level_shift": False, "passes": 1}),
]


def broken_run(drop, setup):
    rng = np.random.default_rng(drop)
    x = image(rng, 1, 64, 160, 3, np.uint8)
    quant = FD_SET if setup["color"] == 0 else table_sets(50)
    args = (
        x,
        quant,
        setup["color"],
        setup["subsampling"],
        setup["level_shift"],
        setup["passes"],
        None,
    )
    want, got = run_both(*args, seed=5)
    assert same_bytes(got, want)  # the whole kernel in this order: right
    return want, run_both(*args, seed=5, drop=drop)[1]


@pytest.mark.parametrize(
    "drop,setup", BROKEN, ids=lambda v: str(v) if isinstance(v, int) else ""
)
def test_a_missing_barrier_is_caught(drop, setup):
    want, broken = broken_run(drop, setup)
    assert not same_bytes(broken, want)  # the same order without that barrier: caught


def test_the_end_of_pass_barrier_guards_no_present_hazard():
    # Each thread reloads, in the next pass, exactly the pixels (and shared words) it stored
    # itself, so barrier 2 is not needed by the present mapping; the kernel keeps it so that
    # another mapping cannot race silently.
    want, unguarded = broken_run(
        2, {"color": 0, "subsampling": 0, "level_shift": False, "passes": 3}
    )
    assert same_bytes(unguarded, want)


def test_bad_drop_barrier_is_a_value_error():
    x = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="drop_barrier"):
        cuda.emulate(
            x,
            np.empty_like(x),
            table_sets(50),
            table_sets(50),
            1,
            0,
            True,
            1,
            drop_barrier=3,
        )


def test_overlapping_outputs_are_refused():
    x = np.zeros((1, 16, 16, 3), np.uint8)
    out = np.lib.stride_tricks.as_strided(
        np.zeros(16 * 3, np.uint8), (1, 16, 16, 3), (0, 0, 3, 1)
    )
    with pytest.raises(ValueError, match="output elements overlap"):
        cuda.emulate(x, out, table_sets(50), table_sets(50), 1, 0, True, 1)


def test_input_and_output_may_be_the_same_view_only_without_a_ring():
    rng = np.random.default_rng(3)
    x = image(rng, 1, 40, 56, 3, np.uint8)
    want = np.empty_like(x)
    _core.quantize(x, want, FD_SET, FD_SET, 0, 0, False, 2, None, 1)
    inplace = x.copy()
    cuda.emulate(inplace, inplace, FD_SET, FD_SET, 0, 0, False, 2, seed=1)
    assert same_bytes(inplace, want)
    with pytest.raises(ValueError, match="different buffers with subsampling"):
        cuda.emulate(x, x, table_sets(50), table_sets(50), 1, 2, True, 1)
    shifted = np.zeros((1, 41, 56, 3), np.uint8)
    with pytest.raises(ValueError, match="overlap"):
        cuda.emulate(shifted[:, :40], shifted[:, 1:], FD_SET, FD_SET, 0, 0, False, 1)


def test_workspace_size():
    quant = table_sets(50)
    assert (
        cuda.workspace_size("uint8", [2, 64, 64, 3], quant, quant, 1, 2, True, 1) == 0
    )
    # two launches with a ring: a dense intermediate image
    assert (
        cuda.workspace_size("uint8", [2, 64, 64, 3], quant, quant, 1, 2, True, 2)
        >= 2 * 64 * 64 * 3
    )
    rows, cols = _core.padded_blocks(64, 64, 2, True)
    block_map = np.zeros((2, rows, cols), np.uint8)
    assert (
        cuda.workspace_size(
            "uint8", [2, 64, 64, 3], quant, quant, 1, 2, True, 1, block_map
        )
        >= 2 * rows * cols
    )


def test_an_old_driver_is_named_as_such():
    problem = cuda.device_problem()
    if "insufficient" not in problem:
        pytest.skip(f"the driver here is not too old ({problem or 'a GPU is usable'})")
    assert problem.startswith("no usable GPU") and "R580" in problem


# ------------------------------------------------------------------------------------------------
# GPU only (skipped where none is usable): the host side of a launch


@pytest.mark.cuda
def test_gpu_occupancy_is_at_least_two_ctas_per_sm():
    for color, subsampling, shift in (
        (0, 0, False),
        (1, 0, True),
        (1, 1, True),
        (1, 2, True),
    ):
        for dtype in ("uint8", "float32"):
            assert (
                cuda.occupancy(dtype, [1, 224, 224, 3], color, subsampling, shift, 0)
                >= 2
            )


@pytest.mark.cuda
def test_gpu_calls_from_threads_with_different_kernels():
    # each kernel's shared-memory allowance is set once per device, under a lock, while other
    # threads (the GIL released) launch others
    import threading

    import fdjpeg
    import torch

    rng = np.random.default_rng(0)
    x = (
        torch.from_numpy(image(rng, 4, 96, 120, 3, np.uint8))
        .permute(0, 3, 1, 2)
        .contiguous()
    )
    want = {sub: fdjpeg.jpeg(x, 60, subsampling=sub) for sub in ("444", "422", "420")}
    gpu = x.cuda()
    errors = []

    def work(sub):
        try:
            for _ in range(5):
                got = fdjpeg.jpeg(gpu, 60, subsampling=sub)
                torch.cuda.current_stream().synchronize()
                assert torch.equal(got.cpu(), want[sub])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(sub,)) for sub in ("444", "422", "420") * 2
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.cuda
def test_gpu_call_leaves_the_current_device_as_it_was():
    import fdjpeg
    import torch

    x = torch.zeros(
        1, 3, 16, 16, dtype=torch.uint8, device=f"cuda:{torch.cuda.device_count() - 1}"
    )
    before = torch.cuda.current_device()
    fdjpeg.jpeg(x, 50)
    assert torch.cuda.current_device() == before


@pytest.mark.cuda
def test_gpu_passes_with_a_ring_run_through_the_torch_workspace():
    # 4:2:0 with 2 passes: two launches through an intermediate image in torch's allocator
    import fdjpeg
    import torch

    rng = np.random.default_rng(1)
    x = (
        torch.from_numpy(image(rng, 2, 64, 80, 3, np.uint8))
        .permute(0, 3, 1, 2)
        .contiguous()
    )
    steps = tables.ijg(40)
    want = fdjpeg.quantize(x, steps, color="ycbcr", subsampling="420", passes=2)
    got = fdjpeg.quantize(x.cuda(), steps, color="ycbcr", subsampling="420", passes=2)
    assert torch.equal(got.cpu(), want)
