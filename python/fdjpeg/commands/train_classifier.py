"""``fdjpeg train-classifier``: train the Fashion-MNIST CNN on the full training set and save it."""

from __future__ import annotations

import argparse
import os
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-classifier",
        help="train fdjpeg's Fashion-MNIST CNN on the 60,000 training images (a few CPU minutes) and write safetensors",
    )
    p.add_argument("--out", default="fashion_cnn.safetensors", help="output file (default: %(default)s); an existing file is kept unless --force")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--epochs", type=int, default=4, help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import datasets
    from ..models import common, fashion

    if os.path.exists(args.out) and not args.force:
        raise SystemExit(f"{args.out} exists; pass --force to overwrite it or choose another --out")
    torch.set_num_threads(args.threads)
    train_x, train_y = datasets.fashion_mnist("train")
    test_x, test_y = datasets.fashion_mnist("test")
    print(f"training FashionCNN on {len(train_x)} images: {args.epochs} epochs, seed {args.seed}, {args.threads} threads")
    start = time.perf_counter()
    model = fashion.train(train_x, train_y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    seconds = time.perf_counter() - start
    acc = common.accuracy(model, test_x, test_y)
    fashion.save(model, args.out)
    print(f"trained in {seconds:.0f} s; test accuracy {acc:.4f} on {len(test_x)} images; wrote {args.out}")
    return 0
