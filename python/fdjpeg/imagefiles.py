"""Image files in and out: decode any image Pillow reads into a uint8 array the defenses take, and
encode a defended array as PNG (lossless) or as a JPEG carrying a defense's quantization tables.

Shared by ``fdjpeg defend`` (:mod:`fdjpeg.batch`, files and tar shards) and the pipeline transforms. Plain JPEG files
are decoded by libjpeg-turbo and RGB/RGBA PNGs encoded by fpng where installed
(:mod:`fdjpeg.fastcodecs`); everything else goes through Pillow.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from PIL import Image, ImageOps

from .fastcodecs import PNG_STRATEGY, decode_jpeg, encode_png, jpeg_decoder_name, jpeg_fast_header, png_encoder_name

#: Modes converted to RGB before defending (the defenses work on RGB or grey samples).
_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")

TEMP_PREFIX = ".fdjpeg-tmp-"

__all__ = [
    "BadImage", "Decoded", "Opened", "TEMP_PREFIX", "PNG_STRATEGY", "atomic_write", "create_temp", "decode", "encode", "jpeg_spec_of",
    "open_bytes", "open_file", "read", "read_bytes", "png_encoder_name", "jpeg_decoder_name",
]

#: Rows of a 16-bit image converted at a time, so the conversion holds a few MB besides the image.
_CHUNK_PIXELS = 1 << 20


class BadImage(Exception):
    """A file that cannot be defended; the message says why (it goes into the report)."""


@dataclass
class Decoded:
    """An image ready for a defense: ``pixels`` uint8 H x W x C (C = 1 grey or 3 RGB), ``alpha``
    the untouched alpha plane (H x W) or None, and ``notes`` on what was converted on the way."""

    pixels: np.ndarray
    alpha: Optional[np.ndarray] = None
    notes: List[str] = field(default_factory=list)


def decode(im: Image.Image, exif: bool = True) -> Decoded:
    """Turn an opened Pillow image into :class:`Decoded`: EXIF orientation applied (``exif``), palette
    expanded, CMYK/YCbCr/LAB/HSV to RGB, 16-bit scaled to 8-bit (``v >> 8``), alpha split off.
    Raises :class:`BadImage` for what has no faithful 8-bit reading (float images)."""
    notes = []
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"first of {frames} frames")
    orientation = im.getexif().get(0x0112, 1) if exif else 1
    if orientation not in (1, None):
        im = ImageOps.exif_transpose(im)
        notes.append(f"EXIF orientation {orientation} applied")
    mode = im.mode
    if mode == "F":
        raise BadImage("floating-point image (mode F) has no defined 0..255 range")
    if mode in _SIXTEEN_BIT:
        pixels = _sixteen_to_eight(im)
        notes.append(f"16-bit ({mode}) scaled to 8-bit")
        return Decoded(pixels[:, :, None], None, notes)
    if mode == "1":
        im = im.convert("L")
        notes.append("1-bit converted to grey")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        notes.append(f"palette expanded to {im.mode}")
    elif mode in ("RGBa", "La"):
        im = im.convert("LA" if mode == "La" else "RGBA")
    elif mode in _TO_RGB:
        im = im.convert("RGB")
        notes.append(f"{mode} converted to RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")
        notes.append(f"{mode} converted to RGB")
    arr = np.asarray(im)
    if arr.ndim == 2:
        return Decoded(arr[:, :, None], None, notes)
    if arr.shape[2] in (2, 4):  # LA / RGBA: the defense sees the colour, alpha passes through
        return Decoded(np.ascontiguousarray(arr[:, :, :-1]), np.ascontiguousarray(arr[:, :, -1]), notes)
    return Decoded(arr, None, notes)


def _sixteen_to_eight(im: Image.Image) -> np.ndarray:
    """``v >> 8`` of a 16-bit (or 32-bit "I") image as uint8 H x W, a band of rows at a time so that
    no wide copy of the whole image exists. "I" values outside 0..65535 raise :class:`BadImage`."""
    width, height = im.size
    out = np.empty((height, width), np.uint8)
    low, high = 0, 0
    rows = max(1, _CHUNK_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        band = np.asarray(im.crop((0, top, width, min(height, top + rows))))
        if band.dtype.kind == "i" and band.size:  # mode "I" is int32: it may hold anything
            low, high = min(low, int(band.min())), max(high, int(band.max()))
        out[top : top + rows] = band >> 8
    if low < 0 or high > 65535:
        raise BadImage(f"{im.mode} image with values outside 0..65535 (min {low}, max {high})")
    return out


def _check_size(width: int, height: int, max_pixels: Optional[int]) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise BadImage(f"{width}x{height} = {width * height} pixels is more than --max-pixels {max_pixels}")


def _jpeg_bytes(path: str) -> Optional[bytes]:
    """The whole file when it starts like a JPEG, else None (Pillow then opens it by path)."""
    with open(path, "rb") as f:
        head = f.read(3)
        return head + f.read() if head == b"\xff\xd8\xff" else None


class Opened:
    """An image file read, and a plain JPEG's header parsed: the first of the two steps of
    :func:`read`. :attr:`shape` is ``(H, W, C)`` when libjpeg-turbo will decode it, so that a
    caller can give :meth:`decode` the array to decode into (a row of a stack of such images)."""

    def __init__(self, source, data: Optional[bytes], max_pixels: Optional[int]):
        self.source = source if data is None else io.BytesIO(data)  # what Pillow opens
        self.data, self.max_pixels = data, max_pixels
        self.shape = None
        header = jpeg_fast_header(data) if data is not None else None
        if header is not None:
            height, width, _ = header
            _check_size(width, height, max_pixels)  # from the header: nothing decoded yet
            bomb = Image.MAX_IMAGE_PIXELS
            if bomb is None or width * height <= bomb:  # else Pillow's decompression-bomb guard decides
                self.shape = header

    def decode(self, into: Optional[np.ndarray] = None) -> Decoded:
        """Fully decode and convert the image; ``into`` (uint8 of :attr:`shape`), if given, receives
        the pixels and is the returned ``pixels`` whenever they fit it (no alpha, that shape).
        Raises :class:`BadImage` naming the reason."""
        with _bad_image_errors():
            if self.shape is not None:
                pixels = decode_jpeg(self.data, self.shape, into)
                if pixels is not None:
                    return Decoded(into if into is not None else pixels)
            with Image.open(self.source) as im:
                _check_size(*im.size, self.max_pixels)
                im.load()
                got = decode(im)
        if into is not None and got.alpha is None and got.pixels.shape == into.shape:
            into[...] = got.pixels
            return Decoded(into, None, got.notes)
        return got


def open_file(path: str, max_pixels: Optional[int] = None) -> Opened:
    """Read the file at ``path`` (a JPEG whole; Pillow opens anything else by path when decoding)
    and check what its header says. Raises :class:`BadImage` naming the reason."""
    with _bad_image_errors():
        return Opened(path, _jpeg_bytes(path), max_pixels)


def open_bytes(data: bytes, max_pixels: Optional[int] = None) -> Opened:
    """:func:`open_file` of an image file's bytes held in memory (a member of a tar shard)."""
    with _bad_image_errors():
        return Opened(io.BytesIO(data), data if data.startswith(b"\xff\xd8\xff") else None, max_pixels)


