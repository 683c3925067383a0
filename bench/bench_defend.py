"""Images/s of ``fdjpeg defend`` on a folder of real photos against per-image loops of the kind
other tools use, all measured in this run on the same files and writing the same PNG outputs:

- ``PIL JPEG loop``: open, JPEG save + load through memory with Pillow (quality 75), save PNG;
- ``ART JpegCompression loop``: IBM ART's ``JpegCompression`` preprocessor (quality 75) per image
  (skipped when ``adversarial-robustness-toolbox`` is not installed);
- ``fdjpeg per-image loop``: ``fdjpeg.feature_distill`` called image by image, no pipelining.

Also prints how close a ``--format jpeg`` output decodes to ``fdjpeg.feature_distill``, and the
codecs alone (``--codecs-only`` prints just these): per image, on one thread, on the real JPEG photos
of 0.2-0.4 Mpixel on disk, Pillow's JPEG decode against libjpeg-turbo (simplejpeg) and Pillow's PNG
at level 1 against fpng, writing the Feature Distillation output of each photo.

    python bench/bench_defend.py [--copies 4] [--repeats 3] [--codecs-only]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import threading
import time

import numpy as np
from PIL import Image

import fdjpeg
from fdjpeg import batch, datasets, fastcodecs, imagefiles

# Every method writes its PNG with fdjpeg defend's settings, so that the ratios compare the
# defense and the pipeline, not zlib settings.
PNG = {"compress_level": 1, "compress_type": imagefiles.PNG_STRATEGY}


def make_folder(root: str, copies: int) -> list:
    """scikit-image's photos, each saved ``copies`` times as a quality-95 JPEG (as data sets ship)."""
    paths = []
    for stem, img in datasets.sample_photos().items():
        for k in range(copies):
            path = os.path.join(root, f"{stem}_{k}.jpg")
            Image.fromarray(img).save(path, quality=95)
            paths.append(path)
    return paths


def pil_jpeg_loop(paths, dst):
    for p in paths:
        with Image.open(p) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=75)
        buf.seek(0)
        with Image.open(buf) as im:
            im.save(os.path.join(dst, os.path.basename(p) + ".png"), **PNG)


def art_loop(paths, dst):
    from art.defences.preprocessor import JpegCompression

    jpeg = JpegCompression(clip_values=(0, 255), quality=75, channels_first=False)
    for p in paths:
        with Image.open(p) as im:
            x = np.asarray(im.convert("RGB"), dtype=np.float32)[None]
        y, _ = jpeg(x)
        out = np.clip(np.rint(y[0]), 0, 255).astype(np.uint8)
        Image.fromarray(out).save(os.path.join(dst, os.path.basename(p) + ".png"), **PNG)


def fdjpeg_loop(paths, dst):
    for p in paths:
        with Image.open(p) as im:
            x = np.asarray(im.convert("RGB"))
        Image.fromarray(fdjpeg.feature_distill(x)).save(os.path.join(dst, os.path.basename(p) + ".png"), **PNG)


def fdjpeg_defend(src, dst, **kw):
    summary = batch.defend_files(src, dst, progress=False, png_level=PNG["compress_level"], **kw)
    assert summary.exit_status == 0 and summary.counts["written"] > 0


def timed(fn, repeats, scratch):
    """Median wall seconds and CPU seconds (this process, all threads) of ``fn(dst)`` over
    ``repeats`` runs, each into a fresh folder. CPU time matters on a shared machine, where wall
    time also counts the other users."""
    walls, cpus = [], []
    for r in range(repeats):
        dst = os.path.join(scratch, f"out{r}")
        os.makedirs(dst)
        start, cpu = time.perf_counter(), time.process_time()
        fn(dst)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
        shutil.rmtree(dst)
    return statistics.median(walls), statistics.median(cpus)


def jpeg_output_gap(src, scratch, defense, params, reference):
    """|decode(JPEG file written by fdjpeg defend) - reference(pixels)| over all photos' values."""
    dst = os.path.join(scratch, f"jpeg-gap-{defense}")
    batch.defend_files(src, dst, defense=defense, params=params, fmt="jpeg", progress=False)
    diffs = []
    for name in sorted(os.listdir(src)):
        with Image.open(os.path.join(src, name)) as im:
            want = reference(np.asarray(im.convert("RGB"))).astype(np.int16)
        with Image.open(os.path.join(dst, os.path.splitext(name)[0] + ".jpg")) as im:
            got = np.asarray(im).astype(np.int16)
        diffs.append(np.abs(got - want).ravel())
    d = np.concatenate(diffs)
    return d.mean(), d.max(), np.mean(d == 0), np.mean(d <= 1)


