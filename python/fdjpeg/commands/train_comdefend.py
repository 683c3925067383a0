"""``fdjpeg train-comdefend``: train ComDefend on clean images (real photos or Fashion-MNIST).

RGB: random 32 x 32 patches (with random left-right flips) of the real photographs
(:func:`fdjpeg.datasets.photo_files`: scikit-image, scikit-learn, matplotlib, opencv-doc), two of
them held out for the reported PSNR. Grey: Fashion-MNIST's training images, PSNR on its test images.
Checkpoints (model, optimiser, random states) are written every ``--save-every`` iterations and
picked up again with ``--resume``; the final weights are written as safetensors.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

from .. import datasets


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-comdefend", help="train ComDefend (ComCNN + RecCNN) on clean images")
    p.add_argument("--variant", choices=("rgb", "grey"), default="rgb",
                   help="rgb: 32x32 patches of real photos; grey: Fashion-MNIST (default: %(default)s)")
    p.add_argument("--arch", choices=("plain", "residual"), default="plain", help="network (default: %(default)s)")
    p.add_argument("--out", help="weights file to write (default: comdefend-<variant>[-residual].safetensors here)")
    p.add_argument("--checkpoint", help="checkpoint file (default: <out>.ckpt)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if it exists")
    p.add_argument("--iterations", type=int, default=2500, help="stop after this many iterations (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=None, help="also stop after this many minutes of training")
    p.add_argument("--batch", type=int, default=20, help="images per iteration (default: %(default)s, as the authors)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--patch", type=int, default=32, help="RGB patch size (default: %(default)s)")
    p.add_argument("--holdout", default="astronaut,coffee",
                   help="RGB: comma-separated photos kept out of training for the PSNR (default: %(default)s)")
    p.add_argument("--eval-images", type=int, default=500,
                   help="grey: the first N Fashion-MNIST test images give the held-out PSNR (default: %(default)s)")
    p.add_argument("--save-every", type=int, default=50, help="checkpoint period in iterations (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--evaluate", metavar="WEIGHTS",
                   help="only report the held-out PSNR of these weights ('shipped': fdjpeg's own), no training")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..defenses import comdefend

    if args.iterations < 1 or args.batch < 1 or args.eval_images < 1:
        raise SystemExit("--iterations, --batch and --eval-images must be positive")
    torch.set_num_threads(args.threads)
    suffix = "" if args.arch == "plain" else "-residual"
    out = args.out or f"comdefend-{args.variant}{suffix}.safetensors"
    ckpt_path = args.checkpoint or out + ".ckpt"
    device = torch.device(args.device)

    train, held_out = _data(args)
    if args.evaluate:
        path = None if args.evaluate == "shipped" else args.evaluate
        scores = _evaluate(comdefend.load(args.variant, args.arch, path=path), held_out, args)
        for name, value in scores.items():
            print(f"held-out PSNR {name}: {value:.2f} dB")
        return 0
    # channels-last runs oneDNN's fastest CPU convolutions (about 3x here on 32x32 batches)
    model = comdefend.ComDefend(args.variant, args.arch).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    start_iter, elapsed = 0, 0.0
    if args.resume and os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if (state["variant"], state["arch"]) != (args.variant, args.arch):
            raise SystemExit(f"{ckpt_path} is a {state['variant']}/{state['arch']} checkpoint")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["torch_rng"].cpu() if device.type == "cpu" else state["torch_rng"])
        start_iter, elapsed = int(state["iteration"]), float(state["seconds"])
        print(f"resumed from {ckpt_path} at iteration {start_iter} ({elapsed:.0f} s trained)")

    def save_checkpoint(iteration: int, seconds: float) -> None:
        tmp = ckpt_path + ".tmp"
        torch.save({
            "variant": args.variant, "arch": args.arch, "iteration": iteration, "seconds": seconds,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "numpy_rng": rng.bit_generator.state, "torch_rng": gen.get_state(),
        }, tmp)
        os.replace(tmp, ckpt_path)

    print(f"training ComDefend {args.variant}/{args.arch}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(train)} training images, batch {args.batch}, up to {args.iterations} iterations"
          + (f" or {args.minutes} min" if args.minutes else ""))
    model.train()
    t0, it, window = time.perf_counter() - elapsed, start_iter, []
    while it < args.iterations and not (args.minutes and time.perf_counter() - t0 >= args.minutes * 60):
        batch = torch.from_numpy(_batch(train, args, rng)).to(device, memory_format=torch.channels_last)
        loss, mse = comdefend.training_loss(model, batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        it += 1
        window = (window + [float(mse.detach())])[-20:]
        spent = time.perf_counter() - t0
        if it % 5 == 0 or it == args.iterations:
            psnr = 10 * np.log10(1.0 / max(np.mean(window), 1e-12))
            print(f"\r  iteration {it}/{args.iterations}  loss {loss.item():.5f}  train PSNR {psnr:5.2f} dB  "
                  f"{spent:6.0f} s  {(it - start_iter) / max(spent - elapsed, 1e-9):.2f} it/s", end="", flush=True)
        if it % args.save_every == 0:
            save_checkpoint(it, spent)
            print(f"\n  checkpoint {it}: {_binary_code_diagnosis(model, batch)}", flush=True)
    spent = time.perf_counter() - t0
    print()
    save_checkpoint(it, spent)

    model.eval()
    scores = _evaluate(model, held_out, args)
    for name, value in scores.items():
        print(f"held-out PSNR {name}: {value:.2f} dB")
    comdefend.save_weights(model, out, {
        "iterations": it, "seconds": f"{spent:.0f}", "batch": args.batch, "seed": args.seed,
        "threads": args.threads, **{f"psnr_{k}": f"{v:.2f}" for k, v in scores.items()},
    })
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB) after {it} iterations, {spent / 60:.1f} min "
          f"(this run: {time.process_time() / 60:.1f} CPU min)")
    return 0


def _data(args: argparse.Namespace):
    """(training images, held-out images), float32 N x C x H x W in [0, 1] (lists for RGB photos)."""
    if args.variant == "grey":
        train, _ = datasets.fashion_mnist("train")
        test, _ = datasets.fashion_mnist("test")
        to_float = lambda a: (a.astype(np.float32) / 255.0)[:, None]
        return to_float(train), {"fashion-mnist-test": to_float(test[: args.eval_images])}
    files, notes = datasets.photo_files()
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    by_stem = {key.split("/", 1)[1]: path for key, path in files.items()}
    holdout = [h for h in args.holdout.split(",") if h]
    missing = [h for h in holdout if h not in by_stem]
    if missing:
        raise SystemExit(f"--holdout names unknown photos {missing}; available: {sorted(by_stem)}")

    def as_chw(path: str) -> np.ndarray:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0

    train = [as_chw(path) for stem, path in by_stem.items() if stem not in holdout]
    return train, {name: as_chw(by_stem[name])[None] for name in holdout}


def _batch(train, args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray:
    if args.variant == "grey":
        return train[rng.integers(0, len(train), args.batch)]
    p = args.patch
    out = np.empty((args.batch, 3, p, p), dtype=np.float32)
    for i in range(args.batch):
        img = train[rng.integers(len(train))]
        top, left = rng.integers(0, img.shape[1] - p + 1), rng.integers(0, img.shape[2] - p + 1)
        patch = img[:, top : top + p, left : left + p]
        out[i] = patch[:, :, ::-1] if rng.random() < 0.5 else patch
    return out


def _binary_code_diagnosis(model, batch) -> str:
    """How far training is from a usable defense, on the current batch: the PSNR of the binary-code
    reconstruction (what the defense does) and the share of code logits still within the training
    noise (|logit| < sigma), which the binary code cannot reproduce."""
    import torch

    from ..defenses.comdefend import TRAIN_SIGMA, binary_code

    model.eval()
    with torch.no_grad():
        logits = model.com(batch)
        recon = model.rec(binary_code(logits))
    model.train()
    mse = float(torch.mean((recon - batch) ** 2))
    within = float((logits.abs() < TRAIN_SIGMA).float().mean())
    return f"binary-code PSNR {10 * np.log10(1.0 / max(mse, 1e-12)):.2f} dB, logits within the noise {within:.1%}"


def _evaluate(model, held_out, args) -> dict:
    """PSNR (dB, over 8-bit pixels as a viewer sees them) of the binary-code reconstruction, whole
    image and in 32x32 tiles; and, as a diagnosis of training, of the reconstruction from the noisy
    training-time code sigmoid(ComCNN(x) - N(0, 20^2)) (not what the defense does)."""
    import torch

    from ..defenses import comdefend

    scores = {}
    with torch.no_grad():
        for name, images in held_out.items():
            x = torch.from_numpy(images)
            ref = torch.round(x * 255)
            for tile in (None, 32):
                model.tile = tile
                y = torch.round(comdefend.defend(x, model, batch_size=50) * 255)
                mse = float(torch.mean((y - ref) ** 2))
                scores[f"{name}{'' if tile is None else '-tiled32'}"] = 10 * np.log10(255.0**2 / max(mse, 1e-12))
            model.tile = None
            gen = torch.Generator().manual_seed(args.seed)
            y = torch.cat([_noisy_reconstruction(model, x[i : i + 50], gen) for i in range(0, len(x), 50)])
            mse = float(torch.mean((torch.round(y * 255) - ref) ** 2))
            scores[f"{name}-noisy-code"] = 10 * np.log10(255.0**2 / max(mse, 1e-12))
    return scores


def _noisy_reconstruction(model, x, gen):
    import torch

    from ..defenses.comdefend import TRAIN_SIGMA

    logits = model.com(x)
    noise = torch.randn(logits.shape, generator=gen, dtype=logits.dtype) * TRAIN_SIGMA
    return model.rec(torch.sigmoid(logits - noise))
