"""Conversions shared by the classifiers: uint8 images as the datasets give them -> model input."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from .._pipeline import nhwc_to_nchw


def to_model_input(images: np.ndarray) -> torch.Tensor:
    """uint8 grey ``N x H x W`` or colour ``N x H x W x C`` images -> float ``N x C x H x W`` in [0, 1]."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise TypeError(
            f"expected a uint8 numpy array N x H x W or N x H x W x C, got "
            f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        )
    x = torch.tensor(images).float().div_(255.0)
    return x.unsqueeze(1) if images.ndim == 3 else nhwc_to_nchw(x).contiguous()


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Softmax probabilities (N x classes, float32) of ``model`` on uint8 ``images``, in batches."""
    model.eval()
    out = [
        torch.softmax(model(to_model_input(images[i : i + batch_size])), dim=1).numpy()
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out)


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: Optional[int] = 500) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images``."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return float((predict(model, images, batch_size).argmax(1) == np.asarray(labels)).mean())
