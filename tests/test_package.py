"""The package as installed: one version, the Pillow it needs, back ends that do not import each other."""

import ast
import importlib.metadata
import pathlib

import PIL
import pytest

import fdjpeg

PACKAGE = pathlib.Path(fdjpeg.__file__).parent


def test_the_version_is_written_once():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    # pyproject.toml reads __version__ from the package, so the installed metadata cannot disagree with it
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("fdjpeg") == fdjpeg.__version__


def test_pillow_requirement_covers_keep_rgb():
    # keep_rgb (RGB JPEG files for Feature Distillation) exists from Pillow 10.2; older ones ignore it
    (pillow,) = [r for r in importlib.metadata.requires("fdjpeg") if r.lower().startswith("pillow")]
    assert pillow.replace(" ", "").lower() == "pillow>=10.2"
    assert tuple(int(p) for p in PIL.__version__.split(".")[:2]) >= (10, 2)


def fdjpeg_imports(module: str) -> set:
    """The fdjpeg modules ``module`` (a file of the package) imports anywhere, functions included."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fdjpeg"):
            found.add(node.module.split(".", 1)[1] if "." in node.module else node.module)
    return found


def test_back_ends_share_a_leaf_and_do_not_import_each_other():
    assert fdjpeg_imports("_pipeline") <= {"_core"}
    assert fdjpeg_imports("_autograd") == set()
    assert "ops" not in fdjpeg_imports("_gpu")
    assert {"_pipeline", "_gpu"} <= fdjpeg_imports("ops")
    assert "torch" not in fdjpeg_imports("ops")
