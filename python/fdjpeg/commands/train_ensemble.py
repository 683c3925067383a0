"""``fdjpeg train-ensemble``: the compression-vaccinated Fashion-MNIST ensemble.

Zhang & Gao's recipe (SHIELD's vaccination with JPEG qualities): for each JPEG quality, fine-tune
the Fashion-MNIST classifier on training images compressed at that quality; the members vote
(:class:`fdjpeg.defenses.ensemble.MajorityVote`), each seeing the test image compressed at its own
quality. Prints each member's and the ensemble's test accuracy and writes all members' weights in
one safetensors file.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from .. import datasets


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-ensemble", help="fine-tune one Fashion-MNIST classifier per JPEG quality (vaccinated ensemble)")
    p.add_argument("--qualities", default="20,40,60,80", help="JPEG qualities, one member each (default: %(default)s)")
    p.add_argument("--out", default="ensemble_fashion_jpeg.safetensors", help="weights file to write (default: %(default)s)")
    p.add_argument("--init", choices=("shipped", "scratch"), default="shipped",
                   help="start each member from the shipped clean FashionCNN or from scratch (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs per member (default: %(default)s)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.nn.functional as F

    from .. import ops
    from ..defenses.ensemble import MajorityVote, jpeg_defense, save_members
    from ..models import FashionCNN, fashion_cnn

    qualities = [int(q) for q in args.qualities.split(",") if q.strip()]
    if not qualities:
        raise SystemExit("--qualities must list at least one JPEG quality")
    if os.path.exists(args.out) and not args.force:
        raise SystemExit(f"{args.out} exists; pass --force to overwrite it")
    torch.set_num_threads(args.threads)
    train_x, train_y = datasets.fashion_mnist("train")
    test_x, test_y = datasets.fashion_mnist("test")
    y_all = torch.from_numpy(train_y)
    started = time.perf_counter()
    members, accuracies = [], {}
    for q in qualities:
        t0 = time.perf_counter()
        x_all = torch.from_numpy(ops.jpeg(train_x[..., None], q)[..., 0]).unsqueeze(1).float().div_(255.0)
        torch.manual_seed(args.seed + q)
        rng = np.random.default_rng(args.seed + q)
        model = fashion_cnn() if args.init == "shipped" else FashionCNN()
        for p in model.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        steps = (len(x_all) + args.batch - 1) // args.batch
        for epoch in range(args.epochs):
            model.train()
            order = torch.from_numpy(rng.permutation(len(x_all)))
            flips = torch.from_numpy(rng.random(len(x_all)) < 0.5)
            for step in range(steps):
                idx = order[step * args.batch : (step + 1) * args.batch]
                x = torch.where(flips[idx][:, None, None, None], x_all[idx].flip(-1), x_all[idx])
                loss = F.cross_entropy(model(x), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if (step + 1) % 50 == 0 or step + 1 == steps:
                    print(f"\r  quality {q}: epoch {epoch + 1}/{args.epochs} step {step + 1}/{steps} loss {loss.item():.4f}",
                          end="", flush=True)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        member = MajorityVote([(jpeg_defense(q), model)], batch_size=1000)
        acc = float((member.predict(test_x).numpy() == test_y).mean())
        clean = float((MajorityVote([(None, model)], 1000).predict(test_x).numpy() == test_y).mean())
        accuracies[q] = acc
        print(f"\nmember q{q}: test accuracy {acc:.4f} on JPEG-{q} images, {clean:.4f} on clean images, "
              f"{time.perf_counter() - t0:.0f} s")
        members.append((jpeg_defense(q), model))
    ensemble = MajorityVote(members, batch_size=1000)
    result = ensemble(test_x)
    acc = float((result.labels.numpy() == test_y).mean())
    unanimous = float((result.agreement == 1).double().mean())
    spent = time.perf_counter() - started
    print(f"ensemble of {len(members)}: test accuracy {acc:.4f}; unanimous on {unanimous:.1%} of images; {spent:.0f} s")
    save_members([m for _, m in members], qualities, args.out, {
        "init": args.init, "epochs": args.epochs, "lr": args.lr, "seed": args.seed, "seconds": f"{spent:.0f}",
        "ensemble_test_accuracy": f"{acc:.4f}",
        **{f"member_q{q}_test_accuracy": f"{a:.4f}" for q, a in accuracies.items()},
    })
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")
    return 0
