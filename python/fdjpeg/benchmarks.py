"""Speed of fdjpeg's defenses beside the tools people use today, measured pair by pair in one run.

Each peer is timed interleaved with fdjpeg's Feature Distillation on the same images (call fdjpeg,
call the peer, repeat), so both see the same machine load and the ratio between them is stable
even where absolute times are not. Peers whose package is missing are reported as skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from . import datasets, ops, tables
from ._pipeline import nhwc_to_nchw

Batch = np.ndarray  # N x H x W x 3 uint8


# ------------------------------------------------------------------------------------------------
# Peers: each builds a callable that defends a whole uint8 NHWC batch, or raises ImportError.


def pillow_roundtrip(img: np.ndarray, qtables: Sequence[Sequence[int]], subsampling: int) -> np.ndarray:
    """Pillow (libjpeg-turbo) encode + decode of one uint8 image with the given tables."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", qtables=[list(map(int, t)) for t in qtables], subsampling=subsampling)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im)


def numpy_feature_distill(img: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Feature Distillation vectorised in numpy (all blocks at once, matrix DCT); sides multiple of 8."""
    c = tables.dct_matrix().astype(np.float32)
    h, w, ch = img.shape
    blocks = img.astype(np.float32).reshape(h // 8, 8, w // 8, 8, ch).transpose(0, 2, 4, 1, 3)
    coef = c @ blocks @ c.T
    out = c.T @ (np.round(coef / q) * q) @ c
    return np.clip(out.transpose(0, 3, 1, 4, 2).reshape(h, w, ch), 0, 255).round().astype(np.uint8)


def authors_style_feature_distill(img: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Feature Distillation as the authors' code does it: float [0, 1] scaled by 255, Python loops
    over channels and 8x8 blocks, scipy's orthonormal DCT per block."""
    from scipy.fftpack import dct, idct

    x = img.astype(np.float64)
    out = np.empty_like(x)
    for ch in range(x.shape[2]):
        for i in range(0, x.shape[0], 8):
            for j in range(0, x.shape[1], 8):
                coef = dct(dct(x[i : i + 8, j : j + 8, ch].T, norm="ortho").T, norm="ortho")
                coef = np.round(coef / q) * q
                out[i : i + 8, j : j + 8, ch] = idct(idct(coef.T, norm="ortho").T, norm="ortho")
    return np.clip(out / 255, 0, 1)


def _per_image(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Batch], list]:
    return lambda batch: [fn(img) for img in batch]


def _art_jpeg() -> Callable[[Batch], np.ndarray]:
    from art.defences.preprocessor import JpegCompression

    defence = JpegCompression(clip_values=(0, 255), quality=50, channels_first=False)
    return lambda batch: defence(batch.astype(np.float32))[0]


def _kornia_jpeg() -> Callable[[Batch], object]:
    import torch
    from kornia.enhance import jpeg_codec_differentiable

    quality = torch.tensor([50.0])
    return lambda batch: jpeg_codec_differentiable(
        nhwc_to_nchw(torch.from_numpy(batch)).float() / 255, quality
    )


def _tv_bregman() -> Callable[[Batch], list]:
    from skimage.restoration import denoise_tv_bregman

    # scikit-image's default weight (5.0) and iteration limit: the TV baseline as users run it
    return _per_image(lambda img: denoise_tv_bregman(img.astype(np.float64) / 255, channel_axis=-1))


def _torchvision_cuda_jpeg() -> Callable[[Batch], object]:
    import torch
    from torchvision.io import decode_jpeg, encode_jpeg

    if not torch.cuda.is_available():
        raise ImportError("no CUDA device")

    def run(batch: Batch):
        images = list(nhwc_to_nchw(torch.from_numpy(batch)).cuda())
        out = decode_jpeg(encode_jpeg(images, quality=50), device="cuda")
        torch.cuda.synchronize()
        return out

    return run


def _dali_jpeg(device: str) -> Callable[[], Callable[[Batch], list]]:
    """NVIDIA DALI's ``fn.jpeg_compression_distortion`` at quality 75: on the CPU a pipeline with
    ``device_id=None`` and one thread (OpenCV encode + decode), on the GPU its fused kernel."""

    def build():
        try:
            from nvidia.dali import backend, fn, pipeline_def
        except ImportError:
            raise ImportError("NVIDIA DALI is not installed (pip install nvidia-dali-cuda130)") from None
        if device == "gpu" and backend.GetCUDADeviceCount() == 0:
            raise ImportError("no CUDA device")
        pipes = {}

        def pipe(n: int):  # a DALI pipeline has a fixed batch size
            if n not in pipes:
                @pipeline_def(batch_size=n, num_threads=1, device_id=0 if device == "gpu" else None, prefetch_queue_depth=1)
                def graph():
                    images = fn.external_source(name="x", layout="HWC")
                    return fn.jpeg_compression_distortion(images.gpu() if device == "gpu" else images, quality=75)

                pipes[n] = graph()
                pipes[n].build()
            return pipes[n]

        def run(batch: Batch):
            p = pipe(len(batch))
            p.feed_input("x", list(batch))
            (out,) = p.run()
            return out.as_cpu() if device == "gpu" else out  # the GPU row includes the copy back, as torchvision's

        return run

    return build


