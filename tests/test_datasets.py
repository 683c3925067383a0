import csv
import gzip
import importlib.util
import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from fdjpeg import datasets
from eval_requirements import needs


@needs("foolbox")
def test_foolbox_imagenet_images_and_labels_from_file_names():
    images, labels = datasets.foolbox_imagenet()
    assert images.shape == (20, 224, 224, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    folder = os.path.join(datasets.package_dir("foolbox", "foolbox"), "data")
    names = sorted(n for n in os.listdir(folder) if re.fullmatch(r"imagenet_\d\d_\d+\.jpg", n))
    assert [int(re.findall(r"\d+", n)[1]) for n in names] == labels.tolist()
    assert labels[7] == 609 and images.std() > 20  # real photos, not blank


@needs("foolbox")
def test_foolbox_imagenet_resizes_shorter_side_then_center_crops():
    # imagenet_10 is the one 1024x683 photo: reference with Pillow's own resize and crop box.
    folder = os.path.join(datasets.package_dir("foolbox", "foolbox"), "data")
    with Image.open(os.path.join(folder, "imagenet_10_541.jpg")) as im:
        w, h = im.size
        new_w = round(w * 160 / h)
        left = (new_w - 160) // 2
        ref = np.asarray(im.convert("RGB").resize((new_w, 160), Image.BICUBIC).crop((left, 0, left + 160, 160)))
    images, _ = datasets.foolbox_imagenet(size=160)
    assert images.shape == (20, 160, 160, 3)
    np.testing.assert_array_equal(images[10], ref)


def test_foolbox_imagenet_rejects_bad_size():
    with pytest.raises(ValueError, match="size"):
        datasets.foolbox_imagenet(size=0)


@needs("mlxtend")
def test_mnist_5k_matches_the_csv():
    images, labels = datasets.mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    path = os.path.join(datasets.package_dir("mlxtend", "mlxtend"), "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        rows = [row for _, row in zip(range(2), csv.reader(f))]
    for i, row in enumerate(rows):
        assert int(row[-1]) == labels[i]
        np.testing.assert_array_equal(images[i].ravel(), np.array(row[:784], dtype=np.uint8))
    assert images.max() == 255 and images.mean() > 20


def test_missing_package_names_what_to_install(monkeypatch):
    with pytest.raises(ModuleNotFoundError, match=r"'no_such_pkg_xyz' is not installed.*pip install no-such-pkg==1\.0"):
        datasets.package_dir("no_such_pkg_xyz", "pip install no-such-pkg==1.0")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("foolbox", "mlxtend") else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps foolbox==3\.3\.4"):
        datasets.foolbox_imagenet()
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps mlxtend==0\.25\.0"):
        datasets.mnist_5k()


@pytest.mark.parametrize("height,width", [(224, 224), (300, 451), (448, 663), (500, 741), (233, 900)])
def test_photo_crop_boxes_are_inside_and_tiles_do_not_overlap(height, width):
    size = 224
    boxes = datasets.photo_crop_boxes(height, width, size)
    assert boxes[0] == ("center", (height - size) // 2, (width - size) // 2)
    covered = np.zeros((height, width), dtype=int)
    for name, top, left in boxes:
        assert 0 <= top <= height - size and 0 <= left <= width - size
        if name != "center":
            covered[top : top + size, left : left + size] += 1
    assert covered.max() <= 1
    assert len(boxes) == (1 if (height // size) * (width // size) == 1 else 1 + (height // size) * (width // size))


def test_photo_crops_are_real_crops_and_missing_sources_are_noted(monkeypatch):
    monkeypatch.setattr(datasets, "OPENCV_DOC_DIR", "/nonexistent/opencv-doc")
    notes = []
    crops = datasets.photo_crops(224, log=notes.append)
    assert any("opencv" in n and "opencv-doc" in n for n in notes)
    assert not any(k.startswith("opencv/") for k in crops)
    assert {"skimage/astronaut/center", "skimage/astronaut/r1c1", "skimage/chelsea/center"} <= set(crops)
    for crop in crops.values():
        assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    # chelsea (451x300) is not resized: its center crop is the plain center crop of the photo.
    np.testing.assert_array_equal(crops["skimage/chelsea/center"], datasets.center_crop(datasets.sample_photos(["chelsea.png"])["chelsea"], 224))
    # astronaut (512x512) is larger than 2 x 224: resized to 448x448, then 2 x 2 tiles.
    resized = np.asarray(Image.fromarray(datasets.sample_photos(["astronaut.png"])["astronaut"]).resize((448, 448), Image.BICUBIC))
    np.testing.assert_array_equal(crops["skimage/astronaut/r1c0"], resized[224:, :224])


@pytest.mark.skipif(not os.path.isdir(datasets.OPENCV_DOC_DIR) and not os.environ.get("FDJPEG_REQUIRE_EVAL"), reason="needs Debian opencv-doc")
def test_photo_crops_include_opencv_photos(caplog):
    with caplog.at_level(logging.WARNING):
        crops = datasets.photo_crops(224)
    assert "opencv/baboon/center" in crops and "opencv/aloeL/r1c1" in crops
    assert len(crops) > 100
