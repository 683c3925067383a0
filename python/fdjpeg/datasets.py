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
