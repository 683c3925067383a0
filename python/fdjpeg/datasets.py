"""Real images that install with common packages (no download at run time).

See DATA.md of the project for what each source holds. Loaders return uint8 RGB arrays (H x W x 3).
"""

from __future__ import annotations

import os
from typing import Dict

import numpy as np
from PIL import Image

# Sample photographs shipped inside scikit-image's wheel (PNG/JPEG files under skimage/data).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "ihc.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "retina.jpg",
)


def skimage_photo_dir() -> str:
    """Folder of scikit-image's bundled sample images (needs scikit-image installed)."""
    try:
        import skimage
    except ImportError as exc:
        raise ImportError("the sample photos ship with scikit-image: pip install scikit-image") from exc
    return os.path.join(os.path.dirname(skimage.__file__), "data")


def sample_photos(names=SKIMAGE_PHOTOS) -> Dict[str, np.ndarray]:
    """scikit-image's real sample photos as ``{stem: uint8 RGB array}`` (those present in the wheel)."""
    folder = skimage_photo_dir()
    photos = {}
    for name in names:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with Image.open(path) as im:
                photos[os.path.splitext(name)[0]] = np.asarray(im.convert("RGB"))
    if not photos:
        raise FileNotFoundError(f"none of {names} found under {folder}")
    return photos


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central ``size x size`` crop (the image must be at least that large)."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image of {h}x{w} is smaller than the {size}x{size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def fashion_mnist(split: str = "test", folder: str = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package: ``(images N x 28 x 28 uint8,
    labels N int64)``; ``split`` is ``"train"`` (60,000) or ``"test"`` (10,000)."""
    import gzip

    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    paths = [os.path.join(folder, f"{prefix}-{kind}-ubyte.gz") for kind in ("images-idx3", "labels-idx1")]
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
    with gzip.open(paths[0], "rb") as f:
        raw = f.read()
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">i4")
    if magic != 2051:
        raise ValueError(f"{paths[0]} is not an IDX image file (magic {magic})")
    images = np.frombuffer(raw[16:], dtype=np.uint8).reshape(count, rows, cols)
    with gzip.open(paths[1], "rb") as f:
        raw = f.read()
    magic, count_labels = np.frombuffer(raw[:8], dtype=">i4")
    if magic != 2049 or count_labels != count:
        raise ValueError(f"{paths[1]} is not the label file for {paths[0]}")
    labels = np.frombuffer(raw[8:], dtype=np.uint8).astype(np.int64)
    return images, labels
