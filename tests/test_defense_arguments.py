"""The defense classes reject what they cannot take, with the parameter, the value given and what is
expected, instead of rounding or coercing it; ComDefend never moves the model it is given."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from fdjpeg.defenses import slq as slq_module
from fdjpeg.defenses import webp_flip as webp_module
from fdjpeg.defenses.slq import StochasticLocalQuantization
from fdjpeg.defenses.webp_flip import WebPFlip, webp_flip


@pytest.mark.parametrize(
    "qualities, error, words",
    [
        ((20.9, 40.2), TypeError, r"qualities\[0\].*integer.*20\.9"),
        ((True, 50), TypeError, r"qualities\[0\].*True"),
        ((50, np.float64(40)), TypeError, r"qualities\[1\]"),
        ("2040", TypeError, "sequence of integer"),
        (50, TypeError, "sequence of integer"),
        ((0, 50), ValueError, r"qualities\[0\].*1\.\.100.*0"),
        ((50, 101), ValueError, r"qualities\[1\].*101"),
        ((), ValueError, "1 to 256"),
    ],
)
def test_slq_qualities_are_integers_never_rounded(qualities, error, words):
    with pytest.raises(error, match=words):
        StochasticLocalQuantization(qualities)


def test_slq_takes_numpy_qualities_as_they_are(astronaut):
    from_numpy = StochasticLocalQuantization(np.array([30, 70], dtype=np.int64), seed=3)
    from_tuple = StochasticLocalQuantization((30, 70), seed=3)
    assert from_numpy.qualities == (30, 70)
    np.testing.assert_array_equal(from_numpy(astronaut[:64, :64]), from_tuple(astronaut[:64, :64]))


@pytest.mark.parametrize(
    "options, error, words",
    [
        (dict(flip_back="yes"), TypeError, "flip_back must be True or False, got 'yes'"),
        (dict(flip_back=1), TypeError, "flip_back"),
        (dict(method=True), TypeError, "method"),
        (dict(method=7), ValueError, r"method.*0\.\.6.*7"),
        (dict(axis=["horizontal"]), TypeError, "axis must be one of"),
        (dict(order="during"), ValueError, "order must be one of"),
        (dict(quality=60.0), TypeError, "quality must be an integer"),
        (dict(quality=101), ValueError, "quality"),
    ],
)
def test_webp_flip_options_are_checked(options, error, words):
    with pytest.raises(error, match=words):
        WebPFlip(**options)
    with pytest.raises(error, match=words):
        webp_flip(np.zeros((8, 8, 3), np.uint8), **options)


def test_webp_flip_accepts_numpy_bool_and_int(astronaut):
    crop = astronaut[:32, :48]
    want = webp_flip(crop, 60, flip_back=True, method=4)
    np.testing.assert_array_equal(WebPFlip(np.int64(60), flip_back=np.bool_(True), method=np.int32(4))(crop), want)


def test_public_names_exist_without_torch():
    """``__all__`` lists only what the module defines: no torch, no torch modules."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from fdjpeg.defenses import slq, webp_flip\n"
        "for m in (slq, webp_flip):\n"
        "    missing = [n for n in m.__all__ if not hasattr(m, n)]\n"
        "    assert not missing, (m.__name__, missing)\n"
        "    assert 'SLQ' not in m.__all__ and 'WebPFlipModule' not in m.__all__\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_public_names_exist_with_torch():
    pytest.importorskip("torch")
    assert "SLQ" in slq_module.__all__ and "WebPFlipModule" in webp_module.__all__
    for module in (slq_module, webp_module):
        assert all(hasattr(module, name) for name in module.__all__)


# ------------------------------------------------------------------------------------------------
# ComDefend


@pytest.fixture(scope="module")
def grey_model():
    pytest.importorskip("torch")
    from fdjpeg.defenses import comdefend

    return comdefend.load("grey")


def test_comdefend_batch_size_and_empty_batches_are_value_errors(grey_model):
    import torch

    from fdjpeg import defenses
    from fdjpeg.defenses import comdefend

    x = torch.rand(2, 1, 16, 16)
    for bad, error in ((0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="batch_size"):
            comdefend.defend(x, grey_model, batch_size=bad)
        with pytest.raises(error, match="batch_size"):
            defenses.build("comdefend-grey", batch_size=bad)
    with pytest.raises(ValueError, match=r"non-empty.*\(0, 1, 16, 16\)"):
        comdefend.defend(torch.zeros(0, 1, 16, 16), grey_model)
    with pytest.raises(ValueError, match=r"non-empty"):
        comdefend.defend(np.zeros((0, 16, 16), np.uint8), grey_model)


def test_comdefend_device_is_checked_before_loading():
    torch = pytest.importorskip("torch")
    from fdjpeg.defenses import comdefend

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda'.*no CUDA device"):
            comdefend.build("grey", device="cuda")
    with pytest.raises(ValueError, match="device must name a torch device"):
        comdefend.build("grey", device="gpu0")
    with pytest.raises(TypeError, match="device must be"):
        comdefend.build("grey", device=0.5)


def test_comdefend_never_moves_the_model_it_is_given(grey_model):
    """Concurrent callers share the model: ``defend`` runs on it where it is and leaves its weights
    (device, memory format, storage) as they were, and a tensor elsewhere is refused, not chased."""
    import torch

    from fdjpeg.defenses import comdefend

    before = {k: (v.device, v.data_ptr(), v.stride()) for k, v in grey_model.state_dict().items()}
    x = torch.rand(3, 1, 20, 20)
    comdefend.defend(x, grey_model)
    comdefend.defend(np.random.default_rng(0).integers(0, 256, (2, 20, 20), dtype=np.uint8), grey_model)
    after = {k: (v.device, v.data_ptr(), v.stride()) for k, v in grey_model.state_dict().items()}
    assert after == before
    with pytest.raises(ValueError, match="model is on cpu and the images on meta"):
        comdefend.defend(torch.empty(1, 1, 8, 8, device="meta"), grey_model)


def test_comdefend_registry_defense_shared_by_threads_gives_one_answer():
    torch = pytest.importorskip("torch")
    from fdjpeg import datasets, defenses

    defend = defenses.build("comdefend")
    photo = datasets.sample_photos()["astronaut"][:48, :64]
    want = defend(photo)
    x = torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1))).float().div(255)
    want_torch = defend(x)
    results, errors = [], []

    def work(i):
        try:
            results.append((defend(photo), defend(x)))
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4
    for got, got_torch in results:
        np.testing.assert_array_equal(got, want)
        assert torch.equal(got_torch, want_torch)
