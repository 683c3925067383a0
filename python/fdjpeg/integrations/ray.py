"""Defenses for Ray Data: callable classes for ``Dataset.map_batches`` in the numpy batch format.

::

    import ray
    from fdjpeg.integrations.ray import FeatureDistillBatch

    ds = ray.data.read_images("photos/")                  # an "image" column
    ds = ds.map_batches(FeatureDistillBatch, fn_constructor_kwargs={"passes": 1},
                        batch_format="numpy", concurrency=4)

The image column holds either one array ``N x H x W x C`` (images of one size) or an object array
of ``H x W x C`` arrays of different sizes (what Ray gives for variable-shaped tensors); both come
back in the same form, every other column untouched. Each actor builds its defense once and runs
the native core on the CPUs Ray assigned to it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from .. import defenses as _defenses


class DefendBatch:
    """Run the defense ``defense`` (any name of :mod:`fdjpeg.defenses`, with ``params``) on the
    column ``column`` of each batch, writing the result to ``output_column`` (default: in place)."""

    def __init__(self, defense: str = "fd", *, column: str = "image", output_column: Optional[str] = None,
                 threads: Optional[int] = None, **params: Any):
        self.column = column
        self.output_column = output_column or column
        _defenses.check_transform(defense, **params)
        self.defense = _defenses.build_defense(defense, params, threads if threads is not None else _ray_cpus())

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if self.column not in batch:
            raise KeyError(f"batch has no column {self.column!r}; columns: {sorted(batch)}")
        images = batch[self.column]
        out = dict(batch)
        if isinstance(images, np.ndarray) and images.dtype != object:
            out[self.output_column] = self._stack(images)
        else:
            out[self.output_column] = self._ragged(list(images))
        return out

    def _stack(self, images: np.ndarray) -> np.ndarray:
        if images.ndim == 3:  # N x H x W grey
            return self.defense(images[..., None])[..., 0]
        if images.ndim != 4:
            raise ValueError(f"image column must be N x H x W (x C), got shape {images.shape}")
        return self.defense(images)

    def _ragged(self, items) -> np.ndarray:
        """Images of different sizes: one defense call per group of equal shape and dtype."""
        result = np.empty(len(items), dtype=object)
        groups: Dict[tuple, list] = {}
        for i, img in enumerate(items):
            img = np.asarray(img)
            groups.setdefault((img.shape, img.dtype.str), []).append(i)
        for indices in groups.values():
            done = self._stack(np.stack([np.asarray(items[i]) for i in indices]))
            for i, img in zip(indices, done):
                result[i] = img
        return result


class FeatureDistillBatch(DefendBatch):
    """Feature Distillation on the ``image`` column (``table="authors"`` or ``"band"``, ``passes``)."""

    def __init__(self, table: str = "authors", passes: int = 1, *, column: str = "image",
                 output_column: Optional[str] = None, threads: Optional[int] = None):
        super().__init__("fd", column=column, output_column=output_column, threads=threads, table=table, passes=passes)


class JPEGBatch(DefendBatch):
    """A JPEG round trip at ``quality`` on the ``image`` column."""

    def __init__(self, quality: int = 75, subsampling: str = "420", *, column: str = "image",
                 output_column: Optional[str] = None, threads: Optional[int] = None):
        super().__init__("jpeg", column=column, output_column=output_column, threads=threads,
                         quality=quality, subsampling=subsampling)


def _ray_cpus() -> Optional[int]:
    """The CPUs Ray assigned to this worker (so actors do not oversubscribe the node), else None."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
    except Exception:  # noqa: BLE001 - outside Ray, or an older Ray without these calls
        pass
    return None


__all__ = ["DefendBatch", "FeatureDistillBatch", "JPEGBatch"]
