"""Registration of fdjpeg's own defenses (one entry per defense, each parameter declared).

Factories of defenses that need torch or data are named ``"module:name"`` or import inside, so
``import fdjpeg`` stays light while every name is known.
"""

from __future__ import annotations

import importlib

from .. import ops, tables
from .params import Param
from .registry import register

SUBSAMPLING_CHOICES = tuple(ops.SUBSAMPLINGS)


def _threads() -> Param:
    return Param("threads", int, None, "worker threads of the native core (None: all cores)", min=1,
                 max=ops.MAX_THREADS, optional=True)


def _passes() -> Param:
    return Param("passes", int, 1, "round trips (2 is FD-2P)", min=1, max=ops.MAX_PASSES)


def _subsampling(default: str) -> Param:
    return Param("subsampling", str, default, "chroma subsampling", choices=SUBSAMPLING_CHOICES)


def _constant(module: str, name: str, *first):
    """Choices kept in ``module`` (which may import torch), read only when a value is checked."""
    return lambda: (*first, *getattr(importlib.import_module(module), name))


def _identity(x):
    return x


def _stored_as_jpeg(defend, tables, *, color, subsampling):
    """Mark ``defend`` with the tables a JPEG file of its output carries (``fdjpeg defend
    --format jpeg``): ``color="none"`` means R, G, B quantized as they are (no YCbCr)."""
    defend.jpeg_file = {"tables": list(tables), "color": color, "subsampling": subsampling}
    return defend


FD_TABLES = ("authors", "band")


def _feature_distillation(table="authors", passes: int = 1, threads=None):
    if isinstance(table, str):
        chosen = tables.feature_distillation() if table == "authors" else tables.scale(tables.band(1, 41, 4), 50)
    else:  # an 8x8 table of steps, e.g. one derived from data
        chosen = tables.validate(table)
    defend = lambda x: ops.feature_distill(x, chosen, passes=passes, threads=threads)  # noqa: E731
    return _stored_as_jpeg(defend, [chosen] * 3, color="none", subsampling="444")


def _jpeg(quality: int = 75, subsampling: str = "420", threads=None):
    luma, chroma = tables.ijg(quality)
    defend = lambda x: ops.jpeg(x, quality, subsampling=subsampling, threads=threads)  # noqa: E731
    return _stored_as_jpeg(defend, [luma, chroma, chroma], color="ycbcr", subsampling=subsampling.replace(":", ""))


def _fd_derived(data: str = "fashion-mnist", passes: int = 1, threads=None):
    """Feature Distillation with the table derived from clean training images of ``data``."""
    from .. import datasets

    return _feature_distillation(tables.derived_table(datasets.training_images(data)), passes, threads)


def _ensemble_fashion(path=None, batch_size: int = 500):
    from .ensemble import FASHION_ENSEMBLE_FILE, load_fashion_ensemble

    return load_fashion_ensemble(path or FASHION_ENSEMBLE_FILE, batch_size)


register("none", lambda: _identity, description="no defense")
register(
    "fd", _feature_distillation,
    Param("table", str, "authors", "the authors' table or the band table", choices=FD_TABLES,
          objects=("numpy:ndarray", "builtins:list")),
    _passes(), _threads(),
    description="Feature Distillation (Liu et al. 2019): RGB 8x8 DCT, table 25/30",
)
register(
    "fd-derived", _fd_derived,
    Param("data", str, "fashion-mnist", "clean training images the table is derived from",
          choices=_constant("fdjpeg.datasets", "TRAINING_SOURCES")),
    _passes(), _threads(),
    description="Feature Distillation with a DeepN-JPEG-style table derived from clean training images "
    "(data: fashion-mnist, mnist or photos)",
)
register(
    "jpeg", _jpeg,
    Param("quality", int, 75, "IJG quality", min=1, max=100), _subsampling("420"), _threads(),
    description="standard JPEG round trip",
)
register(
    "slq", "fdjpeg.defenses.slq:StochasticLocalQuantization",
    Param("qualities", tuple, (20, 40, 60, 80), "JPEG qualities a block may be quantized at", min=1, max=100,
          length=(1, 256)),
    _subsampling("444"),
    Param("seed", int, None, "seed of the draws (None: fresh entropy)", min=0, optional=True,
          objects=("numpy.random:Generator",)),
    _threads(),
    description="SHIELD stochastic local quantization (Das et al. 2018): each 8x8 block at a random JPEG quality",
)
register(
    "webp-flip", "fdjpeg.defenses.webp_flip:WebPFlip",
    Param("quality", int, 60, "WebP quality", min=0, max=100),
    Param("axis", str, "horizontal", "flip axis", choices=_constant("fdjpeg.defenses.webp_flip", "AXES")),
    Param("order", str, "before", "flip before or after the WebP round trip", choices=_constant("fdjpeg.defenses.webp_flip", "ORDERS")),
    Param("flip_back", bool, False, "flip the result back"),
    Param("method", int, 4, "libwebp's speed/size trade-off", min=0, max=6),
    _threads(),
    description="left-right flip then WebP via libwebp (Yin et al. 2020)",
)


