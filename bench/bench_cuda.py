"""fdjpeg's CUDA kernel against the memory-bandwidth roofline and the GPU JPEG tools people use.

One run on one GPU measures, on a batch of N x 3 x H x W images (default 256 x 3 x 224 x 224):
  - fdjpeg Feature Distillation and jpeg(quality 75, 4:2:0) on CUDA, uint8 and float32 (Gpixel/s);
  - a device-to-device copy of the same bytes (the bandwidth roofline: a fused kernel that reads
    and writes each pixel once cannot beat it);
  - torchvision encode_jpeg + decode_jpeg on CUDA (batched lists), if torchvision imports;
  - kornia's jpeg_codec_differentiable, if kornia imports;
  - fdjpeg on the CPU (all cores),
and prints the ratios. Without a usable GPU it says so and exits 0.

    python bench/bench_cuda.py [--batch 256] [--size 224] [--reps 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def gpu_time(fn, reps: int, warmup: int = 3, calls: int = 20) -> float:
    """Median seconds per call of `fn` on the current stream: `calls` back-to-back calls between
    one pair of CUDA events, so that a short kernel is not measured against the host's per-call
    overhead (Python, argument checks, the launch) but as the GPU runs them in a stream."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    return statistics.median(times)


def cpu_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--cpu-reps", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    import fdjpeg
    from fdjpeg import _gpu

    module = _gpu.cuda_module()
    problem = "fdjpeg was built without its CUDA module" if module is None else module.device_problem()
    if not problem and not torch.cuda.is_available():
        problem = "torch sees no CUDA device"
    if problem:
        print(f"no GPU present, nothing to measure ({problem})")
        return 0

    n, s = args.batch, args.size
    pixels = n * s * s
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(dev)}; batch {n} x 3 x {s} x {s}; "
          f"torch {torch.__version__}; CPU threads {os.cpu_count()}")
    # A real photo rather than noise: JPEG codecs (torchvision's) take longer on noise.
    from fdjpeg import datasets

    photo = torch.from_numpy(datasets.center_crop(datasets.sample_photos()["astronaut"], s).copy())
    u8_cpu = photo.permute(2, 0, 1)[None].repeat(n, 1, 1, 1).contiguous()
    u8 = u8_cpu.to(dev)
    f32 = (u8.float() / 255).contiguous()

    rows = []  # (name, seconds)

    def record(name, seconds):
        rows.append((name, seconds))
        print(f"{name:48s} {seconds * 1e3:9.3f} ms  {pixels / seconds / 1e9:8.2f} Gpixel/s", flush=True)

    module_ = _gpu.cuda_module()
    for label, x in (("uint8", u8), ("float32", f32)):
        dtype = "uint8" if label == "uint8" else "float32"
        occupancy = {sub: module_.occupancy(dtype, [n, s, s, 3], color, sub, shift, dev.index or 0)
                     for sub, color, shift in ((0, 0, False), (2, 1, True))}
        print(f"occupancy, {label}: FD {occupancy[0]} CTAs/SM, jpeg 4:2:0 {occupancy[2]} CTAs/SM "
              "(cudaOccupancyMaxActiveBlocksPerMultiprocessor)")
        out = torch.empty_like(x)
        record(f"D2D copy, {label} (roofline)", gpu_time(lambda: out.copy_(x), args.reps))
        record(f"fdjpeg FD, {label}, CUDA", gpu_time(lambda: fdjpeg.feature_distill(x), args.reps))
        record(f"fdjpeg jpeg(75, 420), {label}, CUDA", gpu_time(lambda: fdjpeg.jpeg(x, 75), args.reps))

    try:
        from torchvision.io import decode_jpeg, encode_jpeg

        images = list(u8)

        def torchvision_round_trip():
            encoded = encode_jpeg(images, quality=75)  # nvjpeg on the GPU
            # decode_jpeg reads the JPEG bytes from host memory, whatever device decodes them
            encoded = [e.cpu() if e.is_cuda else e for e in encoded]
            return decode_jpeg(encoded, device=dev)

        torchvision_round_trip()
        record("torchvision encode_jpeg+decode_jpeg, CUDA", gpu_time(torchvision_round_trip, max(3, args.reps // 4)))
    except Exception as exc:  # noqa: BLE001 - any failure just leaves the peer out
        print(f"torchvision GPU encode/decode: not measured ({type(exc).__name__}: {exc})")

    try:
        from kornia.enhance import jpeg_codec_differentiable

        quality = torch.tensor([75.0], device=dev)
        record("kornia jpeg_codec_differentiable, float32", gpu_time(
            lambda: jpeg_codec_differentiable(f32, quality), max(3, args.reps // 4)))
    except Exception as exc:  # noqa: BLE001
        print(f"kornia jpeg_codec_differentiable: not measured ({type(exc).__name__}: {exc})")

    record("fdjpeg FD, uint8, CPU", cpu_time(lambda: fdjpeg.feature_distill(u8_cpu), args.cpu_reps))
    record("fdjpeg jpeg(75, 420), uint8, CPU", cpu_time(lambda: fdjpeg.jpeg(u8_cpu, 75), args.cpu_reps))

    t = dict(rows)
    print("\nratios (higher is better for fdjpeg):")
    for label in ("uint8", "float32"):
        copy = t[f"D2D copy, {label} (roofline)"]
        for op in ("FD", "jpeg(75, 420)"):
            print(f"  fdjpeg {op}, {label}: {copy / t[f'fdjpeg {op}, {label}, CUDA']:.1%} of the copy bandwidth")
    ours = t["fdjpeg jpeg(75, 420), uint8, CUDA"]
    for peer in ("torchvision encode_jpeg+decode_jpeg, CUDA", "fdjpeg jpeg(75, 420), uint8, CPU"):
        if peer in t:
            print(f"  fdjpeg jpeg, uint8, CUDA vs {peer}: {t[peer] / ours:.1f}x faster")
    if "kornia jpeg_codec_differentiable, float32" in t:
        ours_f = t["fdjpeg jpeg(75, 420), float32, CUDA"]
        print(f"  fdjpeg jpeg, float32, CUDA vs kornia jpeg_codec_differentiable: "
              f"{t['kornia jpeg_codec_differentiable, float32'] / ours_f:.1f}x faster")
    print(f"  fdjpeg FD, uint8: CUDA vs CPU {t['fdjpeg FD, uint8, CPU'] / t['fdjpeg FD, uint8, CUDA']:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
