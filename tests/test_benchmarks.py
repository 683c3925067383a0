"""The benchmark harness itself: pairs are timed, missing peers are skipped, reports are written."""

import json

import numpy as np
import pytest

import fdjpeg
from fdjpeg import benchmarks, cli, tables


def test_peer_implementations_compute_feature_distillation(photos):
    img = benchmarks.images_for("224", 1)[0]
    q = tables.feature_distillation()
    ours = fdjpeg.feature_distill(img).astype(int)
    # the peers break exact rounding ties by float noise (whole blocks a step apart), so: agree on
    # all but a few pixels
    numpy_fd = benchmarks.numpy_feature_distill(img, q.astype(np.float32)).astype(int)
    assert np.mean(np.abs(numpy_fd - ours) > 1) < 0.02
    authors = np.round(benchmarks.authors_style_feature_distill(img, q) * 255).astype(int)
    assert np.mean(np.abs(authors - ours) > 1) < 0.02
    pillow = benchmarks.pillow_roundtrip(img, [q.ravel()] * 2, 0).astype(int)
    assert np.abs(pillow - fdjpeg.quantize(img, q)).mean() < 0.5  # same tables through libjpeg at 4:4:4


def test_run_times_pairs_and_reports_skips(tmp_path):
    missing = benchmarks.Peer("needs a package that is not there", lambda: (_ for _ in ()).throw(ImportError("nope")))
    benchmarks.PEERS.append(missing)
    try:
        report = benchmarks.run(["224"], [2], [1], ["Pillow JPEG q75 4:2:0", missing.name], repeat=2)
    finally:
        benchmarks.PEERS.remove(missing)
    ok, skipped = report.rows
    assert ok.status == "ok" and ok.fdjpeg_s_per_image > 0 and ok.peer_s_per_image > 0 and ok.megapixels > 0
    assert skipped.status == "skipped: nope"
    md = benchmarks.to_markdown(report)
    assert "Pillow JPEG q75 4:2:0" in md and "skipped: nope" in md and report.machine["cpu"] in md
    data = json.loads(benchmarks.to_json(report))
    assert data["rows"][0]["ratio"] > 0 and data["rows"][1]["ratio"] is None


def test_bench_command_writes_markdown_json_png(tmp_path):
    out = tmp_path / "bench"
    code = cli.main(
        ["bench", "--out", str(out), "--sizes", "224", "--batches", "1", "--threads", "1", "--repeat", "1",
         "--peers", "numpy FD (vectorised)"]
    )
    assert code == 0
    assert (out / "bench.md").read_text().count("numpy FD (vectorised)") == 1
    assert json.loads((out / "bench.json").read_text())["rows"][0]["status"] == "ok"
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"


def _peer(name):
    return next(p for p in benchmarks.PEERS if p.name == name)


def test_dali_cpu_peer_is_a_jpeg_round_trip():
    pytest.importorskip("nvidia.dali")
    batch = benchmarks.images_for("224", 2)
    out = _peer("NVIDIA DALI jpeg_compression_distortion q75 (CPU)").build()(batch)
    for i, img in enumerate(batch):
        # OpenCV's libjpeg at q75 4:2:0 against fdjpeg's jpeg(): the same tables, other rounding
        assert np.abs(np.asarray(out[i]).astype(int) - fdjpeg.jpeg(img, 75).astype(int)).mean() < 1.0


def test_torch_peers_run_on_one_torch_thread_unless_openmp_waits_passively(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(benchmarks, "_PASSIVE_AT_TORCH_IMPORT", False)
    before = torch.get_num_threads()
    kornia = benchmarks.Peer("a torch peer", lambda: None, uses_torch=True)
    with benchmarks._torch_threads_quiet(kornia, 2):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with benchmarks._torch_threads_quiet(benchmarks.Peer("numpy", lambda: None), 2):
        assert torch.get_num_threads() == before


def test_kernel_stage_harness_compiles_against_the_kernels():
    """bench/kernel_stages.cpp includes the kernels' own sources: it must keep building as they change."""
    import shutil
    import subprocess
    from pathlib import Path

    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ on PATH")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [compiler, "-std=c++17", "-fsyntax-only", f"-I{root / 'csrc'}", str(root / "bench" / "kernel_stages.cpp")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
