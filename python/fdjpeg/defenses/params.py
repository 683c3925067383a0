"""Declared parameters of the defenses: their type, range and text form.

Every registered defense lists its parameters as :class:`Param` declarations. They serve twice:

* :meth:`Param.check` says whether a Python value is acceptable, strictly (``True`` is not an
  integer, ``"no"`` is not a bool, ``20.9`` is not an integer quality, ``["420"]`` is not a
  subsampling name), without building the defense;
* :meth:`Param.parse` reads the text of ``fdjpeg defend --param key=value`` and of evaluation
  configurations (``jpeg:subsampling=420``) as the declared type, so ``444`` stays the string a
  subsampling is and ``20,40,60`` becomes a tuple of integers.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Optional, Sequence, Tuple, Union

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
NONE_WORDS = ("none", "null")
_INT_TEXT = re.compile(r"[+-]?\d+")


def read_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise ValueError(f"expected one of {list(TRUE_WORDS + FALSE_WORDS)}, got {text!r}")


def read_int(text: str) -> int:
    # base-10 digits only: "20.9", "1e3" and "0x10" are refused rather than rounded or guessed
    if not _INT_TEXT.fullmatch(text.strip()):
        raise ValueError(f"expected an integer, got {text!r}")
    return int(text.strip())


def read_float(text: str) -> float:
    """A number, also written as a fraction (``8/255``)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number (8/255 is accepted), got {text!r}") from None


def read_ints(text: str) -> Tuple[int, ...]:
    """``20,40,60``, ``20 40 60`` or ``(20, 40, 60)``."""
    inner = text.strip().strip("()[]")
    items = [t for t in re.split(r"[,\s]+", inner) if t]
    return tuple(read_int(t) for t in items)


_READERS = {bool: read_bool, int: read_int, float: read_float, str: lambda text: text, tuple: read_ints}
_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", tuple: "integers"}


@dataclass(frozen=True)
class Param:
    """One parameter of a defense.

    ``type`` is ``bool``, ``int``, ``float``, ``str`` or ``tuple`` (a tuple of integers, ``min`` /
    ``max`` bounding each item and ``length`` its size). ``choices`` is a tuple of allowed values, or
    a function returning them, called when first needed (so declaring a torch defense does not
    import torch). ``optional``: ``None`` is accepted
    (the defense's automatic choice). ``objects``: other Python types passed as they are to the
    defense, which checks them (``"numpy:ndarray"`` for a table of steps), named ``"module:Type"``
    and only looked at when that module is already imported (a value cannot be of a type whose
    module was never loaded).
    """

    name: str
    type: type
    default: Any
    help: str = ""
    choices: Union[None, Tuple[Any, ...], Callable[[], Sequence[Any]]] = None
    min: Optional[float] = None
    max: Optional[float] = None
    optional: bool = False
    length: Optional[Tuple[int, int]] = None
    objects: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in _READERS:
            raise TypeError(f"parameter {self.name!r}: type must be one of bool, int, float, str, tuple, got {self.type!r}")

    def allowed(self) -> Optional[Tuple[Any, ...]]:
        """The allowed values, or None when any value of the type (and range) is."""
        return tuple(self.choices()) if callable(self.choices) else self.choices

    def expected(self) -> str:
        """What this parameter takes, in words (error messages and ``--help``)."""
        choices = self.allowed()
        if choices is not None:
            words = f"one of {list(choices)}"
        else:
            words = _KIND_WORDS[self.type] + self._bounds()
            if self.type is tuple:
                lo, hi = self.length or (1, None)
                words = f"a tuple of {hi and f'{lo} to {hi}' or f'at least {lo}'} {words}"
        if self.objects:
            words += " or a " + " or a ".join(o.replace(":", ".") for o in self.objects)
        return words + (" or None" if self.optional else "")

    def _bounds(self) -> str:
        if self.min is not None and self.max is not None:
            return f" in [{self.min:g}, {self.max:g}]"
        if self.min is not None:
            return f" >= {self.min:g}"
        if self.max is not None:
            return f" <= {self.max:g}"
        return ""

    def parse(self, text: str) -> Any:
        """The value ``text`` stands for, read as this parameter's type (ranges are :meth:`check`'s)."""
        if self.optional and text.strip().lower() in NONE_WORDS:
            return None
        try:
            return _READERS[self.type](text)
        except ValueError:
            raise ValueError(f"{self.name} must be {self.expected()}, got {text!r}") from None

    def check(self, value: Any) -> Any:
        """``value`` if this parameter accepts it (integers as ``int``, tuples as ``tuple``), else a
        TypeError (wrong kind) or ValueError (out of range, not a choice) naming the parameter."""
        if value is None and self.optional:
            return None
        if self._is_object(value):
            return value
        checked = self._of_type(value)
        if checked is None:
            raise TypeError(f"{self.name} must be {self.expected()}, got {value!r} ({type(value).__name__})")
        items = checked if self.type is tuple else (checked,)
        choices = self.allowed()
        bad_choice = choices is not None and checked not in choices
        below = self.min is not None and any(v < self.min for v in items)
        above = self.max is not None and any(v > self.max for v in items)
        lo, hi = self.length or (1, math.inf)
        bad_length = self.type is tuple and not lo <= len(checked) <= hi
        if bad_choice or below or above or bad_length or (self.type is float and not math.isfinite(checked)):
            raise ValueError(f"{self.name} must be {self.expected()}, got {value!r}")
        return checked

    def _of_type(self, value: Any) -> Any:
        """``value`` in this parameter's Python type, or None when it is not of that kind."""
        if self.type is bool:
            return bool(value) if _is_bool(value) else None
        if self.type is int:
            return int(value) if _is_int(value) else None
        if self.type is float:
            return float(value) if isinstance(value, numbers.Real) and not _is_bool(value) else None
        if self.type is str:
            return value if isinstance(value, str) else None
        if isinstance(value, (tuple, list)) and all(_is_int(v) for v in value):
            return tuple(int(v) for v in value)
        return None

    def _is_object(self, value: Any) -> bool:
        for ref in self.objects:
            module, _, name = ref.partition(":")
            loaded = sys.modules.get(module)
            if loaded is not None and isinstance(value, getattr(loaded, name)):
                return True
        return False


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def split_assignments(items: Sequence[str], where: str) -> Sequence[Tuple[str, str]]:
    """``["quality=50", "qualities=20,40"]`` -> ``[("quality", "50"), ("qualities", "20,40")]``."""
    pairs = []
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{where}: parameters are written key=value, got {item!r}")
        pairs.append((key.strip(), text.strip()))
    return pairs


__all__ = ["Param", "read_bool", "read_int", "read_float", "read_ints", "split_assignments"]
