"""fdjpeg's defenses inside IBM ART: the numpy and PyTorch preprocessors, their gradient rule, and ART's
PGD through them against fdjpeg's own adaptive PGD on a real Fashion-MNIST classifier."""

import contextlib
import io
import math

import numpy as np
import pytest

pytest.importorskip("art")
torch = pytest.importorskip("torch")

import fdjpeg  # noqa: E402
from fdjpeg import attacks, datasets, defenses  # noqa: E402
from fdjpeg.integrations.art import ArtDefense, ArtDefensePyTorch  # noqa: E402


@pytest.fixture(scope="module")
def rgb(photos):
    """Real photo crops, float32 N x H x W x 3 in [0, 1] (sizes not multiples of 8 on purpose)."""
    crops = [photos[name][:36, :44] for name in ("astronaut", "chelsea", "coffee")]
    return np.stack(crops).astype(np.float32) / 255


# ------------------------------------------------------------------------------------------------
# Forward: the same images as the fdjpeg op


@pytest.mark.parametrize("form", [ArtDefense, ArtDefensePyTorch])
def test_fd_equals_feature_distill_nhwc_and_nchw(rgb, form):
    expected = fdjpeg.feature_distill(rgb)
    out, y = form("fd")(rgb, np.arange(3))
    assert out.dtype == np.float32 and np.array_equal(out, expected)
    assert np.array_equal(y, np.arange(3))  # labels pass through
    out_cf, _ = form("fd", channels_first=True)(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)))
    assert np.array_equal(out_cf, expected.transpose(0, 3, 1, 2))


def test_jpeg_quality_and_float64(rgb):
    x = rgb.astype(np.float64)
    out, _ = ArtDefense("jpeg", quality=30)(x)
    assert out.dtype == np.float64
    assert np.array_equal(out, fdjpeg.jpeg(x, 30))
    assert not np.array_equal(out, fdjpeg.jpeg(x, 90))  # the parameter reaches the defense


def test_clip_values_0_255(rgb):
    """ART's [0, 255] floats: the defense of x / 255, scaled back."""
    ref, _ = ArtDefense("jpeg", quality=50)(rgb)
    out, _ = ArtDefense("jpeg", clip_values=(0, 255), quality=50)(rgb * 255)
    np.testing.assert_allclose(out, ref * 255, rtol=0, atol=1e-3)
    t, _ = ArtDefensePyTorch("jpeg", clip_values=(0, 255), quality=50).forward(torch.from_numpy(rgb * 255))
    np.testing.assert_allclose(t.numpy(), ref * 255, rtol=0, atol=1e-3)


def test_video_frames_are_defended_as_images(rgb):
    video = np.stack([rgb, rgb[::-1]])  # N=2 x F=3 x H x W x C
    out, _ = ArtDefense("fd")(video)
    assert np.array_equal(out[1], fdjpeg.feature_distill(rgb[::-1].copy()))
    ncfhw = np.ascontiguousarray(video.transpose(0, 4, 1, 2, 3))
    out_cf, _ = ArtDefense("fd", channels_first=True)(ncfhw)
    assert np.array_equal(out_cf, out.transpose(0, 4, 1, 2, 3))
    t, _ = ArtDefensePyTorch("fd", channels_first=True).forward(torch.from_numpy(ncfhw))
    assert np.array_equal(t.numpy(), out_cf)


def test_every_image_defense_runs(fashion_classifier, rgb):
    _, x, _ = fashion_classifier
    # quilting is left out: its first use builds a 1M-patch faiss database (minutes), tested in test_quilting
    for name in defenses.transform_names():
        if name == "quilting":
            continue
        images = x[:4].numpy() if name == "comdefend-grey" else np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))
        art_defense = ArtDefense(name, channels_first=True)
        out, _ = art_defense(images)
        assert out.shape == images.shape and out.dtype == images.dtype, name
        assert 0 <= out.min() and out.max() <= 1, name
        assert art_defense.random == defenses.spec(name).random


def test_a_classifier_is_not_a_preprocessing_defence(fashion_classifier):
    _, x, _ = fashion_classifier
    with pytest.raises(TypeError, match="not an image transform"):
        ArtDefense("ensemble-fashion", channels_first=True)(x[:2].numpy())


