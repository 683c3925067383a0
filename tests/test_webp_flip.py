import io

import numpy as np
import pytest
torch = pytest.importorskip("torch")
from PIL import Image, ImageOps

from fdjpeg import defenses
from fdjpeg.defenses.webp_flip import WebPFlip, WebPFlipModule, webp, webp_flip


def _pillow_webp(pil_image, quality):
    """Independent reference: Pillow's own WebP round trip of a PIL image."""
    buf = io.BytesIO()
    pil_image.save(buf, "WEBP", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(pil_image.mode))


@pytest.mark.parametrize("quality", [60, 20])
def test_equals_pillow_webp_of_mirrored_image(astronaut, quality):
    img = astronaut[50:150, 60:181]  # odd width
    expected = _pillow_webp(ImageOps.mirror(Image.fromarray(img)), quality)
    np.testing.assert_array_equal(webp_flip(img, quality), expected)
    assert not np.array_equal(expected, _pillow_webp(Image.fromarray(img), quality)[:, ::-1])


def test_options(astronaut):
    img = astronaut[:64, :80]
    mirrored = ImageOps.mirror(Image.fromarray(img))
    np.testing.assert_array_equal(webp_flip(img, axis="vertical"), _pillow_webp(ImageOps.flip(Image.fromarray(img)), 60))
    np.testing.assert_array_equal(webp_flip(img, flip_back=True), _pillow_webp(mirrored, 60)[:, ::-1])
    np.testing.assert_array_equal(webp_flip(img, order="after"), _pillow_webp(Image.fromarray(img), 60)[:, ::-1])
    np.testing.assert_array_equal(webp_flip(img, axis="none"), _pillow_webp(Image.fromarray(img), 60))
    for bad in ({"axis": "diagonal"}, {"order": "during"}, {"quality": 101}, {"threads": 0}):
        with pytest.raises(ValueError):
            webp_flip(img, **bad)


def test_batch_threads_grey_alpha_and_float(photos):
    crops = np.stack([p[:48, :72] for p in list(photos.values())[:5]])
    out = webp_flip(crops, threads=3)
    for i in range(len(crops)):
        np.testing.assert_array_equal(out[i], _pillow_webp(ImageOps.mirror(Image.fromarray(crops[i])), 60))
    grey = crops[0, :, :, 1]
    np.testing.assert_array_equal(webp_flip(grey), _pillow_webp(ImageOps.mirror(Image.fromarray(grey)), 60))
    rgba = np.concatenate([crops[1], np.full((48, 72, 1), 200, np.uint8)], axis=2)
    assert webp_flip(rgba).shape == rgba.shape
    f = crops.astype(np.float32) / 255
    out_f = webp_flip(f)
    assert out_f.dtype == np.float32 and out_f.shape == f.shape
    np.testing.assert_allclose(out_f * 255, out, atol=1e-3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        webp(f * 2)


def test_torch_same_type_out_and_registry(astronaut):
    img = astronaut[:40, :56]
    expected = _pillow_webp(ImageOps.mirror(Image.fromarray(img)), 60)
    t = torch.from_numpy(img.copy()).permute(2, 0, 1)
    y = WebPFlipModule()(t[None])
    assert y.dtype == torch.uint8 and y.shape == (1, 3, 40, 56)
    np.testing.assert_array_equal(y[0].permute(1, 2, 0).numpy(), expected)
    tf = (t.double() / 255).requires_grad_()
    yf = WebPFlip()(tf)
    assert yf.dtype == torch.float64
    np.testing.assert_allclose(yf.detach().permute(1, 2, 0).numpy() * 255, expected, atol=1e-6)
    yf.sum().backward()  # straight-through WebP, exact flip
    assert torch.equal(tf.grad, torch.ones_like(tf))
    np.testing.assert_array_equal(defenses.build("webp-flip")(img), expected)
    assert not defenses.spec("webp-flip").random


def test_adaptive_gradient_follows_the_flip(astronaut):
    """Under attack the flip is differentiated exactly, WebP straight-through: d/dx sum(w * D(x)) is w
    mirrored back, not w (which is what an identity BPDA would give)."""
    from fdjpeg import attacks

    x = (torch.from_numpy(astronaut[:24, :40].copy()).permute(2, 0, 1)[None].double() / 255).requires_grad_()
    w = torch.randn(1, 3, 24, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for options, expected in [({}, w.flip(-1)), ({"axis": "vertical"}, w.flip(-2)), ({"flip_back": True}, w)]:
        out = attacks.straight_through(WebPFlip(60, **options), x)
        (grad,) = torch.autograd.grad((out * w).sum(), x)
        assert torch.equal(grad, expected), options
