"""Images/s and CPU ms per image of ``fdjpeg defend`` against the worker pool anyone would write,
all measured in one run on the same folder of real JPEG photos, with the ratios from that run.

The folder: the offline real photos of ``fdjpeg.datasets.photo_files()`` of at most 1 Mpixel, each
flipped four ways and saved as JPEG at qualities 75 and 90 (at least 200 files); the same files as
four WebDataset tar shards (with a ``.cls`` member each). Methods, each into a fresh folder:

- ``fdjpeg defend`` (the engine, ``fdjpeg.batch.defend_files``): fd -> PNG, fd -> JPEG file,
  jpeg q75 -> PNG on the folder; fd -> PNG on the tar shards;
- the Pillow worker pool: ``multiprocessing.Pool`` over all cores, Pillow decode ->
  ``fdjpeg.feature_distill(threads=1)`` -> Pillow PNG at level 1; and the same pool with Pillow's
  JPEG q75 round trip instead of Feature Distillation;
- NVIDIA DALI's CPU pipeline (``fn.readers.file`` -> ``fn.decoders.image(device="cpu")`` ->
  ``fn.jpeg_compression_distortion`` -> PNG by fpng), skipped with the reason when not installed;
- IBM ART's ``JpegCompression`` (q75) in a loop, PNG by Pillow at level 1;
- each stage alone on one thread (decode, defend, encode, write), a chunk of 16 images at a time in a
  process set up as the engine's workers are: the ceiling is ``cores / sum of the stages' CPU
  seconds per image``. They are timed right before each of the two methods held to the ceiling, and
  each round's images/s is set against the ceiling timed just before it (the machine's speed moves
  from minute to minute); the median over the rounds is the figure;
- where ``fdjpeg defend``'s own CPU goes, stage by stage inside its workers (``--inside`` alone).

The folder, the shards and every output live under ``--scratch`` (default: ``/dev/shm``, a file
system in memory, where it exists with room; else the system's temporary folder). Each method's
outputs are deleted before the next method runs, and on a disk that can decide the figures: ext4
without a journal skips inodes freed in the last one to six minutes when it allocates one, checking
each in the inode table (the kernel's ``recently_deleted``, a quarter of a file creation's CPU in a
``perf`` profile after such a deletion), so each method's file creations slowed with the files the
methods before it had deleted (0.2-0.8 ms a file, measured). ``--scratch /some/disk/folder`` runs it
there.

Each method runs in a fresh (spawned) process, timed from after its imports, as a user's command
would start, not a fork of this process that holds the photos, DALI and ART; its CPU time counts
that process and its worker processes; the files the method before wrote are synced to disk
before it starts. The machine may be shared: every method is
run ``--repeats`` times, interleaved, and the median and the range are printed. Also printed: how
close a ``--format jpeg`` output decodes to the defense's pixels, and the codecs alone per image.

    python bench/bench_defend.py [--repeats 5] [--codecs-only] [--inside] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import tarfile
import tempfile
import threading
import time

import numpy as np
from PIL import Image, ImageOps

import fdjpeg
from fdjpeg import batch, benchmarks, datasets, fastcodecs, imagefiles
from fdjpeg.batch import pipeline

PEER_PNG = {"compress_level": 1}  # the pool anyone would write: Pillow's PNG at level 1
PNG = {"compress_level": 1, "compress_type": imagefiles.PNG_STRATEGY}  # what fdjpeg's Pillow path writes


def make_folder(root: str, max_pixels: int = 1_000_000, max_files: int = 0) -> list:
    """The real photos, flipped four ways, as JPEG at qualities 75 and 90 (the first ``max_files``
    of them when it is not 0)."""
    files, _ = datasets.photo_files()
    paths = []
    for key, path in sorted(files.items()):
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > max_pixels:
                continue
            rgb = im.convert("RGB")
        for flip in range(4):
            img = ImageOps.mirror(rgb) if flip & 1 else rgb
            img = ImageOps.flip(img) if flip & 2 else img
            for quality in (75, 90):
                out = os.path.join(root, f"{key.replace('/', '_')}_f{flip}_q{quality}.jpg")
                img.save(out, quality=quality)
                paths.append(out)
                if len(paths) == max_files:
                    return paths
    return paths


def make_shards(paths: list, root: str, count: int = 4) -> None:
    per = -(-len(paths) // count)
    for s in range(count):
        with tarfile.open(os.path.join(root, f"part-{s:03d}.tar"), "w") as tar:
            for i, p in enumerate(paths[s * per : (s + 1) * per]):
                key = f"{s:03d}/{i:05d}"
                with open(p, "rb") as f:
                    data = f.read()
                for field, blob in (("jpg", data), ("cls", str(i % 10).encode())):
                    info = tarfile.TarInfo(f"{key}.{field}")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))


# ---- the worker pool anyone would write -----------------------------------------------------------


def _pool_fd(job):
    src, dst = job
    with Image.open(src) as im:
        x = np.asarray(im.convert("RGB"))
    Image.fromarray(fdjpeg.feature_distill(x, threads=1)).save(dst, **PEER_PNG)


def _pool_jpeg(job):
    src, dst = job
    with Image.open(src) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=75)
    buf.seek(0)
    with Image.open(buf) as im:
        im.save(dst, **PEER_PNG)


def pillow_pool(fn, paths, dst):
    jobs = [(p, os.path.join(dst, os.path.splitext(os.path.basename(p))[0] + ".png")) for p in paths]
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        pool.map(fn, jobs, chunksize=8)


def art_loop(paths, dst):
    from art.defences.preprocessor import JpegCompression

    jpeg = JpegCompression(clip_values=(0, 255), quality=75, channels_first=False)
    for p in paths:
        with Image.open(p) as im:
            x = np.asarray(im.convert("RGB"), dtype=np.float32)[None]
        y, _ = jpeg(x)
        out = np.clip(np.rint(y[0]), 0, 255).astype(np.uint8)
        Image.fromarray(out).save(os.path.join(dst, os.path.basename(p) + ".png"), **PEER_PNG)


def _dali_run(paths, dst):
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=16, num_threads=os.cpu_count(), device_id=None)
    def pipe():
        data, _ = fn.readers.file(files=list(paths), name="files")
        images = fn.decoders.image(data, device="cpu")
        return fn.jpeg_compression_distortion(images, quality=75)

    p = pipe()
    p.build()
    n, size = 0, p.epoch_size("files")
    while n < size:
        (out,) = p.run()
        for k in range(len(out)):
            if n < size:
                imagefiles.atomic_write(os.path.join(dst, f"{n:06d}.png"), fastcodecs.encode_png(np.asarray(out.at(k))), sync=False)
            n += 1


def dali_missing():
    """Why DALI's CPU pipeline cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
        return "skipped: nvidia-dali-cuda130 is not installed"
    return None