def _comdefend_params(variant: str):
    return (
        Param("variant", str, variant, "rgb or grey networks", choices=_constant("fdjpeg.defenses.comdefend", "WIDTHS")),
        Param("arch", str, "plain", "network architecture", choices=_constant("fdjpeg.defenses.comdefend", "ARCHS")),
        Param("tile", int, None, "patch size (None: the whole image)", min=1, optional=True),
        Param("weights", str, None, "weights file (None: the shipped ones)", optional=True, objects=("os:PathLike",)),
        Param("device", str, None, "torch device (None: the input's)", optional=True, objects=("torch:device",)),
        Param("batch_size", int, 64, "images per network call", min=1),
        Param("gradient", str, "identity", "what adaptive attacks differentiate",
              choices=_constant("fdjpeg.defenses.comdefend", "CODE_GRADIENTS", "identity")),
    )


register(
    "comdefend", "fdjpeg.defenses.comdefend:build", *_comdefend_params("rgb"),
    description="ComDefend (Jia et al. 2019): ComCNN -> 12-bit binary code -> RecCNN; shipped RGB weights",
)
register(
    "comdefend-grey", "fdjpeg.defenses.comdefend:build", *_comdefend_params("grey"),
    description="ComDefend grey-scale variant (4-bit code), shipped weights trained on Fashion-MNIST",
)
register(
    "ensemble-fashion", _ensemble_fashion,
    Param("path", str, None, "ensemble weights (None: the shipped ones)", optional=True, objects=("os:PathLike",)),
    Param("batch_size", int, 500, "images per network call", min=1),
    classifier=True,
    description="a classifier, not an image transform: majority vote of FashionCNNs fine-tuned on JPEG 20/40/60/80 "
    "(Zhang & Gao 2021; SHIELD's vaccinated ensemble); returns VoteResult, .as_classifier() gives an nn.Module",
)
register(
    "tvm", "fdjpeg.defenses.tvm:TVMinimization",
    Param("drop_rate", float, 0.5, "probability a pixel value is dropped before the fit", min=0, max=0.99),
    Param("weight", float, 0.03, "TV weight of Guo et al.'s constants (the solver runs at 1/weight)", min=1e-6),
    Param("max_iter", int, 100, "split-Bregman iterations", min=1),
    Param("gs_iter", int, 10, "Gauss-Seidel sweeps per iteration", min=1),
    Param("eps", float, 0.01, "stop when the RMS change of an iteration is below this", min=1e-12),
    Param("seed", int, None, "seed of the dropout (None: fresh entropy)", min=0, optional=True,
          objects=("numpy.random:Generator",)),
    description="total variance minimisation as Guo et al. 2018 ran it: random pixel dropout, masked split-Bregman TV",
)
register(
    "quilting", "fdjpeg.defenses.quilting:_quilting",
    Param("num_patches", int, 1_000_000, "5x5 patches in the database", min=51_200),
    Param("index_seed", int, 0, "seed of the database's patches and faiss training", min=0),
    Param("cut", str, "min-error", "boundary cut through the overlaps", choices=("min-error", "none")),
    Param("cache", str, None, "folder of built databases (None: the user cache)", optional=True,
          objects=("os:PathLike",)),
    description="image quilting as Guo et al. 2018 ran it: nearest 5x5 patches (faiss IVF-PQ) from offline photos, "
    "2-px overlaps with a minimum-error cut",
)
