"""Fast image codecs with Pillow as the fallback: JPEG decoding through libjpeg-turbo
(``simplejpeg``, which releases the GIL while it decodes) and 8-bit RGB/RGBA PNG encoding with
``fpng``. Both are package dependencies; when one is missing at run time, Pillow does the work and
one warning per process says so.

The JPEG fast path gives the same pixels as Pillow's decode of the same file: it is taken only for
the JPEGs whose decode involves nothing but libjpeg's own accurate IDCT, fancy upsampling and
YCbCr->RGB (see :func:`jpeg_fast_header`); anything else returns None so that Pillow decides.
"""

from __future__ import annotations

import importlib
import io
import re
import threading
import warnings
import zlib
from typing import Optional, Tuple

import numpy as np
from PIL import Image

#: zlib strategy for PNG outputs written by Pillow: run-length matching packs defended photos about
#: as small as Pillow's default (level 6) at the cost of level 1 (measured on scikit-image's photos).
PNG_STRATEGY = zlib.Z_RLE

_FALLBACK = {
    "simplejpeg": "JPEG files are decoded with Pillow instead (same pixels, slower)",
    "fpng": "PNG files are encoded with Pillow's zlib instead (same pixels, slower)",
}
_modules: dict = {}
_warned: set = set()
_lock = threading.Lock()


def _module(name: str, warn: bool = True):
    """The imported fast codec ``name``, or None when it cannot be imported (warned once)."""
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(name)
        except ImportError:
            _modules[name] = None
    mod = _modules[name]
    if mod is None and warn:
        with _lock:
            if name in _warned:
                return None
            _warned.add(name)
        warnings.warn(f"fdjpeg: {name} is not installed; {_FALLBACK[name]}", RuntimeWarning, stacklevel=3)
    return mod


def png_encoder_name() -> str:
    """The encoder of 8-bit RGB/RGBA PNG outputs: "fpng", or "Pillow zlib" when fpng is missing.
    Grey and grey+alpha PNGs are always written by Pillow's zlib at ``--png-level``."""
    return "fpng" if _module("fpng", warn=False) is not None else "Pillow zlib"


def jpeg_decoder_name() -> str:
    """The decoder of plain JPEG inputs: "libjpeg-turbo (simplejpeg)", or "Pillow" when simplejpeg
    is missing. Other images (and JPEGs needing EXIF rotation, CMYK, ...) are always read by Pillow."""
    return "libjpeg-turbo (simplejpeg)" if _module("simplejpeg", warn=False) is not None else "Pillow"


# ---- JPEG decoding ----------------------------------------------------------------------------

_SOF_FAST = (0xC0, 0xC1, 0xC2)  # Huffman baseline, extended and progressive
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')  # what Pillow's getexif() looks for


