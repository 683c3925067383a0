"""ComDefend (Jia et al., CVPR 2019): a compression CNN and a reconstruction CNN.

ComCNN maps an image to a 12-channel code map (4 channels for grey images) at full resolution; at
inference each code value is binarised at 0.5 after a sigmoid, so the image is carried by 12 bits a
pixel, and RecCNN rebuilds it. Adversarial perturbations are small and do not survive the binary
code. Training uses clean images only: Gaussian noise (sigma 20) is subtracted from the code logits
before the sigmoid, which forces ComCNN to emit logits far from 0, i.e. codes that binarise without
loss (see :func:`training_loss`).

Layer widths (3x3 convolutions, stride 1, same padding, ELU between, the last one linear):

* RGB:  ComCNN 3-16-32-64-128-256-128-64-32-12, RecCNN 12-32-64-128-256-128-64-32-16-3 + sigmoid
* grey: ComCNN 1-32-64-128-256-128-64-64-32-4,  RecCNN 4-32-64-64-128-256-128-64-32-1 + sigmoid

and a residual variant in which ResNet bottleneck blocks (1x1-3x3-1x1 with BatchNorm and ReLU, a
projection shortcut) replace the convolution stacks, with 1x1 heads to the code (its logits scaled by
the training noise's sigma, see :class:`ComCNN`) and to the image.

Weights trained by ``fdjpeg train-comdefend`` ship in :mod:`fdjpeg.weights` as safetensors.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .._checks import integer
from .._pipeline import as_nchw_batch, check_torch_images, nchw_to_nhwc, nhwc_to_nchw

WIDTHS: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    "rgb": ((3, 16, 32, 64, 128, 256, 128, 64, 32, 12), (12, 32, 64, 128, 256, 128, 64, 32, 16, 3)),
    "grey": ((1, 32, 64, 128, 256, 128, 64, 64, 32, 4), (4, 32, 64, 64, 128, 256, 128, 64, 32, 1)),
}
ARCHS = ("plain", "residual")
CODE_GRADIENTS = ("logits", "sigmoid")  # the binary code's straight-through gradient (see ComDefend.encode)
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
TRAIN_SIGMA = 20.0  # noise subtracted from the code logits during training
CODE_PENALTY = 1e-4  # weight of mean(code^2) in the loss


# ------------------------------------------------------------------------------------------------
# Networks


class ConvStack(nn.Sequential):
    """3x3 convolutions with ELU between them (none after the last one)."""

    def __init__(self, widths: Sequence[int]) -> None:
        layers = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Conv2d(cin, cout, 3, padding=1))
            if i < len(widths) - 2:
                layers.append(nn.ELU())
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 (reduce) - 3x3 - 1x1 (expand), BatchNorm and ReLU, projection shortcut."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResidualStack(nn.Sequential):
    """Bottleneck blocks through ``widths`` (mid width a quarter of the output), then a 1x1 head."""

    def __init__(self, widths: Sequence[int], out_channels: int) -> None:
        blocks = [Bottleneck(cin, max(cout // 4, 8), cout) for cin, cout in zip(widths[:-1], widths[1:])]
        super().__init__(*blocks, nn.Conv2d(widths[-1], out_channels, 1))


def _residual_widths(image_channels: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    return (image_channels, 64, 128, 256), (256, 128, 64)


class ComCNN(nn.Module):
    """Image in [0, 1] (N x C x H x W) -> code logits (N x K x H x W); the input is shifted by -0.5.

    The residual variant's 1x1 head reads BatchNorm-scaled features of order 1, and its logits are
    multiplied by the training noise's sigma: unscaled, they stayed within the noise (|logit| < 20)
    for half the code through 5,000 iterations, so the binary code lost 10 dB against the noisy
    one; the plain stack, without normalisation, grows its logits past the noise by itself."""

    def __init__(self, variant: str = "rgb", arch: str = "plain") -> None:
        super().__init__()
        com, _ = WIDTHS[_check_variant(variant)]
        if _check_arch(arch) == "plain":
            self.net, self.gain = ConvStack(com), 1.0
        else:
            self.net, self.gain = ResidualStack(_residual_widths(com[0])[0], com[-1]), TRAIN_SIGMA

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x - 0.5)
        return logits if self.gain == 1.0 else logits * self.gain


class RecCNN(nn.Module):
    """Code (N x K x H x W, values in [0, 1]) -> image in [0, 1]."""

    def __init__(self, variant: str = "rgb", arch: str = "plain") -> None:
        super().__init__()
        _, rec = WIDTHS[_check_variant(variant)]
        if _check_arch(arch) == "plain":
            self.net = ConvStack(rec)
        else:
            self.net = ResidualStack((rec[0], *_residual_widths(rec[-1])[1]), rec[-1])

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(code))


class ComDefend(nn.Module):
    """The defense: ComCNN, binary code (sigmoid > 0.5), RecCNN.

    ``forward`` takes float N x C x H x W in [0, 1] of any size (the networks are fully
    convolutional); ``tile=32`` instead cuts the image into 32 x 32 patches as the authors do (edge
    patches padded by replication) and stitches the results. When the input requires grad, the
    binarisation passes the gradient straight through (see :meth:`encode`), so attacks can be run
    through the networks.
    """

    def __init__(self, variant: str = "rgb", arch: str = "plain", tile: Optional[int] = None,
                 code_gradient: str = "logits") -> None:
        super().__init__()
        self.variant, self.arch = _check_variant(variant), _check_arch(arch)
        if code_gradient not in CODE_GRADIENTS:
            raise ValueError(f"code_gradient must be one of {list(CODE_GRADIENTS)}, got {code_gradient!r}")
        self.code_gradient = code_gradient
        self.com = ComCNN(variant, arch)
        self.rec = RecCNN(variant, arch)
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
            raise ValueError(f"tile must be None (whole image) or a positive patch size, got {tile!r}")
        self.tile = tile

    @property
    def channels(self) -> int:
        return WIDTHS[self.variant][0][0]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The binary code (0.0 / 1.0) of ``x``. Its gradient (``code_gradient``): ``"logits"``,
        straight-through to the logits scaled by sigmoid'(0) = 1/4; ``"sigmoid"``, the sigmoid's own,
        which vanishes on trained weights, whose logits sit far beyond the training noise (|logit| >> 20)."""
        logits = self.com(x)
        hard = binary_code(logits)
        if not logits.requires_grad:
            return hard
        if self.code_gradient == "sigmoid":
            soft = torch.sigmoid(logits)
            return hard + (soft - soft.detach())
        return hard + 0.25 * (logits - logits.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"ComDefend ({self.variant}) takes N x {self.channels} x H x W tensors, got shape {tuple(x.shape)}"
            )
        if self.tile is None:
            return self.rec(self.encode(x))
        return _tiled(lambda p: self.rec(self.encode(p)), x, self.tile)

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, arch={self.arch!r}, tile={self.tile}"


