"""Named configurations of defenses and attacks, as the command line writes them.

A configuration is ``name`` or ``name:key=value,key=value``: ``jpeg:quality=50``, ``fd:passes=2``,
``jpeg:subsampling=420``, ``slq:qualities=20,40,seed=3``, ``pgd:steps=20,step_size=0.01``. A
defense's values are read as its declared parameter types (:meth:`fdjpeg.defenses.DefenseSpec.parse`;
a comma followed by no ``key=`` continues a tuple value); an attack's as int, float (``8/255`` too),
``true``/``false``, ``none`` or text. ``fd:table=derived`` is Feature Distillation with a table
derived by :func:`fdjpeg.tables.from_statistics` from the task's clean *training* images (never the
evaluated ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .. import attacks as _attacks
from .. import defenses as _defenses
from .. import tables as _tables
from ..defenses.params import NONE_WORDS, read_bool, read_float, read_int, split_assignments


def parse_value(text: str) -> Any:
    """An untyped value (attack parameters, budgets): bool, None, int, number or fraction, else text."""
    if text.strip().lower() in NONE_WORDS:
        return None
    for read in (_read_word_bool, read_int, read_float):
        try:
            return read(text)
        except ValueError:
            pass
    return text


def _read_word_bool(text: str) -> bool:
    # only the words: "1" and "0" are numbers here, where no declaration says otherwise
    if text.strip().lower() not in ("true", "false"):
        raise ValueError(text)
    return read_bool(text)


def split_config(text: str) -> Tuple[str, List[str]]:
    """``"name:k=v,k=v"`` -> ``("name", ["k=v", "k=v"])``; an item without ``=`` continues the
    previous value (``qualities=20,40``)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a configuration must be a non-empty string like 'jpeg:quality=50', got {text!r}")
    name, _, rest = text.strip().partition(":")
    items: List[str] = []
    for part in filter(None, (p.strip() for p in rest.split(","))):
        if "=" not in part and items:
            items[-1] += "," + part
        else:
            items.append(part)
    split_assignments(items, repr(text))  # every item is key=value
    return name.strip(), items


def parse_config(text: str) -> Tuple[str, Dict[str, Any]]:
    """``"name:k=v,k=v"`` -> ``("name", {"k": v, ...})``, values typed by the defense's declared
    parameters when ``name`` is a defense."""
    name, items = split_config(text)
    if name in _defenses.names():
        return name, _defenses.parse_params(name, items)
    return name, {key: parse_value(value) for key, value in split_assignments(items, repr(text))}


@dataclass
class DefenseConfig:
    """A defense to evaluate: ``make(task)`` returns the callable (a task may shape it, e.g. a derived
    table), whose ``random`` says whether EOT applies."""

    label: str
    make: Callable[[Any], Callable]


def defense_config(item: Union[str, Callable, Tuple[str, Callable], DefenseConfig]) -> DefenseConfig:
    if isinstance(item, DefenseConfig):
        return item
    if isinstance(item, tuple) and len(item) == 2 and (callable(item[1]) or hasattr(item[1], "as_classifier")):
        label, fn = item
        return DefenseConfig(str(label), lambda task, fn=fn: fn)
    if callable(item):
        return DefenseConfig(getattr(item, "__name__", repr(item)), lambda task, fn=item: item)
    name, params = parse_config(item)
    _defenses.spec(name)  # unknown names fail here, with the known ones listed
    derived = name == "fd" and params.get("table") == "derived"
    if derived:
        del params["table"]  # made from the task's training images when the task is known
    _defenses.check(name, **params)  # parameters are checked now, before any work
    if derived:
        def make(task, params=params):
            return _defenses.build("fd", **params, table=_tables.derived_table(task.train_images))
    else:
        make = lambda task, name=name, params=params: _defenses.build(name, **params)  # noqa: E731
    return DefenseConfig(item.strip(), make)


@dataclass
class AttackConfig:
    label: str
    name: str
    params: Dict[str, Any] = field(default_factory=dict)

    @property
    def budgeted(self) -> bool:
        """True for L-inf attacks run at each epsilon (FGSM, PGD, APGD); False for minimal-L2 attacks
        (DeepFool, CW)."""
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
    name = {"cw-l2": "cw", "carlini-wagner": "cw", "apgd": "apgd-ce"}.get(name, name)
    _attacks.get(name)
    if "eps" in params:
        raise ValueError(f"{item!r}: give budgets with epsilons=..., not inside the attack")
    return AttackConfig(item.strip(), name, params)
