"""``defend_files``: one run of ``fdjpeg defend`` from the plan to the report. The checks come first
(plan, defense, report path, DST), then DST's lock is taken, finished outputs are sorted out against
the manifest, and the pipeline defends the rest."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from PIL import Image

from .. import imagefiles
from ..defenses import build_defense, spec
from .manifest import MANIFEST_NAME, existing_output, load_manifest, lock_dst, remove_stale_temps, settings_key
from .pipeline import Chunks, Job, Runner, can_fork, file_chunks
from .planning import Task, check_folder_can_be_made, check_report_path, plan
from .progress import Progress
from .report import REPORT_NAME, Outcome, Summary, summarize, write_report
from .shards import ShardPlan, ShardWriter, lost_shard, plan_shards, shard_inputs

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def defend_files(
    src: str,
    dst: str,
    *,
    defense: str = "fd",
    params: Optional[Dict[str, Any]] = None,
    fmt: Optional[str] = None,
    resume: bool = False,
    overwrite: bool = False,
    threads: Optional[int] = None,
    io_threads: Optional[int] = None,
    batch_size: int = 16,
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
    report: Optional[str] = None,
    png_level: int = 1,
    follow_links: bool = False,
    shard_size: Optional[int] = None,
    fsync: bool = False,
    progress: bool = True,
    stop: Optional[threading.Event] = None,
) -> Summary:
    """Defend every image under ``src`` into ``dst`` (see the module doc); when ``src`` names tar
    shards, write defended shards (:mod:`.shards`, ``shard_size`` samples each if given). Returns the summary;
    the report (JSON) goes to ``report`` or ``DST/fdjpeg-report.json``. KeyboardInterrupt (Ctrl-C),
    or ``stop`` being set (the command sets it from SIGINT / SIGTERM), stops the run with no partial
    output left behind; with ``stop`` the run ends at the next safe point and raises
    KeyboardInterrupt there. ``threads``: the cores to use (default all), one worker process each
    (:mod:`.pipeline`); ``io_threads``: each worker's writer threads (default 1, 4 with ``fsync``);
    ``batch_size``: a worker's chunk.
    Every output (file or shard) is written to a temporary name and renamed when whole, so a killed
    run leaves none half-written; ``fsync`` also syncs each before its rename, so that holds after a
    power failure (at the disk's pace: a run then waits on every write)."""
    params = dict(params or {})
    if fmt is None:
        fmt = "jpeg" if os.path.splitext(dst)[1].lower() in (".jpg", ".jpeg") else "png"
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if shard_size is not None and shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    shard_src = shard_inputs(src) if os.path.exists(src) else None
    if shard_src is not None:
        the_plan = plan_shards(*shard_src, src, dst, shard_size)
    elif shard_size is not None:
        raise ValueError(f"--shard-size needs tar shards as SRC (a .tar file, a folder of them or a list); {src!r} is not")
    else:
        the_plan = plan(src, dst, fmt, follow_links)
    cores = threads or os.cpu_count() or 1
    defend = build_defense(defense, params, cores)
    jpeg_file = imagefiles.jpeg_spec_of(defend)
    if fmt == "jpeg" and jpeg_file is None:
        raise ValueError(f"defense {defense!r} has no quantization tables of its own to store in a JPEG; use --format png")
    settings = settings_key(defense, params, fmt, shard_size=shard_size)
    if report:
        check_report_path(report, the_plan)
    report_path = report or (None if the_plan.single_file else os.path.join(the_plan.dst_root, REPORT_NAME))
    check_folder_can_be_made(the_plan.dst_root, "DST" if not the_plan.single_file else "DST's folder")
    try:
        os.makedirs(the_plan.dst_root, exist_ok=True)
    except OSError as exc:  # a race with the checks above, or a file system that refuses
        raise ValueError(f"cannot make DST {the_plan.dst_root!r}: {exc.strerror}") from None
    # one output file needs no lock (its folder may be anyone's): the atomic rename keeps it whole
    lock = None if the_plan.single_file else lock_dst(the_plan.dst_root)
    try:
        job = Job(defend, fmt, jpeg_file, png_level, max_pixels, None, the_plan.dst_root, settings,
                  io_threads or (4 if fsync else 1), fsync)
        forked = None  # the same defense on one core, for worker processes (one per core)
        if cores > 1 and can_fork(defend, "threads" in spec(defense).defaults):
            forked = build_defense(defense, params, 1)
        return _run_locked(the_plan, job, forked, cores, resume, overwrite, report_path, batch_size, progress, stop,
                           (lock.fileno(),) if lock is not None else ())
    finally:
        if lock is not None:
            lock.close()


def _run_locked(the_plan, job: Job, forked, cores: int, resume: bool, overwrite: bool, report_path: Optional[str],
                batch_size: int, progress: bool, stop: Optional[threading.Event], lock_fds: Tuple[int, ...]) -> Summary:
    remove_stale_temps(the_plan.dst_root, recursive=not the_plan.single_file, keep_out=the_plan.src_dir)
    # one output file keeps no manifest (its folder may be anyone's), so --resume never vouches for it
    manifest_path = None if the_plan.single_file else os.path.join(the_plan.dst_root, MANIFEST_NAME)
    manifest = load_manifest(manifest_path) if manifest_path else {}

    outcomes: List[Outcome] = [Outcome(p, "ignored", reason="not an image file name (extension)") for p in the_plan.ignored]
    outcomes += [Outcome(p, "skipped", reason=why) for p, why in the_plan.skipped]
    todo: List[Task] = []
    for task in the_plan.tasks:
        done = existing_output(task, manifest, job.settings, the_plan.dst_root, resume, overwrite)
        if done is None:
            todo.append(task)
        else:
            outcomes.append(done)

    start = time.perf_counter()
    job.manifest_path = manifest_path
    shards = isinstance(the_plan, ShardPlan)
    if shards:  # a worker writes a whole shard; the bar counts shards
        wanted = {id(t) for t in todo}
        items: list = [u for u in the_plan.units if id(u.task) in wanted]
        runner_kw = dict(make=lambda abort: ShardWriter(job, abort, batch_size), lost=lost_shard, weight=lambda _: 1)
        bar = Progress(len(items), progress, unit="shards")
    else:
        items = file_chunks(todo, batch_size)
        runner_kw = dict(make=lambda abort: Chunks(job, abort))
        bar = Progress(len(todo), progress)
    workers = min(cores, len(items)) if forked is not None else 1
    if workers > 1:
        job.defend = forked
    runner = Runner(workers=workers, stop=stop or threading.Event(), keep_fds=lock_fds, **runner_kw)
    interrupted = False
    try:
        runner.run(items, outcomes, bar)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        bar.close()
        renamed = {t.src for t in the_plan.tasks if t.renamed}
        for o in outcomes:
            o.renamed = o.src in renamed
        summary = summarize(outcomes, time.perf_counter() - start, report_path, interrupted, shards)
        if report_path:
            write_report(report_path, summary, job.settings)
    return summary

