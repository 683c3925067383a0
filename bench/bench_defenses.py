"""Cost of the defenses of ``fdjpeg.defenses`` on real photos, each beside its obvious peer, all
measured in this run (median of interleaved repeats):

- SLQ in one native pass (each block picks its table) against SHIELD's recipe as written: four
  whole-image JPEG round trips (qualities 20/40/60/80) and a random block-wise pick;
- WebP + flip over a batch with a thread pool against the same calls one image at a time;
- ComDefend (grey) per Fashion-MNIST image, whole batch against one image at a time.

    python bench/bench_defenses.py [--repeats 5] [--size 224]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from fdjpeg import datasets, ops, tables
from fdjpeg.defenses import comdefend, slq, webp_flip


def shield_as_written(x: np.ndarray, rng: np.random.Generator, qualities=slq.QUALITIES) -> np.ndarray:
    """Four full JPEG round trips, then each 8x8 block taken from a randomly chosen one."""
    full = np.stack([ops.quantize(x, list(tables.ijg(q)), subsampling="444") for q in qualities])
    n, h, w, _ = x.shape
    choice = rng.integers(0, len(qualities), (n, -(-h // 8), -(-w // 8)))
    pick = np.repeat(np.repeat(choice, 8, axis=1), 8, axis=2)[:, :h, :w]
    return np.take_along_axis(full, pick[None, ..., None], axis=0)[0]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=224, help="crop size of the photos (default: %(default)s)")
    args = ap.parse_args()
    crops = np.stack([datasets.center_crop(p, args.size) for p in datasets.sample_photos().values()])
    n = len(crops)
    rng = np.random.default_rng(0)
    defense = slq.StochasticLocalQuantization(seed=0)

    pairs = {
        "SLQ": (lambda: defense(crops), lambda: shield_as_written(crops, rng), "4 JPEGs + pick"),
        "WebP+flip": (lambda: webp_flip.webp_flip(crops), lambda: [webp_flip.webp_flip(c, threads=1) for c in crops],
                      "one image at a time"),
    }
    grey = datasets.fashion_mnist("test")[0][:64]
    model = comdefend.load("grey")
    pairs["ComDefend grey"] = (lambda: comdefend.defend(grey, model), lambda: [comdefend.defend(g, model) for g in grey],
                               "one image at a time")
    counts = {"SLQ": n, "WebP+flip": n, "ComDefend grey": len(grey)}
    print(f"{n} photos cropped to {args.size}x{args.size}; 64 Fashion-MNIST images; torch threads {torch.get_num_threads()}")
    for name, (ours, peer, peer_name) in pairs.items():
        ours(), peer()  # warm up
        t_ours, t_peer = [], []
        for _ in range(args.repeats):  # interleaved so that load changes hit both alike
            t_ours.append(timed(ours))
            t_peer.append(timed(peer))
        a, b = statistics.median(t_ours) / counts[name], statistics.median(t_peer) / counts[name]
        print(f"{name:15s} {a * 1e3:8.2f} ms/image   {peer_name:20s} {b * 1e3:8.2f} ms/image   ratio {b / a:5.2f}x")


if __name__ == "__main__":
    main()
