import numpy as np
import pytest

from fdjpeg import _gpu, datasets

#: The devices a device-parametrised test runs on; "cuda" carries the ``cuda`` marker.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
#: The sample types the core computes in.
DTYPES = [np.uint8, np.float32, np.float64]


def cuda_problem() -> str:
    """Why the CUDA tests cannot run here ("" when a GPU, torch's CUDA and fdjpeg's kernel are usable)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    module = _gpu.cuda_module()
    if module is None:
        return "fdjpeg was built without the CUDA module"
    return module.device_problem()


def pytest_collection_modifyitems(config, items):
    # tests marked cuda (the "cuda" device parameter included) skip where no GPU is usable
    marked = [item for item in items if item.get_closest_marker("cuda")]
    problem = cuda_problem() if marked else ""
    if problem:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=f"needs a usable CUDA GPU: {problem}"))


@pytest.fixture(params=DEVICES)
def device(request):
    """The torch device a test runs on: "cpu", and "cuda" where a GPU is usable."""
    pytest.importorskip("torch")
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    """A numpy sample type the core computes in."""
    return request.param


@pytest.fixture(scope="session")
def photos():
    """Real photos (scikit-image's samples), uint8 RGB."""
    return datasets.sample_photos()


@pytest.fixture(scope="session")
def astronaut(photos):
    return photos["astronaut"]


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def fashion_classifier():
    """A small CNN trained here for one epoch on 5,000 real Fashion-MNIST training images (seconds on
    a CPU), with 256 test images it has never seen: ``(model, x, y)``, x float N x 1 x 28 x 28 in [0, 1]."""
    torch = pytest.importorskip("torch")
    from torch import nn

    try:
        train_x, train_y = datasets.fashion_mnist("train")
        test_x, test_y = datasets.fashion_mnist("test")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )
    xs = torch.from_numpy(train_x[:5000].copy()).float().div(255)[:, None]
    ys = torch.from_numpy(train_y[:5000])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(0, len(xs), 25):
            loss = nn.functional.cross_entropy(model(xs[i : i + 25]), ys[i : i + 25])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    x = torch.from_numpy(test_x[:64].copy()).float().div(255)[:, None]
    return model, x, torch.from_numpy(test_y[:64].copy())


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's torch work on one thread (small models: threads cost more than they give)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
