"""pytest-benchmark suites: fdjpeg and every installed peer on the same real photos.

    pytest bench/test_speed.py --benchmark-only --benchmark-group-by=param:size

(`fdjpeg bench` runs the same peers pair by pair and writes markdown, JSON and a chart.)
"""

import pytest

import fdjpeg
from fdjpeg import benchmarks


@pytest.fixture(scope="module", params=["224", "512"])
def size(request):
    return request.param


@pytest.fixture(scope="module")
def batch(size):
    return benchmarks.images_for(size, 8)


@pytest.mark.parametrize("threads", [1, 0])
def test_fdjpeg_feature_distill(benchmark, batch, threads):
    benchmark(fdjpeg.feature_distill, batch, threads=threads or None)


@pytest.mark.parametrize("peer", [p for p in benchmarks.PEERS if not p.slow], ids=lambda p: p.name)
def test_peer(benchmark, batch, peer):
    try:
        fn = peer.build()
    except ImportError as exc:
        pytest.skip(f"{peer.name}: {exc}")
    subset = batch if peer.max_images is None else batch[: peer.max_images]
    benchmark(fn, subset)
