"""The evaluation loop: models x defenses x attacks x budgets x threat models -> accuracies.

Threat models:

- ``"gray-box"`` (the papers' setting): the attacker sees the bare classifier only; its adversarial
  images are then passed through each defense and classified.
- ``"adaptive"``: the attacker knows the defense and attacks ``classifier(defense(x))``, taking the
  defense's gradient as the identity (BPDA) except through the parts a ``differentiable`` defense
  differentiates itself (WebP + flip's flip; see
  :func:`fdjpeg.attacks.straight_through`); for random defenses each gradient is averaged over
  ``eot_samples`` draws (EOT). Without a defense the two are the same attack and share their numbers.

Budgeted attacks (FGSM, PGD, APGD-CE, APGD-DLR) run at every epsilon on all images; minimal-perturbation attacks
(DeepFool, CW) run once, on the first ``minimal_n`` images, and report the L2 norm they needed.
A random defense is evaluated with one draw per image.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..attacks import Defended
from ..defenses import is_random
from .configs import AttackConfig, DefenseConfig, attack_config, defense_config
from .report import Results
from .tasks import Task, load_task

THREAT_MODELS = ("gray-box", "adaptive")


def evaluate(
    models: Sequence[Union[str, Task]],
    defenses: Sequence[Any] = ("none", "jpeg:quality=75", "fd"),
    attacks: Sequence[Union[str, AttackConfig]] = ("fgsm", "pgd"),
    epsilons: Optional[Union[Sequence[float], Mapping[str, Sequence[float]]]] = None,
    threat_models: Sequence[str] = THREAT_MODELS,
    n_images: int = 100,
    *,
    minimal_n: Optional[int] = None,
    batch_size: int = 32,
    eot_samples: int = 8,
    seed: int = 0,
    examples: int = 4,
    progress: bool = True,
    data: Optional[str] = None,
    class_map: Union[None, str, Dict[str, int]] = None,
) -> Results:
    """Evaluate defenses against attacks; see the module docstring for the protocol.

    Args:
        models: names of :data:`fdjpeg.models.CLASSIFIERS` (their task is loaded with ``n_images``
            images) or ready :class:`Task` objects.
        defenses: configurations (``"jpeg:quality=50"``, ``"fd:table=derived"``), callables, or
            ``(label, callable)`` pairs. ``"none"`` (no defense) is added first if missing.
        attacks: ``"fgsm"``, ``"pgd:steps=10"``, ``"bim"``, ``"apgd-ce"``, ``"apgd-dlr:steps=20"``,
            ``"deepfool"``, ``"cw:steps=50"`` ...
        epsilons: L-inf budgets for all models, or ``{model name: budgets}``; default: each task's own.
        threat_models: any of ``"gray-box"``, ``"adaptive"``.
        n_images: images per model (tasks given as objects are cut to this many).
        minimal_n: images for DeepFool/CW (default ``n_images``).
        eot_samples: gradient samples per step against random defenses in the adaptive setting.
        examples: images kept for the example grid.
        data: ``"imagenet:PATH"`` or ``"folder:PATH"``: every model named is evaluated on these labelled
            images instead of its own (``n_images`` drawn class-balanced with ``seed``); ``class_map``
            (a file or ``{folder: index}``) maps a ``folder:`` layout's folder names to class indices.
    """
    threat_models = tuple(threat_models)
    for tm in threat_models:
        if tm not in THREAT_MODELS:
            raise ValueError(f"threat model must be one of {THREAT_MODELS}, got {tm!r}")
    if n_images < 1 or batch_size < 1:
        raise ValueError(f"n_images and batch_size must be positive, got {n_images} and {batch_size}")
    defense_cfgs = [defense_config(d) for d in defenses]
    if not any(d.label == "none" for d in defense_cfgs):
        defense_cfgs.insert(0, defense_config("none"))
    labels = [d.label for d in defense_cfgs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"defense labels must be distinct, got {labels}")
    attack_cfgs = [attack_config(a) for a in attacks]
    minimal_n = n_images if minimal_n is None else minimal_n

    started = time.perf_counter()
    tasks = [m if isinstance(m, Task) else load_task(m, n_images, seed=seed, data=data, class_map=class_map)
             for m in models]
    plans = [(task, _budgets(task, epsilons)) for task in tasks]
    total_runs = sum(
        len(budgets if a.budgeted else [None]) * _attack_runs(defense_cfgs, threat_models)
        for _, budgets in plans
        for a in attack_cfgs
    )
    bar = _progress_bar(total_runs, progress)
    results = Results(meta={
        "n_images": n_images, "minimal_n": minimal_n, "eot_samples": eot_samples, "seed": seed,
        "threat_models": list(threat_models), "defenses": labels, "attacks": [a.label for a in attack_cfgs],
        **({"data": data} if data is not None else {}),
    })
    try:
        for task, budgets in plans:
            _evaluate_task(task, budgets, defense_cfgs, attack_cfgs, threat_models, n_images, minimal_n,
                           batch_size, eot_samples, seed, examples, results, bar)
    finally:
        bar.close()
    results.meta["seconds"] = time.perf_counter() - started
    return results


def _evaluate_task(task, budgets, defense_cfgs, attack_cfgs, threat_models, n_images, minimal_n,
                   batch_size, eot_samples, seed, examples, results, bar) -> None:
    model = task.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)  # gradients are wanted with respect to the images only
    x, y = task.images[:n_images], task.labels[:n_images]
    built = _build_defenses(defense_cfgs, task, x[:1], results)
    skipped = len(defense_cfgs) - len(built)
    if skipped and "adaptive" in threat_models and hasattr(bar, "total"):
        bar.total -= skipped * sum(len(budgets) if a.budgeted else 1 for a in attack_cfgs)
        bar.refresh()
    results.meta.setdefault("tasks", {})[task.name] = {
        "description": task.description, "n": len(x), "epsilons": list(budgets),
        "label_kinds": {k: list(task.label_kind[: len(x)]).count(k) for k in set(task.label_kind[: len(x)])},
    }

    # Clean accuracy and cost of each defense.
    for label, armed in built.items():
        start = time.perf_counter()
        defended = _batched(armed.transform, x, batch_size)
        seconds = time.perf_counter() - start
        correct = _correct(armed.classifier, defended, y, batch_size)
        # A defense that replaces the classifier has no transform of its own to time.
        cost = seconds / len(x) if armed.classifier is model else None
        results.add(task.name, label, "clean", None, "-", correct, x, x, defense_s_per_image=cost)

    budgeted = [a for a in attack_cfgs if a.budgeted]
    grid_attack = next((a for a in budgeted if a.name == "pgd"), budgeted[0] if budgeted else None)
    for attack in attack_cfgs:
        count = len(x) if attack.budgeted else min(minimal_n, len(x))
        xa, ya = x[:count], y[:count]
        for eps in (budgets if attack.budgeted else [None]):
            gen = torch.Generator().manual_seed(seed)
            if threat_models:
                # Undefended attack: the gray-box attack for every defense, and the adaptive one for "none".
                start = time.perf_counter()
                adv = _batched_attack(attack, model, xa, ya, eps, 1, gen, batch_size)
                secs = time.perf_counter() - start
                bar.update(1)
                for label, armed in built.items():
                    tms = [tm for tm in threat_models if tm == "gray-box" or label == "none"]
                    if not tms:
                        continue
                    correct = armed.correct(adv, ya, batch_size)
                    for tm in tms:
                        results.add(task.name, label, attack.label, eps, tm, correct, xa, adv, attack_s=secs)
                if attack is grid_attack and eps == budgets[-1]:
                    results.examples[task.name] = _examples(model, built, xa[:examples], adv[:examples], ya[:examples], attack.label, eps)
            if "adaptive" in threat_models:
                for label, armed in built.items():
                    if label == "none":
                        continue
                    start = time.perf_counter()
                    adv = _batched_attack(attack, Defended(armed.classifier, armed.transform), xa, ya, eps,
                                          eot_samples if armed.random else 1, gen, batch_size)
                    secs = time.perf_counter() - start
                    bar.update(1)
                    correct = armed.correct(adv, ya, batch_size)
                    results.add(task.name, label, attack.label, eps, "adaptive", correct, xa, adv, attack_s=secs)


@dataclass
class Armed:
    """A defense on a task: ``classifier(transform(x))``. Image transforms keep the task's classifier;
    a defense that is a classifier itself (it has ``as_classifier()``, e.g. a voting ensemble)
    replaces it, with the identity as transform."""

    transform: Callable
    classifier: torch.nn.Module
    random: bool

    def correct(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> int:
        return _correct(self.classifier, _batched(self.transform, x, batch_size), y, batch_size)


def _identity(x):
    return x


def _build_defenses(defense_cfgs, task, probe, results) -> Dict[str, Armed]:
    """The defenses that run on this task's images; one that fails to build or to run on the first
    image is reported on stderr and in ``meta["skipped"]`` and left out of this task only (a
    grey-scale defense on colour images, say)."""
    built = {}
    for d in defense_cfgs:
        try:
            defend = d.make(task)
            if hasattr(defend, "as_classifier"):
                armed = Armed(_identity, defend.as_classifier().eval(), is_random(defend))
            else:
                armed = Armed(defend, task.model, is_random(defend))
            armed.correct(probe, task.labels[:1], 1)
        except Exception as exc:  # noqa: BLE001  (any failure of a user's defense is reported, not fatal)
            note = f"{type(exc).__name__}: {exc}"
            results.meta.setdefault("skipped", {}).setdefault(task.name, {})[d.label] = note
            print(f"fdjpeg eval: defense {d.label!r} skipped for {task.name}: {note}", file=sys.stderr)
            continue
        built[d.label] = armed
    return built


def _attack_runs(defense_cfgs: List[DefenseConfig], threat_models) -> int:
    adaptive = sum(d.label != "none" for d in defense_cfgs) if "adaptive" in threat_models else 0
    return 1 + adaptive


def _budgets(task: Task, epsilons) -> List[float]:
    if epsilons is None:
        chosen = task.epsilons
    elif isinstance(epsilons, Mapping):
        chosen = epsilons.get(task.name, task.epsilons)
    else:
        chosen = epsilons
    chosen = [float(e) for e in chosen]
    if not chosen or any(not 0 <= e <= 1 for e in chosen):
        raise ValueError(f"epsilons for {task.name!r} must be L-inf budgets in [0, 1], got {chosen}")
    return sorted(chosen)


def _batched(fn: Callable, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    from ..attacks import straight_through

    with torch.no_grad():
        return torch.cat([straight_through(fn, x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _batched_attack(attack: AttackConfig, model, x, y, eps, eot_samples, gen, batch_size) -> torch.Tensor:
    return torch.cat([
        attack.run(model, x[i : i + batch_size], y[i : i + batch_size], eps, eot_samples=eot_samples, generator=gen)
        for i in range(0, len(x), batch_size)
    ])


def _correct(model, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> int:
    return int((_predict(model, x, batch_size) == y).sum())


def _predict(model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _examples(model, built, x, adv, y, attack_label, eps) -> dict:
    """Images for the example grid: clean, adversarial (gray-box), and each defense's view of it."""
    shown = {label: armed for label, armed in built.items() if label != "none"}
    defended = {label: _batched(armed.transform, adv, len(adv)) for label, armed in shown.items()}
    return {
        "attack": attack_label, "epsilon": eps, "labels": y.tolist(),
        "clean": x.numpy(), "adversarial": adv.numpy(),
        "clean_pred": _predict(model, x, len(x)).tolist(), "adversarial_pred": _predict(model, adv, len(adv)).tolist(),
        "defended": {k: v.numpy() for k, v in defended.items()},
        "defended_pred": {k: _predict(shown[k].classifier, v, len(v)).tolist() for k, v in defended.items()},
    }


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with the eval extra; without it, run quietly
        return _NoBar()
    return tqdm(total=total, desc="attacks", unit="run")
