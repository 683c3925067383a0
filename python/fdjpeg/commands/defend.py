"""``fdjpeg defend SRC DST``: run a defense over an image file, a folder tree or a list of files."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .. import batch, defenses, imagefiles


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "defend",
        help="defend every image under SRC and write the results under DST (same tree)",
        description=(
            "Defend every image under SRC (an image file, a folder walked recursively, or a .txt/.lst "
            "list of paths) and write each result under DST at the same relative path. When SRC is "
            "WebDataset-style tar shards (a .tar file, a folder of them, or a list), DST gets defended "
            "shards: each sample's key and other members kept. Inputs are never "
            "written to; outputs appear whole or not at all. Bad files are reported and skipped; the exit "
            "status is 1 when any file failed."
        ),
    )
    p.add_argument("src", metavar="SRC", help="image file, folder, or list file (one path a line); or .tar shards (a file, a folder, a list)")
    p.add_argument("dst", metavar="DST", help="output folder (or an output .png/.jpg path when SRC is one image)")
    p.add_argument("--defense", default="fd", help=f"defense name: {', '.join(defenses.transform_names())} (default: %(default)s)")
    p.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="defense parameter, repeatable, read as the parameter's declared type (e.g. --param quality=50 "
        "--param subsampling=444 --param qualities=20,40,60 --param flip_back=yes --param seed=none)",
    )
    p.add_argument(
        "--format", choices=sorted(batch.FORMATS), default=None,
        help=f"png (lossless: exactly the defended pixels; RGB/RGBA written by {imagefiles.png_encoder_name()}, "
        "grey and grey+alpha by Pillow zlib at --png-level) or jpeg (a JPEG carrying the defense's own "
        "quantization tables, written by Pillow); default png, or from DST's extension. JPEG inputs are "
        f"decoded by {imagefiles.jpeg_decoder_name()} (EXIF-rotated, CMYK and other images by Pillow)",
    )
    p.add_argument("--resume", action="store_true", help="skip outputs a previous run finished")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist (never inputs)")
    p.add_argument(
        "--threads", type=_positive, default=None,
        help="cores to use: one worker process each, running the native core on one thread "
        "(randomised and torch defenses: one process, the core on this many threads) (default: all cores)",
    )
    p.add_argument(
        "--fsync", action="store_true",
        help="sync each output to the disk before renaming it into place, so that it is whole or absent after a "
        "power failure too (without it: after the run or a kill); slower, at the disk's pace",
    )
    p.add_argument("--io-threads", type=_positive, default=None, help="writer threads of each worker (default: 1, or 4 with --fsync)")
    p.add_argument(
        "--batch-size", type=_positive, default=16,
        help="images a worker decodes, defends (one core call per shape) and writes as one chunk (default: %(default)s)",
    )
    p.add_argument(
        "--max-pixels", type=_positive, default=batch.DEFAULT_MAX_PIXELS,
        help="skip (and report) images with more pixels than this (default: Pillow's %(default)s)",
    )
    p.add_argument(
        "--png-level", type=int, default=1, choices=range(10), metavar="0-9",
        help=f"zlib level of the PNGs Pillow writes: grey and grey+alpha always"
        f"{'' if imagefiles.png_encoder_name() == 'fpng' else ', and RGB/RGBA here as fpng is not installed'} "
        f"(RGB/RGBA: {imagefiles.png_encoder_name()}) (default: %(default)s)",
    )
    p.add_argument(
        "--report", default=None,
        help="where to write the JSON report (default: DST/fdjpeg-report.json); never an input, an output or inside SRC",
    )
    p.add_argument(
        "--follow-links", action="store_true",
        help="defend files that links in SRC point to outside it, and walk linked folders (default: skip and report them)",
    )
    p.add_argument(
        "--shard-size", type=_positive, default=None, metavar="N",
        help="tar shards only: write shard-000000.tar, ... of N samples each (default: one output shard per input shard)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        params = _checked_params(args.defense, args.param)
    except (ValueError, TypeError) as exc:
        print(f"fdjpeg defend: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = _signals_stop(stop)
    try:
        summary = batch.defend_files(
            args.src, args.dst, defense=args.defense, params=params, fmt=args.format, resume=args.resume,
            overwrite=args.overwrite, threads=args.threads, io_threads=args.io_threads,
            batch_size=args.batch_size, max_pixels=args.max_pixels, report=args.report,
            png_level=args.png_level, follow_links=args.follow_links, shard_size=args.shard_size, fsync=args.fsync,
            progress=not args.quiet, stop=stop,
        )
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"fdjpeg defend: {batch.shown(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # DST's file system refused (read-only mount, full disk): one line, no traceback
        print(f"fdjpeg defend: {batch.shown(str(exc))}", file=sys.stderr)
        return 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(summary.text())
    return summary.exit_status


def _checked_params(name: str, items) -> dict:
    """The typed ``--param`` values, checked before any file is touched (no defense is built)."""
    params = defenses.parse_params(name, items)
    defenses.check_transform(name, **params)
    return params


def _positive(text: str) -> int:
    """argparse type of counts that must be at least 1 (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _signals_stop(stop: threading.Event) -> dict:
    """Ctrl-C and SIGTERM ask the run to stop at its next safe point (temporary files removed,
    report written) rather than raising in the middle of a thread pool's bookkeeping; a second
    signal raises KeyboardInterrupt at once. Returns the previous handlers."""

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    return previous