def fdjpeg_defend(src, dst, **kw):
    summary = batch.defend_files(src, dst, progress=False, **kw)
    if summary.exit_status != 0 or not summary.counts["written"]:
        raise RuntimeError(f"fdjpeg defend {src} failed:\n{summary.text()}")


# ---- the stages alone -------------------------------------------------------------------------------


def _stages_here(paths, out, chunk=16):
    took = dict.fromkeys(("decode", "defend", "encode", "write"), 0.0)
    pipeline._keep_freed_memory()  # as a worker of fdjpeg defend runs
    for start in range(0, len(paths), chunk):  # a worker's chunk at a time: memory and caches as in the pipeline
        clock = time.thread_time()
        decoded = [imagefiles.read(p) for p in paths[start : start + chunk]]
        took["decode"] += time.thread_time() - clock
        clock = time.thread_time()
        defended = [fdjpeg.feature_distill(d.pixels, threads=1) for d in decoded]
        took["defend"] += time.thread_time() - clock
        clock = time.thread_time()
        encoded = [imagefiles.encode(y, None, "png")[0] for y in defended]
        took["encode"] += time.thread_time() - clock
        clock = time.thread_time()
        for i, data in enumerate(encoded):
            imagefiles.atomic_write(os.path.join(out, f"{start + i}.png"), data, sync=False)
        took["write"] += time.thread_time() - clock
    return took


