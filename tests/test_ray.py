"""fdjpeg.integrations.ray against a real local Ray instance (2 CPUs), on real photos."""

import hashlib
import os
import re

import numpy as np
import pytest
from PIL import Image

import fdjpeg
from fdjpeg import datasets
from fdjpeg.integrations.ray import DefendBatch, FeatureDistillBatch, JPEGBatch

ray = pytest.importorskip("ray", reason="needs Ray: pip install 'fdjpeg[ray]'")
API_DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "api.md")


def _digest(img):
    return hashlib.sha256(np.ascontiguousarray(img).tobytes() + str(img.shape).encode()).hexdigest()


def test_batches_without_ray_fixed_ragged_and_grey(photos):
    imgs = [photos["chelsea"], photos["coffee"], photos["chelsea"][:100, :77]]
    ragged = np.empty(3, dtype=object)
    ragged[:] = imgs
    out = FeatureDistillBatch()({"image": ragged, "id": np.arange(3)})
    assert out["image"].dtype == object and np.array_equal(out["id"], np.arange(3))
    for got, img in zip(out["image"], imgs):
        np.testing.assert_array_equal(got, fdjpeg.feature_distill(img))
    fixed = np.stack([photos["chelsea"]] * 2)
    np.testing.assert_array_equal(JPEGBatch(quality=30)({"image": fixed})["image"], fdjpeg.jpeg(fixed, 30))
    grey = fixed[..., 0]
    out = DefendBatch("fd", output_column="defended")({"image": grey})
    np.testing.assert_array_equal(out["image"], grey)
    np.testing.assert_array_equal(out["defended"], fdjpeg.feature_distill(grey[..., None])[..., 0])
    with pytest.raises(KeyError, match="no column 'pixels'"):
        FeatureDistillBatch(column="pixels")({"image": fixed})


def _documented_ray_example():
    with open(API_DOC, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if "map_batches" in b]
    assert found, "docs/api.md has no Ray example"
    return found[0]


def test_documented_example_runs_as_written(tmp_path, monkeypatch):
    """The Ray example of docs/api.md, executed as it stands on a folder photos/ of real photos."""
    if ray.is_initialized():
        ray.shutdown()
    photos = datasets.sample_photos()
    (tmp_path / "photos").mkdir()
    for stem, img in photos.items():
        Image.fromarray(img).save(tmp_path / "photos" / f"{stem}.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(_documented_ray_example(), "docs/api.md", "exec"), {})
    written = sorted((tmp_path / "photos-fd").rglob("*.png"))
    assert len(written) == len(photos)
    got = {_digest(np.asarray(Image.open(p))) for p in written}
    assert got == {_digest(fdjpeg.feature_distill(img)) for img in photos.values()}


@pytest.fixture(scope="module")
def ray_session():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_variable_and_fixed_sizes_through_map_batches(ray_session, photos):
    actors = ray.data.ActorPoolStrategy(size=2)
    stems = sorted(photos)
    ragged = ray.data.from_items([{"image": photos[s], "stem": s} for s in stems])
    out = ragged.map_batches(FeatureDistillBatch, fn_constructor_kwargs={"passes": 2}, batch_format="numpy",
                             batch_size=4, compute=actors).take_all()
    assert sorted(r["stem"] for r in out) == stems
    for row in out:
        np.testing.assert_array_equal(row["image"], fdjpeg.feature_distill(photos[row["stem"]], passes=2))
    crops = [datasets.center_crop(photos[s], 128) for s in stems]
    fixed = ray.data.from_items([{"image": c, "i": i} for i, c in enumerate(crops)])
    out = fixed.map_batches(DefendBatch, fn_constructor_args=("jpeg",), fn_constructor_kwargs={"quality": 40},
                            batch_format="numpy", batch_size=3, compute=actors).take_all()
    assert len(out) == len(crops)
    for row in out:
        np.testing.assert_array_equal(row["image"], fdjpeg.jpeg(crops[row["i"]], 40))
