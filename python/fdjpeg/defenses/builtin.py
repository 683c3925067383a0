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
