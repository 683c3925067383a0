"""The defense contract: declared parameters, typed text, one registry whatever was imported."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import fdjpeg
from fdjpeg import cli, datasets, defenses
from fdjpeg.defenses import Defense, Param
from fdjpeg.transforms import Defend

CHEAP = ["none", "fd", "jpeg", "slq", "webp-flip"]  # built in milliseconds, no weights or data
# Defenses whose declarations read their choices from torch modules (the test extra has no torch).
NEEDS_TORCH = {"fd-derived", "comdefend", "comdefend-grey", "ensemble-fashion"}
NO_TORCH = importlib.util.find_spec("torch") is None


def _torch_marks(name: str) -> list:
    return [pytest.mark.skipif(NO_TORCH and name in NEEDS_TORCH, reason=f"{name} needs torch")]


@pytest.fixture(scope="module")
def photo():
    return datasets.center_crop(datasets.sample_photos()["chelsea"], 96)


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, *args, "-c", code] if code else [sys.executable, *args],
                          capture_output=True, text=True, timeout=300, env=env)


# ------------------------------------------------------------------------------------------------
# Typed text: --param and evaluation configurations


def test_cli_subsampling_444_is_the_string_it_declares(photo, tmp_path):
    src, dst = tmp_path / "cat.png", tmp_path / "out.png"
    Image.fromarray(photo).save(src)
    args = ["defend", str(src), str(dst), "--defense", "jpeg", "--param", "subsampling=444", "--param", "quality=30",
            "--quiet"]
    assert cli.main(args) == 0
    out = np.asarray(Image.open(dst))
    np.testing.assert_array_equal(out, fdjpeg.jpeg(photo, 30, subsampling="444"))
    assert not np.array_equal(out, fdjpeg.jpeg(photo, 30, subsampling="420"))  # the parameter took effect


def test_text_is_read_as_each_declared_type():
    assert defenses.parse_params("jpeg", ["subsampling=444", "quality=20", "threads=none"]) == {
        "subsampling": "444", "quality": 20, "threads": None}
    assert defenses.parse_params("slq", ["qualities=20,40,60", "seed=7"]) == {"qualities": (20, 40, 60), "seed": 7}
    assert defenses.parse_params("slq", ["qualities=(20, 40)"])["qualities"] == (20, 40)
    assert defenses.parse_params("fd", ["table=band", "passes=2"]) == {"table": "band", "passes": 2}
    for word, value in [("true", True), ("yes", True), ("1", True), ("FALSE", False), ("no", False), ("0", False)]:
        assert defenses.parse_params("webp-flip", [f"flip_back={word}"]) == {"flip_back": value}


@pytest.mark.parametrize("name, item, words", [
    ("jpeg", "quality=20.9", "quality must be an integer in [1, 100], got '20.9'"),
    ("jpeg", "quality=1e2", "quality must be an integer"),
    ("jpeg", "quality=none", "quality must be an integer"),  # not optional
    ("webp-flip", "flip_back=maybe", "flip_back must be true or false, got 'maybe'"),
    ("slq", "qualities=20,x", "qualities must be a tuple"),
    ("jpeg", "quality", "key=value"),
    ("jpeg", "colour=red", "takes ['quality', 'subsampling', 'threads'], got unknown 'colour'"),
])
def test_text_that_is_not_the_declared_type_is_refused(name, item, words):
    with pytest.raises(ValueError) as exc:
        defenses.parse_params(name, [item])
    assert words in str(exc.value) and name in str(exc.value)


def test_eval_configurations_use_the_same_parser(photo):
    pytest.importorskip("torch")
    from fdjpeg.eval.configs import defense_config, parse_config

    assert parse_config("jpeg:subsampling=420") == ("jpeg", {"subsampling": "420"})
    assert parse_config("slq:qualities=20,40,seed=3,subsampling=444") == (
        "slq", {"qualities": (20, 40), "seed": 3, "subsampling": "444"})
    config = defense_config("jpeg:quality=50,subsampling=444")
    np.testing.assert_array_equal(config.make(None)(photo), fdjpeg.jpeg(photo, 50, subsampling="444"))
    with pytest.raises(ValueError, match="qualities must be a tuple"):
        defense_config("slq:qualities=20,0")


# ------------------------------------------------------------------------------------------------
# Checked without building


BAD = [
    ("jpeg", {"quality": 20.9}, TypeError),
    ("jpeg", {"quality": True}, TypeError),
    ("jpeg", {"quality": 0}, ValueError),
    ("jpeg", {"subsampling": ["420"]}, TypeError),
    ("jpeg", {"subsampling": 444}, TypeError),
    ("jpeg", {"subsampling": "411"}, ValueError),
    ("fd", {"passes": 0}, ValueError),
    ("fd", {"passes": 2**31}, ValueError),
    ("fd", {"threads": 2**31}, ValueError),
    ("fd", {"table": "derived"}, ValueError),
    ("webp-flip", {"flip_back": "yes"}, TypeError),
    ("webp-flip", {"method": 7}, ValueError),
    ("webp-flip", {"axis": "diagonal"}, ValueError),
    ("slq", {"qualities": (20.9, 40.2)}, TypeError),
    ("slq", {"qualities": (True, 50)}, TypeError),
    ("slq", {"qualities": ()}, ValueError),
    ("slq", {"qualities": "20,40"}, TypeError),
    ("slq", {"seed": -1}, ValueError),
    ("fd-derived", {"data": "imagenet"}, ValueError),
    ("ensemble-fashion", {"batch_size": 0}, ValueError),
]


@pytest.mark.parametrize("name, params, error", [pytest.param(*case, marks=_torch_marks(case[0])) for case in BAD])
def test_bad_parameters_name_the_parameter_the_value_and_what_is_expected(name, params, error):
    (key, value), = params.items()
    with pytest.raises(error) as exc:
        defenses.check(name, **params)
    message = str(exc.value)
    assert f"defense {name!r}" in message and f"{key} must be" in message and f"got {value!r}" in message
    with pytest.raises(error, match=f"{key} must be"):
        defenses.build(name, **params)  # build checks the same way first


def test_numpy_values_of_the_declared_kind_are_accepted():
    assert defenses.check("jpeg", quality=np.int64(50))["quality"] == 50
    assert defenses.check("slq", qualities=np.array([20, 40]).tolist(), seed=np.random.default_rng(1))["qualities"] == (20, 40)
    assert defenses.check("webp-flip", flip_back=np.bool_(True))["flip_back"] is True
    table = fdjpeg.tables.feature_distillation()
    assert defenses.check("fd", table=table)["table"] is table  # an array of steps goes to the factory as it is


def test_checking_comdefend_loads_no_weights(monkeypatch):
    pytest.importorskip("torch")
    from fdjpeg.defenses import comdefend

    loads = []
    real_load = comdefend.load
    monkeypatch.setattr(comdefend, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    for bad in ({"batch_size": 0}, {"gradient": "exact"}, {"variant": "cmyk"}, {"tile": 0}, {"device": 0}):
        with pytest.raises((ValueError, TypeError)):
            defenses.check("comdefend", **bad)
        with pytest.raises((ValueError, TypeError)):
            Defend("comdefend", **bad)
    assert defenses.check("comdefend-grey", gradient="logits", batch_size=8)["variant"] == "grey"
    Defend("comdefend-grey", batch_size=8)  # the transform checks now and builds on first use
    assert loads == []
    defend = defenses.build("comdefend-grey")
    assert len(loads) == 1 and isinstance(defend, Defense) and not defend.random and not defend.differentiable


# ------------------------------------------------------------------------------------------------
# The contract and the declarations


@pytest.mark.parametrize("name", [pytest.param(n, marks=_torch_marks(n)) for n in defenses.names()])
def test_every_default_passes_its_own_declaration_and_reads_back_from_text(name):
    spec = defenses.spec(name)
    assert spec.check({}) == spec.defaults
    for p in spec.params:
        assert p.check(p.default) == p.default
        text = "none" if p.default is None else ",".join(map(str, p.default)) if p.type is tuple else str(p.default)
        assert p.parse(text) == p.default
        assert p.help and p.expected()


@pytest.mark.parametrize("name", CHEAP)
def test_built_defenses_satisfy_the_protocol(name, photo):
    defend = defenses.build(name)
    assert isinstance(defend, Defense)
    assert defend.random == defenses.spec(name).random == (name == "slq")
    assert defend.differentiable == (name == "webp-flip")
    assert defend(photo[None]).shape == (1, *photo.shape)


def test_random_is_declared_by_the_defense_only():
    slq = defenses.build("slq", seed=0)
    assert defenses.is_random(slq) and type(slq).random  # the class says so; the registry reads it
    assert not defenses.is_random(lambda x: x)  # a callable that declares nothing is deterministic
    pytest.importorskip("torch")
    from fdjpeg.eval.configs import DefenseConfig

    assert "random" not in DefenseConfig.__dataclass_fields__


def test_declarations_are_strict():
    with pytest.raises(TypeError, match="type must be one of"):
        Param("x", list, [])
    quality = Param("quality", int, 75, "q", min=1, max=100)
    assert quality.expected() == "an integer in [1, 100]"
    assert Param("seed", int, None, "s", min=0, optional=True).expected() == "an integer >= 0 or None"


def test_classifiers_are_not_image_transforms():
    assert "ensemble-fashion" not in defenses.transform_names()
    with pytest.raises(ValueError, match="is a classifier"):
        Defend("ensemble-fashion")
    with pytest.raises(ValueError, match="is a classifier"):
        defenses.check_transform("ensemble-fashion")


# ------------------------------------------------------------------------------------------------
# One registry whatever was imported


def test_fd_derived_is_registered_by_the_defenses_package_alone():
    proc = _run("import sys, fdjpeg.defenses as d; assert 'fd-derived' in d.names(), d.names(); "
                "assert 'fdjpeg.eval' not in sys.modules and 'torch' not in sys.modules; print('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_fd_derived_through_the_command_and_the_transform(photo, tmp_path):
    pytest.importorskip("torch")
    from fdjpeg.datasets import training_images
    from fdjpeg.tables import derived_table

    want = fdjpeg.feature_distill(photo, derived_table(training_images("fashion-mnist")))
    np.testing.assert_array_equal(Defend("fd-derived")(photo), want)
    src, dst = tmp_path / "cat.png", tmp_path / "out.png"
    Image.fromarray(photo).save(src)
    proc = _run("", "-m", "fdjpeg", "defend", str(src), str(dst), "--defense", "fd-derived", "--quiet")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(dst)), want)


def test_transforms_and_ray_do_not_load_the_file_engine():
    proc = _run("import sys, fdjpeg.transforms, fdjpeg.integrations.ray; print('fdjpeg.batch' in sys.modules)")
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
    from fdjpeg.integrations.ray import DefendBatch

    images = np.stack([datasets.center_crop(datasets.sample_photos()["coffee"], 64)] * 2)
    out = DefendBatch("jpeg", quality=40, subsampling="444")({"image": images})["image"]
    np.testing.assert_array_equal(out, fdjpeg.jpeg(images, 40, subsampling="444"))
