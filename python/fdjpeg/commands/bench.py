"""``fdjpeg bench``: fdjpeg's defenses beside every peer, measured pair by pair in one run."""

from __future__ import annotations

import argparse
import os

from .. import benchmarks


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time fdjpeg against Pillow, numpy, the authors' code style, IBM ART, kornia, NVIDIA DALI, TV minimisation and image quilting as Guo et al. ran them ...",
    )
    p.add_argument("--out", default="fdjpeg-bench", help="folder for bench.md, bench.json, bench.png (default: %(default)s)")
    p.add_argument("--sizes", nargs="+", default=["224", "512", "full"], choices=["224", "512", "full"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 0], help="fdjpeg threads; 0 = all cores")
    p.add_argument("--peers", nargs="+", default=None, help="peer names to run (default: all)")
    p.add_argument("--repeat", type=int, default=10, help="timed calls of each side of a pair (median)")
    p.add_argument("--quick", action="store_true", help="224x224, batches 1 and 8, one thread, 3 repeats")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.sizes, args.batches, args.threads, args.repeat = ["224"], [1, 8], [1], 3
    unknown = set(args.peers or []) - {p.name for p in benchmarks.PEERS}
    if unknown:
        raise SystemExit(f"unknown peers {sorted(unknown)}; known: {[p.name for p in benchmarks.PEERS]}")
    report = benchmarks.run(args.sizes, args.batches, args.threads, args.peers, args.repeat, progress=print)
    os.makedirs(args.out, exist_ok=True)
    markdown = benchmarks.to_markdown(report)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        f.write(benchmarks.to_json(report))
    try:
        benchmarks.plot(report, os.path.join(args.out, "bench.png"))
    except ImportError:
        print("matplotlib is not installed: no bench.png")
    print()
    print(markdown)
    print(f"wrote {args.out}/bench.md, bench.json, bench.png")
    return 0
