import numpy as np
import pytest
torch = pytest.importorskip("torch")

import fdjpeg
from fdjpeg import defenses, tables
from fdjpeg.defenses.slq import QUALITIES, SLQ, StochasticLocalQuantization, slq


def _blockwise_reference(img, choice, qualities):
    """Each 8x8 block taken from the plain JPEG (4:4:4) result at the quality chosen for it."""
    plain = [fdjpeg.quantize(img, list(tables.ijg(q)), subsampling="444") for q in qualities]
    h, w = img.shape[-3:-1] if img.ndim == 4 else img.shape[:2]
    out = np.empty_like(img)
    for r in range(choice.shape[0]):
        for c in range(choice.shape[1]):
            ys, xs = slice(8 * r, min(8 * r + 8, h)), slice(8 * c, min(8 * c + 8, w))
            out[ys, xs] = plain[choice[r, c]][ys, xs]
    return out


@pytest.mark.parametrize("size", [(64, 64), (37, 50)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_each_block_equals_plain_jpeg_at_its_quality(astronaut, size, dtype):
    img = astronaut[100 : 100 + size[0], 200 : 200 + size[1]]
    if dtype != np.uint8:
        img = (img / 255.0).astype(dtype)
    out, choice = StochasticLocalQuantization(seed=7).apply(img)
    assert choice.shape == (1, -(-size[0] // 8), -(-size[1] // 8))
    assert set(np.unique(choice)) == {0, 1, 2, 3}  # every quality used somewhere
    np.testing.assert_array_equal(out, _blockwise_reference(img, choice[0], QUALITIES))


def test_differs_from_every_single_quality(astronaut):
    img = astronaut[:128, :128]
    out = slq(img, seed=1)
    for q in QUALITIES:
        assert not np.array_equal(out, fdjpeg.quantize(img, list(tables.ijg(q)), subsampling="444"))


def test_seed_reproduces_and_generator_advances(astronaut):
    img = astronaut[:96, :96]
    np.testing.assert_array_equal(slq(img, seed=3), slq(img, seed=3))
    assert not np.array_equal(slq(img, seed=3), slq(img, seed=4))
    d = StochasticLocalQuantization(seed=np.random.default_rng(5))
    first, second = d(img), d(img)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, StochasticLocalQuantization(seed=5)(img))


def test_batch_torch_and_registry(astronaut):
    batch = np.stack([astronaut[:64, :64], astronaut[64:128, 64:128]])
    out, choice = StochasticLocalQuantization(seed=2).apply(batch)
    assert choice.shape == (2, 8, 8)
    for i in range(2):
        np.testing.assert_array_equal(out[i], _blockwise_reference(batch[i], choice[i], QUALITIES))
    t = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
    y = SLQ(seed=2)(t)
    assert y.shape == t.shape and y.dtype == torch.float32
    # torch float NCHW gives what numpy float NHWC gives (uint8 differs: libjpeg's 8-bit stages)
    ref = StochasticLocalQuantization(seed=2)(batch.astype(np.float32) / 255)
    np.testing.assert_allclose(y.permute(0, 2, 3, 1).numpy(), ref, atol=1e-6)
    assert defenses.spec("slq").random
    np.testing.assert_array_equal(defenses.build("slq", seed=2)(batch), out)


def test_subsampled_chroma_runs_and_bad_input():
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert slq(img, subsampling="420", seed=0).shape == img.shape
    with pytest.raises(ValueError, match="subsampling"):
        StochasticLocalQuantization(subsampling="411")
    with pytest.raises(ValueError, match="quality"):
        StochasticLocalQuantization(qualities=(0, 50))
    with pytest.raises(ValueError, match="qualities"):
        StochasticLocalQuantization(qualities=())
