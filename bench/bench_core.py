"""Speed of the native core against its peers, one thread, measured pair by pair in the same run.

    python bench/bench_core.py [--repeat 30]

On 224x224 and 512x512 crops of real photos: fdjpeg's Feature Distillation and JPEG round trip
against Pillow's JPEG encode + decode with the same tables (libjpeg-turbo), a vectorised numpy FD,
and an FD in the style of the authors' code (Python loop over 8x8 blocks, scipy DCT per block);
then fdjpeg's scaling from 1 to 2 threads on a batch. Prints each peer's time / fdjpeg's.
"""

from __future__ import annotations

import argparse

import numpy as np

import fdjpeg
from fdjpeg import benchmarks, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    m = benchmarks.machine_description()
    print(f"machine: {m['cpu']}, {m['cores']} cores, fdjpeg kernels {m['kernels']}; one thread, median of {args.repeat}\n")
    fd_q = tables.feature_distillation()
    jpeg_q = [t.ravel() for t in tables.ijg(75)]
    print(f"{'size':>8} {'fdjpeg':<24} {'ms':>8} {'MP/s':>7}   {'peer':<34} {'ms':>9} {'MP/s':>7} {'peer/fdjpeg':>11}")
    for size in ("224", "512"):
        img = benchmarks.images_for(size, 1)[0]
        mp = img.shape[0] * img.shape[1] / 1e6
        fd = ("feature_distill", lambda: fdjpeg.feature_distill(img, threads=1))
        jp = ("jpeg q75 4:2:0", lambda: fdjpeg.jpeg(img, 75, subsampling="420", threads=1))
        pairs = [
            (fd, "Pillow, FD table 4:4:4", lambda: benchmarks.pillow_roundtrip(img, [fd_q.ravel()] * 2, 0), args.repeat),
            (fd, "numpy FD (vectorised)", lambda: benchmarks.numpy_feature_distill(img, fd_q.astype(np.float32)), 5),
            (fd, "authors-style FD (Python loop)", lambda: benchmarks.authors_style_feature_distill(img, fd_q), 5),
            (jp, "Pillow q75 4:2:0", lambda: benchmarks.pillow_roundtrip(img, jpeg_q, 2), args.repeat),
        ]
        for (ours_name, ours), peer_name, peer, repeat in pairs:
            mine, theirs = benchmarks.time_pair(ours, peer, repeat)
            print(
                f"{size + 'x' + size:>8} {ours_name:<24} {mine * 1e3:8.3f} {mp / mine:7.1f}   {peer_name:<34} "
                f"{theirs * 1e3:9.3f} {mp / theirs:7.1f} {theirs / mine:10.1f}x"
            )
    batch = benchmarks.images_for("224", 64)
    one, two = benchmarks.time_pair(
        lambda: fdjpeg.feature_distill(batch, threads=1), lambda: fdjpeg.feature_distill(batch, threads=2), 5
    )
    print(f"\n64 x 224x224 FD: 1 thread {one * 1e3:.1f} ms, 2 threads {two * 1e3:.1f} ms: {one / two:.2f}x")


if __name__ == "__main__":
    main()
