"""``fdjpeg demo``: defend scikit-image's sample photos and write the results side by side."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from PIL import Image, ImageDraw

from .. import datasets, ops


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="defend scikit-image's sample photos (Feature Distillation and JPEG) and write a side-by-side picture",
    )
    p.add_argument("--out", default="fdjpeg-demo", help="output folder (created; default: %(default)s)")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality for the comparison (default: %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    photos = datasets.sample_photos()
    os.makedirs(args.out, exist_ok=True)
    defenses = {
        "fd": lambda x: ops.feature_distill(x),
        "fd2p": lambda x: ops.feature_distill(x, passes=2),
        f"jpeg{args.quality}": lambda x: ops.jpeg(x, args.quality),
    }
    rows = []
    for stem, img in photos.items():
        results = {}
        for name, defend in defenses.items():
            start = time.perf_counter()
            results[name] = defend(img)
            ms = (time.perf_counter() - start) * 1e3
            Image.fromarray(results[name]).save(os.path.join(args.out, f"{stem}_{name}.png"))
            psnr = _psnr(img, results[name])
            print(f"{stem:18s} {img.shape[1]:4d}x{img.shape[0]:<4d} {name:7s} {ms:7.2f} ms  PSNR {psnr:5.2f} dB")
        rows.append((stem, img, results))
    path = os.path.join(args.out, "side_by_side.png")
    _side_by_side(rows, list(defenses)).save(path)
    print(f"wrote {len(photos) * len(defenses)} images and {path}")
    return 0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _side_by_side(rows, names, tile: int = 256) -> Image.Image:
    """Grid: one row per photo; columns original, each defense, and |FD - original| x 8."""
    headers = ["original", *names, "|fd - original| x8"]
    canvas = Image.new("RGB", (tile * len(headers), 20 + tile * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for col, title in enumerate(headers):
        draw.text((col * tile + 4, 4), title, fill="black")
    for r, (_, img, results) in enumerate(rows):
        diff = np.clip(np.abs(results["fd"].astype(np.int16) - img.astype(np.int16)) * 8, 0, 255).astype(np.uint8)
        for col, arr in enumerate([img, *results.values(), diff]):
            cropped = datasets.center_crop(arr, min(arr.shape[:2]))
            thumb = Image.fromarray(cropped).resize((tile, tile), Image.LANCZOS)
            canvas.paste(thumb, (col * tile, 20 + r * tile))
    return canvas
