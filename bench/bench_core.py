"""Speed of the native core against its peers, measured pair by pair in the same run.

    python bench/bench_core.py [--repeat 30] [--threads 1]

For each real photo size (224x224 and 512x512 crops): fdjpeg's Feature Distillation and JPEG round
trip, Pillow's JPEG encode + decode with the same tables (libjpeg-turbo), a vectorised numpy FD, and
an FD in the style of the authors' code (Python loop over 8x8 blocks, scipy DCT per block). Prints
milliseconds per image, MP/s and each peer's time divided by fdjpeg's, then the 2-thread scaling
of fdjpeg on a batch.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time

import numpy as np
from PIL import Image

import fdjpeg
from fdjpeg import datasets, tables


def timed_pair(ours, peer, repeat: int) -> tuple[float, float]:
    """Median seconds of `ours` and `peer`, called alternately `repeat` times each (after a
    warm-up), so that both see the same machine load."""
    ours(), peer()
    a, b = [], []
    for _ in range(repeat):
        for fn, times in ((ours, a), (peer, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return float(np.median(a)), float(np.median(b))


def pillow_roundtrip(img: np.ndarray, qtables, subsampling: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", qtables=qtables, subsampling=subsampling)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im)


def numpy_fd(img: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Vectorised numpy FD (all blocks at once, matrix DCT)."""
    c = tables.dct_matrix()
    h, w, ch = img.shape
    blocks = img.astype(np.float32).reshape(h // 8, 8, w // 8, 8, ch).transpose(0, 2, 4, 1, 3)
    coef = c @ blocks @ c.T
    out = c.T @ (np.round(coef / q) * q) @ c
    return np.clip(out.transpose(0, 3, 1, 4, 2).reshape(h, w, ch), 0, 255).round().astype(np.uint8)


def authors_style_fd(img: np.ndarray, q: np.ndarray) -> np.ndarray:
    """FD as the authors' code does it: float [0,1] -> x255, Python loops over channels and 8x8
    blocks, scipy's orthonormal DCT per block."""
    from scipy.fftpack import dct, idct

    x = img.astype(np.float64) / 255 * 255
    out = np.empty_like(x)
    for ch in range(x.shape[2]):
        for i in range(0, x.shape[0], 8):
            for j in range(0, x.shape[1], 8):
                block = x[i : i + 8, j : j + 8, ch]
                coef = dct(dct(block.T, norm="ortho").T, norm="ortho")
                coef = np.round(coef / q) * q
                out[i : i + 8, j : j + 8, ch] = idct(idct(coef.T, norm="ortho").T, norm="ortho")
    return np.clip(out / 255, 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    photos = datasets.sample_photos()
    fd_table = tables.feature_distillation()
    fd_q = [fd_table.astype(int).ravel().tolist()] * 2
    luma, chroma = tables.ijg(75)
    jpeg_q = [luma.astype(int).ravel().tolist(), chroma.astype(int).ravel().tolist()]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, fdjpeg kernels: {fdjpeg.isa()}")
    print(f"threads={args.threads}, median of {args.repeat} runs\n")
    header = f"{'size':>8} {'operation':<40} {'ms/image':>9} {'MP/s':>8} {'peer/fdjpeg':>12}"
    print(header)
    print("-" * len(header))
    for size in (224, 512):
        img = np.ascontiguousarray(datasets.center_crop(photos["astronaut"], size))
        mp = size * size / 1e6
        fd_call = lambda: fdjpeg.feature_distill(img, threads=args.threads)
        jpeg_call = lambda: fdjpeg.jpeg(img, 75, subsampling="420", threads=args.threads)
        pairs = [
            ("Pillow encode+decode, FD table 444", fd_call, lambda: pillow_roundtrip(img, fd_q, 0), args.repeat),
            ("numpy vectorised FD", fd_call, lambda: numpy_fd(img, fd_table), max(3, args.repeat // 5)),
            ("authors-style FD (Python loop)", fd_call, lambda: authors_style_fd(img, fd_table), 3),
            ("Pillow encode+decode q75 4:2:0", jpeg_call, lambda: pillow_roundtrip(img, jpeg_q, 2), args.repeat),
        ]
        for name, ours, peer, repeat in pairs:
            mine, theirs = timed_pair(ours, peer, repeat)
            label = "fdjpeg.feature_distill" if ours is fd_call else "fdjpeg.jpeg q75 4:2:0"
            print(f"{size:>4}x{size:<3} {label:<40} {mine * 1e3:9.3f} {mp / mine:8.1f}")
            print(f"{'':8} {'  vs ' + name:<40} {theirs * 1e3:9.3f} {mp / theirs:8.1f} {theirs / mine:10.1f}x")
    batch = np.stack([datasets.center_crop(p, 224) for p in photos.values()] * 8)
    one, two = timed_pair(
        lambda: fdjpeg.feature_distill(batch, threads=1), lambda: fdjpeg.feature_distill(batch, threads=2), 5
    )
    print(f"\nbatch of {len(batch)} x 224x224 FD: 1 thread {one * 1e3:.1f} ms, 2 threads {two * 1e3:.1f} ms, scaling {one / two:.2f}x")


if __name__ == "__main__":
    main()