def test_argument_errors(rgb):
    with pytest.raises(ValueError, match="unknown defense"):
        ArtDefense("gzip")
    with pytest.raises(TypeError, match="name"):
        ArtDefense(3)
    with pytest.raises(ValueError, match="unknown"):
        ArtDefense("jpeg", qualty=50)
    with pytest.raises(ValueError, match="quality"):
        ArtDefense("jpeg", quality=0)
    with pytest.raises(ValueError, match="clip_values"):
        ArtDefense("fd", clip_values=(-1, 1))
    with pytest.raises(TypeError, match="clip_values"):
        ArtDefense("fd", clip_values=None)
    with pytest.raises(TypeError, match="channels_first"):
        ArtDefense("fd", channels_first="yes")
    with pytest.raises(TypeError, match="apply_fit"):
        ArtDefense("fd", apply_fit=1)
    with pytest.raises(ValueError, match="device_type"):
        ArtDefensePyTorch("fd", device_type="tpu")
    defense = ArtDefense("fd")
    with pytest.raises(ValueError, match="clip_values"):
        defense(rgb * 255)  # [0, 255] data given to a [0, 1] defence
    with pytest.raises(ValueError, match="dimensions"):
        defense(rgb[0])
    with pytest.raises(TypeError, match="numpy"):
        defense(torch.from_numpy(rgb))
    with pytest.raises(TypeError, match="uint8"):
        defense((rgb * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="clip_values"):
        ArtDefensePyTorch("fd").forward(torch.from_numpy(rgb) - 0.5)


def test_apply_fit_and_predict_flags():
    defense = ArtDefense("fd")
    assert (defense.apply_fit, defense.apply_predict, defense.is_fitted) == (False, True, True)
    other = ArtDefensePyTorch("fd", apply_fit=True, apply_predict=False)
    assert (other.apply_fit, other.apply_predict) == (True, False)


# ------------------------------------------------------------------------------------------------
# The gradient rule


@pytest.mark.parametrize("name", ["fd", "jpeg"])
def test_bpda_identity_for_non_differentiable(rgb, name):
    grad = np.random.default_rng(0).standard_normal(rgb.shape).astype(np.float32)
    defense = ArtDefense(name)
    assert not defense.differentiable
    assert np.array_equal(defense.estimate_gradient(rgb, grad), grad)
    xt = torch.from_numpy(rgb.copy()).requires_grad_(True)
    out, _ = ArtDefensePyTorch(name).forward(xt)
    out.backward(torch.from_numpy(grad))
    assert np.array_equal(xt.grad.numpy(), grad)


@pytest.mark.parametrize("channels_first", [False, True])
def test_webp_flip_gradient_is_the_flipped_gradient(rgb, channels_first):
    """WebP + flip declares its gradient: the flip's, exactly (WebP straight through)."""
    x = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)) if channels_first else rgb
    width = -1 if channels_first else -2
    grad = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    defense = ArtDefense("webp-flip", channels_first=channels_first)
    assert defense.differentiable
    assert np.array_equal(defense.estimate_gradient(x, grad), np.flip(grad, width))
    # ART's class gradients (N x classes x image) are pulled back class by class.
    per_class = np.stack([grad, -2 * grad], axis=1)
    assert np.array_equal(defense.estimate_gradient(x, per_class), np.flip(per_class, width))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out, _ = ArtDefensePyTorch("webp-flip", channels_first=channels_first).forward(xt)
    assert np.array_equal(out.detach().numpy(), defense(x)[0])
    out.backward(torch.from_numpy(grad))
    assert np.array_equal(xt.grad.numpy(), np.flip(grad, width))


# ------------------------------------------------------------------------------------------------
# Inside ART's PyTorchClassifier, and ART's PGD against fdjpeg's adaptive PGD


def _classifier(model, defence):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                             clip_values=(0.0, 1.0), preprocessing_defences=[defence], device_type="cpu")


@pytest.mark.parametrize("form", [ArtDefense, ArtDefensePyTorch])
def test_inside_pytorch_classifier(fashion_classifier, torch_one_thread, form):
    model, x, y = fashion_classifier
    classifier = _classifier(model, form("jpeg", channels_first=True, quality=50))
    with torch.no_grad():
        expected = model(fdjpeg.jpeg(x, 50)).numpy()
    np.testing.assert_allclose(classifier.predict(x.numpy()), expected, rtol=1e-5, atol=1e-5)
    # BPDA: the loss gradient is the model's gradient at the defended images.
    grad = classifier.loss_gradient(x[:8].numpy(), np.eye(10, dtype=np.float32)[y[:8].numpy()])
    xd = fdjpeg.jpeg(x[:8], 50).requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xd), y[:8]).backward()
    np.testing.assert_allclose(grad, xd.grad.numpy(), rtol=1e-4, atol=1e-7)


def _accuracy(model, defense, x, y) -> float:
    with torch.no_grad():
        return (model(attacks.straight_through(defense, x)).argmax(1) == y).double().mean().item()