def read(path: str, max_pixels: Optional[int] = None) -> Decoded:
    """Open, check the size, fully decode and convert the image at ``path``.

    Raises :class:`BadImage` naming the reason for anything that is not a readable image."""
    return open_file(path, max_pixels).decode()


def read_bytes(data: bytes, max_pixels: Optional[int] = None) -> Decoded:
    """:func:`read` of an image file's bytes held in memory (a member of a tar shard)."""
    return open_bytes(data, max_pixels).decode()


@contextlib.contextmanager
def _bad_image_errors():
    """Every failure to read or decode an image becomes a :class:`BadImage` naming the reason."""
    try:
        yield
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(f"too large (decompression bomb guard): {exc}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image Pillow can read") from None
    except PermissionError as exc:
        raise BadImage(f"unreadable: permission denied ({exc.strerror})") from None
    except FileNotFoundError:
        raise BadImage("unreadable: file not found (removed, or a dangling link)") from None
    except IsADirectoryError:
        raise BadImage("unreadable: a folder, not a file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated / corrupt data
        raise BadImage(f"corrupt or truncated image: {exc}") from None


def jpeg_spec_of(defense) -> Optional[dict]:
    """The JPEG-file description a defense carries (``defense.jpeg_file``), or None."""
    return getattr(defense, "jpeg_file", None)


def encode(pixels: np.ndarray, alpha: Optional[np.ndarray], fmt: str, jpeg_file: Optional[dict] = None,
           png_level: int = 1) -> tuple[bytes, List[str]]:
    """Encode ``pixels`` (H x W x 1 or 3, uint8) plus optional alpha as ``fmt`` ("png" or "jpeg").

    PNG stores the pixels exactly (RGB/RGBA by fpng where installed, grey by zlib at ``png_level``,
    see :func:`png_encoder_name`). JPEG stores them with the defense's own tables
    (``jpeg_file = {"tables": [...], "color": "none"|"ycbcr", "subsampling": "444"|...}``);
    ``color="none"`` writes an RGB JPEG without colour transform (Adobe marker, transform 0), as
    Feature Distillation quantizes R, G and B themselves. Returns ``(bytes, notes)``."""
    notes = []
    grey = pixels.shape[2] == 1
    plane = pixels[:, :, 0] if grey else pixels
    if fmt == "png":
        if alpha is not None:
            plane = np.dstack([plane, alpha])
        return encode_png(plane, png_level), notes
    buf = io.BytesIO()
    if fmt == "jpeg":
        if jpeg_file is None:
            raise ValueError("this defense has no quantization tables of its own to store in a JPEG; use --format png")
        if alpha is not None:
            notes.append("alpha dropped (JPEG has no alpha channel)")
        tables = [_baseline_table(t) for t in jpeg_file["tables"]]
        sampling = {"444": 0, "422": 1, "420": 2}[jpeg_file.get("subsampling", "444")]
        rgb = jpeg_file.get("color", "ycbcr") == "none"
        # keep_rgb needs Pillow 10.2 (the package's minimum): older versions ignore it silently
        Image.fromarray(plane).save(
            buf, "JPEG", qtables=tables[:1] if grey else tables, subsampling=sampling, keep_rgb=rgb and not grey
        )
    else:
        raise ValueError(f"format must be 'png' or 'jpeg', got {fmt!r}")
    return buf.getvalue(), notes


def _baseline_table(table) -> List[int]:
    arr = np.asarray(table, dtype=np.float64).reshape(64)
    if not np.all(arr == np.rint(arr)) or arr.min() < 1 or arr.max() > 255:
        raise ValueError("a JPEG file stores whole steps 1..255; this defense's table has other steps (use --format png)")
    return [int(v) for v in arr]


_temp_serial = itertools.count()


def create_temp(folder: str) -> tuple[int, str]:
    """A new temporary file in ``folder`` opened for writing: ``(descriptor, path)``. Its name
    carries this process's id (``batch.manifest.temp_writer`` reads it back to tell a killed run's
    leftovers) and its mode is what ``open()`` gives, the umask applied."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-{next(_temp_serial)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # left by an earlier process that had this id
            continue


def atomic_write(path: str, data: bytes, temps: Optional[set] = None, sync: bool = True) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent/old or complete: a temporary
    file in the same folder, then ``os.replace``. ``sync``: fsync the file before the rename, so
    that this holds after a power failure too, not only when the process is killed. The temporary
    name is recorded in ``temps`` while it exists so an interrupted run can remove it."""
    fd, tmp = create_temp(os.path.dirname(path) or ".")
    if temps is not None:
        temps.add(tmp)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        if temps is not None:
            temps.discard(tmp)
