"""The defense contract and the registry of defenses by name.

A registered defense is a factory and its declared parameters (:class:`~fdjpeg.defenses.params.Param`).
The registry checks parameters against the declarations before calling the factory, so a wrong
argument is refused without building anything (no weights are loaded to validate an argument).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Tuple, Union, runtime_checkable

from .params import Param, split_assignments


@runtime_checkable
class Defense(Protocol):
    """What a defense is: a callable on a batch with two declarations.

    ``defense(x)`` takes numpy uint8/float NHWC (or HWC) or torch CHW/NCHW and returns the same kind.

    ``random``: True when the output depends on a random draw (SLQ); evaluations then average each
    gradient over several draws (EOT). It is declared by the defense itself (a class attribute),
    nowhere else: the registry and the evaluation harness read it from the defense.

    ``differentiable`` is the gradient rule of adaptive attacks (:func:`fdjpeg.attacks.straight_through`):
    False, the defense's gradient is taken as the identity (BPDA, Athalye et al. 2018); True, the
    defense called on a torch tensor that requires grad returns a result autograd differentiates as
    it is (exact where the defense has a derivative, straight-through where it has none).

    Optional: ``jpeg_file``, a dict ``{"tables": [8x8 steps per component], "color": "none" | "ycbcr",
    "subsampling": "444" | "422" | "420"}`` saying which JPEG file stores the defended pixels
    (``fdjpeg defend --format jpeg``); defenses without one are written as PNG only.
    """

    random: bool
    differentiable: bool

    def __call__(self, x: Any) -> Any: ...


@dataclass(frozen=True)
class DefenseSpec:
    """A registered defense. ``factory`` is a callable, or ``"module:name"`` imported on first use
    (so that registering a torch defense does not import torch). ``classifier``: the factory
    returns a classifier of defended images (with ``as_classifier()``), not an image transform."""

    name: str
    factory: Union[Callable[..., Any], str]
    params: Tuple[Param, ...] = ()
    classifier: bool = False
    description: str = ""

    @property
    def defaults(self) -> Dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def make(self) -> Callable[..., Any]:
        """The factory (imported now when given as ``"module:name"``)."""
        if isinstance(self.factory, str):
            module, _, attr = self.factory.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.factory

    @property
    def random(self) -> bool:
        """Whether this defense draws at random, as its factory declares it (a Defense class's
        ``random`` attribute); a factory that declares nothing builds deterministic defenses."""
        return bool(getattr(self.make(), "random", False))

    def param(self, key: str) -> Param:
        for p in self.params:
            if p.name == key:
                return p
        raise ValueError(f"defense {self.name!r} takes {sorted(self.defaults) or 'no parameters'}, got unknown {key!r}")

    def check(self, params: Mapping[str, Any]) -> Dict[str, Any]:
        """All parameters, the defaults overridden by ``params``, each checked against its
        declaration: a TypeError or ValueError names the defense, the parameter, what was given and
        what is expected. Nothing is built."""
        chosen = self.defaults
        for key, value in params.items():
            declared = self.param(key)
            try:
                chosen[key] = declared.check(value)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"defense {self.name!r}: {exc}") from None
        return chosen

    def parse(self, items: Iterable[str]) -> Dict[str, Any]:
        """``["subsampling=444", "qualities=20,40"]`` -> ``{"subsampling": "444", "qualities": (20, 40)}``:
        each text read as its parameter's declared type (see :meth:`Param.parse`)."""
        parsed = {}
        for key, text in split_assignments(list(items), f"defense {self.name!r}"):
            declared = self.param(key)
            try:
                parsed[key] = declared.parse(text)
            except ValueError as exc:
                raise ValueError(f"defense {self.name!r}: {exc}") from None
        return parsed


_REGISTRY: Dict[str, DefenseSpec] = {}


def register(name: str, factory: Union[Callable[..., Any], str], *params: Param, classifier: bool = False,
             description: str = "") -> None:
    """Add a defense under ``name``: ``factory(**parameters)`` builds it, ``params`` declare what it takes."""
    if name in _REGISTRY:
        raise ValueError(f"a defense named {name!r} is already registered")
    _REGISTRY[name] = DefenseSpec(name, factory, tuple(params), classifier, description)


def names() -> List[str]:
    return sorted(_REGISTRY)


def spec(name: str) -> DefenseSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown defense {name!r}; known: {', '.join(names())}") from None


def check(name: str, **params: Any) -> Dict[str, Any]:
    """The parameters ``build(name, **params)`` would use, checked without building anything."""
    return spec(name).check(params)


def transform_names() -> List[str]:
    """The names of image transforms (every defense but the classifiers)."""
    return [n for n in names() if not _REGISTRY[n].classifier]


def check_transform(name: str, **params: Any) -> Dict[str, Any]:
    """:func:`check`, refusing a classifier where images are to be defended (files, pipelines)."""
    if spec(name).classifier:
        raise ValueError(f"{name!r} is a classifier, not an image transform; choose one of {transform_names()}")
    return check(name, **params)


def parse_params(name: str, items: Iterable[str]) -> Dict[str, Any]:
    """``key=value`` texts (``fdjpeg defend --param``, evaluation configurations) read as the
    declared types of the defense ``name``'s parameters."""
    return spec(name).parse(items)


def build(name: str, **params: Any) -> Any:
    """The defense ``name`` with its defaults overridden by ``params`` (checked first)."""
    s = spec(name)
    built = s.make()(**s.check(params))
    return built if s.classifier else _conform(built, s)


def build_defense(name: str, params: Mapping[str, Any], threads: Optional[int] = None) -> Any:
    """``build(name, **params)``, with ``threads`` passed to a defense that takes them when
    ``params`` sets none (callers that own a thread budget: the file engine, transforms, Ray)."""
    chosen = dict(params)
    if threads is not None and "threads" not in chosen and "threads" in spec(name).defaults:
        chosen["threads"] = threads
    return build(name, **chosen)


def is_random(defense: Any) -> bool:
    """The ``random`` a defense declares; a callable that declares none is deterministic."""
    return bool(getattr(defense, "random", False))


def _conform(defense: Any, s: DefenseSpec) -> Any:
    """Give a built defense the declarations a factory left out: ``random`` as the spec declares
    it, ``differentiable`` False (BPDA). A factory that contradicts its spec is a registration bug."""
    if not hasattr(defense, "random"):
        defense.random = s.random
    if not hasattr(defense, "differentiable"):
        defense.differentiable = False
    if bool(defense.random) != s.random:
        raise TypeError(f"defense {s.name!r}: the factory declares random={s.random} but built random={defense.random}")
    if not isinstance(defense, Defense):
        raise TypeError(f"defense {s.name!r}: the factory returned {type(defense).__name__}, not a callable Defense")
    return defense


__all__ = [
    "Defense", "DefenseSpec", "Param", "build", "build_defense", "check", "check_transform", "is_random", "names",
    "parse_params", "register", "spec", "transform_names",
]