def binary_code(logits: torch.Tensor) -> torch.Tensor:
    """ComDefend's inference code: 1.0 where sigmoid(logit) > 0.5, else 0.0 (no gradient)."""
    return (torch.sigmoid(logits) > 0.5).to(logits.dtype)


def _tiled(fn, x: torch.Tensor, tile: int) -> torch.Tensor:
    n, c, h, w = x.shape
    ph, pw = -h % tile, -w % tile
    padded = nn.functional.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    rows, cols = padded.shape[2] // tile, padded.shape[3] // tile
    patches = padded.reshape(n, c, rows, tile, cols, tile).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, tile, tile)
    out = fn(patches)
    out = out.reshape(n, rows, cols, c, tile, tile).permute(0, 3, 1, 4, 2, 5).reshape(n, c, rows * tile, cols * tile)
    return out[:, :, :h, :w]


def training_loss(model: ComDefend, x: torch.Tensor, generator: Optional[torch.Generator] = None,
                  sigma: float = TRAIN_SIGMA) -> Tuple[torch.Tensor, torch.Tensor]:
    """ComDefend's training objective on clean images ``x`` (float N x C x H x W in [0, 1]).

    code = sigmoid(ComCNN(x) - N(0, sigma^2)); loss = MSE(RecCNN(code), x) + 1e-4 * mean(code^2).
    Returns ``(loss, mse)``.
    """
    logits = model.com(x)
    noise = torch.randn(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype) * sigma
    code = torch.sigmoid(logits - noise)
    mse = torch.mean((model.rec(code) - x) ** 2)
    return mse + CODE_PENALTY * torch.mean(code**2), mse


# ------------------------------------------------------------------------------------------------
# Weights


