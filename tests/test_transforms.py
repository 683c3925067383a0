"""fdjpeg.transforms: PIL / numpy / torch in, the same out, and inside a torch DataLoader."""

import pickle

import numpy as np
import pytest
torch = pytest.importorskip("torch")
from PIL import Image

import fdjpeg
from fdjpeg import datasets
from fdjpeg.transforms import JPEG, Defend, FeatureDistill


def test_pil_modes_come_back_in_their_mode(photos):
    cat = photos["chelsea"]
    fd = FeatureDistill()
    out = fd(Image.fromarray(cat))
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), fdjpeg.feature_distill(cat))
    grey = Image.fromarray(cat).convert("L")
    out = fd(grey)
    assert out.mode == "L"
    np.testing.assert_array_equal(np.asarray(out), fdjpeg.feature_distill(np.asarray(grey)))
    alpha = np.arange(cat.shape[0] * cat.shape[1], dtype=np.uint32).reshape(cat.shape[:2]).astype(np.uint8)
    out = fd(Image.fromarray(np.dstack([cat, alpha])))
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[:, :, 3], alpha)
    np.testing.assert_array_equal(np.asarray(out)[:, :, :3], fdjpeg.feature_distill(cat))
    palette = Image.fromarray(cat).convert("P", palette=Image.ADAPTIVE)
    out = fd(palette)
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), fdjpeg.feature_distill(np.asarray(palette.convert("RGB"))))


def test_numpy_and_torch_keep_type_dtype_layout(photos):
    img = datasets.center_crop(photos["astronaut"], 200)[:197, :123]  # odd size
    jpeg = JPEG(quality=40)
    np.testing.assert_array_equal(jpeg(img), fdjpeg.jpeg(img, 40))
    as_float = img.astype(np.float32) / 255
    out = jpeg(as_float)
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_allclose(out, fdjpeg.jpeg(as_float, 40))
    grey = img[:, :, 0]
    np.testing.assert_array_equal(FeatureDistill()(grey), fdjpeg.feature_distill(grey))
    chw = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    out = FeatureDistill(passes=2)(chw)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.shape == chw.shape
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), fdjpeg.feature_distill(img, passes=2))
    batch = chw[None].float() / 255
    np.testing.assert_allclose(Defend("fd")(batch).numpy(), fdjpeg.feature_distill(batch).numpy())


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown defense"):
        Defend("nope")
    with pytest.raises(ValueError, match="unknown"):
        Defend("jpeg", qualty=3)
    with pytest.raises(TypeError, match="PIL image, a numpy array or a torch tensor"):
        FeatureDistill()([1, 2, 3])
    with pytest.raises(ValueError, match="one image"):
        FeatureDistill()(np.zeros((2, 8, 8, 3), np.uint8))


def test_repr_and_pickle():
    t = JPEG(quality=30)
    assert repr(t) == "JPEG(quality=30, subsampling='420')"
    assert repr(Defend("fd", passes=2)) == "Defend('fd', passes=2)"
    t(np.zeros((8, 8, 3), np.uint8))  # built once; the copy must build its own
    clone = pickle.loads(pickle.dumps(t))
    np.testing.assert_array_equal(clone(np.full((16, 16, 3), 77, np.uint8)), fdjpeg.jpeg(np.full((16, 16, 3), 77, np.uint8), 30))


class _Photos(torch.utils.data.Dataset):
    """Crops of the real sample photos as PIL images, transformed, then turned into CHW tensors."""

    def __init__(self, transform):
        self.images = [datasets.center_crop(p, 160) for p in datasets.sample_photos().values()]
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        out = self.transform(Image.fromarray(self.images[i]))
        return torch.from_numpy(np.array(out)).permute(2, 0, 1), i


@pytest.mark.parametrize("transform", [FeatureDistill(), JPEG(quality=60)], ids=repr)
def test_inside_a_dataloader_with_workers(transform):
    data = _Photos(transform)
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=2)
    seen = 0
    for images, idx in loader:
        want = np.stack([transform(data.images[i]) for i in idx.tolist()])
        np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), want)
        seen += len(idx)
    assert seen == len(data)


class _Same(torch.utils.data.Dataset):
    """The same photo at every index, through a seeded SLQ: differences come from the draws alone."""

    def __init__(self, transform):
        self.image = datasets.center_crop(datasets.sample_photos()["chelsea"], 64)
        self.transform = transform

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.transform(self.image)))


def _slq_draws(seed):
    loader = torch.utils.data.DataLoader(_Same(Defend("slq", seed=seed)), batch_size=1, num_workers=2)
    return [x[0].numpy() for x in loader]


def test_seeded_slq_draws_differ_between_dataloader_workers_and_repeat_per_seed():
    draws = _slq_draws(7)
    # indices 0, 2, ... come from worker 0 and 1, 3, ... from worker 1: their first draws must differ
    assert not np.array_equal(draws[0], draws[1])
    assert len({d.tobytes() for d in draws}) == len(draws)
    again = _slq_draws(7)
    assert all(np.array_equal(a, b) for a, b in zip(draws, again))
    assert not np.array_equal(_slq_draws(8)[0], draws[0])