def jpeg_fast_header(data: bytes) -> Optional[Tuple[int, int, int]]:
    """``(height, width, components)`` read from the markers before the first scan when libjpeg-turbo
    decodes ``data`` to the same pixels Pillow gives, else None: an 8-bit Huffman-coded JPEG, grey or
    3 components at 4:4:4, 4:2:2 or 4:2:0, no CMYK/YCCK, upright (the EXIF orientation, or XMP's
    when EXIF has none, absent or 1), a single picture (no MPO). Any marker that does not parse cleanly also gives None."""
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    n, pos, sof = len(data), 2, None
    exif, xmp = None, None  # the orientation each gives; EXIF's wins, as in Pillow
    exif_seen = False
    while True:
        if pos >= n or data[pos] != 0xFF:
            return None
        while pos < n and data[pos] == 0xFF:  # fill bytes may pad a marker
            pos += 1
        if pos + 3 > n:
            return None
        marker = data[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        if marker in (0xD8, 0xD9):
            return None
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2 or pos + length > n:
            return None
        seg = data[pos + 2 : pos + length]
        pos += length
        if marker == 0xDA:  # start of scan: the header is complete
            return sof if (exif if exif is not None else xmp) in (None, 1) else None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            # lossless, hierarchical and arithmetic-coded frames go to Pillow, as does a second frame
            if marker not in _SOF_FAST or sof is not None:
                return None
            sof = _parse_sof(seg)
            if sof is None:
                return None
        elif marker == 0xE1 and seg.startswith(b"Exif\x00\x00"):
            # Pillow joins several Exif segments; only the plain case is read here
            if exif_seen:
                return None
            exif, exif_seen = _exif_orientation(seg[6:]), True
        elif marker == 0xE1 and seg.startswith(_XMP):
            found = _XMP_ORIENTATION.search(seg)  # Pillow keeps the last XMP segment
            xmp = int(found[2]) if found else None
        elif marker == 0xE2 and seg.startswith(b"MPF\x00"):
            return None  # several pictures: Pillow reads it as a multi-frame MPO
        elif marker == 0xEE and seg.startswith(b"Adobe"):
            if len(seg) < 12 or seg[11] not in (0, 1):  # 2 = YCCK
                return None


def _parse_sof(seg: bytes) -> Optional[Tuple[int, int, int]]:
    if len(seg) < 6:
        return None
    precision, height, width, count = seg[0], (seg[1] << 8) | seg[2], (seg[3] << 8) | seg[4], seg[5]
    if precision != 8 or height == 0 or width == 0 or count not in (1, 3) or len(seg) < 6 + 3 * count:
        return None
    if count == 3:
        sampling = [(seg[7 + 3 * i] >> 4, seg[7 + 3 * i] & 15) for i in range(3)]
        if sampling[0] not in ((1, 1), (2, 1), (2, 2)) or sampling[1] != (1, 1) or sampling[2] != (1, 1):
            return None
    return height, width, count


def _exif_orientation(tiff: bytes) -> Optional[int]:
    """The Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block, None when absent,
    -1 when the block does not parse (so the caller leaves it to Pillow)."""
    if tiff[:4] == b"II*\x00":
        order = "little"
    elif tiff[:4] == b"MM\x00*":
        order = "big"
    else:
        return -1

    def num(at: int, size: int) -> int:
        return int.from_bytes(tiff[at : at + size], order)

    ifd = num(4, 4)
    if ifd < 8 or ifd + 2 > len(tiff):
        return -1
    count = num(ifd, 2)
    if ifd + 2 + 12 * count > len(tiff):
        return -1
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if num(entry, 2) == 0x0112:
            kind, values = num(entry + 2, 2), num(entry + 4, 4)
            return num(entry + 8, 2) if kind == 3 and values == 1 else -1  # one SHORT
    return None


def decode_jpeg(data: bytes, header: Tuple[int, int, int], into: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """Decode a JPEG that :func:`jpeg_fast_header` accepted to uint8 H x W x C (C = 1 or 3) with
    libjpeg-turbo's accurate IDCT and fancy upsampling, as Pillow does; into ``into`` (a C-contiguous
    uint8 array of that shape) when given. None when simplejpeg is missing or reports any problem,
    even a recoverable one: Pillow then reads the file."""
    simplejpeg = _module("simplejpeg")
    if simplejpeg is None:
        return None
    height, width, count = header
    try:
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="GRAY" if count == 1 else "RGB", fastdct=False, fastupsample=False, strict=True,
            buffer=into,
        )
    except Exception:  # any decoder complaint: Pillow decides (and names the problem)
        return None
    if pixels.shape != (height, width, count):
        return None
    return pixels


# ---- PNG encoding -----------------------------------------------------------------------------


def encode_png(plane: np.ndarray, level: int = 1) -> bytes:
    """Lossless PNG of ``plane`` (uint8 H x W grey, or H x W x 2/3/4 grey+alpha/RGB/RGBA). RGB and
    RGBA go through fpng; grey, grey+alpha, or all of them when fpng is missing, through Pillow's
    zlib at ``level`` with :data:`PNG_STRATEGY`."""
    if plane.ndim == 3 and plane.shape[2] in (3, 4) and plane.dtype == np.uint8 and plane.size:
        fpng = _module("fpng")
        if fpng is not None:
            png = fpng.from_ndarray(np.ascontiguousarray(plane))
            if png:  # fpng answers b"" for what it cannot encode
                return png
    buf = io.BytesIO()
    Image.fromarray(plane).save(buf, "PNG", compress_level=level, compress_type=PNG_STRATEGY)
    return buf.getvalue()
