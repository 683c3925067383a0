"""The fast codecs behind ``fdjpeg defend``: libjpeg-turbo JPEG decoding that gives Pillow's pixels,
fpng PNG encoding that Pillow decodes back exactly, Pillow for everything else, fallbacks when a fast
codec is missing, and 16-bit images converted without wide copies."""

import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image, ImageOps

from fdjpeg import datasets, fastcodecs, imagefiles
from fdjpeg.imagefiles import BadImage


def pillow_pixels(path) -> np.ndarray:
    """The independent reference: Pillow's own decode, upright, as H x W x C."""
    with Image.open(path) as im:
        arr = np.asarray(ImageOps.exif_transpose(im))
    return arr[:, :, None] if arr.ndim == 2 else arr


def fast_route(path) -> bool:
    with open(path, "rb") as f:
        return fastcodecs.jpeg_fast_header(f.read()) is not None


def save_jpeg(path, arr, **options):
    Image.fromarray(arr).save(path, "JPEG", **options)
    return str(path)


@pytest.fixture(scope="module")
def photo(photos):
    # odd height and width so that 4:2:0 and 4:2:2 have partial chroma blocks at the edges
    return photos["astronaut"][:333, 17:434]


# ---- JPEG decoding ----------------------------------------------------------------------------


def test_real_jpeg_files_decode_to_pillows_pixels():
    files, _ = datasets.photo_files()
    jpegs = {name: path for name, path in files.items() if path.lower().endswith((".jpg", ".jpeg"))}
    if not jpegs:
        pytest.skip("no real .jpg photos installed")
    for name, path in jpegs.items():
        decoded = imagefiles.read(path)
        assert np.array_equal(decoded.pixels, pillow_pixels(path)), name
    # all of them are plain camera/web JPEGs (one carries EXIF orientation 1 and an XMP packet)
    assert [name for name, path in jpegs.items() if not fast_route(path)] == []


@pytest.mark.parametrize("quality", [20, 75, 95])
@pytest.mark.parametrize("subsampling", [0, 1, 2], ids=["444", "422", "420"])
def test_made_jpegs_decode_to_pillows_pixels(photo, tmp_path, quality, subsampling):
    for progressive in (False, True):
        path = save_jpeg(tmp_path / "x.jpg", photo, quality=quality, subsampling=subsampling, progressive=progressive)
        assert fast_route(path)
        decoded = imagefiles.read(path)
        assert decoded.pixels.shape == photo.shape and decoded.notes == []
        assert np.array_equal(decoded.pixels, pillow_pixels(path)), (quality, subsampling, progressive)


@pytest.mark.parametrize("quality", [30, 90])
def test_grey_jpeg_decodes_to_pillows_pixels(photo, tmp_path, quality):
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    path = save_jpeg(tmp_path / "g.jpg", grey, quality=quality)
    assert fast_route(path)
    decoded = imagefiles.read(path)
    assert decoded.pixels.shape == grey.shape + (1,)
    assert np.array_equal(decoded.pixels, pillow_pixels(path))