def codec_table(repeats: int) -> None:
    """Median CPU ms per image of each codec on one thread, the ratios from this run."""
    files, _ = datasets.photo_files()
    photos = []
    for path in files.values():
        with open(path, "rb") as f:
            data = f.read()
        header = fastcodecs.jpeg_fast_header(data)
        if header is not None and 0.2e6 <= header[0] * header[1] <= 0.4e6:
            photos.append((data, header))
    if not photos:
        print("no real JPEG photos of 0.2-0.4 Mpixel installed: the codec table is skipped")
        return
    defended = [fdjpeg.feature_distill(fastcodecs.decode_jpeg(data, header)) for data, header in photos]

    def pillow_decode(data, _):
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)

    def pillow_png(img):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG", **PNG)
        return buf.getvalue()

    def per_image(fn, items):
        runs = []
        for _ in range(repeats):
            cpu = time.thread_time()
            for item in items:
                fn(*item)
            runs.append((time.thread_time() - cpu) / len(items))
        return 1e3 * statistics.median(runs)

    megapixels = statistics.mean(h * w for _, (h, w, _) in photos) / 1e6
    print(f"codecs alone, one thread, {len(photos)} real JPEG photos of {megapixels:.2f} Mpixel on average "
          f"(median of {repeats} runs, CPU ms per image):")
    rows = [
        ("JPEG decode", per_image(pillow_decode, photos), per_image(fastcodecs.decode_jpeg, photos),
         "Pillow", "libjpeg-turbo (simplejpeg)"),
        ("PNG encode of the fd output", per_image(pillow_png, [(y,) for y in defended]),
         per_image(fastcodecs.encode_png, [(y,) for y in defended]), "Pillow level 1", "fpng"),
    ]
    for what, slow, fast, slow_name, fast_name in rows:
        print(f"  {what:28s} {slow_name} {slow:6.2f}   {fast_name} {fast:6.2f}   {slow / fast:5.1f}x")
    size = sum(len(fastcodecs.encode_png(y)) for y in defended) / sum(len(pillow_png(y)) for y in defended)
    print(f"  fpng PNGs are {100 * (size - 1):+.1f}% the size of Pillow level 1's")
    # whether a codec holds the GIL: how long another Python thread is stalled while it runs
    big = np.tile(defended[0][:256, :256], (12, 16, 1))  # 3072 x 4096
    big_jpeg = io.BytesIO()
    Image.fromarray(big).save(big_jpeg, "JPEG", quality=90)
    big_jpeg = big_jpeg.getvalue()
    stalls = {
        "libjpeg-turbo decode": lambda: fastcodecs.decode_jpeg(big_jpeg, fastcodecs.jpeg_fast_header(big_jpeg)),
        "fpng encode": lambda: fastcodecs.encode_png(big),
    }
    for what, fn in stalls.items():
        call, stall = gil_stall(fn)
        print(f"  {what} of 12.6 Mpixel: {1e3 * call:.0f} ms; another Python thread stalled at most {1e3 * stall:.0f} ms")
    print()


def gil_stall(fn):
    """Seconds ``fn`` takes in a thread, and the longest gap between two steps of a Python loop
    running meanwhile (near the call's length when ``fn`` holds the GIL)."""
    done, took = threading.Event(), []

    def work():
        start = time.perf_counter()
        fn()
        took.append(time.perf_counter() - start)
        done.set()

    worker = threading.Thread(target=work)
    last, longest = time.perf_counter(), 0.0
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    return took[0], longest


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of each of the 9 photos (default 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--codecs-only", action="store_true", help="only the codecs-alone table")
    args = parser.parse_args()
    codec_table(max(args.repeats, 5))
    if args.codecs_only:
        return
    scratch = tempfile.mkdtemp(prefix="bench-defend-")
    try:
        src = os.path.join(scratch, "src")
        os.makedirs(src)
        paths = make_folder(src, args.copies)
        pixels = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in paths)
        print(f"{len(paths)} real photos ({pixels / len(paths) / 1e6:.2f} Mpixel each on average), "
              f"{os.cpu_count()} cores, fdjpeg core {fdjpeg.isa()}, PNG {PNG} for every method")
        methods = {
            "fdjpeg defend (fd, PNG)": lambda dst: fdjpeg_defend(src, dst),
            "fdjpeg defend (jpeg q75, PNG)": lambda dst: fdjpeg_defend(src, dst, defense="jpeg", params={"quality": 75}),
            "fdjpeg defend (fd, JPEG file)": lambda dst: fdjpeg_defend(src, dst, fmt="jpeg"),
            "fdjpeg per-image loop (fd)": lambda dst: fdjpeg_loop(paths, dst),
            "PIL JPEG q75 loop": lambda dst: pil_jpeg_loop(paths, dst),
        }
        try:
            import art  # noqa: F401

            methods["ART JpegCompression q75 loop"] = lambda dst: art_loop(paths, dst)
        except ImportError:
            print("ART not installed (pip install adversarial-robustness-toolbox): its row is skipped")
        times = {name: timed(fn, args.repeats, scratch) for name, fn in methods.items()}
        rates = {name: len(paths) / wall for name, (wall, _) in times.items()}
        print(f"\n{'method':34s} {'images/s':>9s} {'CPU ms/image':>13s}")
        for name, (wall, cpu) in times.items():
            print(f"{name:34s} {rates[name]:9.1f} {1e3 * cpu / len(paths):13.1f}")
        print()
        pairs = [
            ("fdjpeg defend (jpeg q75, PNG)", "PIL JPEG q75 loop", "same defense, same PNG output"),
            ("fdjpeg defend (jpeg q75, PNG)", "ART JpegCompression q75 loop", "same defense, same PNG output"),
            ("fdjpeg defend (fd, PNG)", "fdjpeg per-image loop (fd)", "same work: what the pipelining adds"),
        ]
        for ours, peer, what in pairs:
            if peer in rates:
                print(f"{ours} vs {peer}: {rates[ours] / rates[peer]:.2f}x the images/s, "
                      f"{times[ours][1] / times[peer][1]:.2f}x the CPU time  ({what})")
        print(f"(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)\n")
        gaps = {
            "fd": ({}, fdjpeg.feature_distill),
            "jpeg": ({"quality": 75}, lambda x: fdjpeg.jpeg(x, 75)),
        }
        for defense, (params, reference) in gaps.items():
            mean, worst, exact, within1 = jpeg_output_gap(src, scratch, defense, params, reference)
            print(f"--defense {defense} --format jpeg, decoded vs the defense's pixels: mean |diff| {mean:.3f}, "
                  f"max {worst}, {100 * exact:.1f}% of values equal, {100 * within1:.2f}% within 1")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
