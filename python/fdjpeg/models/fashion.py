"""A small CNN for Fashion-MNIST, trained by fdjpeg itself (``fdjpeg train-classifier``) on the full
60,000-image training set of Debian's ``dataset-fashion-mnist``; the trained weights ship in
``fdjpeg/weights/fashion_cnn.safetensors``."""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .common import to_model_input

WEIGHTS_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights", "fashion_cnn.safetensors")


class FashionCNN(nn.Module):
    """conv 3x3 1->16, BN, ReLU, maxpool 2; conv 3x3 16->32, BN, ReLU, maxpool 2; dropout; fc 1568->128,
    ReLU; dropout; fc 128->10 (about 0.21 M parameters; narrow so that training takes minutes on two
    CPU cores). Takes float N x 1 x 28 x 28 in [0, 1] and returns 10 logits."""

    num_classes = 10
    input_size = (1, 28, 28)

    def __init__(self, dropout: float = 0.25):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(7 * 7 * 32, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.fc1(self.dropout(torch.flatten(x, 1))))
        return self.fc2(self.dropout(x))


def train(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 4,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = print,
) -> FashionCNN:
    """Train a :class:`FashionCNN` from scratch: Adam, one-cycle learning rate, random horizontal flips
    (clothes are left/right symmetric), cross-entropy. Deterministic for a given ``seed`` and thread
    count. Returns the model in eval mode."""
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = FashionCNN()
    x_all, y_all = to_model_input(images), torch.from_numpy(np.asarray(labels, dtype=np.int64))
    steps_per_epoch = (len(images) + batch_size - 1) // batch_size
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(images)))
        flips = torch.from_numpy(rng.random(len(images)) < 0.5)
        total_loss, correct = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            x, y = x_all[idx], y_all[idx]
            flip = flips[idx]
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            if progress and (step + 1) % 100 == 0:
                progress(f"  epoch {epoch + 1}/{epochs} step {step + 1}/{steps_per_epoch} loss {loss.item():.4f}")
        if progress:
            progress(
                f"epoch {epoch + 1}/{epochs}: train loss {total_loss / len(images):.4f}, "
                f"train accuracy {correct / len(images):.4f}, {time.perf_counter() - start:.0f} s"
            )
    return model.eval()


def save(model: nn.Module, path: str) -> None:
    """Write the state_dict as safetensors (tensors only)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)


def fashion_cnn(path: str = WEIGHTS_FILE) -> FashionCNN:
    """The shipped (or given) trained :class:`FashionCNN` in eval mode on the CPU."""
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise ImportError("loading the Fashion-MNIST weights needs safetensors: pip install safetensors") from exc
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found (train it with: fdjpeg train-classifier --out {path})")
    model = FashionCNN()
    model.load_state_dict(load_file(path, device="cpu"), strict=True)
    return model.eval()