def _quilting_search_only() -> Callable[[Batch], list]:
    """The floor of any quilting implementation: the faiss search of each image's grid patches."""
    from .defenses import quilting

    index, _ = quilting.database()
    return _per_image(lambda img: index.search(quilting.image_patches(img.astype(np.float32) / 255), 1))


def _fdjpeg_registered(name: str, **params) -> Callable[[], Callable[[Batch], object]]:
    def build():
        from . import defenses

        if name not in defenses.names():
            raise ImportError(f"defense {name!r} is not part of this fdjpeg")
        return defenses.build(name, **params)

    return build


@dataclass(frozen=True)
class Peer:
    name: str
    build: Callable[[], Callable[[Batch], object]]
    max_images: Optional[int] = None  # time on at most this many images of the batch (slow or memory-hungry peers)
    uses_torch: bool = False  # its OpenMP threads must not spin while fdjpeg's side of the pair runs

    @property
    def slow(self) -> bool:
        return self.max_images == 1


def _fd_table_q():
    return tables.feature_distillation().astype(np.float32)


PEERS: List[Peer] = [
    Peer("fdjpeg jpeg q75 4:2:0", lambda: lambda b: ops.jpeg(b, 75)),
    Peer("fdjpeg SLQ", _fdjpeg_registered("slq")),
    Peer("fdjpeg WebP+flip", _fdjpeg_registered("webp-flip")),
    Peer("fdjpeg ComDefend", _fdjpeg_registered("comdefend"), max_images=1, uses_torch=True),
    Peer(
        "Pillow JPEG, FD table 4:4:4",
        lambda: _per_image(lambda img: pillow_roundtrip(img, [tables.feature_distillation().ravel()] * 2, 0)),
    ),
    Peer(
        "Pillow JPEG q75 4:2:0",
        lambda: _per_image(lambda img: pillow_roundtrip(img, [t.ravel() for t in tables.ijg(75)], 2)),
    ),
    Peer("numpy FD (vectorised)", lambda: _per_image(lambda img: numpy_feature_distill(img, _fd_table_q()))),
    Peer("authors-style FD (Python loop)", lambda: _per_image(lambda img: authors_style_feature_distill(img, tables.feature_distillation())), max_images=1),
    Peer("IBM ART JpegCompression q50", _art_jpeg),
    Peer("kornia jpeg_codec_differentiable q50", _kornia_jpeg, max_images=8, uses_torch=True),
    Peer("NVIDIA DALI jpeg_compression_distortion q75 (CPU)", _dali_jpeg("cpu")),
    Peer("TV minimisation (skimage Bregman)", _tv_bregman, max_images=1),
    Peer("TVM as Guo et al. (dropout 0.5, masked Bregman)", _fdjpeg_registered("tvm", seed=0), max_images=1),
    Peer("quilting as Guo et al. (faiss IVF-PQ, min-error cut)", _fdjpeg_registered("quilting"), max_images=1),
    Peer("quilting: faiss patch search alone", _quilting_search_only, max_images=1),
    Peer("torchvision encode+decode_jpeg (CUDA)", _torchvision_cuda_jpeg, uses_torch=True),
    Peer("NVIDIA DALI jpeg_compression_distortion q75 (CUDA)", _dali_jpeg("gpu")),
]


# ------------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Row:
    size: str
    batch: int
    threads: int
    peer: str
    status: str  # "ok" or "skipped: why"
    fdjpeg_s_per_image: float = float("nan")
    peer_s_per_image: float = float("nan")
    megapixels: float = 0.0

    @property
    def ratio(self) -> float:
        return self.peer_s_per_image / self.fdjpeg_s_per_image


@dataclass
class Report:
    machine: Dict[str, object]
    rows: List[Row] = field(default_factory=list)


def machine_description() -> Dict[str, object]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "kernels": ops.isa()}


def images_for(size: str, count: int) -> Batch:
    """`count` real photos as one uint8 batch: 224x224 or 512x512 crops, or "full" (1000x872)."""
    photos = datasets.sample_photos()
    if size == "full":
        base = photos["hubble_deep_field"]
        return np.stack([base] * count)
    side = int(size)
    pool = [datasets.center_crop(p, side) for p in photos.values() if min(p.shape[:2]) >= side]
    return np.stack([pool[i % len(pool)] for i in range(count)])


