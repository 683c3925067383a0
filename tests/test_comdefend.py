import os

import numpy as np
import pytest
torch = pytest.importorskip("torch")
from torch import nn

from fdjpeg import defenses
from fdjpeg.defenses import comdefend as cd

# The widths of the paper / the authors' code, written out here independently of the module.
PAPER = {
    "rgb": ([3, 16, 32, 64, 128, 256, 128, 64, 32, 12], [12, 32, 64, 128, 256, 128, 64, 32, 16, 3]),
    "grey": ([1, 32, 64, 128, 256, 128, 64, 64, 32, 4], [4, 32, 64, 64, 128, 256, 128, 64, 32, 1]),
}
# Reconstruction PSNR floors (dB) on the held-out inputs of the test below: the shipped weights gave
# 29.09 (RGB, a crop of the held-out motorcycle_right at full size; the weights before them gave 25.02),
# 29.35 (RGB residual) and 29.19 (grey, 64 Fashion-MNIST test images); floors are 1 dB lower.
PSNR_FLOOR = {("rgb", "plain"): 28.0, ("rgb", "residual"): 28.3, ("grey", "plain"): 28.1}


def _formula(widths):
    return sum(3 * 3 * cin * cout + cout for cin, cout in zip(widths[:-1], widths[1:]))


@pytest.mark.parametrize("variant", ["rgb", "grey"])
def test_layer_shapes_and_parameter_counts(variant):
    com_w, rec_w = PAPER[variant]
    model = cd.ComDefend(variant)
    for net, widths in ((model.com, com_w), (model.rec, rec_w)):
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert [tuple(c.weight.shape) for c in convs] == [(o, i, 3, 3) for i, o in zip(widths[:-1], widths[1:])]
        assert all(c.padding == (1, 1) and c.stride == (1, 1) for c in convs)
        assert sum(isinstance(m, nn.ELU) for m in net.modules()) == len(convs) - 1
        assert sum(p.numel() for p in net.parameters()) == _formula(widths)
    assert _formula(com_w) + _formula(rec_w) == cd.conv_parameter_count(com_w) + cd.conv_parameter_count(rec_w)


def test_code_is_binary_and_any_size_works():
    torch.manual_seed(0)
    model = cd.ComDefend("rgb").eval()
    x = torch.rand(2, 3, 37, 45)
    code = model.encode(x)
    assert code.shape == (2, 12, 37, 45)
    assert set(torch.unique(code).tolist()) <= {0.0, 1.0}
    assert code.min() == 0 and code.max() == 1
    with torch.no_grad():
        full, tiled = model(x), cd.ComDefend("rgb", tile=32).eval()
        tiled.load_state_dict(model.state_dict())
        assert tiled(x).shape == full.shape == x.shape
    # the first patch of the tiled run is the model applied to that patch alone
    with torch.no_grad():
        torch.testing.assert_close(tiled(x)[:, :, :32, :32], model(x[:, :, :32, :32]))


def test_input_shift_and_sigmoid_output():
    model = cd.ComDefend("grey").eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.com(x), model.com.net(x - 0.5))
        y = model(x)
    assert 0 <= y.min() and y.max() <= 1


