"""fdjpeg's hand-written attacks pinned to independent implementations: torchattacks and IBM ART run
on the same model, images and budget, without a defense and through a defense differentiated as the
identity (BPDA), must leave the same adversarial accuracy within a binomial bound.

L-inf attacks (FGSM, PGD): each accuracy must lie in the other's 95% Wilson interval. Minimal-L2
attacks (DeepFool, CW) are compared by their accuracy under an L2 radius (an image counts as robust if
the clean model is right and the attack either failed or needed more than the radius): fdjpeg's must
not exceed the reference's upper Wilson bound. That side only, because the returned images are
checked as they are (real predictions, real norms): finding smaller adversarial perturbations than a
reference is no error, finding larger ones is the regression that would overstate a defense.
"""

import importlib

import numpy as np
import pytest
from eval_requirements import needs

torch = pytest.importorskip("torch")

import fdjpeg
from fdjpeg import attacks
from fdjpeg.eval.report import wilson_interval

# CI (FDJPEG_REQUIRE_EVAL=1) fails rather than skips without the references
pytestmark = [pytest.mark.usefixtures("torch_one_thread"), needs("torchattacks", "art")]

FGSM_EPS = 0.1
PGD_EPS, PGD_STEPS = 0.05, 10  # budgets where accuracy is mid-range, where a weaker attack shows most
RADIUS = 0.75  # L2 radius for DeepFool / CW (Fashion-MNIST: about their median perturbation)
MINIMAL_N = 32  # the references' DeepFool (per image) and ART's CW (numpy line search) are slow
CW = dict(c=1.0, steps=50, lr=0.05)


@pytest.fixture(scope="module")
def torchattacks():
    return importlib.import_module("torchattacks")


@pytest.fixture(scope="module")
def setup(fashion_classifier):
    model, x, y = fashion_classifier
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x, y


@pytest.fixture(scope="module", params=["none", "jpeg:quality=50"])
def target(request, setup):
    """``(name, attacked module, defense)``: the bare model, or the model behind JPEG 50 attacked with BPDA."""
    model, _, _ = setup
    if request.param == "none":
        return "none", model, None
    defense = fdjpeg.defenses.build("jpeg", quality=50)
    return request.param, attacks.Defended(model, defense), defense


def correct(model, defense, adv, y, x=None, radius=None):
    """Images classified right after ``defense``; with ``radius``: right on the clean image and either
    right on ``adv`` or perturbed by more than ``radius`` in L2."""
    with torch.no_grad():
        right = model(adv if defense is None else defense(adv)).argmax(1) == y
        if radius is not None:
            clean = model(x if defense is None else defense(x)).argmax(1) == y
            right = clean & (right | ((adv - x).flatten(1).norm(dim=1) > radius))
    return int(right.sum())


def assert_agree(ours, reference, n, what):
    lo_r, hi_r = wilson_interval(reference, n)
    lo_o, hi_o = wilson_interval(ours, n)
    assert lo_r <= ours / n <= hi_r and lo_o <= reference / n <= hi_o, \
        f"{what}: fdjpeg {ours}/{n} vs reference {reference}/{n} (95% Wilson [{lo_r:.3f}, {hi_r:.3f}])"


def assert_not_weaker(ours, reference, n, what):
    hi = wilson_interval(reference, n)[1]
    assert ours / n <= hi, f"{what}: fdjpeg leaves {ours}/{n} robust, reference {reference}/{n} (upper bound {hi:.3f})"


def ours_linf(name, module, x, y, **kw):
    if name == "fgsm":
        return attacks.fgsm(module, x, y, FGSM_EPS)
    return attacks.pgd(module, x, y, PGD_EPS, steps=PGD_STEPS, generator=torch.Generator().manual_seed(0), **kw)


# -- torchattacks -----------------------------------------------------------------------------------


def torchattacks_linf(torchattacks, name, module, x, y):
    if name == "fgsm":
        return torchattacks.FGSM(module, eps=FGSM_EPS)(x, y)
    return torchattacks.PGD(module, eps=PGD_EPS, alpha=2.5 * PGD_EPS / PGD_STEPS, steps=PGD_STEPS, random_start=True)(x, y)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_linf_attacks_agree_with_torchattacks(torchattacks, setup, target, name):
    model, x, y = setup
    label, module, defense = target
    ours = correct(model, defense, ours_linf(name, module, x, y), y)
    ref = correct(model, defense, torchattacks_linf(torchattacks, name, module, x, y), y)
    assert_agree(ours, ref, len(y), f"{name} / {label}")
    if name == "fgsm":  # one deterministic step: the same images
        assert ours == ref


