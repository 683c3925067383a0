"""The evaluation harness, checked cell by cell against the attacks and defenses run by hand."""

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fdjpeg
from eval_requirements import needs
from fdjpeg import attacks, tables
from fdjpeg.eval import Task, evaluate
from fdjpeg.eval.configs import attack_config, defense_config, parse_config, parse_value


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def task(fashion_classifier):
    model, x, y = fashion_classifier
    train = fdjpeg.datasets.fashion_mnist("train")[0][:2000]
    return Task("fashion-tiny", model, x[:24], y[:24], (0.1, 0.2), train_images=train, description="24 test images")


@pytest.fixture(scope="module")
def results(task):
    return evaluate(
        [task], ["jpeg:quality=50", "fd", "fd:table=derived"], ["fgsm", "pgd:steps=3", "deepfool:max_iter=10"],
        epsilons=[0.0, 0.1, 0.2], n_images=24, minimal_n=8, batch_size=10, progress=False,
    )


def predict_accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).sum().item() / len(y)


def test_every_cell_is_there(results):
    defenses = ["none", "jpeg:quality=50", "fd", "fd:table=derived"]
    # clean: one per defense; budgeted: (gray-box + adaptive) per defense per eps; deepfool: the same once.
    assert len(results.records) == len(defenses) * (1 + 2 * 3 * 2 + 2)
    assert {r["defense"] for r in results.records} == set(defenses)
    assert {r["n"] for r in results.records if r["attack"] == "deepfool:max_iter=10"} == {8}


def test_clean_and_gray_box_cells_match_a_run_by_hand(results, task):
    model, x, y = task.model, task.images, task.labels
    jpeg50 = fdjpeg.defenses.build("jpeg", quality=50)
    assert results.accuracy(task.name, "none") == predict_accuracy(model, x, y)
    assert results.accuracy(task.name, "jpeg:quality=50") == predict_accuracy(model, jpeg50(x), y)
    adv = torch.cat([attacks.fgsm(model, x[i : i + 10], y[i : i + 10], 0.2) for i in range(0, 24, 10)])
    assert results.accuracy(task.name, "none", "fgsm", 0.2, "gray-box") == predict_accuracy(model, adv, y)
    assert results.accuracy(task.name, "jpeg:quality=50", "fgsm", 0.2, "gray-box") == predict_accuracy(model, jpeg50(adv), y)


def test_adaptive_cells_match_a_bpda_run_by_hand(results, task):
    model, x, y = task.model, task.images, task.labels
    fd = fdjpeg.defenses.build("fd")
    defended = attacks.Defended(model, fd)
    adv = torch.cat([attacks.fgsm(defended, x[i : i + 10], y[i : i + 10], 0.1) for i in range(0, 24, 10)])
    assert results.accuracy(task.name, "fd", "fgsm", 0.1, "adaptive") == predict_accuracy(model, fd(adv), y)
    # Without a defense both threat models are the same attack.
    for eps in (0.1, 0.2):
        assert results.accuracy(task.name, "none", "pgd:steps=3", eps, "adaptive") == \
            results.accuracy(task.name, "none", "pgd:steps=3", eps, "gray-box")


def test_eps_zero_is_clean_accuracy(results, task):
    for d in ("none", "fd"):
        for tm in ("gray-box", "adaptive"):
            assert results.accuracy(task.name, d, "fgsm", 0.0, tm) == results.accuracy(task.name, d)


def test_derived_table_comes_from_training_images_only(task):
    built = defense_config("fd:table=derived").make(task)
    table = tables.from_statistics(task.train_images[..., None], color="none")
    x = task.images[:4]
    assert torch.equal(built(x), fdjpeg.feature_distill(x, table))
    eval_table = tables.from_statistics((task.images.numpy()[:, 0] * 255).round().astype(np.uint8)[..., None])
    assert not np.array_equal(table, eval_table)


def test_files_hold_every_number(results, tmp_path):
    paths = results.write(str(tmp_path / "report"))
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(results.records)
    assert [float(r["accuracy"]) for r in rows] == [r["accuracy"] for r in results.records]
    data = json.loads(open(paths["json"]).read())
    assert data["records"] == json.loads(json.dumps(results.records))
    md = open(paths["markdown"]).read()
    for label in ("jpeg:quality=50", "fd:table=derived", "gray-box", "adaptive", "pgd 0.2", "`pgd:steps=3`"):
        assert label in md
    from PIL import Image

    for kind in ("plot", "examples"):
        with Image.open(paths[kind]) as im:
            assert im.format == "PNG" and im.size[0] > 300