@pytest.mark.parametrize("name, form", [("fd", ArtDefense), ("webp-flip", ArtDefensePyTorch)])
def test_art_pgd_matches_fdjpeg_adaptive_pgd(fashion_classifier, torch_one_thread, name, form):
    """Same eps, step, iterations and no random start on both sides: the two attacks are the same
    algorithm, so their adversarial accuracies should differ by float rounding only. Bound: the 95%
    binomial half-width 1.96 * sqrt(p (1 - p) / n) at fdjpeg's accuracy p (n = 64 images, at most
    ~0.12). The attack must cost more than the bound, and for WebP + flip the attack with the wrong
    gradient rule (identity over the flip too) must land outside it, so the comparison has teeth."""
    from art.attacks.evasion import ProjectedGradientDescent

    model, x, y = fashion_classifier
    eps, steps, step = 0.1, 8, 0.025
    defense = defenses.build(name)
    x_fd = attacks.pgd(attacks.Defended(model, defense), x, y, eps, steps=steps, step_size=step, random_start=False)
    pgd = ProjectedGradientDescent(_classifier(model, form(name, channels_first=True)), norm=np.inf, eps=eps,
                                   eps_step=step, max_iter=steps, num_random_init=0, batch_size=len(x), verbose=False)
    x_art = torch.from_numpy(pgd.generate(x.numpy(), y=y.numpy()))
    assert (x_art - x).abs().max() <= eps + 1e-6
    clean = _accuracy(model, defense, x, y)
    acc_fd = _accuracy(model, defense, x_fd, y)
    acc_art = _accuracy(model, defense, x_art, y)
    bound = 1.96 * math.sqrt(max(acc_fd * (1 - acc_fd), 1 / len(x)) / len(x))
    print(f"{name}: clean {clean:.3f}, fdjpeg PGD {acc_fd:.3f}, ART PGD {acc_art:.3f}, bound {bound:.3f}")
    assert abs(acc_art - acc_fd) <= bound
    assert clean - acc_fd > bound  # the attack is strong enough for the comparison to mean something
    if getattr(defense, "differentiable", False):
        # The bound tells the gradient rules apart: BPDA identity over the whole of WebP + flip (the
        # flip's gradient lost) is a weaker attack that falls outside it.
        lost = _WholeIdentity(model, defense)
        x_lost = attacks.pgd(lost, x, y, eps, steps=steps, step_size=step, random_start=False)
        assert abs(_accuracy(model, defense, x_lost, y) - acc_art) > bound


class _WholeIdentity(torch.nn.Module):
    def __init__(self, model, defense):
        super().__init__()
        self.model, self.defense = model, defense

    def forward(self, x):
        from fdjpeg.torch import StraightThrough

        return self.model(StraightThrough.apply(x, lambda t: torch.from_numpy(
            np.ascontiguousarray(self.defense(t.numpy().transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)))))


# ------------------------------------------------------------------------------------------------
# The documentation example, run as written

DOCS_EXAMPLE = """\
import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier

from fdjpeg.datasets import fashion_mnist
from fdjpeg.integrations.art import ArtDefense
from fdjpeg.models import load_classifier

images, labels = fashion_mnist("test")                 # uint8 N x 28 x 28, int64 labels
x = images[:100, None].astype(np.float32) / 255        # N x 1 x 28 x 28 in [0, 1]
y = labels[:100]

classifier = PyTorchClassifier(
    load_classifier("fashion-cnn"), loss=torch.nn.CrossEntropyLoss(),
    input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0),
    preprocessing_defences=[ArtDefense("jpeg", channels_first=True, quality=50)],
)
clean = (classifier.predict(x).argmax(1) == y).mean()
# The gradient passes through the JPEG round trip as the identity (BPDA): an adaptive attack.
attack = ProjectedGradientDescent(classifier, eps=0.1, eps_step=0.01, max_iter=20,
                                  num_random_init=0, verbose=False)
x_adv = attack.generate(x, y=y)
robust = (classifier.predict(x_adv).argmax(1) == y).mean()
print(f"JPEG q50: clean accuracy {clean:.2f}, under adaptive PGD (eps 0.1) {robust:.2f}")
"""


def test_docs_example_runs(torch_one_thread):
    pytest.importorskip("safetensors")
    try:
        datasets.fashion_mnist("test")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    out = io.StringIO()
    scope: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(DOCS_EXAMPLE, "docs-example", "exec"), scope)
    assert out.getvalue().startswith("JPEG q50: clean accuracy ")
    assert scope["clean"] > 0.7 and scope["robust"] < scope["clean"]
