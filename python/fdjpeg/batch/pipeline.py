"""The pipeline of a run: decode -> defend -> encode -> write, overlapped on all cores.

Worker processes (forked, one per core) each take a chunk of ``batch_size`` images, decode them,
run the defense once per stack of same-shaped images with the native core on one thread, encode
them and hand the bytes to a writer thread of their own, which writes while the next is encoded
(four threads with ``--fsync``, whose syncs wait on the disk, not the CPU; more writer threads than
that cost CPU: measured, see docs/cli.md), then take the next chunk. Processes rather than threads
because fpng and parts of Pillow hold the GIL: measured on 2 cores, threads in one process
serialised on it (see docs/cli.md). The main process keeps at most two chunks per worker in
flight, so memory stays bounded whatever the folder size, and updates the progress bar as chunks
come back.

A randomised defense (its draws must follow one stream), a defense without a ``threads`` parameter
(torch models, which must not be forked), or a run of a single chunk runs in this process instead,
the same code with the defense's own threads.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .. import imagefiles
from ..imagefiles import BadImage, Decoded
from .manifest import Records
from .planning import Task
from .progress import Progress
from .report import Outcome


@dataclass
class Job:
    """What every image of a run gets; built in the main process, inherited by forked workers."""

    defend: Callable
    fmt: str
    jpeg_file: Optional[dict]
    png_level: int
    max_pixels: Optional[int]
    manifest_path: Optional[str]
    root: str
    settings: str
    write_threads: int
    fsync: bool = False  # sync each output before its rename (whole after a power failure too)


def open_file(job: Job, path: str, out: str):
    """The image file at ``path`` read (:class:`imagefiles.Opened`), or the failed Outcome naming why."""
    try:
        return imagefiles.open_file(path, job.max_pixels)
    except BadImage as exc:
        return Outcome(path, "failed", out, str(exc))
    except Exception as exc:  # noqa: BLE001 - an odd error must not stop the run
        return Outcome(path, "failed", out, f"cannot read: {type(exc).__name__}: {exc}")


@dataclass
class Stack:
    """Decoded images of one shape as the rows of one array, for one defense call."""

    members: List[int]  # their positions among the images decoded together
    pixels: np.ndarray  # len(members) x H x W x C


def decode_stacks(opened: List[imagefiles.Opened]) -> Tuple[List[object], List[Stack]]:
    """Decode every opened image: per position its :class:`Decoded`, or the Exception naming why it
    cannot be; and the stacks of the decoded ones, one per shape. JPEGs that libjpeg-turbo decodes
    go straight into the rows of their stack (their shape is known from the header); the others,
    decoded first, are copied into one."""
    results: List[object] = [None] * len(opened)
    stacks: List[Stack] = []
    by_header: Dict[tuple, List[int]] = {}
    later: List[int] = []
    for i, o in enumerate(opened):
        (by_header.setdefault(o.shape, []) if o.shape is not None else later).append(i)
    for shape, members in by_header.items():
        rows = np.empty((len(members),) + shape, np.uint8)
        kept: List[int] = []
        for i in members:
            row = rows[len(kept)]
            results[i] = _decoded(opened[i], row)
            if isinstance(results[i], Decoded) and results[i].pixels is row:
                kept.append(i)
            elif isinstance(results[i], Decoded):
                later.append(i)  # Pillow's decode after all, with an alpha plane: stacked with the others
        if kept:
            stacks.append(Stack(kept, rows[: len(kept)]))
    shapes: Dict[tuple, List[int]] = {}
    for i in later:
        if results[i] is None:
            results[i] = _decoded(opened[i], None)
        if isinstance(results[i], Decoded):
            shapes.setdefault(results[i].pixels.shape, []).append(i)
    for members in shapes.values():
        pixels = [results[i].pixels for i in members]
        stacks.append(Stack(members, pixels[0][None] if len(members) == 1 else np.stack(pixels)))
    return results, stacks


def _decoded(opened: imagefiles.Opened, into: Optional[np.ndarray]):
    try:
        return opened.decode(into)
    except BadImage as exc:
        return exc
    except MemoryError:
        return BadImage("not enough memory to decode it")
    except Exception as exc:  # noqa: BLE001 - a decoder's odd error must not stop the run
        return BadImage(f"cannot read: {type(exc).__name__}: {exc}")


def defend_stacks(defend: Callable, stacks: List[Stack], count: int) -> List[object]:
    """The defended pixels of each of the ``count`` positions the stacks cover (one defense call a
    stack), or the Exception of an image the defense rejects (then retried alone)."""
    results: List[object] = [None] * count
    for stack in stacks:
        try:
            for i, y in zip(stack.members, _apply(defend, stack.pixels)):
                results[i] = y
        except Exception:  # noqa: BLE001 - isolate the image the defense rejects
            for i, x in zip(stack.members, stack.pixels):
                try:
                    results[i] = _apply(defend, x[None])[0]
                except Exception as exc:  # noqa: BLE001
                    results[i] = exc
    return results


def _apply(defend: Callable, stack: np.ndarray) -> np.ndarray:
    out = np.asarray(defend(stack))
    if out.shape != stack.shape or out.dtype != np.uint8:
        raise ValueError(f"defense returned {out.dtype} {out.shape} for uint8 {stack.shape}")
    return out


class Chunks:
    """Defends chunks of tasks in the process it lives in (a worker, or the main process)."""

    def __init__(self, job: Job, abort):
        self.job, self.abort = job, abort
        self.writers = ThreadPoolExecutor(job.write_threads, thread_name_prefix="fdjpeg-write")
        self.temps: set = set()
        self.folders: set = set()  # output folders known to exist: one makedirs each, not one per file
        self.records = Records(job.manifest_path, job.root, job.settings)

    def close(self) -> None:
        self.writers.shutdown(wait=True)
        self.records.close()

    def run(self, chunk: List[Tuple[str, str]]) -> List[Outcome]:
        """Outcomes of the chunk's ``(src, out)`` tasks; once ``abort`` is set, the images not yet
        started are left out (the run is stopping) and the writes under way finish whole."""
        job, outcomes, tasks, opened = self.job, [], [], []
        for src, out in chunk:
            if self.abort.is_set():
                break
            item = open_file(job, src, out)
            if isinstance(item, Outcome):
                outcomes.append(item)
            else:
                tasks.append((src, out))
                opened.append(item)
        writes = []
        if opened and not self.abort.is_set():
            decoded, stacks = decode_stacks(opened)
            defended = defend_stacks(job.defend, stacks, len(opened))
            for (src, out), d, y in zip(tasks, decoded, defended):
                if isinstance(d, Exception):
                    outcomes.append(Outcome(src, "failed", out, str(d)))
                elif isinstance(y, Exception):
                    outcomes.append(Outcome(src, "failed", out, f"defense failed: {y}"))
                elif not self.abort.is_set():
                    try:  # here: the encoders hold the GIL, so a writer thread would only wait for it
                        data, more = imagefiles.encode(y, d.alpha, job.fmt, job.jpeg_file, job.png_level)
                    except Exception as exc:  # noqa: BLE001 - an encoder's odd error: report, go on
                        outcomes.append(Outcome(src, "failed", out, f"cannot encode output: {type(exc).__name__}: {exc}"))
                        continue
                    writes.append(self.writers.submit(self._write, src, out, data, list(d.notes) + more))
        outcomes.extend(w.result() for w in writes)
        return outcomes

    def _write(self, src: str, out: str, data: bytes, notes: List[str]) -> Outcome:
        job = self.job
        try:
            folder = os.path.dirname(out)
            if folder not in self.folders:
                os.makedirs(folder, exist_ok=True)
                self.folders.add(folder)
            self.records.record(out, src, len(data), "writing")
            imagefiles.atomic_write(out, data, self.temps, sync=job.fsync)
        except Exception as exc:  # noqa: BLE001 - disk full, no permission: report, go on
            return Outcome(src, "failed", out, f"cannot write output: {type(exc).__name__}: {exc}")
        self.records.record(out, src, len(data), "done")
        return Outcome(src, "written", out, notes=notes, bytes=len(data))


# ---- worker processes ---------------------------------------------------------------------------

_worker = None  # the worker process's own handler (a Chunks, or a shard writer)
_inherited: Optional[Callable] = None  # makes the handler from the abort event; set just before the fork


def _worker_start(close_fds: Tuple[int, ...], abort) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the main process decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    _keep_freed_memory()
    for fd in close_fds:  # DST's lock belongs to the main process: a worker must not keep it held
        try:
            os.close(fd)
        except OSError:
            pass
    _worker = _inherited(abort)


def _worker_item(item):
    return _worker.run(item)


def _keep_freed_memory() -> None:
    """glibc's malloc returns freed blocks of a decoded image's size to the kernel and maps fresh
    ones for the next image, which the kernel zeroes page by page (about a tenth of a worker's CPU
    went to those page faults). A worker keeps its freed memory for reuse instead; what it holds
    stays bounded by the chunks it has in hand."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None)
            libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB free at the heap's top
            libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks below 1 GiB come from the heap
        except (OSError, AttributeError):
            pass