class RandomJPEG:
    random = True

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.calls = 0

    def __call__(self, t):
        self.calls += 1
        return fdjpeg.jpeg(t, int(self.rng.choice([20, 40, 60, 80])))


def test_random_defense_gets_eot_in_the_adaptive_attack(task):
    defend = RandomJPEG()
    res = evaluate([task], [("random-jpeg", defend)], ["fgsm"], epsilons=[0.1], n_images=8,
                   threat_models=["adaptive"], eot_samples=3, batch_size=8, progress=False)
    # probe 1 + clean pass 1 + adaptive attack 3 draws + its evaluation 1 + example grid 1 (no gray-box pass)
    assert defend.calls == 1 + 1 + 3 + 1 + 1
    assert {r["threat_model"] for r in res.records} == {"-", "adaptive"}


def test_configurations_parse_and_bad_ones_are_refused():
    assert parse_config("jpeg:quality=50,subsampling=444") == ("jpeg", {"quality": 50, "subsampling": "444"})
    assert parse_config("pgd:steps=20, step_size=2/255, random_start=false") == (
        "pgd", {"steps": 20, "step_size": pytest.approx(2 / 255), "random_start": False})
    assert parse_value("8/255") == pytest.approx(8 / 255)
    assert attack_config("bim").params == {"random_start": False}
    assert attack_config("cw").budgeted is False and attack_config("fgsm").budgeted
    with pytest.raises(ValueError, match="known"):
        defense_config("blur")
    with pytest.raises(ValueError, match="quality"):
        defense_config("jpeg:quality=500")
    with pytest.raises(ValueError, match="key=value"):
        parse_config("jpeg:50")
    with pytest.raises(ValueError, match="unknown attack"):
        attack_config("spsa")
    with pytest.raises(ValueError, match="epsilons"):
        attack_config("pgd:eps=0.1")


def test_evaluate_refuses_bad_arguments(task):
    with pytest.raises(ValueError, match="threat model"):
        evaluate([task], threat_models=["white-box"], progress=False)
    with pytest.raises(ValueError, match="distinct"):
        evaluate([task], ["fd", "fd"], progress=False)
    with pytest.raises(ValueError, match="epsilons"):
        evaluate([task], epsilons=[2], progress=False)


