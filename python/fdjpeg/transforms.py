"""Defenses as data-pipeline transforms, in the torchvision style (a callable object with a repr).

Each takes one image, a PIL image, a numpy array (``HW``/``HWC``, uint8 or float in [0, 1]) or a
torch tensor (``CHW``/``NCHW``), and returns the same kind::

    from fdjpeg.transforms import FeatureDistill, JPEG, Defend
    transform = FeatureDistill()              # Feature Distillation, the authors' table
    transform = Defend("jpeg", quality=50)    # any defense of fdjpeg.defenses by name

They pickle (DataLoader workers under ``spawn``) and, inside a DataLoader worker, run the native
core on one thread so that the workers do not compete for the cores.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
from PIL import Image

from . import defenses, imagefiles


class Defend:
    """The defense ``name`` of :mod:`fdjpeg.defenses` with ``params`` as a transform.

    PIL images in modes L, LA, RGB and RGBA come back in their mode (alpha untouched); other modes
    are read as :func:`fdjpeg.imagefiles.decode` does (palette to RGB, CMYK to RGB, 16-bit to
    8-bit) and come back as L/LA/RGB/RGBA. ``threads=None`` uses all cores, or one inside a
    DataLoader worker.
    """

    def __init__(self, name: str = "fd", *, threads: Any = None, **params: Any):
        defenses.check_transform(name, **params)  # fail now on an unknown name or a bad parameter (nothing is built)
        self.name, self.params, self.threads = name, params, threads
        self._built = None  # (process id, defense), made on first use in each process

    def __call__(self, img: Any) -> Any:
        if isinstance(img, Image.Image):
            return self._pil(img)
        if isinstance(img, np.ndarray):
            if img.ndim not in (2, 3):
                raise ValueError(f"expected one image, HW or HWC, got a numpy array of shape {img.shape}")
            nhwc = img[None, :, :, None] if img.ndim == 2 else img[None]
            return self._defense()(nhwc).reshape(img.shape)
        if type(img).__module__.startswith("torch"):
            return self._defense()(img)
        raise TypeError(
            f"expected a PIL image, a numpy array or a torch tensor, got {type(img).__module__}.{type(img).__name__}"
        )

    def _pil(self, img: Image.Image) -> Image.Image:
        decoded = imagefiles.decode(img, exif=False)
        pixels = self._defense()(decoded.pixels[None])[0]
        plane = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
        if decoded.alpha is not None:
            plane = np.dstack([plane, decoded.alpha])
        return Image.fromarray(plane)

    def _defense(self):
        if self._built is None or self._built[0] != os.getpid():
            threads = self.threads if self.threads is not None else _threads_here()
            params = _worker_seeded(self.params)
            self._built = (os.getpid(), defenses.build_defense(self.name, params, threads))
        return self._built[1]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_built"] = None  # defenses are closures; each process builds its own
        return state

    def __repr__(self) -> str:
        args = [repr(self.name)] + [f"{k}={v!r}" for k, v in self.params.items()]
        if self.threads is not None:
            args.append(f"threads={self.threads!r}")
        return f"{type(self).__name__}({', '.join(args)})"


class FeatureDistill(Defend):
    """Feature Distillation (``table="authors"`` or ``"band"``; ``passes=2`` is FD-2P)."""

    def __init__(self, table: str = "authors", passes: int = 1, *, threads: Any = None):
        super().__init__("fd", table=table, passes=passes, threads=threads)

    def __repr__(self) -> str:
        return f"FeatureDistill(table={self.params['table']!r}, passes={self.params['passes']})"


class JPEG(Defend):
    """A standard JPEG round trip at ``quality`` with chroma ``subsampling``."""

    def __init__(self, quality: int = 75, subsampling: str = "420", *, threads: Any = None):
        super().__init__("jpeg", quality=quality, subsampling=subsampling, threads=threads)

    def __repr__(self) -> str:
        return f"JPEG(quality={self.params['quality']}, subsampling={self.params['subsampling']!r})"


def _threads_here():
    """One thread inside a torch DataLoader worker (the workers share the cores), else all."""
    data = sys.modules.get("torch.utils.data")
    if data is not None and data.get_worker_info() is not None:
        return 1
    return None


def _worker_seeded(params: dict) -> dict:
    """Inside a torch DataLoader worker, a seeded randomised defense draws from its own stream:
    every worker gets a copy of the same seed, and would otherwise repeat the others' draws. The
    stream is the user's seed spawned by the worker's id, so a run is reproducible for a seed."""
    seed = params.get("seed")
    data = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    if seed is None or info is None:
        return params  # no seed: fresh entropy in each process already differs
    if isinstance(seed, np.random.Generator):  # each worker holds an identical copy of it
        seed = int(seed.integers(2**63))
    stream = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(info.id,)))
    return {**params, "seed": stream}