def weights_path(variant: str = "rgb", arch: str = "plain") -> str:
    """Where the shipped weights of a variant live (``fdjpeg/weights/comdefend-<variant>[-residual]``)."""
    suffix = "" if _check_arch(arch) == "plain" else "-residual"
    return os.path.join(WEIGHTS_DIR, f"comdefend-{_check_variant(variant)}{suffix}.safetensors")


def save_weights(model: ComDefend, path: str, metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``model``'s parameters as float16 safetensors (half the size; PSNR change < 0.01 dB)."""
    from safetensors.torch import save_file

    tensors = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    meta = {"variant": model.variant, "arch": model.arch, **(metadata or {})}
    save_file(tensors, path, metadata={k: str(v) for k, v in meta.items()})


def load(variant: str = "rgb", arch: str = "plain", path: Optional[str] = None, tile: Optional[int] = None,
         device: Any = None) -> ComDefend:
    """A :class:`ComDefend` in eval mode with weights from ``path`` (default: the shipped ones)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = weights_path(variant, arch) if path is None else path
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no ComDefend weights at {path}; train them with `fdjpeg train-comdefend --variant {variant} --arch {arch}`"
        )
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("variant", variant) != variant or meta.get("arch", arch) != arch:
        raise ValueError(f"{path} holds a {meta.get('variant')}/{meta.get('arch')} model, not {variant}/{arch}")
    model = ComDefend(variant, arch, tile)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()}
    model.load_state_dict(state)
    model.metadata = meta
    return model.eval().to(device) if device is not None else model.eval()


# ------------------------------------------------------------------------------------------------
# The defense as a plain callable on numpy / torch batches


def defend(x: Any, model: ComDefend, *, batch_size: int = 64) -> Any:
    """Run ``model`` on images ``x`` and return the same kind of object.

    ``x``: numpy uint8 (0..255) or float (0..1) HWC / NHWC (HW for grey), or a torch tensor uint8 /
    float CHW / NCHW on the model's device. ``model`` is never moved or changed here, so threads and
    actors can share it: a tensor on another device is a ValueError (the registry's defense keeps
    one copy of the model per device instead). Processed in batches of ``batch_size`` images; torch
    inputs that require grad keep their graph (binarisation is straight-through).
    """
    batch_size = integer(batch_size, "batch_size", 1)
    if isinstance(x, np.ndarray):
        return _defend_numpy(x, model, batch_size)
    if isinstance(x, torch.Tensor):
        return _defend_torch(x, model, batch_size)
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(x).__module__}.{type(x).__name__}")


def _defend_numpy(x: np.ndarray, model: ComDefend, batch_size: int) -> np.ndarray:
    if x.dtype not in (np.uint8, np.float32, np.float64):
        raise TypeError(f"numpy images must be uint8 (0..255) or float32/float64 (0..1), got {x.dtype}")
    if x.ndim == 2 or (x.ndim == 3 and model.channels == 1 and x.shape[-1] != 1):
        nhwc = x[..., None]  # HW, or N x H x W grey
    else:
        nhwc = x
    nhwc = nhwc[None] if nhwc.ndim == 3 else nhwc
    if nhwc.ndim != 4:
        raise ValueError(f"numpy images must be HW, HWC or NHWC, got shape {x.shape}")
    t = nhwc_to_nchw(torch.from_numpy(np.array(nhwc, copy=True)))  # a copy: input may be read-only
    out = nchw_to_nhwc(_defend_torch(t.to(_model_device(model)), model, batch_size).cpu()).numpy()
    return np.ascontiguousarray(out.reshape(x.shape))


def _defend_torch(x: torch.Tensor, model: ComDefend, batch_size: int) -> torch.Tensor:
    check_torch_images(x)
    if x.device != _model_device(model):
        raise ValueError(
            f"the ComDefend model is on {_model_device(model)} and the images on {x.device}: move the model "
            "once with model.to(device), or use fdjpeg.defenses.build('comdefend'), which keeps a copy per device"
        )
    nchw = as_nchw_batch(x)
    if x.is_floating_point() and not x.requires_grad:
        lo, hi = float(nchw.min()), float(nchw.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(f"float images must hold values in [0, 1]; got min {lo:.6g}, max {hi:.6g}")
    work = nchw.float() / 255.0 if x.dtype == torch.uint8 else nchw.float()
    if work.device.type == "cpu":
        # oneDNN's channels-last convolutions: 1.3x faster on 224x224 images (3x on 32x32 patches)
        work = work.contiguous(memory_format=torch.channels_last)
    grad = x.requires_grad and torch.is_grad_enabled()
    with torch.set_grad_enabled(grad):
        parts = [model(work[i : i + batch_size]) for i in range(0, work.shape[0], batch_size)]
    out = torch.cat(parts).contiguous().reshape(x.shape)
    if x.dtype == torch.uint8:
        return torch.round(out * 255.0).clamp_(0, 255).to(torch.uint8)
    return out.to(x.dtype)


class PerDevice:
    """One copy of a model for each device it is asked for, made once and never moved afterwards,
    so concurrent callers (threads, Ray actors) on different devices share nothing mutable. CPU
    copies hold their weights channels-last, the layout oneDNN's convolutions run fastest in."""

    def __init__(self, model: ComDefend) -> None:
        self._copies: Dict[torch.device, ComDefend] = {}
        self._lock = threading.Lock()
        self._source = model
        self.on(_model_device(model))

    def on(self, device: torch.device) -> ComDefend:
        copy = self._copies.get(device)
        if copy is None:
            with self._lock:
                copy = self._copies.get(device)
                if copy is None:
                    copy = self._source if device == _model_device(self._source) else copy_model(self._source)
                    copy = copy.to(device)
                    if device.type == "cpu":
                        copy = copy.to(memory_format=torch.channels_last)
                    self._copies[device] = copy
        return copy


def copy_model(model: ComDefend) -> ComDefend:
    """An independent copy of ``model`` (same settings and weights, in eval mode)."""
    import copy

    return copy.deepcopy(model).eval()


def build(variant: str = "rgb", arch: str = "plain", tile: Optional[int] = None, weights: Optional[str] = None,
          device: Any = None, batch_size: int = 64, gradient: str = "identity"):
    """The registry factory: load the model once, return ``x -> defend(x, model)`` (its ``model``
    attribute is the network on ``device``, the CPU by default). Tensors on other devices run on a
    copy of the model made once for that device.

    ``gradient`` is what adaptive attacks differentiate: ``"identity"`` (default), the whole defense
    as the identity (BPDA); ``"logits"`` or ``"sigmoid"``, through both networks with that
    ``code_gradient`` (the callable is then marked ``differentiable``). The identity is the
    strongest of the three on the trained grey weights (docs/evaluation.md)."""
    if gradient not in ("identity", *CODE_GRADIENTS):
        raise ValueError(f"gradient must be one of {['identity', *CODE_GRADIENTS]}, got {gradient!r}")
    batch_size = integer(batch_size, "batch_size", 1)
    model = load(variant, arch, weights, tile, check_device(device))
    if gradient != "identity":
        model.code_gradient = gradient
    copies = PerDevice(model)

    def comdefend_defense(x: Any) -> Any:
        on = x.device if isinstance(x, torch.Tensor) else _model_device(model)
        return defend(x, copies.on(on), batch_size=batch_size)

    comdefend_defense.random = False
    comdefend_defense.differentiable = gradient != "identity"
    comdefend_defense.model = model
    return comdefend_defense


def check_device(device: Any) -> Optional[torch.device]:
    """``device`` as a torch.device that exists here, None as None; else a ValueError/TypeError."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be None, a string such as 'cpu' or 'cuda:0', or a torch.device; got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda:0', got {device!r}") from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={device!r} asks for CUDA, but this torch build sees no CUDA device")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device={device!r}: this machine has {count} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"device must be the CPU or a CUDA device, got {device!r}")
    return dev


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def conv_parameter_count(widths: Sequence[int], kernel: int = 3) -> int:
    """Parameters of a stack of ``kernel x kernel`` convolutions with biases: sum(k*k*cin*cout + cout)."""
    return sum(kernel * kernel * cin * cout + cout for cin, cout in zip(widths[:-1], widths[1:]))


def _check_variant(variant: str) -> str:
    if variant not in WIDTHS:
        raise ValueError(f"variant must be one of {sorted(WIDTHS)}, got {variant!r}")
    return variant


def _check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    return arch


__all__ = [
    "ComCNN", "RecCNN", "ComDefend", "Bottleneck", "binary_code", "training_loss", "load", "save_weights", "weights_path",
    "defend", "build", "check_device", "copy_model", "PerDevice", "conv_parameter_count", "WIDTHS",
]
