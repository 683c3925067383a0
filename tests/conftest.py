import numpy as np
import pytest

from fdjpeg import datasets


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
