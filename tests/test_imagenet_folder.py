"""A user's own labelled images: the ImageNet validation layout (one folder per WordNet ID) and any
labelled folder with a class map, built here from foolbox's 20 labelled ImageNet validation images."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from eval_requirements import needs

from fdjpeg import datasets

pytestmark = needs("foolbox")


@pytest.fixture(scope="module")
def foolbox_files():
    """foolbox's labelled ImageNet JPEGs: ``{file name: class index}`` (the index is in the name)."""
    folder = os.path.join(datasets.package_dir("foolbox", datasets.FOOLBOX_INSTALL), "data")
    names = sorted(n for n in os.listdir(folder) if n.startswith("imagenet_") and n.endswith(".jpg"))
    return folder, {n: int(n[:-4].split("_")[2]) for n in names}


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory, foolbox_files):
    """The standard validation layout: ``root/<WordNet ID>/<name>.JPEG``."""
    folder, labels = foolbox_files
    root = tmp_path_factory.mktemp("imagenet-val")
    wnids = datasets.imagenet_wnids()
    for name, label in labels.items():
        os.makedirs(root / wnids[label], exist_ok=True)
        shutil.copy(os.path.join(folder, name), root / wnids[label] / (name[:-4] + ".JPEG"))
    return root


def test_the_shipped_list_is_imagenet_in_class_index_order():
    wnids = datasets.imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000
    # the class index of ImageNet-1k models is the position of the WordNet ID in sorted order
    assert wnids == sorted(wnids)
    assert (wnids[0], wnids[1], wnids[609], wnids[999]) == ("n01440764", "n01443537", "n03594945", "n15075141")
    with open(datasets.IMAGENET_WNIDS_FILE, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == "70002b0ff5de60a3a17a82dbfcff291931f96225ddf941ad2e182fc39e183d15"


def test_wordnet_folders_give_the_true_labels_and_the_usual_preprocessing(imagenet_dir, foolbox_files):
    images, labels, paths = datasets.imagenet_folder(str(imagenet_dir))
    _, truth = foolbox_files
    by_name = {os.path.basename(p)[:-5] + ".jpg": int(label) for p, label in zip(paths, labels)}
    assert by_name == truth
    ref_images, ref_labels = datasets.foolbox_imagenet(size=224)
    order = [sorted(truth).index(os.path.basename(p)[:-5] + ".jpg") for p in paths]
    assert np.array_equal(images, ref_images[order]) and np.array_equal(labels, ref_labels[order])


def test_a_subset_is_class_balanced_and_seeded(imagenet_dir):
    # 19 classes (two images of class 609): 19 images are one of each class
    _, labels, paths = datasets.imagenet_folder(str(imagenet_dir), 19, seed=0)
    assert sorted(labels.tolist()) == sorted(set(labels.tolist())) and len(labels) == 19
    assert datasets.imagenet_folder(str(imagenet_dir), 19, seed=0)[2] == paths
    picks = {tuple(datasets.imagenet_folder(str(imagenet_dir), 5, seed=s, size=32)[2]) for s in range(4)}
    assert len(picks) > 1  # the seed chooses


def test_balanced_subset_takes_turns_between_classes():
    labels = np.array([0] * 50 + [1] * 3 + [2] * 10)
    for seed in range(3):
        pick = datasets.balanced_subset(labels, 12, seed)
        counts = np.bincount(labels[pick], minlength=3)
        assert counts.tolist() == [5, 3, 4] or counts.tolist() == [4, 3, 5]
        assert len(set(pick.tolist())) == 12
    assert len(datasets.balanced_subset(labels, 1000, 0)) == len(labels)
    with pytest.raises(ValueError, match="at least 1"):
        datasets.balanced_subset(labels, 0)


@pytest.mark.parametrize("form", ["json", "pairs", "lines"])
def test_any_folder_with_a_class_map(tmp_path, foolbox_files, form):
    folder, truth = foolbox_files
    chosen = {"espresso-ish": "imagenet_17_22.jpg", "jeeps": "imagenet_06_609.jpg", "ducks": "imagenet_15_99.jpg"}
    for cls, name in chosen.items():
        os.makedirs(tmp_path / "data" / cls)
        shutil.copy(os.path.join(folder, name), tmp_path / "data" / cls / "a.jpg")
    mapping = {cls: truth[name] for cls, name in chosen.items()}
    path = tmp_path / "classes"
    if form == "json":
        path.write_text(json.dumps(mapping))
    elif form == "pairs":
        path.write_text("# folder index\n" + "".join(f"{k} {v}\n" for k, v in mapping.items()))
    else:  # line i is class i, like the shipped WordNet list
        names = ["unused"] * 1000
        for k, v in mapping.items():
            names[v] = k
        names = [n if n != "unused" else f"unused{i}" for i, n in enumerate(names)]
        path.write_text("\n".join(names) + "\n")
    assert datasets.read_class_map(str(path))["jeeps"] == 609
    _, labels, paths = datasets.image_folder(str(tmp_path / "data"), datasets.read_class_map(str(path)))
    assert {os.path.basename(os.path.dirname(p)): int(label) for p, label in zip(paths, labels)} == mapping


def test_bad_folders_and_maps_are_explained(tmp_path, imagenet_dir):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        datasets.imagenet_folder(str(tmp_path / "missing"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="WordNet ID"):
        datasets.imagenet_folder(str(tmp_path / "flat"))
    (tmp_path / "flat" / "n99999999").mkdir()
    with pytest.raises(ValueError, match="not in the class map: n99999999"):
        datasets.imagenet_folder(str(tmp_path / "flat"))
    (tmp_path / "map.txt").write_text("a 1\nb\n")
    with pytest.raises(ValueError, match="every line"):
        datasets.read_class_map(str(tmp_path / "map.txt"))
    (tmp_path / "map.json").write_text('{"a": "x"}')
    with pytest.raises(ValueError, match="integer"):
        datasets.read_class_map(str(tmp_path / "map.json"))


# -- through the evaluation ------------------------------------------------------------------------


def test_eval_runs_on_an_imagenet_folder(imagenet_dir, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("fdjpeg.models")
    from fdjpeg import models
    from fdjpeg.cli import main

    out = tmp_path / "out"
    args = ["eval", "--models", "efficientnet-lite0", "--data", f"imagenet:{imagenet_dir}", "-n", "2", "--seed", "1",
            "--defenses", "none", "jpeg:quality=50", "--attacks", "fgsm", "--epsilons", "2/255",
            "--threat-models", "gray-box", "--no-progress", "--threads", "2", "--out", str(out)]
    assert main(args) == 0
    data = json.loads((out / "results.json").read_text())
    images, labels, _ = datasets.imagenet_folder(str(imagenet_dir), 2, seed=1)
    with torch.no_grad():
        pred = models.load_classifier("efficientnet-lite0")(models.common.to_model_input(images)).argmax(1)
    clean = next(r for r in data["records"] if (r["defense"], r["attack"]) == ("none", "clean"))
    assert clean["n"] == 2 and clean["correct"] == int((pred.numpy() == labels).sum())
    assert data["meta"]["data"] == f"imagenet:{imagenet_dir}"
    assert "drawn class-balanced with seed 1" in data["meta"]["tasks"]["efficientnet-lite0"]["description"]
    assert "efficientnet-lite0" in capsys.readouterr().out


def test_eval_refuses_bad_data_arguments(imagenet_dir, tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("fdjpeg.models")
    from fdjpeg.cli import main

    common = ["eval", "--no-progress", "--out", str(tmp_path / "out"), "--attacks", "fgsm"]
    cases = [
        (["--data", f"folder:{imagenet_dir}"], "class map"),
        (["--data", f"imagenet:{imagenet_dir}", "--models", "fashion-cnn"], "ImageNet-1k"),
        (["--data", f"cifar:{imagenet_dir}"], "imagenet:PATH"),
        (["--class-map", str(tmp_path)], "--data folder"),
    ]
    for extra, message in cases:
        assert main(common + extra) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "big.json").write_text(json.dumps({"a": 5000}))
    assert main(common + ["--data", f"folder:{imagenet_dir}", "--class-map", str(tmp_path / "big.json")]) == 2
    assert "0..999" in capsys.readouterr().err
