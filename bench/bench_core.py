"""Speed of the native core against its peers, one thread, measured pair by pair in the same run.

    python bench/bench_core.py [--repeat 30] [--rounds 5] [--isas [--clock-ghz F]]

On 224x224 and 512x512 crops of real photos: fdjpeg's Feature Distillation and JPEG round trip
against Pillow's JPEG encode + decode with the same tables (libjpeg-turbo), a vectorised numpy FD,
and an FD in the style of the authors' code (Python loop over 8x8 blocks, scipy DCT per block);
then fdjpeg's scaling from 1 to 2 threads, on a batch and on one large image. Prints each peer's
time / fdjpeg's. On a machine shared with other jobs, each pair alternates its two calls and is
measured in `--rounds` rounds; the ratio shown is the median of the rounds' ratios (with their range).

--isas adds, for each kernel variant this CPU has (a process each, FDJPEG_ISA), the cycles per
pixel of FD and of jpeg() 4:2:0 on the 512x512 photo against the compute limit derived below, at
--clock-ghz: the core's real clock (a chain of dependent integer multiplies, 3 cycles each, timed
in C, tells it: a chain of adds of a constant ran at "8 GHz" on the Sapphire Rapids Xeon, whose
renamer folds them; virtual machines often report the nominal clock in /proc/cpuinfo, the default).

The compute limit. Every stage is IEEE single-precision adds, multiplies, min / max, conversions
and shuffles. On AMD Zen 4 (these EPYC machines), FP adds, conversions and the rounding adds
(x + 1.5 * 2^23 - 1.5 * 2^23) issue on two 256-bit pipes, multiplies on two others; a 512-bit
operation takes a pipe twice, so AVX2 and AVX-512 have the same limit: 2 pipes x 8 lanes = 16
add-type operations per cycle (on Intel Sapphire Rapids 512-bit adds issue on two ports, 32 a
cycle, half the limit printed for the AVX-512 variants). Adds dominate (the AAN transforms are 29
adds and 5 multiplies per 8 points), so the limit is add-type operations per pixel / 16, counted from csrc/block_math.hpp:
- the 8x8 transform of one block in 8-lane vector operations: forward AAN 2 x 29 adds, inverse
  2 x 29, quantization 8 x 2 rounding adds; 8-bit samples round the IDCT output (8 x 2); JPEG's
  level shift adds 8 + 8: 148 for FD on 8-bit images, 164 for JPEG; per sample x 8 / 64.
- FD, 8-bit RGB: 3 conversions in, 3 x 148 / 8 in the transform, 3 rounding adds and 3
  conversions out: 64.5 per pixel -> 4.03 cycles.
- jpeg() 4:2:0, 8-bit RGB: 3 conversions and 14 colour adds in (with rounding), downsampling
  2.5, the transform 1.5 samples x 164 / 8 = 30.75, upsampling 7, colour back 6 and its 6 clamps,
  3 rounding adds and 3 conversions out: 69.25 per pixel -> 4.33 cycles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import fdjpeg
from fdjpeg import benchmarks, tables

# Add-type operations per pixel / 16 per cycle (module docstring).
LIMIT_CYCLES_PER_PIXEL = {"fd": 64.5 / 16, "jpeg420": 69.25 / 16}
ISAS = ("baseline", "avx2", "avx512", "avx512vbmi")


def _rounds(ours, peer, repeat: int, rounds: int):
    """Median times of `ours` and `peer` and the median, min and max of peer / ours over `rounds`."""
    pairs = [benchmarks.time_pair(ours, peer, repeat) for _ in range(rounds)]
    ratios = [theirs / mine for mine, theirs in pairs]
    mine = float(np.median([p[0] for p in pairs]))
    theirs = float(np.median([p[1] for p in pairs]))
    return mine, theirs, float(np.median(ratios)), min(ratios), max(ratios)


def _clock_hz() -> float | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next(float(line.split(":")[1]) * 1e6 for line in f if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        return None


def _cycles_child(repeat: int) -> None:
    """In a process of its own (its variant fixed by FDJPEG_ISA): median seconds per 512x512 call."""
    img = benchmarks.images_for("512", 1)[0]
    out = {"isa": fdjpeg.isa()}
    for name, fn in (
        ("fd", lambda: fdjpeg.feature_distill(img, threads=1)),
        ("jpeg420", lambda: fdjpeg.jpeg(img, 75, subsampling="420", threads=1)),
    ):
        fn()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = float(np.median(times))
    print(json.dumps(out))


def _isa_table(repeat: int, rounds: int, clock_ghz: float | None) -> None:
    hz = clock_ghz * 1e9 if clock_ghz else _clock_hz()
    pixels = 512 * 512
    seen: dict[str, list[dict]] = {}
    for r in range(rounds):  # the variants alternate, round after round
        for isa in ISAS if r % 2 == 0 else ISAS[::-1]:
            env = {k: v for k, v in os.environ.items() if k not in ("FDJPEG_FORCE_PORTABLE", "FDJPEG_ISA")}
            env["FDJPEG_ISA"] = isa
            done = subprocess.run(
                [sys.executable, __file__, "--cycles-child", "--repeat", str(repeat)],
                env=env, capture_output=True, text=True, check=True,
            )
            got = json.loads(done.stdout.strip().splitlines()[-1])
            if got["isa"] == isa:
                seen.setdefault(isa, []).append(got)
    source = "given" if clock_ghz else "/proc/cpuinfo"
    clock = f"{hz / 1e9:.2f} GHz ({source})" if hz else "unknown clock"
    print(f"\ncycles per pixel, 512x512 photo, one thread, at {clock}; limit: add-type operations / 16 per cycle")
    print(f"{'kernels':<11} {'FD ms':>7} {'c/px':>6} {'limit':>6} {'x limit':>8}   {'jpeg420 ms':>10} {'c/px':>6} {'limit':>6} {'x limit':>8}")
    for isa, runs in seen.items():
        cells = []
        for name in ("fd", "jpeg420"):
            sec = float(np.median([g[name] for g in runs]))
            cpp = sec * hz / pixels if hz else float("nan")
            lim = LIMIT_CYCLES_PER_PIXEL[name]
            cells.append(f"{sec * 1e3:{'7' if name == 'fd' else '10'}.3f} {cpp:6.2f} {lim:6.2f} {cpp / lim:7.2f}x")
        print(f"{isa:<11} " + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--isas", action="store_true", help="cycles per pixel of each kernel variant against the limit")
    parser.add_argument("--clock-ghz", type=float, help="the core's clock for --isas (default: /proc/cpuinfo)")
    parser.add_argument("--cycles-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cycles_child:
        return _cycles_child(args.repeat)
    m = benchmarks.machine_description()
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, fdjpeg kernels {m['kernels']}; one thread, median of "
        f"{args.repeat} alternating calls, {args.rounds} rounds\n"
    )
    fd_q = tables.feature_distillation()
    jpeg_q = [t.ravel() for t in tables.ijg(75)]
    print(
        f"{'size':>8} {'fdjpeg':<16} {'ms':>7} {'MP/s':>6}   {'peer':<31} {'ms':>9} {'MP/s':>6} "
        f"{'peer/fdjpeg':>11} {'(range)':>12}"
    )
    for size in ("224", "512"):
        img = benchmarks.images_for(size, 1)[0]
        mp = img.shape[0] * img.shape[1] / 1e6
        fd = ("feature_distill", lambda: fdjpeg.feature_distill(img, threads=1))
        jp = ("jpeg q75 4:2:0", lambda: fdjpeg.jpeg(img, 75, subsampling="420", threads=1))
        pairs = [
            (fd, "Pillow, FD table 4:4:4", lambda: benchmarks.pillow_roundtrip(img, [fd_q.ravel()] * 2, 0), args.repeat, args.rounds),
            (fd, "numpy FD (vectorised)", lambda: benchmarks.numpy_feature_distill(img, fd_q.astype(np.float32)), 5, 1),
            (fd, "authors-style FD (Python loop)", lambda: benchmarks.authors_style_feature_distill(img, fd_q), 3, 1),
            (jp, "Pillow q75 4:2:0", lambda: benchmarks.pillow_roundtrip(img, jpeg_q, 2), args.repeat, args.rounds),
        ]
        for (ours_name, ours), peer_name, peer, repeat, rounds in pairs:
            mine, theirs, ratio, lo, hi = _rounds(ours, peer, repeat, rounds)
            spread = f"({lo:.1f}-{hi:.1f})" if rounds > 1 else ""
            print(
                f"{size + 'x' + size:>8} {ours_name:<16} {mine * 1e3:7.3f} {mp / mine:6.1f}   {peer_name:<31} "
                f"{theirs * 1e3:9.3f} {mp / theirs:6.1f} {ratio:10.1f}x {spread:>12}"
            )
    print()
    batch = benchmarks.images_for("224", 64)
    large = np.tile(benchmarks.images_for("512", 1)[0], (6, 8, 1))  # 3072 x 4096, 12.6 MP
    for label, one, two in [
        ("64 x 224x224 FD", lambda: fdjpeg.feature_distill(batch, threads=1), lambda: fdjpeg.feature_distill(batch, threads=2)),
        ("one 12.6 MP jpeg 4:2:0", lambda: fdjpeg.jpeg(large, 75, threads=1), lambda: fdjpeg.jpeg(large, 75, threads=2)),
    ]:
        t1, t2, ratio, lo, hi = _rounds(two, one, 5, args.rounds)
        print(f"{label}: 1 thread {t2 * 1e3:.1f} ms, 2 threads {t1 * 1e3:.1f} ms: {ratio:.2f}x ({lo:.2f}-{hi:.2f})")
    if args.isas:
        _isa_table(args.repeat, args.rounds, args.clock_ghz)


if __name__ == "__main__":
    main()
