"""Defenses by name.

Each defense is a plain callable on a batch (numpy uint8/float NHWC or torch CHW/NCHW, the same kind
out) built by a factory from its parameters. The registry is what the command line, the evaluation
harness and the benchmarks look names up in::

    defend = fdjpeg.defenses.build("jpeg", quality=50)
    y = defend(x)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

Defense = Callable[[Any], Any]


@dataclass(frozen=True)
class DefenseSpec:
    name: str
    factory: Callable[..., Defense]
    defaults: Dict[str, Any] = field(default_factory=dict)
    random: bool = False  # True: output depends on a seed / generator (EOT applies)
    description: str = ""


_REGISTRY: Dict[str, DefenseSpec] = {}


def register(name: str, factory: Callable[..., Defense], *, random: bool = False, description: str = "", **defaults) -> None:
    """Add a defense under ``name`` with default parameters ``defaults``."""
    if name in _REGISTRY:
        raise ValueError(f"a defense named {name!r} is already registered")
    _REGISTRY[name] = DefenseSpec(name, factory, dict(defaults), random, description)


def names() -> List[str]:
    return sorted(_REGISTRY)


def spec(name: str) -> DefenseSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown defense {name!r}; known: {', '.join(names())}") from None


def build(name: str, **params) -> Defense:
    """The defense ``name`` with its defaults overridden by ``params``."""
    s = spec(name)
    unknown = set(params) - set(s.defaults)
    if unknown:
        raise ValueError(f"defense {name!r} takes {sorted(s.defaults)}, got unknown {sorted(unknown)}")
    return s.factory(**{**s.defaults, **params})


from . import builtin  # noqa: E402,F401  (registers the defenses shipped with fdjpeg)
