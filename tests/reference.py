"""Plain numpy implementations of the formulas, independent of the native core, used as references."""

import io

import numpy as np
from PIL import Image


def dct_matrix() -> np.ndarray:
    """Orthonormal 8-point DCT-II, written out from its definition."""
    m = np.zeros((8, 8))
    for u in range(8):
        alpha = np.sqrt(1 / 8) if u == 0 else np.sqrt(2 / 8)
        for x in range(8):
            m[u, x] = alpha * np.cos((2 * x + 1) * u * np.pi / 16)
    return m


def round_half_even_exact(t: np.ndarray) -> np.ndarray:
    """np.round, treating values within 1e-9 of a half-integer as exact ties (as exact arithmetic
    makes them: whole-number blocks give exact ties on the rational DCT coefficients)."""
    nearest_half = np.floor(t) + 0.5
    t = np.where(np.abs(t - nearest_half) < 1e-9, nearest_half, t)
    return np.round(t)


def block_quantize_plane(plane: np.ndarray, q: np.ndarray, shift: float = 0.0) -> np.ndarray:
    """DCT -> round(coef / q) * q -> IDCT on every 8x8 block of a float64 plane whose sides are
    multiples of 8; result clamped to [0, 255]."""
    c = dct_matrix()
    h, w = plane.shape
    blocks = (plane - shift).reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)
    coef = c @ blocks @ c.T
    coef = round_half_even_exact(coef / q) * q
    out = (c.T @ coef @ c).transpose(0, 2, 1, 3).reshape(h, w) + shift
    return np.clip(out, 0, 255)


def pad_edges(img: np.ndarray, multiple: int) -> np.ndarray:
    h, w = img.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    return np.pad(img, ((0, ph), (0, pw)) + ((0, 0),) * (img.ndim - 2), mode="edge")


def feature_distill(img: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The FD authors' algorithm on a uint8 HWC image (x 0..255 float result before rounding):
    each RGB channel separately, no level shift, sizes padded by edge replication and cropped."""
    h, w = img.shape[:2]
    x = pad_edges(img.astype(np.float64), 8)
    out = np.stack([block_quantize_plane(x[:, :, ch], q) for ch in range(x.shape[2])], axis=-1)
    return out[:h, :w]


def jpeg_444_float(img: np.ndarray, luma_q: np.ndarray, chroma_q: np.ndarray) -> np.ndarray:
    """JPEG at 4:4:4 in exact arithmetic on a float image in [0, 1]: JFIF YCbCr, level shift."""
    h, w = img.shape[:2]
    x = pad_edges(img.astype(np.float64) * 255.0, 8)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168735892 * r - 0.331264108 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418687589 * g - 0.081312411 * b + 128
    y, cb, cr = (block_quantize_plane(p, t, 128.0) for p, t in ((y, luma_q), (cb, chroma_q), (cr, chroma_q)))
    rgb = np.stack(
        [y + 1.402 * (cr - 128), y - 0.344136286 * (cb - 128) - 0.714136286 * (cr - 128), y + 1.772 * (cb - 128)],
        axis=-1,
    )
    return np.clip(rgb, 0, 255)[:h, :w] / 255.0


def pillow_jpeg(img: np.ndarray, quality: int, subsampling: str) -> np.ndarray:
    """Pillow's (libjpeg-turbo's) encode + decode."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality, subsampling={"444": 0, "422": 1, "420": 2}[subsampling])
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert(Image.fromarray(img).mode))


def pillow_qtables(quality: int):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return [np.array(im.quantization[i], dtype=np.float64).reshape(8, 8) for i in (0, 1)]


# ------------------------------------------------------------------------------------------------
# Table sets as the native modules take them


def table_sets(*qualities):
    """K x 192 float32 IJG table sets (luma, chroma, chroma) at the given qualities."""
    from fdjpeg import tables

    sets = []
    for q in qualities:
        luma, chroma = tables.ijg(q)
        sets.append(np.concatenate([luma.ravel(), chroma.ravel(), chroma.ravel()]))
    return np.asarray(sets, dtype=np.float32)


def fd_table_set():
    """1 x 192 float32: the Feature Distillation authors' table for all three components."""
    from fdjpeg import tables

    return np.tile(tables.feature_distillation().ravel(), 3).astype(np.float32)[None]
