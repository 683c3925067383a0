"""``fdjpeg classifiers``: list the pretrained classifiers and score them on their clean data."""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classifiers",
        help="list fdjpeg's pretrained classifiers and their clean accuracy on their datasets (needs the eval extra)",
    )
    p.add_argument("names", nargs="*", help="classifiers to score (default: all)")
    p.add_argument("--confidence", type=float, default=0.5,
                   help="for efficientnet-lite0: also count the photo crops whose top softmax probability reaches this (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .. import datasets
    from ..models import CLASSIFIERS, common, load_classifier

    unknown = [n for n in args.names if n not in CLASSIFIERS]
    if unknown:
        raise SystemExit(f"unknown classifier(s) {', '.join(unknown)}; available: {', '.join(CLASSIFIERS)}")
    torch.set_num_threads(args.threads)
    for name in args.names or list(CLASSIFIERS):
        spec = CLASSIFIERS[name]
        model = load_classifier(name)
        images, labels = getattr(datasets, spec.dataset)()
        start = time.perf_counter()
        acc = common.accuracy(model, images, labels)
        seconds = time.perf_counter() - start
        print(f"{name:20s} {spec.dataset:16s} {len(images):6d} images  top-1 {acc:.4f} "
              f"({round(acc * len(images))}/{len(images)})  {seconds:.1f} s")
        if spec.dataset == "foolbox_imagenet":
            crops = datasets.photo_crops(spec.input_shape[1])
            probs = common.predict(model, np.stack(list(crops.values())))
            confident = int((probs.max(1) >= args.confidence).sum())
            print(f"{'':20s} photo_crops      {len(crops):6d} crops   {confident} with top probability >= {args.confidence}")
    return 0