def time_pair(ours: Callable[[], object], peer: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median seconds of `ours` and `peer` called alternately `repeat` times each, after a warm-up."""
    ours()
    peer()
    a, b = [], []
    for _ in range(repeat):
        for fn, times in ((ours, a), (peer, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return float(np.median(a)), float(np.median(b))


@contextlib.contextmanager
def _torch_threads_quiet(peer: Peer, n_threads: int):
    """While a torch peer alternates with fdjpeg on several threads, torch's OpenMP workers would
    busy-wait between its calls and take cores from fdjpeg's side: hold torch to one thread unless
    its OpenMP runtime was started with the passive wait policy (see :func:`run`)."""
    torch = sys.modules.get("torch")
    if not peer.uses_torch or n_threads == 1 or torch is None or _PASSIVE_AT_TORCH_IMPORT:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_PASSIVE_AT_TORCH_IMPORT = False


def run(
    sizes: Sequence[str] = ("224", "512", "full"),
    batches: Sequence[int] = (1, 64),
    threads: Sequence[int] = (1, 0),
    peers: Optional[Sequence[str]] = None,
    repeat: int = 10,
    progress: Callable[[str], None] = lambda line: None,
) -> Report:
    """Time every peer against fdjpeg's Feature Distillation for each size x batch x threads
    (threads 0 = all cores for fdjpeg; peers run as they do, most on one thread)."""
    global _PASSIVE_AT_TORCH_IMPORT
    if "torch" not in sys.modules:  # OpenMP reads its wait policy once, when torch loads it
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        _PASSIVE_AT_TORCH_IMPORT = os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"
    report = Report(machine_description())
    chosen = [p for p in PEERS if peers is None or p.name in peers]
    for size in sizes:
        for batch in batches:
            images = images_for(size, batch)
            mp = images.shape[1] * images.shape[2] / 1e6
            for n_threads in threads:
                label_threads = n_threads or (os.cpu_count() or 1)
                def ours_full():
                    return ops.feature_distill(images, threads=n_threads or None)

                for peer in chosen:
                    try:
                        fn = peer.build()
                    except ImportError as exc:
                        report.rows.append(Row(size, batch, label_threads, peer.name, f"skipped: {exc}"))
                        continue
                    # slow or memory-hungry peers: both timed on the first few images only
                    subset = images if peer.max_images is None else images[: peer.max_images]
                    ours = ours_full if subset is images else (lambda: ops.feature_distill(subset, threads=n_threads or None))
                    reps = 1 if peer.slow else repeat
                    with _torch_threads_quiet(peer, label_threads):
                        mine, theirs = time_pair(ours, lambda: fn(subset), reps)
                    row = Row(size, batch, label_threads, peer.name, "ok", mine / len(subset), theirs / len(subset), mp)
                    report.rows.append(row)
                    progress(
                        f"{size:>4} x{batch:<3} {label_threads}t {peer.name:<38} {row.peer_s_per_image * 1e3:10.3f} ms"
                        f" vs fdjpeg FD {row.fdjpeg_s_per_image * 1e3:8.3f} ms  ({row.ratio:8.1f}x)"
                    )
    return report


# ------------------------------------------------------------------------------------------------
# Reports


def to_markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, fdjpeg kernels {m['kernels']}.",
        "",
        "| size | batch | threads | peer | peer ms/image | peer MP/s | fdjpeg FD ms/image | fdjpeg FD MP/s | peer / fdjpeg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        if r.status != "ok":
            lines.append(f"| {r.size} | {r.batch} | {r.threads} | {r.peer} | {r.status} | | | | |")
            continue
        lines.append(
            f"| {r.size} | {r.batch} | {r.threads} | {r.peer} | {r.peer_s_per_image * 1e3:.3f} | "
            f"{r.megapixels / r.peer_s_per_image:.1f} | {r.fdjpeg_s_per_image * 1e3:.3f} | "
            f"{r.megapixels / r.fdjpeg_s_per_image:.1f} | {r.ratio:.1f}x |"
        )
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> str:
    rows = []
    for r in report.rows:
        d = asdict(r)
        d["ratio"] = r.ratio if r.status == "ok" else None
        for key in ("fdjpeg_s_per_image", "peer_s_per_image"):
            if d[key] != d[key]:  # NaN is not JSON
                d[key] = None
        rows.append(d)
    return json.dumps({"machine": report.machine, "rows": rows}, indent=2)


def plot(report: Report, path: str) -> None:
    """Bar chart: each peer's time per image divided by fdjpeg FD's (log scale), per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report.rows if r.status == "ok"]
    configs = sorted({(r.size, r.batch, r.threads) for r in ok}, key=str)
    peers = sorted({r.peer for r in ok})
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(peers)), 5))
    width = 0.8 / max(1, len(configs))
    for i, config in enumerate(configs):
        ratios = [next((r.ratio for r in ok if (r.size, r.batch, r.threads) == config and r.peer == p), np.nan) for p in peers]
        ax.bar(np.arange(len(peers)) + i * width, ratios, width, label=f"{config[0]} x{config[1]}, {config[2]} thr")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("peer time / fdjpeg FD time")
    ax.set_xticks(np.arange(len(peers)) + 0.4 - width / 2)
    ax.set_xticklabels(peers, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