@pytest.mark.parametrize("name", ["deepfool", "cw"])
def test_minimal_attacks_not_weaker_than_torchattacks(torchattacks, setup, target, name):
    model, x, y = setup
    x, y = x[:MINIMAL_N], y[:MINIMAL_N]
    label, module, defense = target
    if name == "deepfool":
        ours_adv = attacks.deepfool(module, x, y, overshoot=0.02, max_iter=50)
        ref_adv = torchattacks.DeepFool(module, steps=50, overshoot=0.02)(x, y)
    else:  # one constant c, no binary search: torchattacks' CW
        ours_adv = attacks.carlini_wagner_l2(module, x, y, initial_const=CW["c"], binary_search_steps=1,
                                             steps=CW["steps"], lr=CW["lr"])
        ref_adv = torchattacks.CW(module, c=CW["c"], kappa=0, steps=CW["steps"], lr=CW["lr"])(x, y)
    ours = correct(model, defense, ours_adv, y, x, RADIUS)
    ref = correct(model, defense, ref_adv, y, x, RADIUS)
    assert_not_weaker(ours, ref, len(y), f"{name} / {label}")


def test_a_wrong_step_size_lands_outside_the_bound(torchattacks, setup):
    """The bound has teeth: PGD with a tenth of its step (a plausible slip) is caught."""
    model, x, y = setup
    ref = correct(model, None, torchattacks_linf(torchattacks, "pgd", model, x, y), y)
    broken = correct(model, None, ours_linf("pgd", model, x, y, step_size=0.1 * 2.5 * PGD_EPS / PGD_STEPS), y)
    with pytest.raises(AssertionError, match="fdjpeg"):
        assert_agree(broken, ref, len(y), "pgd with a tenth of the step")


# -- IBM ART ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def art_classifier(setup, target):
    """ART's PyTorchClassifier of the model; the defense as an ART preprocessing defence (ART's own
    chain, with fdjpeg's BPDA gradient rule from :mod:`fdjpeg.integrations.art`)."""
    from art.estimators.classification import PyTorchClassifier
    from fdjpeg.integrations.art import ArtDefense

    model, x, _ = setup
    label, _, defense = target
    defences = None if defense is None else [ArtDefense("jpeg", channels_first=True, quality=50)]
    return PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                             clip_values=(0.0, 1.0), preprocessing_defences=defences)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_linf_attacks_agree_with_art(setup, target, art_classifier, name):
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    model, x, y = setup
    label, module, defense = target
    if name == "fgsm":
        art_attack = FastGradientMethod(art_classifier, norm=np.inf, eps=FGSM_EPS, batch_size=len(x))
    else:
        art_attack = ProjectedGradientDescent(art_classifier, norm=np.inf, eps=PGD_EPS, eps_step=2.5 * PGD_EPS / PGD_STEPS,
                                              max_iter=PGD_STEPS, num_random_init=1, batch_size=len(x), verbose=False)
    ref_adv = torch.from_numpy(art_attack.generate(x.numpy(), y=y.numpy()))
    ours = correct(model, defense, ours_linf(name, module, x, y), y)
    ref = correct(model, defense, ref_adv, y)
    assert_agree(ours, ref, len(y), f"{name} / {label} (ART)")


def test_deepfool_not_weaker_than_art(setup, target, art_classifier):
    from art.attacks.evasion import DeepFool

    model, x, y = setup
    x, y = x[:MINIMAL_N], y[:MINIMAL_N]
    label, module, defense = target
    ref_adv = torch.from_numpy(DeepFool(art_classifier, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=len(x),
                                        verbose=False).generate(x.numpy()))
    ours = correct(model, defense, attacks.deepfool(module, x, y, overshoot=0.02, max_iter=50), y, x, RADIUS)
    assert_not_weaker(ours, correct(model, defense, ref_adv, y, x, RADIUS), len(y), f"deepfool / {label} (ART)")


def test_cw_not_weaker_than_art(setup):
    from art.attacks.evasion import CarliniL2Method
    from art.estimators.classification import PyTorchClassifier

    model, x, y = setup
    x, y = x[:MINIMAL_N], y[:MINIMAL_N]
    clf = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0))
    ref_adv = torch.from_numpy(CarliniL2Method(clf, confidence=0.0, learning_rate=CW["lr"], binary_search_steps=1,
                                               max_iter=CW["steps"], initial_const=CW["c"], batch_size=len(x),
                                               verbose=False).generate(x.numpy(), y=y.numpy()))
    ours_adv = attacks.carlini_wagner_l2(model, x, y, initial_const=CW["c"], binary_search_steps=1, steps=CW["steps"], lr=CW["lr"])
    assert_not_weaker(correct(model, None, ours_adv, y, x, RADIUS), correct(model, None, ref_adv, y, x, RADIUS),
                      len(y), "cw (ART)")