def test_training_loss_matches_definition():
    torch.manual_seed(1)
    model = cd.ComDefend("grey")
    x = torch.rand(3, 1, 12, 12)
    loss, mse = cd.training_loss(model, x, torch.Generator().manual_seed(5))
    logits = model.com(x)
    noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5)) * 20.0
    code = torch.sigmoid(logits - noise)
    ref_mse = torch.mean((model.rec(code) - x) ** 2)
    torch.testing.assert_close(mse, ref_mse)
    torch.testing.assert_close(loss, ref_mse + 1e-4 * torch.mean(code**2))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_residual_variant():
    model = cd.ComDefend("rgb", "residual").eval()
    blocks = [m for m in model.modules() if isinstance(m, cd.Bottleneck)]
    assert blocks and all(isinstance(b.shortcut[0], nn.Conv2d) and b.shortcut[0].kernel_size == (1, 1) for b in blocks)
    assert [b.body[i].kernel_size for b in blocks[:1] for i in (0, 3, 6)] == [(1, 1), (3, 3), (1, 1)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4 * len(blocks)
    heads = [model.com.net[-1], model.rec.net[-1]]
    assert [(h.kernel_size, h.out_channels) for h in heads] == [((1, 1), 12), ((1, 1), 3)]
    with torch.no_grad():
        assert model(torch.rand(2, 3, 20, 24)).shape == (2, 3, 20, 24)
        assert set(torch.unique(model.encode(torch.rand(1, 3, 8, 8))).tolist()) <= {0.0, 1.0}
        # the residual code head is scaled to the training noise; the plain one is not scaled
        x = torch.rand(1, 3, 8, 8)
        torch.testing.assert_close(model.com(x), model.com.net(x - 0.5) * cd.TRAIN_SIGMA)
        plain = cd.ComDefend("rgb").eval()
        torch.testing.assert_close(plain.com(x), plain.com.net(x - 0.5))


def test_save_load_roundtrip_and_errors(tmp_path):
    torch.manual_seed(2)
    model = cd.ComDefend("grey").eval()
    path = str(tmp_path / "g.safetensors")
    cd.save_weights(model, path, {"note": "test"})
    loaded = cd.load("grey", path=path)
    assert loaded.metadata["note"] == "test"
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        diff = (loaded(x) - model(x)).abs().max()
    assert diff < 0.05  # float16 storage; binarised codes may flip only at logits ~ 0 of an untrained net
    with pytest.raises(ValueError, match="rgb"):
        cd.load("rgb", path=path)
    with pytest.raises(FileNotFoundError, match="train-comdefend"):
        cd.load("grey", path=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="variant"):
        cd.ComDefend("cmyk")
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        loaded(torch.rand(1, 3, 8, 8))


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def _held_out(variant, photos):
    if variant == "rgb":
        return photos["motorcycle_right"][150:278, 300:428]  # held out of the RGB training (every 8th photo)
    from fdjpeg.datasets import fashion_mnist

    return fashion_mnist("test")[0][:64]  # N x 28 x 28 from the test split


@pytest.mark.parametrize("variant, arch", list(PSNR_FLOOR))
def test_shipped_weights_reconstruct_held_out_images(variant, arch, photos):
    assert os.path.exists(cd.weights_path(variant, arch))
    defend = defenses.build("comdefend", variant=variant, arch=arch)
    img = _held_out(variant, photos)
    out = defend(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert _psnr(out, img) > PSNR_FLOOR[variant, arch]
    # torch float NCHW in -> float NCHW out, the same reconstruction
    part = img[:32, :32] if variant == "rgb" else img[:4]
    t = torch.from_numpy(part.copy())
    t = t.permute(2, 0, 1)[None] if variant == "rgb" else t[:, None]
    y = defend(t.float() / 255)
    assert y.dtype == torch.float32 and y.shape == t.shape
    got = torch.round(y * 255).to(torch.uint8).numpy()
    got = got[0].transpose(1, 2, 0) if variant == "rgb" else got[:, 0]
    assert np.abs(got.astype(int) - defend(part).astype(int)).max() <= 1


def test_code_gradient_is_straight_through_to_the_logits():
    """The binary code's backward is d code / d logit = 1/4 (sigmoid'(0)), written out here by hand:
    the gradient equals autograd of rec(code) pushed through ComCNN with that factor."""
    model = cd.load("grey")
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    w = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    xi = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad((model(xi) * w).sum(), xi)

    xr = x.clone().requires_grad_()
    logits = model.com(xr)
    code = (logits.detach() > 0).float().requires_grad_()
    (g_code,) = torch.autograd.grad((model.rec(code) * w).sum(), code)
    (ref,) = torch.autograd.grad((logits * g_code * 0.25).sum(), xr)
    torch.testing.assert_close(grad, ref)
    assert grad.abs().sum() > 0


def test_adaptive_attack_gradient_options():
    """gradient="identity" (default): BPDA over the whole defense; "logits"/"sigmoid": through the
    networks, each equal to the model's own gradient with that code_gradient."""
    from fdjpeg import attacks

    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    w = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))

    def gradient_of(fn):
        xi = x.clone().requires_grad_()
        return torch.autograd.grad((attacks.straight_through(fn, xi) * w).sum(), xi)[0]

    defend = defenses.build("comdefend-grey")
    assert not getattr(defend, "differentiable", False)
    assert torch.equal(gradient_of(defend), w)
    for choice in ("logits", "sigmoid"):
        reference = cd.ComDefend("grey", code_gradient=choice)
        reference.load_state_dict(cd.load("grey").state_dict())
        torch.testing.assert_close(gradient_of(defenses.build("comdefend-grey", gradient=choice)),
                                   _model_gradient(reference, x, w))
    with pytest.raises(ValueError, match="gradient"):
        defenses.build("comdefend-grey", gradient="exact")
    with pytest.raises(ValueError, match="code_gradient"):
        cd.ComDefend("grey", code_gradient="none")


def _model_gradient(model, x, w):
    # channels-last as defend() runs it on the CPU, so both take the same convolution algorithms
    model = model.to(memory_format=torch.channels_last)
    xi = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    return torch.autograd.grad((model(xi) * w).sum(), xi)[0]


def test_straight_through_gradient_and_registry():
    spec = defenses.spec("comdefend")
    assert not spec.random
    model = cd.load("grey")
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    y = cd.defend(x, model)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cd.defend(torch.full((1, 1, 8, 8), 2.0), model)
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        cd.defend([[0.5]], model)


