"""16-bit images converted to 8-bit without wide copies."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fdjpeg import imagefiles
from fdjpeg.imagefiles import BadImage


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
