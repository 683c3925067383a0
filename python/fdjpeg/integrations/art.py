"""fdjpeg's defenses as preprocessing defences of IBM's Adversarial Robustness Toolbox (ART).

::

    from art.estimators.classification import PyTorchClassifier
    from fdjpeg.integrations.art import ArtDefense

    classifier = PyTorchClassifier(model, loss, input_shape=(1, 28, 28), nb_classes=10,
                                   clip_values=(0.0, 1.0),
                                   preprocessing_defences=[ArtDefense("fd", channels_first=True)])

:class:`ArtDefense` is a numpy :class:`art.defences.preprocessor.Preprocessor` and works with any
ART estimator; :class:`ArtDefensePyTorch` is a :class:`~art.defences.preprocessor.PreprocessorPyTorch`
that ART's PyTorch estimators chain on tensors (no numpy round trip, gradients through autograd).

Both take any name of :mod:`fdjpeg.defenses` with its parameters, and follow fdjpeg's gradient rule
for adaptive attacks (:func:`fdjpeg.attacks.straight_through`): the identity (BPDA) for a
non-differentiable defense, the defense's own gradient where it declares one (``differentiable``,
e.g. WebP + flip, whose flip is differentiated exactly). ART's gradient attacks through either form
are therefore the same adaptive attacks as :mod:`fdjpeg.attacks` through :class:`fdjpeg.attacks.Defended`.
A defense with ``random = True`` (SLQ) draws anew on every call; ART's attacks do not average over
those draws (no EOT), so their result on such a defense is an upper bound on its robustness.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, Optional, Tuple

import numpy as np

from .. import defenses as _defenses
from .._checks import flag
from .._pipeline import nchw_to_nhwc, nhwc_to_nchw

try:
    from art.defences.preprocessor.preprocessor import Preprocessor, PreprocessorPyTorch
except ModuleNotFoundError as exc:  # pragma: no cover - only without ART
    if exc.name != "art" and not str(exc.name).startswith("art."):
        raise
    raise ImportError(
        "fdjpeg.integrations.art needs IBM's Adversarial Robustness Toolbox: "
        "pip install 'fdjpeg[art]' (or pip install adversarial-robustness-toolbox)"
    ) from exc


class _Wrapped:
    """The defense ``name`` with ART's conventions: layout (NHWC / NCHW, or 5-D video NFHWC /
    NCFHW, frames defended as images) and value range (``clip_values`` (0, 1) or (0, 255))."""

    def __init__(self, name: Any, channels_first: Any, clip_values: Any, params: dict) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be the name of an fdjpeg defense (one of {_defenses.names()}), got {name!r}")
        self.name = name
        self.defense = _defenses.build(name, **params)  # ValueError for an unknown name or parameter
        self.channels_first = flag(channels_first, "channels_first")
        self.clip_values = _clip_values(clip_values)
        self.differentiable = bool(getattr(self.defense, "differentiable", False))
        self.random = _defenses.is_random(self.defense)

    @property
    def scale(self) -> float:
        return float(self.clip_values[1])

    # ----- numpy (ART's Preprocessor.__call__)

    def numpy(self, x: Any) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy array, got {type(x).__module__}.{type(x).__name__}")
        if x.dtype == object:
            raise TypeError("x must be one array of images of one size, not an object array of differently sized images")
        _check_ndim(x.ndim)
        if x.dtype == np.uint8:
            if self.scale != 255:
                raise TypeError("uint8 images hold 0..255: use clip_values=(0, 255), or pass floats in [0, 1]")
            work = x
        elif np.issubdtype(x.dtype, np.floating):
            # fdjpeg computes in float32 / float64; float16 widens to float32.
            work = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
            _check_range(float(work.min()) if work.size else 0.0, float(work.max()) if work.size else 0.0,
                         self.clip_values)
            if self.scale != 1:
                work = work / np.asarray(self.scale, dtype=work.dtype)
        else:
            raise TypeError(f"x must hold floats (or uint8 with clip_values (0, 255)), got {x.dtype}")
        images, restore = self._to_nhwc(work)
        out = self.defense(images)
        if not isinstance(out, np.ndarray) or out.shape != images.shape:
            raise TypeError(f"defense {self.name!r} returned {_describe(out)} for images of shape {images.shape}: "
                            "it is not an image transform (a classifier cannot be a preprocessing defence)")
        out = restore(out)
        if x.dtype != np.uint8 and self.scale != 1:
            out = out * np.asarray(self.scale, dtype=out.dtype)
        return out.astype(x.dtype, copy=False)

    def _to_nhwc(self, x: np.ndarray):
        """``x`` as one contiguous N x H x W x C batch, and the function that puts a result back."""
        shape = x.shape
        if x.ndim == 4:
            if not self.channels_first:
                return np.ascontiguousarray(x), lambda y: y
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1)), lambda y: y.transpose(0, 3, 1, 2)
        if not self.channels_first:  # N F H W C
            return np.ascontiguousarray(x.reshape(-1, *shape[2:])), lambda y: y.reshape(shape)
        n, c, f, h, w = shape  # N C F H W
        frames = np.ascontiguousarray(x.transpose(0, 2, 3, 4, 1).reshape(n * f, h, w, c))
        return frames, lambda y: y.reshape(n, f, h, w, c).transpose(0, 4, 1, 2, 3)

    # ----- torch (the PyTorch form's forward, and the differentiable numpy gradient)

    def torch(self, x: Any) -> Any:
        """The defense on a float torch tensor in ART's layout and range, differentiated by fdjpeg's
        rule (BPDA identity, or the defense's own gradient); every reshaping here is differentiable."""
        import torch

        from ..attacks import straight_through

        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a float torch tensor, got {_describe(x)}")
        _check_ndim(x.ndim)
        if x.numel():
            _check_range(float(x.detach().min()), float(x.detach().max()), self.clip_values)
        shape = x.shape
        if x.ndim == 4:
            nchw = x if self.channels_first else nhwc_to_nchw(x)
        elif self.channels_first:  # N C F H W
            nchw = x.transpose(1, 2).reshape(-1, shape[1], *shape[3:])
        else:  # N F H W C
            nchw = nhwc_to_nchw(x.reshape(-1, *shape[2:]))
        nchw = nchw.contiguous()
        if self.scale != 1:
            nchw = nchw / self.scale
        out = straight_through(self.defense, nchw)
        if self.scale != 1:
            out = out * self.scale
        if x.ndim == 4:
            return out if self.channels_first else nchw_to_nhwc(out).contiguous()
        if self.channels_first:
            return out.reshape(shape[0], shape[2], shape[1], *shape[3:]).transpose(1, 2).contiguous()
        return nchw_to_nhwc(out).reshape(shape).contiguous()

    def gradient(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """``grad`` (d loss / d defended x) pulled back to d loss / d x."""
        if not self.differentiable:
            return grad  # BPDA: the defense's gradient is taken as the identity
        import torch

        if not isinstance(x, np.ndarray) or not isinstance(grad, np.ndarray):
            raise TypeError(f"x and grad must be numpy arrays, got {_describe(x)} and {_describe(grad)}")
        xt = torch.tensor(np.asarray(x, dtype=np.float64 if x.dtype == np.float64 else np.float32), requires_grad=True)
        out = self.torch(xt)
        if grad.shape == x.shape:
            (g,) = torch.autograd.grad(out, xt, torch.as_tensor(grad, dtype=out.dtype))
            return g.numpy().astype(grad.dtype, copy=False)
        if grad.ndim == x.ndim + 1 and grad.shape[0] == x.shape[0] and grad.shape[2:] == x.shape[1:]:
            # ART's class gradients: N x classes x (image), one pull-back per class.
            result = np.empty_like(grad)
            for k in range(grad.shape[1]):
                (g,) = torch.autograd.grad(out, xt, torch.as_tensor(grad[:, k], dtype=out.dtype), retain_graph=True)
                result[:, k] = g.numpy()
            return result
        raise ValueError(f"grad of shape {grad.shape} does not match images of shape {x.shape}")

    def describe(self) -> str:
        return f"{self.name!r}, channels_first={self.channels_first}, clip_values={self.clip_values}"


class ArtDefense(Preprocessor):
    """The fdjpeg defense ``name`` (with its ``params``) as an ART preprocessing defence on numpy arrays.

    Args:
        name: a name of :func:`fdjpeg.defenses.names` (not ``"ensemble-fashion"``, a classifier).
        channels_first: images are N x C x H x W (N x C x F x H x W for video) rather than
            N x H x W x C (N x F x H x W x C).
        clip_values: the data range, ``(0, 1)`` or ``(0, 255)`` (floats either way), as ART's
            ``JpegCompression``.
        apply_fit, apply_predict: defend the inputs of ``fit`` / of ``predict`` and the attacks.
        params: the defense's parameters, e.g. ``quality=50`` for ``"jpeg"``.

    ``__call__(x, y)`` returns ``(defended x, y)`` in ``x``'s layout and dtype. ``estimate_gradient``
    is the identity (BPDA) unless the defense is ``differentiable``; then it is the defense's own
    gradient through torch autograd (torch needed). ``random`` tells whether the defense draws at random.
    """

    params = ["channels_first", "clip_values"]

    def __init__(self, name: str, channels_first: bool = False, clip_values: Tuple[float, float] = (0.0, 1.0),
                 apply_fit: bool = False, apply_predict: bool = True, **params: Any) -> None:
        super().__init__(is_fitted=True, apply_fit=flag(apply_fit, "apply_fit"),
                         apply_predict=flag(apply_predict, "apply_predict"))
        self._wrapped = _Wrapped(name, channels_first, clip_values, params)

    name = property(lambda self: self._wrapped.name)
    defense = property(lambda self: self._wrapped.defense, doc="the fdjpeg defense object")
    differentiable = property(lambda self: self._wrapped.differentiable)
    random = property(lambda self: self._wrapped.random)

    @property
    def channels_first(self) -> bool:
        return self._wrapped.channels_first

    @channels_first.setter
    def channels_first(self, value: bool) -> None:
        self._wrapped.channels_first = flag(value, "channels_first")

    @property
    def clip_values(self) -> Tuple[float, float]:
        return self._wrapped.clip_values

    @clip_values.setter
    def clip_values(self, value: Tuple[float, float]) -> None:
        self._wrapped.clip_values = _clip_values(value)

    def __call__(self, x: np.ndarray, y: Optional[Any] = None) -> Tuple[np.ndarray, Optional[Any]]:
        return self._wrapped.numpy(x), y

    def estimate_gradient(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        return self._wrapped.gradient(x, grad)

    def __repr__(self) -> str:
        return f"ArtDefense({self._wrapped.describe()}, apply_fit={self.apply_fit}, apply_predict={self.apply_predict})"


class ArtDefensePyTorch(PreprocessorPyTorch):
    """:class:`ArtDefense` for ART's PyTorch estimators: ``forward(x, y)`` on torch tensors, the
    gradient through torch autograd (the defense's straight-through gradient, exact where it is
    ``differentiable``). Same arguments as :class:`ArtDefense`, plus ART's ``device_type``
    (``"gpu"``: where ART's own ``__call__`` puts numpy inputs when CUDA is available). The defense
    runs on the device of the tensor it is given (fdjpeg's CUDA kernels where it has them).
    """

    params = ["channels_first", "clip_values"]

    def __init__(self, name: str, channels_first: bool = False, clip_values: Tuple[float, float] = (0.0, 1.0),
                 apply_fit: bool = False, apply_predict: bool = True, device_type: str = "gpu", **params: Any) -> None:
        if device_type not in ("cpu", "gpu"):
            raise ValueError(f"device_type must be 'cpu' or 'gpu', got {device_type!r}")
        super().__init__(device_type=device_type, is_fitted=True, apply_fit=flag(apply_fit, "apply_fit"),
                         apply_predict=flag(apply_predict, "apply_predict"))
        self._wrapped = _Wrapped(name, channels_first, clip_values, params)

    name = ArtDefense.name
    defense = ArtDefense.defense
    differentiable = ArtDefense.differentiable
    random = ArtDefense.random
    channels_first = ArtDefense.channels_first
    clip_values = ArtDefense.clip_values

    def forward(self, x: Any, y: Optional[Any] = None) -> Tuple[Any, Optional[Any]]:
        return self._wrapped.torch(x), y

    def __repr__(self) -> str:
        return (f"ArtDefensePyTorch({self._wrapped.describe()}, apply_fit={self.apply_fit}, "
                f"apply_predict={self.apply_predict})")


# ------------------------------------------------------------------------------------------------
# Argument checks


def _clip_values(value: Any) -> Tuple[float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(f"clip_values must be a pair (min, max): (0, 1) or (0, 255), got {value!r}")
    lo, hi = value
    if not all(isinstance(v, (Real, np.number)) and not isinstance(v, (bool, np.bool_)) for v in (lo, hi)):
        raise TypeError(f"clip_values must be two numbers, (0, 1) or (0, 255), got {value!r}")
    if lo != 0 or hi not in (1, 255):
        raise ValueError(f"clip_values must be (0, 1) or (0, 255) (the defenses work on images), got {value!r}")
    return (0.0, float(hi))


def _check_ndim(ndim: int) -> None:
    if ndim not in (4, 5):
        raise ValueError(f"x must be a batch of images (4 dimensions) or videos (5), got {ndim} dimensions")


def _check_range(lo: float, hi: float, clip_values: Tuple[float, float]) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < clip_values[0] or hi > clip_values[1]:
        raise ValueError(f"x must hold values in clip_values {clip_values}, got min {lo:.6g}, max {hi:.6g}")


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    kind = f"{type(value).__module__}.{type(value).__name__}"
    return f"{kind} of shape {tuple(shape)}" if shape is not None else kind


__all__ = ["ArtDefense", "ArtDefensePyTorch"]
