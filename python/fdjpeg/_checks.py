"""Argument checks shared by the operations, the defenses and the adapters.

A value of the wrong type is a TypeError and one out of range a ValueError, each naming the
argument, the value given and what is expected. Nothing is coerced: ``bool("no")`` is True and
``int(20.9)`` is 20, so either would silently mean something the caller did not ask for.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np


def flag(value: Any, name: str) -> bool:
    """``value`` as a bool; only a Python or numpy bool is one."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def integer(value: Any, name: str, lo: int, hi: Optional[int] = None) -> int:
    """``value`` as an int in ``lo..hi`` (no upper bound when ``hi`` is None); bools are not integers."""
    if type(value) is int and value >= lo and (hi is None or value <= hi):
        return value  # the common case, without the abstract-class checks below (per-call cost)
    bounds = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer {bounds}, got {value!r} ({type(value).__name__})")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return int(value)
