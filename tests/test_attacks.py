"""The attacks against known behaviour, on a small CNN trained here on real Fashion-MNIST images."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fdjpeg
from eval_requirements import needs
from fdjpeg import attacks


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def l2(a, b):
    return (a - b).flatten(1).norm(dim=1)


EPSILONS = (0.0, 0.05, 0.1, 0.2)


@pytest.fixture(scope="module")
def accuracies(fashion_classifier):
    model, x, y = fashion_classifier
    gen = torch.Generator().manual_seed(0)
    return {
        name: [accuracy(model, attacks.get(name)(model, x, y, eps, **({"generator": gen} if name == "pgd" else {})), y)
               for eps in EPSILONS]
        for name in ("fgsm", "pgd")
    }


def test_model_is_a_real_classifier(fashion_classifier):
    model, x, y = fashion_classifier
    assert accuracy(model, x, y) > 0.6  # ten classes: chance is 0.1


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_accuracy_falls_as_epsilon_grows(accuracies, name):
    acc = accuracies[name]
    assert all(later <= earlier + 1 / 64 for earlier, later in zip(acc, acc[1:])), acc
    assert acc[-1] < 0.25 * acc[0], acc


def test_pgd_at_least_as_strong_as_fgsm(accuracies):
    for f, p in zip(accuracies["fgsm"], accuracies["pgd"]):
        assert p <= f + 1 / 64
    assert sum(accuracies["pgd"]) < sum(accuracies["fgsm"])


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_eps_zero_changes_nothing(fashion_classifier, name):
    model, x, y = fashion_classifier
    assert torch.equal(attacks.get(name)(model, x, y, 0.0), x)


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_the_ball_and_the_image_range(fashion_classifier, random_start):
    model, x, y = fashion_classifier
    adv = attacks.pgd(model, x, y, 0.1, steps=3, random_start=random_start)
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_fgsm_is_one_signed_gradient_step(fashion_classifier):
    model, x, y = fashion_classifier
    xi = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xi), y, reduction="sum").backward()
    expected = (x + 0.05 * xi.grad.sign()).clamp(0, 1)
    assert torch.allclose(attacks.fgsm(model, x, y, 0.05), expected)


@pytest.fixture(scope="module")
def pgd_reference(fashion_classifier):
    """PGD at eps 0.1: its success rate and the L2 norm of its perturbations, for comparison."""
    model, x, y = fashion_classifier
    adv = attacks.pgd(model, x, y, 0.1, generator=torch.Generator().manual_seed(0))
    return accuracy(model, adv, y), l2(adv, x).median().item()


def test_deepfool_flips_most_predictions_with_small_l2(fashion_classifier, pgd_reference):
    model, x, y = fashion_classifier
    correct = model(x).argmax(1) == y
    adv = attacks.deepfool(model, x, y)
    with torch.no_grad():
        flipped = (model(adv).argmax(1) != y) & correct
    assert flipped.sum() >= 0.9 * correct.sum()
    assert l2(adv, x)[flipped].median() < 0.6 * pgd_reference[1]
    assert torch.equal(adv[~correct], x[~correct])  # already wrong: left alone


def test_carlini_wagner_needs_less_l2_than_pgd(fashion_classifier, pgd_reference):
    model, x, y = fashion_classifier
    adv = attacks.carlini_wagner_l2(model, x, y, steps=40, binary_search_steps=3, lr=0.05)
    cw_accuracy = accuracy(model, adv, y)
    assert cw_accuracy <= pgd_reference[0] + 0.05  # similar success
    changed = l2(adv, x) > 0
    assert l2(adv, x)[changed].median() < 0.5 * pgd_reference[1]
    assert adv.min() >= 0 and adv.max() <= 1


def test_carlini_wagner_confidence_buys_margin(fashion_classifier):
    model, x, y = fashion_classifier
    x, y = x[:16], y[:16]
    adv = attacks.carlini_wagner_l2(model, x, y, confidence=5.0, steps=40, binary_search_steps=3, lr=0.05)
    with torch.no_grad():
        z = model(adv)
    hit = l2(adv, x) > 0
    assert hit.sum() >= 8
    other = z.clone()
    other[torch.arange(len(y)), y] = -float("inf")
    margin = other.max(1).values - z[torch.arange(len(y)), y]
    assert (margin[hit] >= 5.0 - 1e-3).all()


# -- adaptive: BPDA and EOT ------------------------------------------------------------------------


def test_bpda_gradient_is_the_classifier_gradient_at_the_defended_image(fashion_classifier):
    model, x, y = fashion_classifier
    x = x[:8]
    defended = attacks.Defended(model, fdjpeg.defenses.build("jpeg", quality=30))
    xi = x.clone().requires_grad_(True)
    (g_bpda,) = torch.autograd.grad(defended(xi).sum(), xi)
    xd = fdjpeg.jpeg(x, 30).requires_grad_(True)
    (g_ref,) = torch.autograd.grad(model(xd).sum(), xd)
    assert torch.allclose(g_bpda, g_ref)


def test_straight_through_wraps_any_defense(fashion_classifier):
    model, x, y = fashion_classifier
    x = x[:4]

    def numpy_median_blur(t):  # a defense written for numpy, returning an array
        a = t.numpy()
        padded = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        stack = [padded[:, :, i : i + a.shape[2], j : j + a.shape[3]] for i in range(3) for j in range(3)]
        return np.median(np.stack(stack), axis=0).astype(a.dtype)

    xi = x.clone().requires_grad_(True)
    out = attacks.straight_through(numpy_median_blur, xi)
    assert torch.allclose(out, torch.from_numpy(numpy_median_blur(x)))
    (grad,) = torch.autograd.grad((out * 3).sum(), xi)
    assert torch.equal(grad, torch.full_like(x, 3.0))
    with pytest.raises(ValueError, match="shape"):
        attacks.straight_through(lambda t: t[:1], x)


@pytest.mark.parametrize("defense", ["jpeg:10", "fd"])
def test_adaptive_attack_gets_through_the_defense(fashion_classifier, defense):
    model, x, y = fashion_classifier
    defend = fdjpeg.defenses.build("jpeg", quality=10) if defense == "jpeg:10" else fdjpeg.defenses.build("fd")
    adaptive = attacks.pgd(attacks.Defended(model, defend), x, y, 0.15, generator=torch.Generator().manual_seed(0))
    assert accuracy(model, defend(adaptive), y) < 0.3 * accuracy(model, defend(x), y)


class RandomQualityJPEG:
    """A random defense: JPEG at a quality drawn per call (counts its calls)."""

    random = True

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def __call__(self, t):
        self.calls += 1
        return fdjpeg.jpeg(t, int(self.rng.choice([20, 40, 60, 80])))


def test_eot_averages_gradients_over_draws(fashion_classifier):
    model, x, y = fashion_classifier
    x, y = x[:16], y[:16]
    defend = RandomQualityJPEG()
    attacks.fgsm(attacks.Defended(model, defend), x, y, 0.1, eot_samples=5)
    assert defend.calls == 5
    # The mean over draws, taken by hand with the same draws, is what FGSM steps along.
    a, b = RandomQualityJPEG(seed=3), RandomQualityJPEG(seed=3)
    grads = []
    for _ in range(4):
        xi = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(attacks.straight_through(a, xi)), y, reduction="sum")
        grads.append(torch.autograd.grad(loss, xi)[0])
    expected = (x + 0.1 * torch.stack(grads).mean(0).sign()).clamp(0, 1)
    assert torch.equal(attacks.fgsm(attacks.Defended(model, b), x, y, 0.1, eot_samples=4), expected)


# -- bad input -------------------------------------------------------------------------------------


def test_bad_input_is_refused(fashion_classifier):
    model, x, y = fashion_classifier
    with pytest.raises(ValueError, match="eps"):
        attacks.fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.pgd(model, x * 255, y, 0.1)
    with pytest.raises(TypeError, match="int64"):
        attacks.fgsm(model, x, y.int(), 0.1)
    with pytest.raises(TypeError, match="N x C x H x W"):
        attacks.fgsm(model, x[0], y[:1], 0.1)
    with pytest.raises(ValueError, match="steps"):
        attacks.pgd(model, x, y, 0.1, steps=0)
    with pytest.raises(ValueError, match="unknown attack"):
        attacks.get("boundary")


# -- APGD (torchattacks' implementation, with fdjpeg's BPDA and EOT) -------------------------------


@needs("torchattacks")
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_is_torchattacks_apgd_and_leaves_the_global_rng_alone(fashion_classifier, loss):
    import torchattacks

    model, x, y = fashion_classifier
    x, y = x[:32], y[:32]
    state = torch.random.get_rng_state()
    adv = attacks.get(f"apgd-{loss}")(model, x, y, 0.05, steps=10, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    ref = torchattacks.APGD(model, norm="Linf", eps=0.05, steps=10, n_restarts=1, seed=3, loss=loss)(x, y)
    assert torch.equal(adv, ref)
    assert (adv - x).abs().max() <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1


@needs("torchattacks")
@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr"])
def test_apgd_is_at_least_as_strong_as_pgd(fashion_classifier, name):
    from fdjpeg.eval.report import wilson_interval

    model, x, y = fashion_classifier
    pgd_acc = accuracy(model, attacks.pgd(model, x, y, 0.05, steps=10, generator=torch.Generator().manual_seed(0)), y)
    apgd_acc = accuracy(model, attacks.get(name)(model, x, y, 0.05, steps=10), y)
    assert apgd_acc <= wilson_interval(round(pgd_acc * len(y)), len(y))[1]
    assert apgd_acc < 0.7 * accuracy(model, x, y)


@needs("torchattacks")
def test_apgd_averages_each_gradient_over_eot_draws_of_a_random_defense(fashion_classifier):
    model, x, y = fashion_classifier
    defend = RandomQualityJPEG()
    adv = attacks.apgd_ce(attacks.Defended(model, defend), x[:16], y[:16], 0.1, steps=4, eot_samples=3)
    # one pass to find the images already wrong, then 3 draws for the first gradient and for each step
    assert defend.calls == 1 + 3 * (4 + 1)
    assert accuracy(model, defend(adv), y[:16]) < accuracy(model, defend(x[:16]), y[:16])


def test_apgd_refuses_bad_settings(fashion_classifier):
    model, x, y = fashion_classifier
    with pytest.raises(ValueError, match="loss"):
        attacks.apgd(model, x, y, 0.1, loss="hinge")
    with pytest.raises(ValueError, match="restarts"):
        attacks.apgd(model, x, y, 0.1, restarts=0)
    binary = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2))
    with pytest.raises(ValueError, match="3 classes"):
        attacks.apgd_dlr(binary, x, y.clamp(max=1), 0.1)
