"""Defenses by name.

Each defense is a :class:`Defense`: a callable on a batch (numpy uint8/float NHWC or torch CHW/NCHW,
the same kind out) that declares ``random`` and ``differentiable``, built by a factory from its
declared parameters. The registry is what the command line, the evaluation harness, the transforms
and the benchmarks look names up in; importing this package registers every name::

    defend = fdjpeg.defenses.build("jpeg", quality=50)
    y = defend(x)
    fdjpeg.defenses.check("comdefend", batch_size=0)   # ValueError, without loading any weights
"""

from __future__ import annotations

from .params import Param
from .registry import (
    Defense, DefenseSpec, build, build_defense, check, check_transform, is_random, names, parse_params, register, spec,
    transform_names,
)
from . import builtin  # noqa: E402,F401  (registers the defenses shipped with fdjpeg)

__all__ = [
    "Defense", "DefenseSpec", "Param", "build", "build_defense", "check", "check_transform", "is_random", "names",
    "parse_params", "register", "spec", "transform_names",
]
