"""Speed of the installed native core against another build of it, interleaved in one process.

    python bench/bench_core_ab.py OTHER_CORE_SO [--repeat 200]

OTHER_CORE_SO is a ``_core`` extension built from another revision (e.g. ``cmake -S <checkout>
-B /tmp/build_old && ninja -C /tmp/build_old``). Each case calls the two builds alternately (each first
every other time),
one thread, on the same real photo crops, so that the machine's load hits both alike; it also
checks that both give bit-identical results. Prints the median time of each and their ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

from fdjpeg import _core, benchmarks, tables


def _load(path: str):
    spec = importlib.util.spec_from_file_location("_core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    other = _load(args.other)
    fd = np.tile(tables.feature_distillation().astype(np.float32).ravel(), 3)[None]
    ijg = np.concatenate([tables.ijg(75)[0].ravel()] + [tables.ijg(75)[1].ravel()] * 2).astype(np.float32)[None]
    print(f"kernels {_core.isa()}; one thread, median of {args.repeat}, the two builds interleaved\n")
    print(f"{'case':<34} {'this ms':>9} {'other ms':>9} {'other/this':>10}")
    for size in ("224", "512"):
        img = benchmarks.images_for(size, 1)[0][None]
        for dtype in ("uint8", "float32"):
            x = img if dtype == "uint8" else (img / np.float32(255)).astype(np.float32)
            for label, q, color, sub, shift in [("FD", fd, 0, 0, False), ("jpeg q75 4:2:0", ijg, 1, 2, True)]:
                outs = [np.empty_like(x), np.empty_like(x)]
                times = [[], []]
                for i in range(args.repeat):
                    order = ((0, _core), (1, other)) if i % 2 == 0 else ((1, other), (0, _core))
                    for k, module in order:
                        t0 = time.perf_counter()
                        module.quantize(x, outs[k], q, q, color, sub, shift, 1, None, 1)
                        times[k].append(time.perf_counter() - t0)
                assert np.array_equal(outs[0].view(np.uint8), outs[1].view(np.uint8)), "results differ"
                mine, theirs = (float(np.median(t)) for t in times)
                name = f"{size}x{size} {dtype} {label}"
                print(f"{name:<34} {mine * 1e3:9.3f} {theirs * 1e3:9.3f} {theirs / mine:9.2f}x")


if __name__ == "__main__":
    main()
