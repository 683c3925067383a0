"""torch tensors through the same core: dtypes, layouts, the nn.Modules and the BPDA gradient."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fdjpeg
import fdjpeg.torch as fdt


@pytest.fixture(scope="module")
def chw(astronaut):
    return torch.from_numpy(np.ascontiguousarray(astronaut[:200, :216])).permute(2, 0, 1).contiguous()


def test_uint8_chw_matches_numpy_hwc(chw, astronaut):
    got = fdjpeg.feature_distill(chw)
    assert got.dtype == torch.uint8 and got.shape == chw.shape
    want = fdjpeg.feature_distill(np.ascontiguousarray(astronaut[:200, :216]))
    np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_float_nchw_keeps_dtype(chw, dtype):
    x = (chw.float() / 255).to(dtype)[None].repeat(3, 1, 1, 1)
    got = fdjpeg.jpeg(x, 60)
    assert got.dtype == dtype and got.shape == x.shape
    ref = fdjpeg.jpeg(x.float().numpy().transpose(0, 2, 3, 1), 60)
    tol = 1 / 255 if dtype in (torch.float32, torch.float64) else 0.02
    assert np.abs(got.float().numpy().transpose(0, 2, 3, 1) - ref).max() <= tol


def test_channels_last_is_kept(chw):
    x = (chw.float() / 255)[None].contiguous(memory_format=torch.channels_last)
    got = fdjpeg.feature_distill(x)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, fdjpeg.feature_distill(x.contiguous()), rtol=0, atol=0)


def test_grey_and_non_contiguous(chw):
    grey = chw[1]
    assert fdjpeg.feature_distill(grey).shape == grey.shape
    view = chw[:, ::2, 1:]
    torch.testing.assert_close(fdjpeg.jpeg(view), fdjpeg.jpeg(view.contiguous()), rtol=0, atol=0)


def test_gradient_passes_straight_through(chw):
    x = (chw.float() / 255)[None].requires_grad_(True)
    y = fdjpeg.feature_distill(x)
    assert y.requires_grad
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    torch.testing.assert_close(x.grad, weights)


@pytest.mark.parametrize("module", [fdt.FeatureDistillation(), fdt.FeatureDistillation(passes=2), fdt.JPEG(50)])
def test_modules_defend_and_pass_gradients(chw, module):
    x = (chw.float() / 255)[None].requires_grad_(True)
    y = module(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_straight_through_is_public_and_identity_backward():
    x = torch.linspace(0, 1, 24, dtype=torch.float64).reshape(2, 3, 4).requires_grad_(True)
    y = fdt.StraightThrough.apply(x, lambda t: torch.round(t * 4) / 4)  # zero derivative almost everywhere
    torch.testing.assert_close(y, torch.round(x.detach() * 4) / 4, rtol=0, atol=0)
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    torch.testing.assert_close(x.grad, weights, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors", "ignore:Sparse CSR tensor support")
@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: torch.rand(3, 8, 8).to_sparse(), "dense.*sparse_coo"),
        (lambda: torch.rand(8, 8).to_sparse_csr(), "dense.*sparse_csr"),
        (lambda: torch.nested.nested_tensor([torch.rand(3, 8, 8), torch.rand(3, 16, 8)]), "nested"),
        (lambda: torch.rand(3, 8, 8, dtype=torch.complex64), "complex64"),
        (lambda: torch.zeros(3, 8, 8, dtype=torch.bool), "bool"),
    ],
)
def test_tensor_kinds_the_core_cannot_read_are_type_errors(make, match):
    x = make()
    for op in (fdjpeg.feature_distill, lambda t: fdjpeg.jpeg(t, 50), fdt.FeatureDistillation()):
        with pytest.raises(TypeError, match=match):
            op(x)


def test_bad_tensors():
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        fdjpeg.feature_distill(torch.zeros(2, 5, 8, 8))
    with pytest.raises(TypeError, match="int32"):
        fdjpeg.feature_distill(torch.zeros(3, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fdjpeg.feature_distill(torch.full((3, 8, 8), 2.0))
    with pytest.raises(ValueError, match="5 dimensions"):
        fdjpeg.feature_distill(torch.zeros(1, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="quality"):
        fdt.JPEG(0)