def test_command_reports_bad_configuration(capsys, tmp_path):
    from fdjpeg.cli import main

    assert main(["eval", "--defenses", "jpeg:quality=0", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "quality" in capsys.readouterr().err


def test_held_out_crops_come_from_other_photographs():
    from fdjpeg.datasets import PHOTO_HOLDOUT_EVERY, split_photo_crops

    crops = {f"src/photo{p}/{c}": None for p in range(9) for c in ("center", "r0c0", "r0c1")}
    evaluated, held = split_photo_crops(crops)
    assert sorted(evaluated + held) == sorted(crops)
    photo = lambda name: name.rsplit("/", 1)[0]  # noqa: E731
    assert {photo(n) for n in evaluated}.isdisjoint({photo(n) for n in held})
    assert len({photo(n) for n in held}) == 9 // PHOTO_HOLDOUT_EVERY


def test_task_refuses_mismatched_labels(fashion_classifier):
    model, x, y = fashion_classifier
    with pytest.raises(ValueError, match="labels"):
        Task("t", model, x[:4], y[:3], (0.1,))


def test_a_defense_that_fails_on_the_images_is_reported_and_skipped(task, capsys):
    def colour_only(t):
        if t.shape[1] != 3:
            raise ValueError(f"needs 3 channels, got {t.shape[1]}")
        return t

    res = evaluate([task], ["fd", ("colour-only", colour_only)], ["fgsm"], epsilons=[0.1], n_images=8,
                   batch_size=8, progress=False)
    assert "colour-only" in capsys.readouterr().err
    assert "needs 3 channels" in res.meta["skipped"][task.name]["colour-only"]
    assert {r["defense"] for r in res.records} == {"none", "fd"}
    assert "Skipped colour-only" in res.markdown()


def test_fast_mode_runs_on_the_shipped_fashion_classifier(tmp_path, capsys):
    pytest.importorskip("fdjpeg.models")
    from fdjpeg.cli import main

    out = tmp_path / "fast"
    assert main(["eval", "--fast", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    data = json.loads((out / "results.json").read_text())
    acc = {(r["defense"], r["attack"], r["epsilon"], r["threat_model"]): r["accuracy"] for r in data["records"]}
    assert acc[("none", "clean", None, "-")] > 0.8  # the shipped CNN scores about 90% on the test set
    assert acc[("none", "pgd:steps=5", 0.3, "gray-box")] < 0.1
    assert {p.name for p in out.iterdir()} >= {"results.md", "results.csv", "results.json", "accuracy_vs_epsilon.png", "examples.png"}
    assert "fashion-cnn" in capsys.readouterr().out


class VotingClassifier:
    """A defense that is a classifier (as fdjpeg's JPEG ensembles are): majority of the task's model on
    JPEG 30/50/70 views, exposed through ``as_classifier()``."""

    def __init__(self, model):
        self.model = model

    def as_classifier(self):
        model = self.model

        class Vote(torch.nn.Module):
            def forward(self, x):
                views = [model(attacks.straight_through(lambda t, q=q: fdjpeg.jpeg(t, q), x)) for q in (30, 50, 70)]
                votes = torch.stack([v.argmax(1) for v in views])
                return torch.nn.functional.one_hot(votes.mode(0).values, 10).float() + sum(views) * 1e-3

        return Vote()


def test_a_classifier_defense_replaces_the_model(task):
    vote = VotingClassifier(task.model)
    res = evaluate([task], [("vote", vote)], ["fgsm"], epsilons=[0.1], n_images=16, batch_size=16, progress=False)
    x, y = task.images[:16], task.labels[:16]
    assert res.accuracy(task.name, "vote") == predict_accuracy(vote.as_classifier(), x, y)
    assert next(r for r in res.records if r["defense"] == "vote")["defense_s_per_image"] is None
    adv = attacks.fgsm(task.model, x, y, 0.1)
    assert res.accuracy(task.name, "vote", "fgsm", 0.1, "gray-box") == predict_accuracy(vote.as_classifier(), adv, y)


# -- uncertainty -----------------------------------------------------------------------------------


def test_wilson_interval_matches_scipy_and_the_formula():
    stats = pytest.importorskip("scipy.stats")
    from fdjpeg.eval.report import wilson_interval

    for k, n in [(0, 20), (17, 20), (20, 20), (1, 1), (0, 1), (150, 300), (3, 1000), (9999, 10000)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
        z, p = 1.959963984540054, k / n  # the textbook form: roots of (p - q)^2 = z^2 q (1 - q) / n
        q = np.roots([1 + z * z / n, -(2 * p + z * z / n), p * p])
        assert sorted(wilson_interval(k, n)) == pytest.approx(sorted(np.clip(q.real, 0, 1)), abs=1e-9)
    ci99 = stats.binomtest(17, 20).proportion_ci(confidence_level=0.99, method="wilson")
    assert wilson_interval(17, 20, 0.99) == pytest.approx((ci99.low, ci99.high), abs=1e-12)
    with pytest.raises(ValueError, match="correct"):
        wilson_interval(21, 20)


def test_every_accuracy_in_the_files_has_its_interval(results, tmp_path):
    from fdjpeg.eval.report import wilson_interval

    paths = results.write(str(tmp_path / "report"))
    for r in results.records:
        assert (r["ci_low"], r["ci_high"]) == wilson_interval(r["correct"], r["n"])
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["ci_low"]), float(r["ci_high"])) for r in rows] == [(r["ci_low"], r["ci_high"]) for r in results.records]
    records = json.loads(open(paths["json"]).read())["records"]
    assert all("ci_low" in r and "ci_high" in r for r in records)
    md = open(paths["markdown"]).read()
    clean = next(r for r in results.records if (r["defense"], r["attack"]) == ("none", "clean"))
    assert f"| none | {100 * clean['accuracy']:.1f} [{100 * clean['ci_low']:.0f}, {100 * clean['ci_high']:.0f}] |" in md
    assert "95% Wilson intervals" in md


@needs("torchattacks")
def test_apgd_cells_are_torchattacks_apgd_through_the_defense(task):
    res = evaluate([task], ["fd"], ["apgd-ce:steps=4", "apgd-dlr:steps=4"], epsilons=[0.1], n_images=8,
                   batch_size=8, progress=False)
    model, x, y = task.model, task.images[:8], task.labels[:8]
    fd = fdjpeg.defenses.build("fd")
    for loss in ("ce", "dlr"):
        label = f"apgd-{loss}:steps=4"
        adv = attacks.apgd(attacks.Defended(model, fd), x, y, 0.1, loss=loss, steps=4)
        assert res.accuracy(task.name, "fd", label, 0.1, "adaptive") == predict_accuracy(model, fd(adv), y)
        gray = attacks.apgd(model, x, y, 0.1, loss=loss, steps=4)
        assert res.accuracy(task.name, "fd", label, 0.1, "gray-box") == predict_accuracy(model, fd(gray), y)
    assert attack_config("apgd").name == "apgd-ce" and attack_config("apgd-dlr").budgeted
