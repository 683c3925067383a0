"""``fdjpeg eval``: attack real classifiers with and without each defense and write the report."""

from __future__ import annotations

import argparse
import math
import sys
import time

from ..defenses.params import read_float

FAST = {
    "models": ["fashion-cnn"],
    "defenses": ["none", "jpeg:quality=50", "fd", "fd:table=derived"],
    "attacks": ["fgsm", "pgd:steps=5"],
    "n": 48,
}
DEFAULT_DEFENSES = ["none", "jpeg:quality=75", "jpeg:quality=50", "fd", "fd:passes=2", "fd:table=band", "fd:table=derived"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate defenses against FGSM/PGD/APGD/DeepFool/CW on real classifiers (gray-box and adaptive)",
        description="Clean and adversarial accuracy of each model with each defense, per attack, budget and "
        "threat model, and the cost of each defense. Writes results.md, results.csv, results.json, "
        "accuracy_vs_epsilon.png and examples.png into --out.",
    )
    p.add_argument("--models", nargs="+", help="classifiers (fdjpeg.models.CLASSIFIERS); default: fashion-cnn efficientnet-lite0")
    p.add_argument("--defenses", nargs="+", help=f"defense configurations, e.g. jpeg:quality=50 fd:passes=2 fd:table=derived (default: {' '.join(DEFAULT_DEFENSES)})")
    p.add_argument("--attacks", nargs="+", help="attacks, e.g. fgsm pgd:steps=10 bim apgd-ce apgd-dlr:steps=20 deepfool cw:steps=50 (default: fgsm pgd; "
                   "APGD runs torchattacks' implementation, 100 steps unless steps=N); "
                   "DeepFool and CW run once, on the first --minimal-n images")
    p.add_argument("--epsilons", nargs="+", type=_budget, help="L-inf budgets for every model (8/255 is accepted); default: 2/255 4/255 8/255 for ImageNet, 0.1 0.2 0.3 for (Fashion-)MNIST")
    p.add_argument("--data", metavar="KIND:PATH",
                   help="evaluate on your own labelled images: imagenet:PATH (the ImageNet validation layout, one "
                   "folder per WordNet ID, mapped to the 1,000 class indices by the list shipped with fdjpeg) or "
                   "folder:PATH (one folder per class, with --class-map); -n images are drawn class-balanced "
                   "with --seed; default model: efficientnet-lite0")
    p.add_argument("--class-map", metavar="FILE",
                   help="for --data folder:PATH: folder name -> class index, as JSON {\"name\": index} or text "
                   "lines 'name index' (or 'name' alone: line i is class i)")
    p.add_argument("--threat-models", nargs="+", choices=["gray-box", "adaptive"], default=["gray-box", "adaptive"])
    p.add_argument("-n", "--n-images", type=int, help="images per model (default 100; --fast: 48)")
    p.add_argument("--minimal-n", type=int, help="images for DeepFool/CW (default: --n-images)")
    p.add_argument("--eot-samples", type=int, default=8, help="EOT draws per gradient against random defenses (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="CI-sized run: fashion-cnn, 48 images, FGSM + 5-step PGD, 3 defenses")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default="fdjpeg-eval", help="output folder (created; default: %(default)s)")
    p.set_defaults(run=run)


def _budget(text: str) -> float:
    """argparse type of --epsilons: a finite number >= 0, also written as a fraction (8/255)."""
    try:
        value = read_float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"budgets are numbers >= 0 like 0.1 or 8/255, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    import torch

    from ..eval import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    base = FAST if args.fast else {}
    if args.class_map and not args.data:
        print("fdjpeg eval: --class-map goes with --data folder:PATH", file=sys.stderr)
        return 2
    default_models = ["efficientnet-lite0"] if args.data else ["fashion-cnn", "efficientnet-lite0"]
    models = args.models or base.get("models") or default_models
    defenses = args.defenses or base.get("defenses") or DEFAULT_DEFENSES
    attacks = args.attacks or base.get("attacks") or ["fgsm", "pgd"]
    n = args.n_images or base.get("n") or 100
    epsilons = args.epsilons
    start = time.perf_counter()
    try:
        results = evaluate(
            models, defenses, attacks, epsilons, args.threat_models, n,
            minimal_n=args.minimal_n, batch_size=args.batch_size, eot_samples=args.eot_samples,
            seed=args.seed, progress=not args.no_progress, data=args.data, class_map=args.class_map,
        )
    except (ValueError, TypeError, OSError, ImportError) as exc:
        print(f"fdjpeg eval: {exc}", file=sys.stderr)
        return 2
    results.meta["command"] = "fdjpeg eval " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else None
    results.meta["torch_threads"] = torch.get_num_threads()
    paths = results.write(args.out)
    print(results.markdown())
    print(f"finished in {time.perf_counter() - start:.0f} s; wrote " + ", ".join(paths.values()))
    return 0
