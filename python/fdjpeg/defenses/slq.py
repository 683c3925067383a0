"""SHIELD's Stochastic Local Quantization (Das et al., KDD 2018, arXiv 1802.06816).

SHIELD compresses the whole image at JPEG qualities 20, 40, 60 and 80 and takes each 8x8 block
from one of the four results chosen at random. Here that is one pass of the native core: the DCT
of each block is computed once and the block is quantized with the IJG tables (luma and chroma)
of its own randomly drawn quality. With ``subsampling="444"`` blocks are independent, so every
block equals exactly the plain JPEG round trip at its quality; with ``"420"``/``"422"`` a chroma
block takes the quality of the luma block at its corner (and chroma upsampling mixes neighbours).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .. import ops, tables

QUALITIES = (20, 40, 60, 80)

Seed = Union[None, int, np.random.Generator]


def quality_table_sets(qualities: Sequence[int]) -> np.ndarray:
    """``K x 3 x 64`` float32 steps: the IJG (luma, chroma, chroma) tables of each quality."""
    return np.stack([ops.ijg_table_set(q) for q in check_qualities(qualities)])


def check_qualities(qualities: Any) -> Tuple[int, ...]:
    """``qualities`` as a tuple of 1 to 256 integer JPEG qualities in 1..100; anything else (a
    float, a bool, a string, a bare number) is a TypeError/ValueError, never rounded or coerced."""
    if isinstance(qualities, np.ndarray) and qualities.ndim == 1:
        qualities = qualities.tolist()
    if isinstance(qualities, (str, bytes)) or not isinstance(qualities, Sequence):
        raise TypeError(f"qualities must be a sequence of integer JPEG qualities, got {qualities!r}")
    if not 1 <= len(qualities) <= 256:
        raise ValueError(f"qualities must hold 1 to 256 JPEG qualities, got {len(qualities)}")
    checked = []
    for i, q in enumerate(qualities):
        try:
            checked.append(tables.check_quality(q))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"qualities[{i}]: {exc}") from None
    return tuple(checked)


class StochasticLocalQuantization:
    """Callable SLQ defense with its own random generator (successive calls draw new choices).

    Args:
        qualities: the JPEG qualities a block may be quantized at (SHIELD: 20, 40, 60, 80).
        subsampling: chroma subsampling, ``"444"`` (default: blocks are independent) or ``"420"`` /
            ``"422"`` as a JPEG encoder would.
        seed: an int, a ``numpy.random.Generator`` (used as is), or None (fresh entropy).
        threads: worker threads of the native core (None: all cores).
    """

    random = True
    differentiable = False  # adaptive attacks take it as the identity (BPDA)

    def __init__(self, qualities: Sequence[int] = QUALITIES, *, subsampling: str = "444", seed: Seed = None,
                 threads: Optional[int] = None) -> None:
        self.qualities = check_qualities(qualities)
        self.sets = quality_table_sets(self.qualities)
        ops.subsampling_code(subsampling)
        self.subsampling = subsampling
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.threads = threads

    def __call__(self, x: Any) -> Any:
        return self.apply(x)[0]

    def apply(self, x: Any) -> Tuple[Any, np.ndarray]:
        """``(defended x, choice)``: ``choice[n, r, c]`` indexes ``qualities`` for luma block (r, c)
        of image n (blocks of the image padded to whole MCUs)."""
        chosen = []

        def draw(n: int, rows: int, cols: int) -> np.ndarray:
            chosen.append(self.rng.integers(0, len(self.qualities), (n, rows, cols), dtype=np.uint8))
            return chosen[-1]

        out = ops.run_pipeline(
            x, self.sets, self.sets, color="ycbcr", subsampling=self.subsampling, level_shift=True,
            passes=1, threads=self.threads, block_tables=draw,
        )
        return out, chosen[0]

    def __repr__(self) -> str:
        return f"StochasticLocalQuantization(qualities={self.qualities}, subsampling={self.subsampling!r})"


def slq(x: Any, qualities: Sequence[int] = QUALITIES, *, subsampling: str = "444", seed: Seed = None,
        threads: Optional[int] = None) -> Any:
    """Stochastic local quantization of ``x`` (numpy NHWC/HWC or torch NCHW/CHW, the same kind out);
    see :class:`StochasticLocalQuantization`."""
    return StochasticLocalQuantization(qualities, subsampling=subsampling, seed=seed, threads=threads)(x)


try:  # torch is optional
    import torch as _torch
except ImportError:  # pragma: no cover
    _torch = None

if _torch is not None:

    class SLQ(_torch.nn.Module):
        """SLQ as a torch module; the gradient passes straight through (BPDA)."""

        def __init__(self, qualities: Sequence[int] = QUALITIES, *, subsampling: str = "444", seed: Seed = None,
                     threads: Optional[int] = None) -> None:
            super().__init__()
            self.defense = StochasticLocalQuantization(qualities, subsampling=subsampling, seed=seed, threads=threads)

        def forward(self, x):
            return self.defense(x)

        def extra_repr(self) -> str:
            return f"qualities={self.defense.qualities}, subsampling={self.defense.subsampling!r}"


__all__ = ["QUALITIES", "StochasticLocalQuantization", "slq", "quality_table_sets", "check_qualities"]
if _torch is not None:
    __all__.append("SLQ")
