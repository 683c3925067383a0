"""Named configurations of defenses and attacks, as the command line writes them.

A configuration is ``name`` or ``name:key=value,key=value``: ``jpeg:quality=50``, ``fd:passes=2``,
``fd:table=band``, ``pgd:steps=20,step_size=0.01``. Values are read as int, float (``8/255`` too),
``true``/``false`` or text. ``fd:table=derived`` is Feature Distillation with a table derived by
:func:`fdjpeg.tables.from_statistics` from the task's clean *training* images (never the evaluated ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

from .. import attacks as _attacks
from .. import defenses as _defenses
from .. import tables as _tables


def parse_value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if "/" in text:
        try:
            return float(Fraction(text))
        except (ValueError, ZeroDivisionError):
            pass
    return text


def parse_config(text: str) -> Tuple[str, Dict[str, Any]]:
    """``"name:k=v,k=v"`` -> ``("name", {"k": v, ...})``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a configuration must be a non-empty string like 'jpeg:quality=50', got {text!r}")
    name, _, rest = text.strip().partition(":")
    params: Dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"in {text!r}: parameters are written key=value, got {item!r}")
        params[key.strip()] = parse_value(value.strip())
    return name.strip(), params


def derived_table(train_images) -> _tables.QuantTable:
    """Feature Distillation table derived from clean training images (DeepN-JPEG's rule), given as
    uint8 N x H x W (grey) or N x H x W x C."""
    if train_images is None or len(train_images) == 0:
        raise ValueError("a derived table needs clean training images, and this task has none")
    images = np.asarray(train_images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"training images must be N x H x W or N x H x W x C, got shape {images.shape}")
    return _tables.from_statistics(images, color="none")


@dataclass
class DefenseConfig:
    """A defense to evaluate: ``make(task)`` returns the callable (a task may shape it, e.g. a derived
    table); ``random`` says whether EOT applies."""

    label: str
    make: Callable[[Any], Callable]
    random: bool = False


def defense_config(item: Union[str, Callable, Tuple[str, Callable], DefenseConfig]) -> DefenseConfig:
    if isinstance(item, DefenseConfig):
        return item
    if isinstance(item, tuple) and len(item) == 2 and (callable(item[1]) or hasattr(item[1], "as_classifier")):
        label, fn = item
        return DefenseConfig(str(label), lambda task, fn=fn: fn, bool(getattr(fn, "random", False)))
    if callable(item):
        return DefenseConfig(getattr(item, "__name__", repr(item)), lambda task, fn=item: item, bool(getattr(item, "random", False)))
    name, params = parse_config(item)
    spec = _defenses.spec(name)  # unknown names fail here, with the known ones listed
    if name == "fd" and params.get("table") == "derived":
        def make(task, params=params):
            return _defenses.build("fd", **{**params, "table": derived_table(task.train_images)})
    else:
        _defenses.build(name, **params)  # parameters are checked now, before any work
        make = lambda task, name=name, params=params: _defenses.build(name, **params)  # noqa: E731
    return DefenseConfig(item.strip(), make, spec.random)


@dataclass
class AttackConfig:
    label: str
    name: str
    params: Dict[str, Any] = field(default_factory=dict)

    @property
    def budgeted(self) -> bool:
        """True for L-inf attacks run at each epsilon; False for minimal-L2 attacks (DeepFool, CW)."""
        return self.name in _attacks.BUDGETED

    def run(self, model, x, y, eps: Optional[float], *, eot_samples: int = 1, generator=None):
        fn = _attacks.get(self.name)
        kwargs = dict(self.params, eot_samples=eot_samples)
        if self.budgeted:
            if self.name == "pgd":
                kwargs.setdefault("generator", generator)
            return fn(model, x, y, eps, **kwargs)
        return fn(model, x, y, **kwargs)


def attack_config(item: Union[str, AttackConfig]) -> AttackConfig:
    if isinstance(item, AttackConfig):
        return item
    name, params = parse_config(item)
    if name == "bim":  # BIM is PGD without the random start
        name, params = "pgd", {"random_start": False, **params}
    name = {"cw-l2": "cw", "carlini-wagner": "cw"}.get(name, name)
    _attacks.get(name)
    if "eps" in params:
        raise ValueError(f"{item!r}: give budgets with epsilons=..., not inside the attack")
    return AttackConfig(item.strip(), name, params)