def _die_with_parent() -> None:
    """A worker ends when the main process does, even by SIGKILL (Linux); a killed run then leaves
    no process behind writing into DST without its lock."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() == 1:
            os._exit(1)


def can_fork(defend: Callable, takes_threads: bool) -> bool:
    """Whether the defense may run in forked workers: deterministic, and a native-core defense (it
    has a ``threads`` parameter); torch-based defenses keep to this process."""
    return (
        takes_threads
        and not bool(getattr(defend, "random", False))
        and "fork" in multiprocessing.get_all_start_methods()
    )


def file_chunks(todo: List[Task], batch_size: int) -> List[List[Tuple[str, str]]]:
    return [[(t.src, t.out) for t in todo[i : i + batch_size]] for i in range(0, len(todo), batch_size)]


def lost_chunk(chunk: List[Tuple[str, str]]) -> List[Outcome]:
    """Outcomes of a chunk whose worker process died."""
    return [Outcome(s, "failed", o, "the worker process defending it died (out of memory?); --resume to retry")
            for s, o in chunk]


class Runner:
    """Work items (chunks of images, or shards) through ``workers`` forked processes, or through
    this process when ``workers`` is 1. ``make(abort)`` builds the handler of a process, whose
    ``run(item)`` returns the item's outcomes; ``lost(item)`` names the outcomes of an item whose
    worker died; ``weight(item)`` is what the item adds to the progress bar."""

    def __init__(self, make: Callable, workers: int, stop: threading.Event, keep_fds: Tuple[int, ...] = (),
                 lost: Callable = lost_chunk, weight: Callable = len):
        self.make, self.workers, self.stop, self.keep_fds = make, workers, stop, keep_fds
        self.lost, self.weight = lost, weight

    def run(self, items: list, outcomes: List[Outcome], bar: Progress) -> None:
        if not items:
            return
        if self.workers <= 1 or len(items) == 1:
            self._run_here(items, outcomes, bar)
        else:
            self._run_forked(items, outcomes, bar)

    def _run_here(self, items, outcomes, bar) -> None:
        here = self.make(self.stop)
        try:
            for item in items:
                if self.stop.is_set():
                    raise KeyboardInterrupt
                outcomes.extend(here.run(item))
                bar.update(self.weight(item))
            if self.stop.is_set():
                raise KeyboardInterrupt
        finally:
            here.close()

    def _run_forked(self, items, outcomes, bar) -> None:
        global _inherited
        ctx = multiprocessing.get_context("fork")
        abort = ctx.Event()
        _inherited = self.make
        pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_worker_start, initargs=(self.keep_fds, abort))
        in_flight: deque = deque()
        pending: Iterable = iter(items)

        def collect(entry) -> None:
            item, fut = entry
            try:
                done = fut.result()
            except BrokenProcessPool:
                done = self.lost(item)
            outcomes.extend(done)
            bar.update(self.weight(item))

        try:
            for item in pending:  # at most two items per worker in flight: memory stays bounded
                in_flight.append((item, pool.submit(_worker_item, item)))
                if len(in_flight) >= 2 * self.workers:
                    break
            while in_flight:
                if self.stop.is_set():
                    raise KeyboardInterrupt
                try:
                    in_flight[0][1].result(timeout=0.2)
                except TimeoutError:  # look at the stop flag again
                    continue
                except Exception:  # noqa: BLE001 - collect() raises it, or reports a dead worker
                    pass
                collect(in_flight.popleft())
                nxt = next(pending, None)
                if nxt is not None and not self.stop.is_set():
                    in_flight.append((nxt, pool.submit(_worker_item, nxt)))
        except BaseException:
            abort.set()  # workers finish what is under way whole (or drop it) and return what they did
            for item, fut in in_flight:
                if fut.cancel():
                    continue
                try:
                    outcomes.extend(fut.result())
                except BaseException:  # noqa: BLE001 - a broken pool: nothing more to record
                    pass
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            _inherited = None
