"""Adversarial attacks on torch classifiers, batched: FGSM, BIM/PGD (L-inf), DeepFool, Carlini-Wagner L2,
APGD-CE and APGD-DLR (L-inf, through torchattacks), and the adaptive wrappers BPDA (through any
defense) and EOT (for random defenses).

Conventions: ``model`` maps float ``N x C x H x W`` images in [0, 1] to logits; ``x`` is such a batch and
``y`` the labels (int64, ``N``). Every attack returns adversarial images of the same shape, clamped to
[0, 1], detached. ``eot_samples`` > 1 averages each gradient (and each loss) over that many forward
passes, which only differ when the model contains a random defense (Expectation over Transformation,
Athalye et al. 2018).

The adaptive attack on a defense is the same attack run on :class:`Defended` ``(classifier, defense)``:
the forward pass runs the real defense, the backward pass treats it as the identity (BPDA), or, for a
defense marked ``differentiable``, follows its own gradient (see :func:`straight_through`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .torch import StraightThrough

Attack = Callable[..., torch.Tensor]


# ------------------------------------------------------------------------------------------------
# BPDA and EOT


def straight_through(defense: Callable[[Any], Any], x: torch.Tensor) -> torch.Tensor:
    """``defense(x)`` whose gradient, when ``x`` requires grad, is taken as the identity (BPDA).

    Works for any defense that takes a float NCHW tensor in [0, 1] (a numpy result is converted back).
    A defense marked ``differentiable = True`` gives its own gradient instead: exact through its
    differentiable parts (WebP + flip's flip), straight-through only across the steps that have none
    (the codec). Mark a defense so only where that gradient is the stronger attack: a network whose
    internal gradient vanishes (ComDefend's saturated code) is better attacked as the identity.
    """
    run = lambda t: _as_tensor_like(defense(t), t)  # noqa: E731
    if x.requires_grad and torch.is_grad_enabled():
        if getattr(defense, "differentiable", False):
            return run(x)
        return StraightThrough.apply(x, run)
    return run(x)


class Defended(nn.Module):
    """``classifier(defense(x))`` with the defense differentiated by :func:`straight_through` (BPDA).

    Attacking this module is the adaptive attack on the defense; pass ``eot_samples`` to the attack
    as well when the defense is random.
    """

    def __init__(self, classifier: nn.Module, defense: Callable[[Any], Any]):
        super().__init__()
        self.classifier = classifier
        self.defense = defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(straight_through(self.defense, x))


def _as_tensor_like(result: Any, like: torch.Tensor) -> torch.Tensor:
    if isinstance(result, torch.Tensor):
        out = result
    elif isinstance(result, np.ndarray):
        out = torch.from_numpy(np.ascontiguousarray(result))
    else:
        raise TypeError(f"a defense must return a torch tensor or numpy array, got {type(result).__name__}")
    if out.shape != like.shape:
        raise ValueError(f"the defense changed the batch shape from {tuple(like.shape)} to {tuple(out.shape)}")
    if out.dtype == torch.uint8:
        out = out.to(like.dtype) / 255.0
    return out.to(like.dtype)


def _expected_gradient(model: nn.Module, x: torch.Tensor, loss_of_logits, eot_samples: int):
    """Mean over ``eot_samples`` forward passes of d loss / d x, and the mean loss; ``loss_of_logits``
    maps logits to one loss per image (summed for the gradient, so images stay independent)."""
    eot_samples = _positive(eot_samples, "eot_samples")
    grad = torch.zeros_like(x)
    losses = torch.zeros(len(x), dtype=x.dtype)
    for _ in range(eot_samples):
        xi = x.detach().requires_grad_(True)
        per_image = loss_of_logits(model(xi))
        (g,) = torch.autograd.grad(per_image.sum(), xi)
        grad += g
        losses += per_image.detach()
    return grad / eot_samples, losses / eot_samples


# ------------------------------------------------------------------------------------------------
# L-inf attacks with a budget


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, eot_samples: int = 1) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one step of size ``eps`` along the sign of
    the cross-entropy gradient."""
    eps = _budget(eps)
    _check_batch(x, y)
    if eps == 0:
        return x.detach().clone()
    grad, _ = _expected_gradient(model, x, lambda z: F.cross_entropy(z, y, reduction="none"), eot_samples)
    return (x.detach() + eps * grad.sign()).clamp(0, 1)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: Optional[float] = None,
    random_start: bool = True,
    eot_samples: int = 1,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Projected gradient descent in the L-inf ball of radius ``eps`` (Madry et al. 2018); with
    ``random_start=False`` it is BIM (Kurakin et al. 2017). ``step_size`` defaults to
    ``2.5 * eps / steps``. Returns the last iterate."""
    eps = _budget(eps)
    _check_batch(x, y)
    steps = _positive(steps, "steps")
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    x0 = x.detach()
    if eps == 0:
        return x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype) * 2 - 1
        adv = (x0 + eps * noise).clamp(0, 1)
    else:
        adv = x0.clone()
    for _ in range(steps):
        grad, _ = _expected_gradient(model, adv, lambda z: F.cross_entropy(z, y, reduction="none"), eot_samples)
        adv = adv + alpha * grad.sign()
        adv = torch.min(torch.max(adv, x0 - eps), x0 + eps).clamp(0, 1)
    return adv.detach()


TORCHATTACKS_INSTALL = "pip install --no-deps torchattacks==3.5.1"
APGD_LOSSES = ("ce", "dlr")


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    loss: str = "ce",
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    seed: int = 0,
    eot_samples: int = 1,
) -> torch.Tensor:
    """Auto-PGD in the L-inf ball (Croce & Hein 2020, AutoAttack's gradient attacks), untargeted, on
    the cross-entropy (``loss="ce"``, APGD-CE) or the difference-of-logits ratio (``"dlr"``, APGD-DLR).

    Runs torchattacks' port of AutoAttack's APGD (``torchattacks.APGD``): a step size that halves where
    progress stalls (checkpoints at 22% of ``steps``, then shorter, ``rho`` the success ratio below
    which it halves), momentum 0.75, a random start per restart seeded by ``seed``; per image the best
    adversarial image found, the clean image where none was. The model's own forward pass is what it
    differentiates, so on :class:`Defended` it is the BPDA attack, and ``eot_samples`` is torchattacks'
    ``eot_iter`` (each gradient averaged over that many passes). The global torch RNG is left as it was.
    """
    eps = _budget(eps)
    _check_batch(x, y)
    if loss not in APGD_LOSSES:
        raise ValueError(f"APGD loss must be one of {APGD_LOSSES}, got {loss!r}")
    steps, restarts = _positive(steps, "steps"), _positive(restarts, "restarts")
    eot_samples = _positive(eot_samples, "eot_samples")
    if eps == 0 or len(x) == 0:
        return x.detach().clone()
    if loss == "dlr" and _num_classes(model, x[:1]) < 3:
        raise ValueError("APGD-DLR needs at least 3 classes (its ratio uses the third-highest logit)")
    try:
        import torchattacks
    except ImportError as exc:
        raise ImportError(f"APGD runs torchattacks' implementation: {TORCHATTACKS_INSTALL}") from exc
    attack = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=restarts, seed=int(seed),
                               loss=loss, eot_iter=eot_samples, rho=float(rho))
    with torch.random.fork_rng(devices=[]):  # torchattacks seeds the global generator
        adv = attack(x.detach(), y)
    return adv.detach().clamp(0, 1)


def apgd_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kwargs) -> torch.Tensor:
    """APGD on the cross-entropy: :func:`apgd` with ``loss="ce"``."""
    return apgd(model, x, y, eps, loss="ce", **kwargs)


def apgd_dlr(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kwargs) -> torch.Tensor:
    """APGD on the difference-of-logits ratio (scale-invariant): :func:`apgd` with ``loss="dlr"``."""
    return apgd(model, x, y, eps, loss="dlr", **kwargs)


# ------------------------------------------------------------------------------------------------
# Minimal-perturbation L2 attacks


def deepfool(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    overshoot: float = 0.02,
    max_iter: int = 50,
    candidates: int = 10,
    eot_samples: int = 1,
) -> torch.Tensor:
    """DeepFool, multi-class L2 (Moosavi-Dezfooli et al. 2016).

    Each step linearises the classifier around the current point and moves to the nearest of the
    linearised boundaries between the label ``y`` and the ``candidates - 1`` other classes that score
    highest on the clean image; the accumulated step is scaled by ``1 + overshoot``. Images the model
    already gets wrong are returned unchanged.
    """
    _check_batch(x, y)
    max_iter = _positive(max_iter, "max_iter")
    x0 = x.detach()
    with torch.no_grad():
        logits = model(x0)
    k = min(_positive(candidates, "candidates"), logits.shape[1])
    if k < 2:
        raise ValueError(f"DeepFool needs at least 2 classes to choose from, got {logits.shape[1]}")
    others = logits.clone()
    others[torch.arange(len(y)), y] = -math.inf
    classes = torch.cat([y[:, None], others.topk(k - 1, dim=1).indices], dim=1)  # label first
    r_total = torch.zeros_like(x0)
    active = logits.argmax(1) == y
    for _ in range(max_iter):
        idx = active.nonzero().flatten()
        if len(idx) == 0:
            break
        point = (x0[idx] + (1 + overshoot) * r_total[idx]).clamp(0, 1)
        # Margins f_k = z_k - z_label and their gradients w_k, for every candidate k (EOT-averaged).
        margins = torch.zeros(len(idx), k - 1, dtype=x0.dtype)
        grads = torch.zeros(len(idx), k - 1, *x0.shape[1:], dtype=x0.dtype)
        still = torch.zeros(len(idx), dtype=torch.bool)
        for _ in range(_positive(eot_samples, "eot_samples")):
            p = point.detach().requires_grad_(True)
            z = model(p)
            still |= z.argmax(1) == y[idx]
            picked = z.gather(1, classes[idx])
            diff = picked[:, 1:] - picked[:, :1]
            for j in range(k - 1):
                (g,) = torch.autograd.grad(diff[:, j].sum(), p, retain_graph=j < k - 2)
                grads[:, j] += g
            margins += diff.detach()
        margins /= eot_samples
        grads /= eot_samples
        active[idx[~still]] = False
        if not still.any():
            break
        norms = grads.flatten(2).norm(dim=2) + 1e-8
        distance = margins.abs() / norms
        best = distance.argmin(dim=1)
        rows = torch.arange(len(idx))
        w = grads[rows, best]
        step = ((margins[rows, best].abs() + 1e-4) / norms[rows, best] ** 2).view(-1, *[1] * (x0.ndim - 1)) * w
        moving = idx[still]
        r_total[moving] += step[still]
    return (x0 + (1 + overshoot) * r_total).clamp(0, 1).detach()


def carlini_wagner_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    confidence: float = 0.0,
    initial_const: float = 1.0,
    binary_search_steps: int = 5,
    steps: int = 100,
    lr: float = 0.01,
    eot_samples: int = 1,
) -> torch.Tensor:
    """Carlini-Wagner L2 (Carlini & Wagner 2017), untargeted.

    Optimises ``w`` with ``x' = (tanh(w) + 1) / 2`` (so ``x'`` stays in [0, 1]) to minimise
    ``||x' - x||^2 + c * max(z_y - max_{i != y} z_i, -confidence)`` with Adam, and binary-searches the
    constant ``c`` per image (starting at ``initial_const``). Returns, per image, the smallest-L2
    adversarial example found, or the clean image where none was found.
    """
    _check_batch(x, y)
    binary_search_steps = _positive(binary_search_steps, "binary_search_steps")
    steps = _positive(steps, "steps")
    x0 = x.detach()
    n = len(x0)
    w0 = torch.atanh((x0 * 2 - 1) * (1 - 1e-6))
    const = torch.full((n,), float(initial_const), dtype=x0.dtype)
    lower = torch.zeros(n, dtype=x0.dtype)
    upper = torch.full((n,), 1e10, dtype=x0.dtype)
    best_l2 = torch.full((n,), math.inf, dtype=x0.dtype)
    best_adv = x0.clone()
    label_mask = F.one_hot(y, num_classes=_num_classes(model, x0[:1])).bool()

    def margin(z: torch.Tensor) -> torch.Tensor:
        other = z.masked_fill(label_mask, -math.inf).max(1).values
        return z[label_mask] - other

    for _ in range(binary_search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        succeeded = torch.zeros(n, dtype=torch.bool)
        for _ in range(steps):
            adv = (torch.tanh(w) + 1) / 2
            l2sq = (adv - x0).flatten(1).pow(2).sum(1)
            total = torch.zeros((), dtype=x0.dtype)
            m_mean = torch.zeros(n, dtype=x0.dtype)
            for _ in range(_positive(eot_samples, "eot_samples")):
                m = margin(model(adv))
                total = total + (const * (m + confidence).clamp(min=0)).sum() / eot_samples
                m_mean += m.detach() / eot_samples
            opt.zero_grad()
            (l2sq.sum() + total).backward()
            opt.step()
            with torch.no_grad():
                hit = m_mean + confidence < 0
                better = hit & (l2sq.detach() < best_l2)
                best_l2 = torch.where(better, l2sq.detach(), best_l2)
                best_adv[better] = adv.detach()[better]
                succeeded |= hit
        # Binary search on c: smaller where an example was found, larger where not.
        upper = torch.where(succeeded, torch.min(upper, const), upper)
        lower = torch.where(succeeded, lower, torch.max(lower, const))
        const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
    return best_adv.clamp(0, 1).detach()


# ------------------------------------------------------------------------------------------------
# Registry and checks

#: Attacks by name; those in :data:`BUDGETED` take an L-inf budget ``eps``, the others find their own
#: (minimal) L2 perturbation.
ATTACKS: Dict[str, Attack] = {
    "fgsm": fgsm, "pgd": pgd, "apgd-ce": apgd_ce, "apgd-dlr": apgd_dlr, "deepfool": deepfool, "cw": carlini_wagner_l2,
}
BUDGETED = frozenset({"fgsm", "pgd", "apgd-ce", "apgd-dlr"})


def get(name: str) -> Attack:
    try:
        return ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(sorted(ATTACKS))}") from None


def _num_classes(model: nn.Module, probe: torch.Tensor) -> int:
    with torch.no_grad():
        return model(probe).shape[1]


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4:
        raise TypeError(f"x must be a float N x C x H x W torch tensor in [0, 1], got {getattr(x, 'shape', type(x))}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (len(x),):
        raise TypeError(f"y must be an int64 tensor of {len(x)} labels, got {getattr(y, 'dtype', type(y))} {getattr(y, 'shape', '')}")
    if len(x) and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"x must hold values in [0, 1], got min {x.min().item():.4g}, max {x.max().item():.4g}")


def _budget(eps: float) -> float:
    eps = float(eps)
    if not 0 <= eps <= 1 or math.isnan(eps):
        raise ValueError(f"eps must be an L-inf budget in [0, 1] (images are in [0, 1]), got {eps}")
    return eps


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


__all__ = [
    "ATTACKS", "BUDGETED", "Defended", "apgd", "apgd_ce", "apgd_dlr", "carlini_wagner_l2", "deepfool", "fgsm", "get", "pgd", "straight_through",
]
