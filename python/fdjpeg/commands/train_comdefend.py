"""``fdjpeg train-comdefend``: train ComDefend on clean images (real photos or Fashion-MNIST).

RGB: random 32 x 32 patches (with random left-right flips) of the real photographs of
:func:`fdjpeg.datasets.photo_files`, at the scale of :func:`fdjpeg.datasets.photo_crops` (shorter side at
most 448 px); every 8th photo (``--holdout-every``) of the ``--sources`` is held out. The held-out
photos' 224 x 224 crops give the reported PSNR, photo by photo, and the share of EfficientNet-Lite0's
confident clean predictions that the defense keeps. The weights list the photos they were trained on
(metadata ``training_photos``), and ``--evaluate`` holds out every other photo: also those of
sources added after the weights were trained. Grey: Fashion-MNIST's training images, PSNR on its test images.
Checkpoints (model, optimiser, random states) are written every ``--save-every`` iterations and
picked up again with ``--resume``; the final weights are written as safetensors.
"""

from __future__ import annotations

import argparse
import math
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
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="learning rate over --iterations: cosine decay from --lr to zero, or constant (the "
                        "authors'; it can diverge in long runs) (default: %(default)s)")
    p.add_argument("--clip", type=float, default=1.0,
                   help="clip the gradient's global norm to this (0: no clipping) (default: %(default)s)")
    p.add_argument("--patch", type=int, default=32, help="RGB patch size (default: %(default)s)")
    p.add_argument("--holdout-every", type=int, default=8,
                   help="RGB: hold out every N-th photo (sorted by name) for the PSNR (default: %(default)s)")
    p.add_argument("--holdout", default="",
                   help="RGB: comma-separated photo names (stems) to hold out instead of every N-th")
    p.add_argument("--sources", default="",
                   help="RGB: comma-separated photo sources of fdjpeg.datasets.photo_files to train and hold out "
                        "from (default: all; the shipped weights: skimage,sklearn,matplotlib,opencv,gcompris,"
                        "lomiri,palapeli)")
    p.add_argument("--no-diagnosis", dest="diagnosis", action="store_false",
                   help="skip the 32x32-tile and noisy-code PSNRs (each another pass of the networks over the "
                        "held-out images)")
    p.add_argument("--eval-images", type=int, default=500,
                   help="grey: the first N Fashion-MNIST test images give the held-out PSNR (default: %(default)s)")
    p.add_argument("--save-every", type=int, default=50, help="checkpoint period in iterations (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--bf16", action="store_true",
                   help="train under bfloat16 autocast (weights and optimiser stay float32; about 4x faster on "
                        "CPUs with AMX or AVX-512 BF16); evaluation is always float32")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--evaluate", metavar="WEIGHTS",
                   help="only measure these weights ('shipped': fdjpeg's own), no training: RGB on every photo of "
                        "--sources not among the training photos they list (if they list none: every N-th)")
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

    if args.evaluate:
        model = comdefend.load(args.variant, args.arch, path=None if args.evaluate == "shipped" else args.evaluate)
        trained = model.metadata.get("training_photos")
        _, held_out, _ = _data(args, trained=set(trained.split(",")) if trained else None)
        _report(model, held_out, args)
        return 0
    train, held_out, train_stems = _data(args)
    # channels-last runs oneDNN's fastest CPU convolutions (about 3x here on 32x32 batches)
    model = comdefend.ComDefend(args.variant, args.arch).to(device, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    if args.schedule == "cosine":  # a function of the iteration, so a resumed run continues the same curve
        sched = lambda i: 0.5 * (1 + math.cos(math.pi * min(i, args.iterations) / args.iterations))  # noqa: E731
    else:
        sched = lambda i: 1.0  # noqa: E731
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
        if os.path.exists(ckpt_path):  # the one before stays (.prev), to go back to if training went wrong
            os.replace(ckpt_path, ckpt_path + ".prev")
        os.replace(tmp, ckpt_path)

    print(f"training ComDefend {args.variant}/{args.arch}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(train)} training images, batch {args.batch}, up to {args.iterations} iterations"
          + (f" or {args.minutes} min" if args.minutes else ""))
    model.train()
    t0, it, window = time.perf_counter() - elapsed, start_iter, []
    while it < args.iterations and not (args.minutes and time.perf_counter() - t0 >= args.minutes * 60):
        batch = torch.from_numpy(_batch(train, args, rng)).to(device, memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss, mse = comdefend.training_loss(model, batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        for group in opt.param_groups:
            group["lr"] = args.lr * sched(it)
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
    if it % args.save_every:  # not saved at this iteration yet
        save_checkpoint(it, spent)

    model.eval()
    scores, kept = _report(model, held_out, args)
    summary = {k: v for k, v in scores.items() if k not in held_out or len(held_out) == 1}
    comdefend.save_weights(model, out, {
        "iterations": it, "seconds": f"{spent:.0f}", "batch": args.batch, "seed": args.seed,
        "threads": args.threads, "bf16": str(args.bf16), "schedule": args.schedule, "clip": args.clip, **{f"psnr_{k}": f"{v:.2f}" for k, v in summary.items()},
        **({"clean_predictions_kept": kept} if kept else {}),
        **({"training_photos": ",".join(sorted(train_stems))} if train_stems else {}),
    })
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB) after {it} iterations, {spent / 60:.1f} min "
          f"(this run: {time.process_time() / 60:.1f} CPU min)")
    return 0


def _data(args: argparse.Namespace, trained: set | None = None):
    """(training images, held-out images, training photos' names). Grey: float32 N x 1 x 28 x 28 in
    [0, 1], ``{"fashion-mnist-test": ...}`` and no names. RGB: a list of uint8 H x W x 3 photos,
    ``{photo: float32 crops N x 3 x 224 x 224 in [0, 1]}`` (the held-out photos' crops of
    :func:`fdjpeg.datasets.photo_crops`) and the training photos' stems.

    ``trained``: the photos some weights were trained on (their ``training_photos``); every other
    photo of ``--sources`` is then held out, so photos added to :func:`fdjpeg.datasets.photo_files`
    after the weights were trained count as held out, and no photo they were trained on does."""
    if args.variant == "grey":
        train, _ = datasets.fashion_mnist("train")
        test, _ = datasets.fashion_mnist("test")
        to_float = lambda a: (a.astype(np.float32) / 255.0)[:, None]
        return to_float(train), {"fashion-mnist-test": to_float(test[: args.eval_images])}, []
    files, notes = datasets.photo_files()
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    sources = _sources(args.sources)
    files = {key: path for key, path in files.items() if key.split("/", 1)[0] in sources}
    by_stem = {key.split("/", 1)[1]: key for key in sorted(files)}
    if trained is not None:
        holdout = [stem for stem in by_stem if stem not in trained]
    else:
        if args.evaluate:
            print("note: these weights do not list their training photos; holding out every "
                  f"{args.holdout_every}th photo", file=sys.stderr)
        holdout = held_out_photos(list(by_stem), args.holdout, args.holdout_every)
    crops = datasets.photo_crops(CROP_SIZE, log=lambda line: print(f"note: {line}", file=sys.stderr))
    held_out = {}
    for stem in holdout:
        mine = [crops[name] for name in sorted(crops) if name.rsplit("/", 1)[0] == by_stem[stem]]
        if mine:  # a photo smaller than a crop has none
            held_out[stem] = np.ascontiguousarray(np.stack(mine).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
    limit = 2 * CROP_SIZE  # the scale photo_crops shows them at

    def load(path: str) -> np.ndarray:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        return datasets.resize_shorter_side(rgb, limit) if min(rgb.shape[:2]) > limit else rgb

    train = [] if args.evaluate else [(stem, load(files[key])) for stem, key in by_stem.items() if stem not in holdout]
    train = [(stem, img) for stem, img in train if min(img.shape[:2]) >= args.patch]
    if not held_out:
        raise SystemExit(f"no held-out photo large enough for a {CROP_SIZE}x{CROP_SIZE} crop among the "
                         f"{len(by_stem)} photos of {','.join(sources)}: nothing to measure on")
    crop_count = sum(len(v) for v in held_out.values())
    if trained is not None:
        print(f"held out: the {len(holdout)} photos these weights were not trained on, {len(held_out)} of them "
              f"large enough for a crop ({crop_count} crops)")
    else:
        print(f"{len(train)} training photos, {len(held_out)} held out ({crop_count} crops)")
    return [img for _, img in train], held_out, [stem for stem, _ in train]


def _sources(names: str) -> tuple:
    """The photo sources that ``--sources`` names (comma-separated; empty: all of them)."""
    chosen = tuple(n for n in names.split(",") if n) or tuple(datasets.PHOTO_SOURCES)
    unknown = [n for n in chosen if n not in datasets.PHOTO_SOURCES]
    if unknown:
        raise SystemExit(f"--sources names unknown photo sources {unknown}; available: {list(datasets.PHOTO_SOURCES)}")
    return chosen


CROP_SIZE = 224


def held_out_photos(stems: list, names: str, every: int) -> list:
    """The photos kept out of training: those named in ``names`` (comma-separated stems), else every
    ``every``-th of the sorted stems (the 8th, 16th, ...)."""
    named = [h for h in names.split(",") if h]
    if named:
        missing = [h for h in named if h not in stems]
        if missing:
            raise SystemExit(f"--holdout names unknown photos {missing}; available: {sorted(stems)}")
        return named
    if every < 2:
        raise SystemExit(f"--holdout-every must be at least 2, got {every}")
    return sorted(stems)[every - 1 :: every]


def _batch(train, args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray:
    if args.variant == "grey":
        return train[rng.integers(0, len(train), args.batch)]
    p = args.patch
    out = np.empty((args.batch, 3, p, p), dtype=np.float32)
    for i in range(args.batch):
        img = train[rng.integers(len(train))]
        top, left = rng.integers(0, img.shape[0] - p + 1), rng.integers(0, img.shape[1] - p + 1)
        patch = img[top : top + p, left : left + p].transpose(2, 0, 1)
        out[i] = patch[:, :, ::-1] if rng.random() < 0.5 else patch
    return out / np.float32(255.0)


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


def _report(model, held_out, args):
    """Print the held-out figures; return ``(PSNR scores, clean predictions kept or "")``."""
    scores, defended = _evaluate(model, held_out, args)
    for name, value in scores.items():
        print(f"held-out PSNR {name}: {value:.2f} dB")
    kept = _clean_predictions_kept(held_out, defended) if args.variant == "rgb" else ""
    if kept:
        print(f"clean predictions kept: {kept}")
    return scores, kept


def _psnr(y, ref) -> float:
    import torch

    mse = float(torch.mean((torch.round(y * 255) - ref) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def _evaluate(model, held_out, args) -> tuple[dict, dict]:
    """PSNR (dB, over 8-bit pixels as a viewer sees them) of the binary-code reconstruction: per
    held-out set (each photo for RGB) and their mean; unless ``--no-diagnosis``, over all of them in
    the authors' 32x32 tiles and, as a diagnosis of training, of the reconstruction from the noisy
    training-time code sigmoid(ComCNN(x) - N(0, 20^2)) (not what the defense does). Returns the
    scores and the defended images (whole-image pass), by held-out set."""
    import torch

    from ..defenses import comdefend

    scores, defended, tiled, noisy, refs = {}, {}, [], [], []
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, images in held_out.items():
            x = torch.from_numpy(images)
            refs.append(torch.round(x * 255))
            model.tile = None
            defended[name] = comdefend.defend(x, model, batch_size=50)
            scores[name] = _psnr(defended[name], refs[-1])
            if not args.diagnosis:
                continue
            model.tile = 32
            tiled.append(comdefend.defend(x, model, batch_size=50))
            model.tile = None
            noisy.append(torch.cat([_noisy_reconstruction(model, x[i : i + 50], gen) for i in range(0, len(x), 50)]))
    label = next(iter(held_out)) if len(held_out) == 1 else "held-out-photos"
    if len(held_out) > 1:
        scores[f"{label}-mean"] = float(np.mean(list(scores.values())))
    if args.diagnosis:
        ref = torch.cat(refs)
        scores[f"{label}-tiled32"] = _psnr(torch.cat(tiled), ref)
        scores[f"{label}-noisy-code"] = _psnr(torch.cat(noisy), ref)
    return scores, defended


#: Defenses whose kept clean predictions ``--evaluate`` prints beside ComDefend's.
REFERENCE_DEFENSES = ("jpeg:quality=75", "fd")


def _clean_predictions_kept(held_out, defended, confidence: float = 0.5) -> str:
    """How many of EfficientNet-Lite0's confident clean predictions on the held-out crops the defense
    keeps (with the 95% Wilson interval), or why it was not measured; the photos whose crops changed
    prediction are printed. ``defended``: the defense's output for ``held_out``, set by set."""
    import torch

    from .. import defenses
    from ..eval.configs import parse_config
    from ..eval.report import wilson_interval
    from ..models import load_classifier

    try:
        classifier = load_classifier("efficientnet-lite0")
    except (ImportError, FileNotFoundError) as exc:
        return f"not measured ({exc})"
    x = torch.from_numpy(np.concatenate(list(held_out.values())))
    photo = [name for name, images in held_out.items() for _ in range(len(images))]
    def logits(images):  # 50 at a time: a 224 x 224 batch's activations grow with it
        return torch.cat([classifier(images[i : i + 50]) for i in range(0, len(images), 50)])

    with torch.no_grad():
        top_p, clean = torch.softmax(logits(x), 1).max(1)
        keep = (top_p >= confidence).nonzero().flatten()
        clean = clean[keep]
        pred = logits(torch.cat([defended[name] for name in held_out])[keep]).argmax(1)
        # The same count for fdjpeg's codecs on the same crops, to set the figure beside.
        for spec in REFERENCE_DEFENSES:
            name, params = parse_config(spec)
            same = int((logits(defenses.build(name, **params)(x[keep])).argmax(1) == clean).sum())
            print(f"for reference, {spec} keeps {same}/{len(keep)} = {same / max(len(keep), 1):.1%}")
    changed = [photo[i] for i, same in zip(keep.tolist(), (pred == clean).tolist()) if not same]
    if changed:
        print("clean predictions changed on crops of: " + ", ".join(sorted(changed)))
    kept = len(keep) - len(changed)
    low, high = wilson_interval(kept, len(keep))
    return (f"{kept}/{len(keep)} = {kept / max(len(keep), 1):.1%} (95% CI {low:.1%}-{high:.1%}) of the confident "
            f"(p >= {confidence}) held-out crops (no defense: 100% by construction)")


def _noisy_reconstruction(model, x, gen):
    import torch

    from ..defenses.comdefend import TRAIN_SIGMA

    logits = model.com(x)
    noise = torch.randn(logits.shape, generator=gen, dtype=logits.dtype) * TRAIN_SIGMA
    return model.rec(torch.sigmoid(logits - noise))