def test_rgb_jpeg_without_colour_transform_decodes_to_pillows_pixels(photo, tmp_path):
    # what `fdjpeg defend --format jpeg` writes for Feature Distillation: Adobe marker, transform 0
    data, _ = imagefiles.encode(photo, None, "jpeg", {"tables": [[16] * 64] * 3, "color": "none"})
    path = tmp_path / "rgb.jpg"
    path.write_bytes(data)
    assert fast_route(path)
    assert np.array_equal(imagefiles.read(str(path)).pixels, pillow_pixels(path))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_comes_out_upright(photo, tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save_jpeg(tmp_path / "r.jpg", photo, quality=90, exif=exif)
    assert not fast_route(path)  # Pillow reads it and applies the rotation
    decoded = imagefiles.read(path)
    assert f"EXIF orientation {orientation} applied" in decoded.notes
    assert np.array_equal(decoded.pixels, pillow_pixels(path))
    if orientation in (6, 8):
        assert decoded.pixels.shape[:2] == photo.shape[1::-1]


def test_exif_orientation_one_and_other_tags_stay_on_the_fast_path(photo, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010F] = "Camera maker"
    path = save_jpeg(tmp_path / "e.jpg", photo, quality=90, exif=exif)
    assert fast_route(path)
    assert np.array_equal(imagefiles.read(path).pixels, pillow_pixels(path))


XMP_ROTATED = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'


def test_xmp_orientation_goes_to_pillow(photo, tmp_path):
    path = save_jpeg(tmp_path / "x.jpg", photo, quality=90, xmp=XMP_ROTATED)
    assert not fast_route(path)
    decoded = imagefiles.read(path)
    assert decoded.pixels.shape[:2] == photo.shape[1::-1]
    assert np.array_equal(decoded.pixels, pillow_pixels(path))


def test_exif_orientation_wins_over_xmp_as_in_pillow(photo, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 1
    path = save_jpeg(tmp_path / "ex.jpg", photo, quality=90, exif=exif, xmp=XMP_ROTATED)
    assert fast_route(path)
    decoded = imagefiles.read(path)
    assert decoded.pixels.shape == photo.shape
    assert np.array_equal(decoded.pixels, pillow_pixels(path))


def test_cmyk_jpeg_comes_out_rgb(photo, tmp_path):
    path = tmp_path / "c.jpg"
    Image.fromarray(photo).convert("CMYK").save(path, "JPEG", quality=90)
    assert not fast_route(path)
    decoded = imagefiles.read(str(path))
    assert decoded.notes == ["CMYK converted to RGB"] and decoded.pixels.shape == photo.shape
    with Image.open(path) as im:
        assert np.array_equal(decoded.pixels, np.asarray(im.convert("RGB")))


def test_frames_libjpeg_turbo_is_not_asked_to_decode(photo, tmp_path):
    data = bytearray(open(save_jpeg(tmp_path / "b.jpg", photo, quality=75), "rb").read())
    sof = data.index(b"\xff\xc0")
    for marker in (0xC3, 0xC9, 0xCA):  # lossless, arithmetic-coded baseline and progressive
        data[sof + 1] = marker
        assert fastcodecs.jpeg_fast_header(bytes(data)) is None
    data[sof + 1] = 0xC0
    data[sof + 4] = 12  # 12-bit samples
    assert fastcodecs.jpeg_fast_header(bytes(data)) is None


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_jpeg_is_a_bad_image(photo, tmp_path, cut):
    data = open(save_jpeg(tmp_path / "t.jpg", photo, quality=90), "rb").read()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(BadImage, match="truncated"):
        imagefiles.read(str(path))


def test_garbage_after_jpeg_header_is_a_bad_image(tmp_path):
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    with pytest.raises(BadImage, match="not an image|corrupt"):
        imagefiles.read(str(path))


def test_stacks_decode_jpegs_into_their_rows_and_keep_every_image_apart(photo, tmp_path):
    """fdjpeg defend's chunk decode: JPEGs of one shape go straight into the rows of one array,
    the rest are stacked by shape; a corrupt JPEG in a group, a CMYK JPEG (Pillow's route), a grey
    JPEG and an RGBA PNG each come out as Pillow decodes them, and the corrupt one as its error."""
    from fdjpeg.batch.pipeline import decode_stacks

    files = [
        save_jpeg(tmp_path / "a.jpg", photo, quality=90),
        save_jpeg(tmp_path / "b.jpg", photo[::-1].copy(), quality=50, subsampling=2),
        save_jpeg(tmp_path / "small.jpg", photo[:40, :56].copy(), quality=75),
        save_jpeg(tmp_path / "grey.jpg", photo[:, :, 0].copy(), quality=80),
        str(tmp_path / "cmyk.jpg"),
        str(tmp_path / "cut.jpg"),
        str(tmp_path / "rgba.png"),
        save_jpeg(tmp_path / "c.jpg", photo[:, ::-1].copy(), quality=75, subsampling=1),
    ]
    Image.fromarray(photo).convert("CMYK").save(files[4], "JPEG", quality=90)
    data = open(files[0], "rb").read()
    with open(files[5], "wb") as f:
        f.write(data[: len(data) // 2])
    Image.fromarray(np.dstack([photo, photo[:, :, 1]])).save(files[6])

    decoded, stacks = decode_stacks([imagefiles.open_file(p) for p in files])
    assert isinstance(decoded[5], BadImage) and "truncated" in str(decoded[5])
    covered = sorted(i for stack in stacks for i in stack.members)
    assert covered == [0, 1, 2, 3, 4, 6, 7]
    for stack in stacks:
        assert len({decoded[i].pixels.shape for i in stack.members}) == 1
        for row, i in zip(stack.pixels, stack.members):
            assert np.shares_memory(row, decoded[i].pixels) or np.array_equal(row, decoded[i].pixels)
            want = pillow_pixels(files[i])
            if decoded[i].alpha is not None:  # the alpha plane is kept apart, untouched
                assert np.array_equal(decoded[i].alpha, want[:, :, 3])
                want = want[:, :, :3]
            elif want.shape[2] == 4:  # CMYK: Pillow's own conversion to RGB
                with Image.open(files[i]) as im:
                    want = np.asarray(im.convert("RGB"))
            assert np.array_equal(row, want), files[i]
    # the three photo-sized plain JPEGs share one array; the CMYK one, Pillow's, comes after them
    big = next(stack for stack in stacks if 0 in stack.members)
    assert big.members == [0, 1, 7] and big.pixels.shape == (3,) + photo.shape
    assert all(np.shares_memory(big.pixels, decoded[i].pixels) for i in big.members)


def test_max_pixels_is_checked_from_the_header_before_decoding(photo, tmp_path):
    data = open(save_jpeg(tmp_path / "m.jpg", photo, quality=90), "rb").read()
    path = tmp_path / "header-only.jpg"
    path.write_bytes(data[: data.index(b"\xff\xda") + 40])  # scan data cut short: decoding would fail
    height, width = photo.shape[:2]
    with pytest.raises(BadImage, match=f"{width}x{height} = {width * height} pixels is more than --max-pixels 1000"):
        imagefiles.read(str(path), max_pixels=1000)


# ---- PNG encoding -----------------------------------------------------------------------------


def test_png_encoder_is_fpng():
    assert imagefiles.png_encoder_name() == "fpng"
    assert imagefiles.jpeg_decoder_name() == "libjpeg-turbo (simplejpeg)"


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (333, 417)])
@pytest.mark.parametrize("with_alpha", [False, True], ids=["rgb", "rgba"])
def test_fpng_png_decodes_back_to_the_same_pixels(photos, shape, with_alpha):
    rgb = photos["astronaut"][: shape[0], : shape[1]]
    alpha = photos["coffee"][: shape[0], : shape[1], 1] if with_alpha else None
    data, notes = imagefiles.encode(rgb, alpha, "png")
    assert notes == []
    expected = rgb if alpha is None else np.dstack([rgb, alpha])
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == ("RGBA" if with_alpha else "RGB")
        assert np.array_equal(np.asarray(im), expected)


def test_fpng_png_of_a_strided_view_is_exact(photos):
    view = photos["astronaut"][::3, ::2]  # not contiguous
    with Image.open(io.BytesIO(imagefiles.encode(view, None, "png")[0])) as im:
        assert np.array_equal(np.asarray(im), view)


@pytest.mark.parametrize("level", [1, 9])
@pytest.mark.parametrize("with_alpha", [False, True], ids=["grey", "grey+alpha"])
def test_grey_png_is_pillow_zlib_at_the_given_level(photos, level, with_alpha):
    grey = photos["astronaut"][:200, :300, 1:2]
    alpha = photos["astronaut"][:200, :300, 2] if with_alpha else None
    data, _ = imagefiles.encode(grey, alpha, "png", png_level=level)
    plane = grey[:, :, 0] if alpha is None else np.dstack([grey[:, :, 0], alpha])
    buf = io.BytesIO()
    Image.fromarray(plane).save(buf, "PNG", compress_level=level, compress_type=imagefiles.PNG_STRATEGY)
    assert data == buf.getvalue()


# ---- fallbacks --------------------------------------------------------------------------------

FALLBACK_SCRIPT = """
import io, json, sys, warnings
import numpy as np
from PIL import Image
for name in {missing!r}:
    sys.modules[name] = None  # as if not installed
from fdjpeg import imagefiles
jpeg, rgb = sys.argv[1], np.load(sys.argv[2])
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    same_decode = all(np.array_equal(imagefiles.read(jpeg).pixels, np.asarray(Image.open(jpeg))) for _ in range(3))
    pngs = [imagefiles.encode(rgb, None, "png")[0] for _ in range(3)]
same_png = all(np.array_equal(np.asarray(Image.open(io.BytesIO(p))), rgb) for p in pngs)
print(json.dumps({{"decode": same_decode, "png": same_png, "png_encoder": imagefiles.png_encoder_name(),
                  "jpeg_decoder": imagefiles.jpeg_decoder_name(), "warnings": [str(w.message) for w in caught]}}))
"""


@pytest.mark.parametrize("missing", [["simplejpeg"], ["fpng"], ["simplejpeg", "fpng"]], ids="+".join)
def test_missing_fast_codec_falls_back_to_pillow_and_says_so_once(photo, tmp_path, missing):
    jpeg = save_jpeg(tmp_path / "f.jpg", photo, quality=80)
    np.save(tmp_path / "rgb.npy", photo)
    script = textwrap.dedent(FALLBACK_SCRIPT.format(missing=missing))
    run = subprocess.run([sys.executable, "-c", script, jpeg, str(tmp_path / "rgb.npy")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["decode"] and got["png"]
    assert got["png_encoder"] == ("Pillow zlib" if "fpng" in missing else "fpng")
    assert got["jpeg_decoder"] == ("Pillow" if "simplejpeg" in missing else "libjpeg-turbo (simplejpeg)")
    # one warning per missing codec however many images went through
    assert sorted(w.split()[1] for w in got["warnings"]) == sorted(missing)
    assert all("Pillow" in w for w in got["warnings"])


# ---- 16-bit images ----------------------------------------------------------------------------


def todays_formula(im) -> np.ndarray:
    wide = np.asarray(im).astype(np.int64)
    return (wide >> 8).astype(np.uint8)


@pytest.mark.parametrize("rows_at_a_time", [None, 7])
def test_sixteen_bit_png_keeps_todays_values(rng, tmp_path, monkeypatch, rows_at_a_time):
    if rows_at_a_time:  # several bands, the last one partial
        monkeypatch.setattr(imagefiles, "_CHUNK_PIXELS", 53 * rows_at_a_time)
    values = rng.integers(0, 65536, (50, 53), dtype=np.uint16)
    values[0, :3] = [0, 255, 65535]
    path = tmp_path / "s.png"
    Image.fromarray(values).save(path)
    decoded = imagefiles.read(str(path))
    with Image.open(path) as im:
        assert im.mode == "I;16"
        assert np.array_equal(decoded.pixels[:, :, 0], todays_formula(im))
    assert decoded.notes == ["16-bit (I;16) scaled to 8-bit"]


def test_int32_image_in_range_keeps_todays_values_and_out_of_range_is_refused(rng, monkeypatch):
    monkeypatch.setattr(imagefiles, "_CHUNK_PIXELS", 40 * 5)
    values = rng.integers(0, 65536, (30, 40)).astype(np.int32)
    im = Image.fromarray(values, "I")
    assert np.array_equal(imagefiles.decode(im).pixels[:, :, 0], todays_formula(im))
    values[29, 39], values[3, 0] = 70000, -5  # in different bands
    with pytest.raises(BadImage, match=r"I image with values outside 0\.\.65535 \(min -5, max 70000\)"):
        imagefiles.decode(Image.fromarray(values, "I"))


MEMORY_SCRIPT = """
import json, resource, sys
from fdjpeg import imagefiles
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pixels = imagefiles.read(sys.argv[1]).pixels
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # ru_maxrss is in KiB
print(json.dumps({"grown": grown, "shape": list(pixels.shape), "dtype": str(pixels.dtype)}))
"""


def test_large_sixteen_bit_png_decodes_without_wide_copies(tmp_path):
    side = 4000
    y, x = np.mgrid[0:side, 0:side]
    path = tmp_path / "big16.png"
    Image.fromarray(((y * 7 + x * 13) % 65536).astype(np.uint16)).save(path)
    del y, x
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["shape"] == [side, side, 1] and got["dtype"] == "uint8"
    # the 16-bit image Pillow holds (2 bytes/pixel) plus the 8-bit result (1): the int64 copies this
    # replaced took about 18 bytes/pixel (290 MB here)
    assert got["grown"] < 5 * side * side, f"peak grew by {got['grown'] / 2**20:.0f} MB"