def stages(paths, scratch):
    """CPU seconds of each stage alone on one thread over all ``paths``, a chunk at a time, in a
    process of its own set up as fdjpeg defend's workers are, writing into a fresh folder under
    ``scratch``."""
    out = fresh_folder(scratch, "stages")
    try:
        return in_fresh_process(_stages_here, paths, out)
    finally:
        shutil.rmtree(out)


def fresh_folder(scratch, name):
    """An empty folder ``name`` under ``scratch``, with what the method before wrote synced to disk
    first (its writeback must not fall in the next timing)."""
    out = os.path.join(scratch, name)
    os.makedirs(out)
    os.sync()
    return out


# ---- where the command's CPU goes ---------------------------------------------------------------------

INSIDE = (  # (module, attribute, stage): the functions a worker runs, each timed on its own thread
    ("pipeline", "open_file", "open"),
    ("pipeline", "decode_stacks", "decode"),
    ("pipeline", "defend_stacks", "defend"),
    ("imagefiles", "encode", "encode"),
    ("imagefiles", "atomic_write", "write"),
    ("manifest", "Records.record", "manifest"),
)


def _inside_here(src, dst):
    """CPU seconds of each stage inside ``fdjpeg defend``'s workers (fd -> PNG), summed over them,
    with each worker's whole CPU, and this (the main) process's CPU. The stages' functions are
    wrapped with ``time.thread_time()`` before the workers fork; each worker sends its sums down a
    pipe when it exits."""
    import collections
    import multiprocessing.util

    from fdjpeg.batch import manifest

    modules = {"pipeline": pipeline, "imagefiles": imagefiles, "manifest": manifest}
    took, lock = collections.defaultdict(float), threading.Lock()

    def timed(fn, stage):
        def call(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    took[stage] += time.thread_time() - start
        return call

    for module, name, stage in INSIDE:
        owner = modules[module]
        if "." in name:
            cls, name = name.split(".")
            owner = getattr(owner, cls)
        setattr(owner, name, timed(getattr(owner, name), stage))
    reader, writer = os.pipe()
    start_worker = pipeline._worker_start

    def worker_start(*args):
        def send():
            use = resource.getrusage(resource.RUSAGE_SELF)
            os.write(writer, (json.dumps(dict(took, worker=use.ru_utime + use.ru_stime)) + "\n").encode())
        multiprocessing.util.Finalize(None, send, exitpriority=100)
        start_worker(*args)

    pipeline._worker_start = worker_start
    cpu = time.process_time()
    fdjpeg_defend(src, dst)
    main_cpu = time.process_time() - cpu
    os.close(writer)
    with os.fdopen(reader) as f:
        sums = collections.Counter()
        for line in f:
            sums.update(json.loads(line))
    return dict(sums), main_cpu


def inside_command(src, scratch, n, stage_ms):
    """Print where ``fdjpeg defend``'s CPU per image goes, beside the stages alone."""
    dst = fresh_folder(scratch, "inside")
    try:
        sums, main_cpu = in_fresh_process(_inside_here, src, dst)
    finally:
        shutil.rmtree(dst)
    per = {k: 1e3 * v / n for k, v in sums.items()}
    staged = sum(v for k, v in per.items() if k != "worker")
    print("inside fdjpeg defend (fd -> PNG, one run), CPU ms per image in its workers: "
          + ", ".join(f"{stage} {per.get(stage, 0):.2f}" for _, _, stage in INSIDE)
          + f", the rest {per['worker'] - staged:.2f} (hand-over of chunks and outcomes); the main process "
          f"{1e3 * main_cpu / n:.2f}. Alone: " + ", ".join(f"{k} {v:.2f}" for k, v in stage_ms.items()))


# ---- every method in a fresh process ----------------------------------------------------------------

#: the methods measured against the stage-alone ceiling; the stages are timed right before each
CEILING_METHODS = ("fdjpeg defend: fd -> PNG", "fdjpeg defend: fd -> PNG, tar shards")

# name -> what it runs, given the folder, the tar shards, the files and the destination
METHODS = {
    "fdjpeg defend: fd -> PNG": lambda src, tars, paths, dst: fdjpeg_defend(src, dst),
    "fdjpeg defend: fd -> JPEG file": lambda src, tars, paths, dst: fdjpeg_defend(src, dst, fmt="jpeg"),
    "fdjpeg defend: jpeg q75 -> PNG": lambda src, tars, paths, dst: fdjpeg_defend(src, dst, defense="jpeg", params={"quality": 75}),
    "fdjpeg defend: fd -> PNG, tar shards": lambda src, tars, paths, dst: fdjpeg_defend(tars, dst),
    "Pillow pool: fd -> PNG": lambda src, tars, paths, dst: pillow_pool(_pool_fd, paths, dst),
    "Pillow pool: JPEG q75 -> PNG": lambda src, tars, paths, dst: pillow_pool(_pool_jpeg, paths, dst),
    "DALI CPU: jpeg distortion -> PNG": lambda src, tars, paths, dst: _dali_run(paths, dst),
    "ART JpegCompression q75 loop": lambda src, tars, paths, dst: art_loop(paths, dst),
}


def _timed(name, src, tars, paths, dst):
    start, cpu = time.perf_counter(), _cpu()
    METHODS[name](src, tars, paths, dst)
    return time.perf_counter() - start, _cpu() - cpu


def _child(conn, fn, args):
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - the parent raises it with the method's name
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a new (spawned) interpreter: every method starts from the same small process,
    as a user's command does, rather than forking this one (which holds the photos, DALI, ART)."""
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    child = ctx.Process(target=_child, args=(theirs, fn, args))
    child.start()
    status, value = mine.recv()
    child.join()
    if status != "ok":
        raise RuntimeError(f"{getattr(fn, '__name__', fn)}{args[:1]}: {value}")
    return value


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def check_exact(src, dst_png, tars, shards_dst):
    """PNG outputs of the folder and of the shards equal Feature Distillation of the decoded input."""
    for name in sorted(os.listdir(src))[:40]:
        with Image.open(os.path.join(src, name)) as im:
            want = fdjpeg.feature_distill(np.asarray(im.convert("RGB")))
        with Image.open(os.path.join(dst_png, os.path.splitext(name)[0] + ".png")) as im:
            assert np.array_equal(np.asarray(im), want), name

    def images(path, field):
        with tarfile.open(path) as tar:
            for m in tar:
                if m.name.endswith(field):
                    with Image.open(io.BytesIO(tar.extractfile(m).read())) as im:
                        yield m.name.split(".")[0], np.asarray(im.convert("RGB"))

    pairs = zip(images(os.path.join(tars, "part-000.tar"), ".jpg"), images(os.path.join(shards_dst, "part-000.tar"), ".png"))
    for (key, x), (key_out, y) in pairs:
        assert key == key_out and np.array_equal(y, fdjpeg.feature_distill(x)), key


def jpeg_output_gap(src, scratch, defense, params, reference):
    """|decode(JPEG file written by fdjpeg defend) - reference(pixels)| over all photos' values."""
    dst = os.path.join(scratch, f"jpeg-gap-{defense}")
    batch.defend_files(src, dst, defense=defense, params=params, fmt="jpeg", progress=False)
    diffs = []
    for name in sorted(os.listdir(src))[:40]:
        with Image.open(os.path.join(src, name)) as im:
            want = reference(np.asarray(im.convert("RGB"))).astype(np.int16)
        with Image.open(os.path.join(dst, os.path.splitext(name)[0] + ".jpg")) as im:
            got = np.asarray(im).astype(np.int16)
        diffs.append(np.abs(got - want).ravel())
    d = np.concatenate(diffs)
    return d.mean(), d.max(), np.mean(d == 0), np.mean(d <= 1)


def codec_table(repeats: int) -> None:
    """Median CPU ms per image of each codec on one thread, the ratios from this run."""
    files, _ = datasets.photo_files()
    photos = []
    for path in files.values():
        with open(path, "rb") as f:
            data = f.read()
        header = fastcodecs.jpeg_fast_header(data)
        if header is not None and 0.2e6 <= header[0] * header[1] <= 0.4e6:
            photos.append((data, header))
    if not photos:
        print("no real JPEG photos of 0.2-0.4 Mpixel installed: the codec table is skipped")
        return
    defended = [fdjpeg.feature_distill(fastcodecs.decode_jpeg(data, header)) for data, header in photos]

    def pillow_decode(data, _):
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)

    def pillow_png(img):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG", **PNG)
        return buf.getvalue()

    def per_image(fn, items):
        runs = []
        for _ in range(repeats):
            cpu = time.thread_time()
            for item in items:
                fn(*item)
            runs.append((time.thread_time() - cpu) / len(items))
        return 1e3 * statistics.median(runs)

    megapixels = statistics.mean(h * w for _, (h, w, _) in photos) / 1e6
    print(f"codecs alone, one thread, {len(photos)} real JPEG photos of {megapixels:.2f} Mpixel on average "
          f"(median of {repeats} runs, CPU ms per image):")
    rows = [
        ("JPEG decode", per_image(pillow_decode, photos), per_image(fastcodecs.decode_jpeg, photos),
         "Pillow", "libjpeg-turbo (simplejpeg)"),
        ("PNG encode of the fd output", per_image(pillow_png, [(y,) for y in defended]),
         per_image(fastcodecs.encode_png, [(y,) for y in defended]), "Pillow level 1", "fpng"),
    ]
    for what, slow, fast, slow_name, fast_name in rows:
        print(f"  {what:28s} {slow_name} {slow:6.2f}   {fast_name} {fast:6.2f}   {slow / fast:5.1f}x")
    size = sum(len(fastcodecs.encode_png(y)) for y in defended) / sum(len(pillow_png(y)) for y in defended)
    print(f"  fpng PNGs are {100 * (size - 1):+.1f}% the size of Pillow level 1's")
    # whether a codec holds the GIL: how long another Python thread is stalled while it runs
    big = np.tile(defended[0][:256, :256], (12, 16, 1))  # 3072 x 4096
    big_jpeg = io.BytesIO()
    Image.fromarray(big).save(big_jpeg, "JPEG", quality=90)
    big_jpeg = big_jpeg.getvalue()
    stalls = {
        "libjpeg-turbo decode": lambda: fastcodecs.decode_jpeg(big_jpeg, fastcodecs.jpeg_fast_header(big_jpeg)),
        "fpng encode": lambda: fastcodecs.encode_png(big),
    }
    for what, fn in stalls.items():
        call, stall = gil_stall(fn)
        print(f"  {what} of 12.6 Mpixel: {1e3 * call:.0f} ms; another Python thread stalled at most {1e3 * stall:.0f} ms")
    print()


