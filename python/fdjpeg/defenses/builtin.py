"""Registration of fdjpeg's own defenses (one entry per defense module)."""

from __future__ import annotations

from .. import ops, tables
from . import register


def _identity(x):
    return x


def _stored_as_jpeg(defend, tables, *, color, subsampling):
    """Mark ``defend`` with the tables a JPEG file of its output carries (``fdjpeg defend
    --format jpeg``): ``color="none"`` means R, G, B quantized as they are (no YCbCr)."""
    defend.jpeg_file = {"tables": list(tables), "color": color, "subsampling": subsampling}
    return defend


def _feature_distillation(table="authors", passes: int = 1, threads=None):
    steps = {
        "authors": tables.feature_distillation(),
        "band": tables.scale(tables.band(1, 41, 4), 50),
    }
    if not isinstance(table, str):  # an 8x8 table of steps, e.g. one derived from data
        chosen = tables.validate(table)
    elif table in steps:
        chosen = steps[table]
    else:
        raise ValueError(f"table must be one of {sorted(steps)} or an 8x8 array of steps, got {table!r}")
    defend = lambda x: ops.feature_distill(x, chosen, passes=passes, threads=threads)  # noqa: E731
    return _stored_as_jpeg(defend, [chosen] * 3, color="none", subsampling="444")


def _jpeg(quality: int = 75, subsampling: str = "420", threads=None):
    luma, chroma = tables.ijg(quality)  # validates quality now
    defend = lambda x: ops.jpeg(x, quality, subsampling=subsampling, threads=threads)  # noqa: E731
    return _stored_as_jpeg(defend, [luma, chroma, chroma], color="ycbcr", subsampling=str(subsampling).replace(":", ""))


register("none", lambda: _identity, description="no defense")
register(
    "fd",
    _feature_distillation,
    table="authors",
    passes=1,
    threads=None,
    description="Feature Distillation (Liu et al. 2019): RGB 8x8 DCT, table 25/30",
)
register("jpeg", _jpeg, quality=75, subsampling="420", threads=None, description="standard JPEG round trip")


def _slq(qualities=(20, 40, 60, 80), subsampling: str = "444", seed=None, threads=None):
    from .slq import StochasticLocalQuantization

    return StochasticLocalQuantization(qualities, subsampling=subsampling, seed=seed, threads=threads)


register(
    "slq",
    _slq,
    random=True,
    qualities=(20, 40, 60, 80),
    subsampling="444",
    seed=None,
    threads=None,
    description="SHIELD stochastic local quantization (Das et al. 2018): each 8x8 block at a random JPEG quality",
)


def _webp_flip(quality: int = 60, axis: str = "horizontal", order: str = "before", flip_back: bool = False,
               method: int = 4, threads=None):
    from .webp_flip import WebPFlip

    return WebPFlip(quality, axis=axis, order=order, flip_back=flip_back, method=method, threads=threads)


register(
    "webp-flip",
    _webp_flip,
    quality=60,
    axis="horizontal",
    order="before",
    flip_back=False,
    method=4,
    threads=None,
    description="left-right flip then WebP via libwebp (Yin et al. 2020)",
)


def _comdefend(variant: str = "rgb", arch: str = "plain", tile=None, weights=None, device=None, batch_size: int = 64,
               gradient: str = "identity"):
    from .comdefend import build

    return build(variant, arch, tile, weights, device, batch_size, gradient)


_COMDEFEND = dict(arch="plain", tile=None, weights=None, device=None, batch_size=64, gradient="identity")
register(
    "comdefend",
    _comdefend,
    variant="rgb",
    **_COMDEFEND,
    description="ComDefend (Jia et al. 2019): ComCNN -> 12-bit binary code -> RecCNN; shipped RGB weights",
)
register(
    "comdefend-grey",
    _comdefend,
    variant="grey",
    **_COMDEFEND,
    description="ComDefend grey-scale variant (4-bit code), shipped weights trained on Fashion-MNIST",
)


def _ensemble_fashion(path=None, batch_size: int = 500):
    from .ensemble import FASHION_ENSEMBLE_FILE, load_fashion_ensemble

    return load_fashion_ensemble(path or FASHION_ENSEMBLE_FILE, batch_size)


register(
    "ensemble-fashion",
    _ensemble_fashion,
    path=None,
    batch_size=500,
    description="a classifier, not an image transform: majority vote of FashionCNNs fine-tuned on JPEG 20/40/60/80 "
    "(Zhang & Gao 2021; SHIELD's vaccinated ensemble); returns VoteResult, .as_classifier() gives an nn.Module",
)
