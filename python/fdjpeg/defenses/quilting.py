"""Image quilting as Guo et al. (ICLR 2018, "Countering Adversarial Images using Input
Transformations") ran it, from facebookresearch's adversarial_image_defenses:

* ``index_patches.py``: a database of 5 x 5 RGB patches in [0, 1], flattened channel by channel
  (75 values), cut at random positions of clean images (1,000,000 patches from 20,000 ImageNet
  training images, 224 x 224 crops), indexed by faiss as ``IndexPreTransform(PCAMatrix(75, 64, 0,
  True), IndexIVFPQ(IndexFlatL2(64), 64, 200, 16, 8))``: PCA to 64 dimensions (random rotation),
  200 inverted lists, 16 sub-quantizers of 8 bits;
* ``lib/defenses.py``: ``quilting(im, index, patches, patch_size=5, overlap=patch_size // 2,
  graphcut=True, k=quilting_neighbors)`` (``lib/opts.py``: ``--quilting_neighbors`` 1), clamped to
  [0, 1];
* ``lib/transformations/quilting_fast.py`` and ``quilting.cpp``: the patches of the input at
  ``y in range(0, H - 5, 3)``, ``x in range(0, W - 5, 3)`` are searched with ``nprobe = 5`` (one of
  the top ``k`` at random when ``k > 1``); the nearest database patch of each is placed in raster
  order on a zero image, a cut through the overlap with what is already there choosing which
  pixels it replaces. Pixels past the last grid position (the last 3 rows and columns of a 224
  image) are never written and stay 0, as in their code.

Differences, each for a reason:

* The database is cut from the offline photos of :func:`fdjpeg.datasets.photo_crops` (224 x 224
  crops), not ImageNet, which does not install offline: from the held-out quarter of the photos
  (:func:`fdjpeg.datasets.split_photo_crops`), never one that ``fdjpeg eval`` scores, as their
  database came from training images and their evaluation from validation images. Built once, deterministically from ``index_seed``, and kept in the user cache
  (``$FDJPEG_CACHE``, else ``$XDG_CACHE_HOME/fdjpeg``, else ``~/.cache/fdjpeg``).
* The cut: their graph cut ties the non-overlap pixels to the new patch and no pixel to the old
  one, so its minimum cut is empty and the new patch overwrites the whole overlap (up to exact
  ties). Here the cut is the one the paper describes and Efros & Freeman (SIGGRAPH 2001) define:
  the minimum-error boundary cut, a minimal path (dynamic programming) through the vertical and the
  horizontal overlap, on their seam cost ``sum over channels |old - new|``.
  ``cut="none"`` gives the overwrite their code computes.
* ``nprobe = 5`` is set on the IVF index itself (their assignment was on the PCA wrapper object).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any, Optional, Tuple, Union

import numpy as np

from .. import ops
from .._cache import cache_dir as user_cache_dir
from .._checks import integer

PATCH_SIZE = 5  # lib/constants.py QUILTING_PATCH_SIZE
OVERLAP = PATCH_SIZE // 2  # lib/defenses.py
NUM_PATCHES = 1_000_000  # index_patches.py --num_patches
PCA_DIMS = 64  # index_patches.py --pca_dims
NUM_LISTS, SUB_QUANTIZERS, BITS = 200, 16, 8  # index_patches.py index_patches()
NPROBE = 5  # quilting_fast.py
CUTS = ("min-error", "none")
FAISS_INSTALL = "pip install faiss-cpu"

Seed = Union[None, int, np.random.Generator]


def cache_dir() -> str:
    """Where built patch databases are kept (never the package folder)."""
    return user_cache_dir("quilting")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(f"image quilting needs faiss: {FAISS_INSTALL}") from None
    return faiss


# ------------------------------------------------------------------------------------------------
# Patches


def grid(height: int, width: int, patch_size: int = PATCH_SIZE, overlap: int = OVERLAP) -> Tuple[range, range]:
    """The top-left corners their code visits: ``range(0, H - p, p - overlap)`` (and for x)."""
    step = patch_size - overlap
    return range(0, height - patch_size, step), range(0, width - patch_size, step)


def image_patches(img: np.ndarray, patch_size: int = PATCH_SIZE, overlap: int = OVERLAP) -> np.ndarray:
    """The grid patches of one float H x W x C image, flattened channel by channel (N x C*p*p float32)."""
    ys, xs = grid(img.shape[0], img.shape[1], patch_size, overlap)
    windows = np.lib.stride_tricks.sliding_window_view(img, (patch_size, patch_size), axis=(0, 1))
    picked = windows[ys.start : ys.stop : ys.step, xs.start : xs.stop : xs.step]  # rows x cols x C x p x p
    return np.ascontiguousarray(picked.reshape(-1, img.shape[2] * patch_size * patch_size), dtype=np.float32)


def sample_patches(images: np.ndarray, count: int, rng: np.random.Generator, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """``count`` patches (uint8, N x C*p*p, channel by channel) at uniformly random positions of
    uniformly random images of the uint8 N x H x W x C ``images``, as ``gather_patches`` cuts them."""
    n, h, w, c = images.shape
    which = rng.integers(0, n, count)
    ys = rng.integers(0, h - patch_size + 1, count)
    xs = rng.integers(0, w - patch_size + 1, count)
    offs = np.arange(patch_size)
    rows = (ys[:, None] + offs)[:, :, None]
    cols = (xs[:, None] + offs)[:, None, :]
    picked = images[which[:, None, None], rows, cols]  # count x p x p x C
    return np.ascontiguousarray(picked.transpose(0, 3, 1, 2).reshape(count, -1))


# ------------------------------------------------------------------------------------------------
# The database: patches and their faiss index


def build_index(patches: np.ndarray, seed: int = 0):
    """Their faiss index over float patches (N x 75): PCA 64 (random rotation), IVF 200, PQ 16 x 8."""
    faiss = _faiss()
    # "PCAR64": PCAMatrix(d, 64, eigen_power 0, random_rotation True); "IVF200": IndexFlatL2 lists
    index = faiss.index_factory(patches.shape[1], f"PCAR{PCA_DIMS},IVF{NUM_LISTS},PQ{SUB_QUANTIZERS}x{BITS}")
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = seed  # k-means of the inverted lists
    faiss.downcast_index(ivf).pq.cp.seed = seed  # and of the product quantizer
    index.train(patches)
    index.add(patches)
    ivf.nprobe = NPROBE
    return index


def database(num_patches: int = NUM_PATCHES, index_seed: int = 0, folder: Optional[str] = None,
             log=lambda line: print(line, file=sys.stderr)) -> Tuple[Any, np.ndarray]:
    """``(faiss index, uint8 patches N x 75)`` cut from the held-out crops of
    :func:`fdjpeg.datasets.photo_crops` (224 x 224; :func:`fdjpeg.datasets.split_photo_crops`) with ``numpy.random.default_rng(index_seed)``; loaded from the cache when built before with the
    same photos and settings, else built (about a minute for a million patches) and cached."""
    from .. import datasets

    num_patches = integer(num_patches, "num_patches", 256 * NUM_LISTS)  # faiss trains each list on up to 256
    index_seed = integer(index_seed, "index_seed", 0)
    faiss = _faiss()
    crops = datasets.photo_crops(224)
    names = datasets.split_photo_crops(crops)[1]  # never an evaluated photo, as Guo et al. cut training images
    key = json.dumps({"photos": names, "n": num_patches, "seed": index_seed, "p": PATCH_SIZE, "pca": PCA_DIMS,
                      "ivf": [NUM_LISTS, SUB_QUANTIZERS, BITS], "faiss": faiss.__version__, "v": 2})
    stem = os.path.join(folder or cache_dir(), hashlib.sha256(key.encode()).hexdigest()[:16])
    if os.path.exists(stem + ".faiss") and os.path.exists(stem + ".npy"):
        index = faiss.read_index(stem + ".faiss")
        faiss.extract_index_ivf(index).nprobe = NPROBE
        return index, np.load(stem + ".npy")
    log(f"quilting: building a database of {num_patches:,} patches from {len(names)} photo crops into {stem}.*")
    images = np.stack([crops[n] for n in names])
    patches = sample_patches(images, num_patches, np.random.default_rng(index_seed))
    index = build_index(patches.astype(np.float32) / 255, index_seed)
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    pid = os.getpid()  # written under a temporary name, then renamed: readers never see half a file
    faiss.write_index(index, f"{stem}.{pid}.faiss")
    with open(f"{stem}.{pid}.npy", "wb") as f:
        np.save(f, patches)
    os.replace(f"{stem}.{pid}.faiss", stem + ".faiss")
    os.replace(f"{stem}.{pid}.npy", stem + ".npy")
    with open(stem + ".json", "w") as f:
        f.write(key)
    return index, patches


# ------------------------------------------------------------------------------------------------
# Stitching


def min_error_path(cost: np.ndarray) -> np.ndarray:
    """Efros & Freeman's minimal vertical path through ``cost`` (rows x cols): one column per row,
    moving at most one column between rows, of least total cost; ties go to the lower column."""
    rows, cols = cost.shape
    total = cost.astype(np.float64)
    for r in range(1, rows):
        left = np.concatenate(([np.inf], total[r - 1, :-1]))
        right = np.concatenate((total[r - 1, 1:], [np.inf]))
        total[r] += np.minimum(np.minimum(left, total[r - 1]), right)
    path = np.empty(rows, dtype=np.intp)
    path[-1] = int(np.argmin(total[-1]))
    for r in range(rows - 2, -1, -1):
        lo = max(path[r + 1] - 1, 0)
        path[r] = lo + int(np.argmin(total[r, lo : min(path[r + 1] + 2, cols)]))
    return path


def keep_old_mask(old: np.ndarray, new: np.ndarray, overlap: int, top: bool, left: bool) -> np.ndarray:
    """Pixels of a p x p window that keep the ``old`` content: left of the vertical cut through the
    ``overlap`` left columns (when ``left``) or above the horizontal cut through the top rows (when
    ``top``); the cost is their seam cost, ``sum over channels |old - new|``."""
    p = old.shape[0]
    err = np.abs(old - new).sum(axis=2)
    keep = np.zeros((p, p), dtype=bool)
    idx = np.arange(p)
    if left:
        keep |= idx[None, :] < min_error_path(err[:, :overlap])[:, None]
    if top:
        keep |= idx[:, None] < min_error_path(err[:overlap, :].T)[None, :]
    return keep


def quilt(img: np.ndarray, index: Any, patches: np.ndarray, *, k: int = 1, rng: Optional[np.random.Generator] = None,
          cut: str = "min-error", patch_size: int = PATCH_SIZE, overlap: int = OVERLAP) -> np.ndarray:
    """Quilt one float H x W x C image in [0, 1] from the database (``index`` searched with the
    image's grid patches, ``patches`` the N x C*p*p patches it indexes, uint8 or float in [0, 1]).
    Returns float32 in [0, 1]; pixels outside the grid are 0 (see the module)."""
    if cut not in CUTS:
        raise ValueError(f"cut must be one of {list(CUTS)}, got {cut!r}")
    h, w, c = img.shape
    if patches.ndim != 2 or patches.shape[1] != c * patch_size * patch_size:
        raise ValueError(f"patches must be N x {c * patch_size * patch_size}, got shape {patches.shape}")
    queries = image_patches(img, patch_size, overlap)
    _, found = index.search(queries, k)
    if k > 1:  # select_random_neighbor: one of the top k per query
        found = found[np.arange(len(found)), (rng or np.random.default_rng()).integers(0, k, len(found))]
    else:
        found = found[:, 0]
    scale = np.float32(1 / 255) if patches.dtype == np.uint8 else np.float32(1)
    chosen = patches[np.maximum(found, 0)].astype(np.float32) * scale
    chosen = chosen.reshape(-1, c, patch_size, patch_size).transpose(0, 2, 3, 1)
    out = np.zeros((h, w, c), dtype=np.float32)
    ys, xs = grid(h, w, patch_size, overlap)
    n = 0
    for y in ys:
        for x in xs:
            if found[n] >= 0:  # a failed search leaves the window as it is
                window = out[y : y + patch_size, x : x + patch_size]
                new = chosen[n]
                if cut == "min-error" and (x > 0 or y > 0):
                    new = np.where(keep_old_mask(window, new, overlap, y > 0, x > 0)[:, :, None], window, new)
                window[...] = new
            n += 1
    return np.clip(out, 0.0, 1.0)


class Quilting:
    """Guo et al.'s image quilting defense (see the module).

    Args:
        k: search the ``k`` nearest patches and take one at random (their default: 1; ``k > 1``
            makes the defense random).
        num_patches: size of the database (theirs: 1,000,000).
        index_seed: seed of the database's patch positions and faiss training.
        cut: ``"min-error"`` (the boundary cut) or ``"none"`` (overwrite, what their graph cut does).
        seed: seed of the top-``k`` draws.
        cache: folder of built databases (None: :func:`cache_dir`).
        db: ``(faiss index, patches)`` to use instead of the photo database (``num_patches``,
            ``index_seed`` and ``cache`` are then unused).
    """

    random = False  # at k = 1, as they ran it; an instance with k > 1 says True
    differentiable = False  # adaptive attacks take it as the identity (BPDA)

    def __init__(self, k: int = 1, num_patches: int = NUM_PATCHES, index_seed: int = 0, *, cut: str = "min-error",
                 seed: Seed = None, cache: Optional[str] = None, db: Optional[Tuple[Any, np.ndarray]] = None) -> None:
        self.k = integer(k, "k", 1)
        if cut not in CUTS:
            raise ValueError(f"cut must be one of {list(CUTS)}, got {cut!r}")
        self.cut = cut
        self.random = self.k > 1
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.index, self.patches = database(num_patches, index_seed, cache) if db is None else db

    def __call__(self, x: Any) -> Any:
        def native(src: np.ndarray, dst: np.ndarray) -> None:
            if src.shape[3] * PATCH_SIZE * PATCH_SIZE != self.patches.shape[1]:
                raise ValueError(f"quilting takes RGB images (the patch database is RGB), got {src.shape[3]} channels")
            for i in range(src.shape[0]):
                img = src[i].astype(np.float32) / 255 if src.dtype == np.uint8 else src[i].astype(np.float32)
                out = quilt(img, self.index, self.patches, k=self.k, rng=self.rng, cut=self.cut)
                dst[i] = np.round(out * 255) if dst.dtype == np.uint8 else out

        return ops.apply_to_images(x, native)

    def __repr__(self) -> str:
        return f"Quilting(k={self.k}, patches={len(self.patches):,}, cut={self.cut!r})"


def _quilting(num_patches: int = NUM_PATCHES, index_seed: int = 0, cut: str = "min-error",
              cache: Optional[str] = None) -> Quilting:
    """The registered defense: k = 1, as they ran it (deterministic)."""
    return Quilting(1, num_patches, index_seed, cut=cut, cache=cache)


_quilting.random = False

__all__ = ["Quilting", "quilt", "database", "build_index", "min_error_path", "keep_old_mask", "image_patches",
           "sample_patches", "grid", "cache_dir", "CUTS"]