def test_train_command_checkpoints_resumes_and_writes_loadable_weights(tmp_path, capsys):
    from fdjpeg import cli

    out = tmp_path / "grey.safetensors"
    base = ["train-comdefend", "--variant", "grey", "--save-every", "1", "--eval-images", "8", "--out", str(out)]
    assert cli.main([*base, "--iterations", "2"]) == 0
    first = capsys.readouterr().out
    assert "checkpoint 2: binary-code PSNR" in first and "held-out PSNR fashion-mnist-test:" in first
    assert cli.main([*base, "--iterations", "3", "--resume"]) == 0
    second = capsys.readouterr().out
    assert "at iteration 2" in second and "checkpoint 3:" in second and "checkpoint 2:" not in second
    model = cd.load("grey", path=str(out))
    assert model.metadata["iterations"] == "3" and model.metadata["seed"] == "0"
    assert model.metadata["schedule"] == "cosine" and model.metadata["clip"] == "1.0"
    # the checkpoint before the last one is kept, to go back to if training diverged since
    import torch

    assert torch.load(str(out) + ".ckpt.prev", weights_only=True)["iteration"] == 2
    assert torch.load(str(out) + ".ckpt", weights_only=True)["iteration"] == 3


def test_held_out_photos_are_every_nth_or_the_named_ones():
    from fdjpeg.commands.train_comdefend import held_out_photos

    stems = [f"p{i:02d}" for i in range(20)]
    assert held_out_photos(stems[::-1], "", 8) == ["p07", "p15"]
    assert held_out_photos(stems, "p03,p11", 8) == ["p03", "p11"]
    with pytest.raises(SystemExit, match="unknown photos"):
        held_out_photos(stems, "p03,nope", 8)
    with pytest.raises(SystemExit, match="at least 2"):
        held_out_photos(stems, "", 1)


def test_rgb_training_under_bf16_reports_each_held_out_photo_and_kept_predictions(tmp_path, capsys):
    pytest.importorskip("skimage")
    from fdjpeg import cli

    out = tmp_path / "rgb.safetensors"
    assert cli.main(["train-comdefend", "--variant", "rgb", "--bf16", "--iterations", "2", "--save-every", "2",
                     "--holdout", "chelsea,coffee", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for line in ("held-out PSNR chelsea:", "held-out PSNR coffee:", "held-out PSNR held-out-photos-mean:",
                 "held-out PSNR held-out-photos-tiled32:"):
        assert line in text
    model = cd.load("rgb", path=str(out))
    assert model.metadata["bf16"] == "True" and "psnr_held-out-photos-mean" in model.metadata
    assert "psnr_chelsea" not in model.metadata  # per-photo figures are printed, the mean is kept
    if "not measured" not in text:
        assert "clean predictions kept:" in text and model.metadata["clean_predictions_kept"].count("/") == 1
        assert "for reference, jpeg:quality=75 keeps" in text and "for reference, fd keeps" in text
    # The weights list the photos they were trained on; evaluating them holds out every other one.
    from fdjpeg import datasets

    stems = {key.split("/", 1)[1] for key in datasets.photo_files()[0]}
    assert set(model.metadata["training_photos"].split(",")) == stems - {"chelsea", "coffee"}
    assert cli.main(["train-comdefend", "--variant", "rgb", "--evaluate", str(out), "--sources", "skimage",
                     "--no-diagnosis"]) == 0
    text = capsys.readouterr().out
    assert "held out: the 2 photos these weights were not trained on" in text
    assert sorted(line.split(":")[0] for line in text.splitlines() if line.startswith("held-out PSNR")) == [
        "held-out PSNR chelsea", "held-out PSNR coffee", "held-out PSNR held-out-photos-mean"]  # no tiles
    with pytest.raises(SystemExit, match="no held-out photo"):  # it was trained on every sklearn photo
        cli.main(["train-comdefend", "--variant", "rgb", "--evaluate", str(out), "--sources", "sklearn"])
    with pytest.raises(SystemExit, match="unknown photo sources"):
        cli.main(["train-comdefend", "--variant", "rgb", "--evaluate", str(out), "--sources", "skimage,nope"])


ORIGINAL_SOURCES = ("skimage", "sklearn", "matplotlib", "opencv", "gcompris", "lomiri", "palapeli")


@pytest.mark.parametrize("arch", ["plain", "residual"])
def test_shipped_rgb_weights_list_the_photos_of_their_documented_training_command(arch):
    """The shipped RGB weights were trained with ``--sources`` ORIGINAL_SOURCES and every 8th photo
    held out: the training photos they list are exactly the others, so ``--evaluate shipped`` holds
    out those 33 and every photo of the sources added since."""
    from fdjpeg import datasets
    from fdjpeg.commands.train_comdefend import held_out_photos

    files, notes = datasets.photo_files()
    if any(note.split(":")[0] in ORIGINAL_SOURCES for note in notes):
        if os.environ.get("FDJPEG_REQUIRE_EVAL"):
            pytest.fail(f"photo sources missing: {notes}")
        pytest.skip(f"photo sources missing: {notes}")
    stems = [key.split("/", 1)[1] for key in files if key.split("/")[0] in ORIGINAL_SOURCES]
    trained = cd.load("rgb", arch).metadata["training_photos"].split(",")
    held = held_out_photos(stems, "", 8)
    assert len(trained) == 232 and len(held) == 33
    assert sorted(trained) == sorted(set(stems) - set(held))