def gil_stall(fn):
    """Seconds ``fn`` takes in a thread, and the longest gap between two steps of a Python loop
    running meanwhile (near the call's length when ``fn`` holds the GIL)."""
    done, took = threading.Event(), []

    def work():
        start = time.perf_counter()
        fn()
        took.append(time.perf_counter() - start)
        done.set()

    worker = threading.Thread(target=work)
    last, longest = time.perf_counter(), 0.0
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    return took[0], longest


def default_scratch(room: int = 8 << 30):
    """``/dev/shm`` when it is a writable folder with ``room`` bytes free, else None (the system's
    temporary folder)."""
    shm = "/dev/shm"
    try:
        free = os.statvfs(shm)
    except OSError:
        return None
    return shm if free.f_bavail * free.f_frsize >= room and os.access(shm, os.W_OK) else None


def file_system(path: str) -> str:
    """The type of the file system holding ``path``, from /proc/mounts ("unknown" elsewhere)."""
    real, best, kind = os.path.realpath(path), "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                mount = fields[1]
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each method, interleaved (default 5)")
    parser.add_argument("--codecs-only", action="store_true", help="only the codecs-alone table")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--max-files", type=int, default=0, help="a smaller folder, for a quick look (default: all photos)")
    parser.add_argument("--inside", action="store_true",
                        help="only where fdjpeg defend's CPU goes, stage by stage, beside the stages alone")
    parser.add_argument("--scratch", default=None,
                        help="folder for the photos and the outputs (default: /dev/shm where it has room, see above)")
    args = parser.parse_args()
    if not args.inside:
        codec_table(max(args.repeats, 5))
    if args.codecs_only:
        return
    scratch = tempfile.mkdtemp(prefix="bench-defend-", dir=args.scratch or default_scratch())
    try:
        src, tars = os.path.join(scratch, "src"), os.path.join(scratch, "tars")
        os.makedirs(src)
        os.makedirs(tars)
        paths = make_folder(src, max_files=args.max_files)
        make_shards(paths, tars)
        n, cores = len(paths), os.cpu_count()
        pixels = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in paths)
        print(f"{n} real JPEG photos ({pixels / n / 1e6:.2f} Mpixel each on average; also as 4 tar shards), "
              f"{cores} cores ({benchmarks.machine_description()['cpu']}), fdjpeg core {fdjpeg.isa()}, PNG by {imagefiles.png_encoder_name()}, JPEG decode by "
              f"{imagefiles.jpeg_decoder_name()}; files under {scratch} ({file_system(scratch)})")
        if args.inside:
            for _ in range(args.repeats):
                took = stages(paths, scratch)
                inside_command(src, scratch, n, {k: 1e3 * v / n for k, v in took.items()})
            return
        methods = list(METHODS)
        skipped = {}
        why = dali_missing()
        if why:
            skipped["DALI CPU: jpeg distortion -> PNG"] = why
        try:
            import art  # noqa: F401
        except ImportError as exc:
            skipped["ART JpegCompression q75 loop"] = f"skipped: {exc}"
        methods = [m for m in methods if m not in skipped]
        walls = {name: [] for name in methods}
        cpus = {name: [] for name in methods}
        stage_runs, loads = [], []
        paired = {name: [] for name in CEILING_METHODS}  # (stages just before, wall) of each round
        for r in range(args.repeats):  # interleaved, so that a busy spell hits every method alike
            for name in methods:
                if name in CEILING_METHODS:  # its ceiling measured right before it: the same spell of load
                    stage_runs.append(stages(paths, scratch))
                dst = fresh_folder(scratch, "out")
                wall, cpu = in_fresh_process(_timed, name, src, tars, paths, dst)
                walls[name].append(wall)
                cpus[name].append(cpu)
                if name in CEILING_METHODS:
                    paired[name].append((sum(stage_runs[-1].values()), wall))
                if r == 0 and name == "fdjpeg defend: fd -> PNG, tar shards":
                    shutil.copytree(dst, os.path.join(scratch, "shards-out"))
                if r == 0 and name == "fdjpeg defend: fd -> PNG":
                    shutil.copytree(dst, os.path.join(scratch, "png-out"))
                shutil.rmtree(dst)
            loads.append(os.getloadavg()[0])
        check_exact(src, os.path.join(scratch, "png-out"), tars, os.path.join(scratch, "shards-out"))
        stage_ms = {k: 1e3 * statistics.median(run[k] for run in stage_runs) / n for k in stage_runs[0]}
        ceiling = cores / (sum(stage_ms.values()) / 1e3)
        rate = {k: n / statistics.median(v) for k, v in walls.items()}
        cpu_ms = {k: 1e3 * statistics.median(v) / n for k, v in cpus.items()}
        print(f"\n{'method':40s} {'images/s (range)':>22s} {'CPU ms/image':>13s}")
        for name in methods:
            lo, hi = n / max(walls[name]), n / min(walls[name])
            print(f"{name:40s} {rate[name]:8.1f} ({lo:5.0f}-{hi:5.0f}) {cpu_ms[name]:13.2f}")
        for name, why in skipped.items():
            print(f"{name:40s} {why}")
        print("\nstages alone, one thread, median CPU ms per image: " + ", ".join(f"{k} {v:.2f}" for k, v in stage_ms.items())
              + f"; ceiling on {cores} cores: {ceiling:.0f} images/s")
        pool = "Pillow pool: fd -> PNG"
        print()
        of_ceiling = {}
        for name in CEILING_METHODS:
            # images/s over the ceiling (cores / stage CPU per image) of the stages timed just before
            rounds = sorted(100 * stage_cpu / (cores * wall) for stage_cpu, wall in paired[name])
            of_ceiling[name] = rounds
            print(f"{name}: {rate[name] / rate[pool]:.2f}x the Pillow pool's images/s (target 5x, floor 4x), "
                  f"{statistics.median(rounds):.0f}% of the stage-alone ceiling (target 80%; median of the rounds, "
                  f"each against the stages timed just before it: {', '.join(f'{x:.0f}%' for x in rounds)}; "
                  f"against the median ceiling {100 * rate[name] / ceiling:.0f}%); "
                  f"CPU per image {cpu_ms[pool] / cpu_ms[name]:.1f}x less than the pool; the stages alone "
                  f"need {100 * sum(stage_ms.values()) / cpu_ms[name]:.0f}% of its CPU per image")
        print(f"fdjpeg defend: jpeg q75 -> PNG vs Pillow pool: JPEG q75 -> PNG: "
              f"{rate['fdjpeg defend: jpeg q75 -> PNG'] / rate['Pillow pool: JPEG q75 -> PNG']:.2f}x the images/s")
        if "ART JpegCompression q75 loop" in rate:
            print(f"fdjpeg defend: jpeg q75 -> PNG vs ART JpegCompression loop: "
                  f"{rate['fdjpeg defend: jpeg q75 -> PNG'] / rate['ART JpegCompression q75 loop']:.2f}x the images/s")
        print(f"PNG outputs equal fdjpeg.feature_distill of the decoded input: checked. "
              f"Load average during the runs: {min(loads):.1f}-{max(loads):.1f} on {cores} cores\n")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"images": n, "cores": cores, "images_per_s": rate, "cpu_ms": cpu_ms, "walls": walls,
                           "stages_ms": stage_ms, "ceiling": ceiling, "of_ceiling_by_round": of_ceiling,
                           "skipped": skipped, "loads": loads}, f, indent=1)
        inside_command(src, scratch, n, stage_ms)
        gaps = {
            "fd": ({}, fdjpeg.feature_distill),
            "jpeg": ({"quality": 75}, lambda x: fdjpeg.jpeg(x, 75)),
        }
        for defense, (params, reference) in gaps.items():
            mean, worst, exact, within1 = jpeg_output_gap(src, scratch, defense, params, reference)
            print(f"--defense {defense} --format jpeg, decoded vs the defense's pixels: mean |diff| {mean:.3f}, "
                  f"max {worst}, {100 * exact:.1f}% of values equal, {100 * within1:.2f}% within 1")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
