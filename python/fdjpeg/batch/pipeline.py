"""The pipeline of a run: decode, defend and encode + write the images of the to-do list, with
bounded queues so that memory does not grow with the folder."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Optional

import numpy as np

from .. import imagefiles
from ..imagefiles import BadImage
from .planning import Task
from .progress import Progress
from .report import Outcome

class Runner:
    """Reader pool -> defense on stacks of same-shaped images -> writer pool, with bounded queues."""

    def __init__(self, defend, fmt, jpeg_file, png_level, max_pixels, io_threads, batch_size, manifest_path, root, settings):
        self.defend, self.fmt, self.jpeg_file, self.png_level = defend, fmt, jpeg_file, png_level
        self.max_pixels, self.batch_size = max_pixels, batch_size
        self.io_threads = io_threads or max(2, os.cpu_count() or 2)
        self.manifest_path, self.root, self.settings = manifest_path, root, settings
        self.temps: set = set()
        self.manifest = None
        self.manifest_lock = threading.Lock()
        self.abort = threading.Event()
        self.stop = threading.Event()  # set from outside (a signal handler) to stop at a safe point

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt

    def run(self, todo: List[Task], outcomes: List[Outcome], bar: Progress) -> None:
        if not todo:
            return
        window = 2 * self.batch_size
        readers = ThreadPoolExecutor(self.io_threads, thread_name_prefix="fdjpeg-read")
        writers = ThreadPoolExecutor(self.io_threads, thread_name_prefix="fdjpeg-write")
        reads: deque = deque()
        writes: deque = deque()
        pending = iter(todo)
        manifest = self.manifest = open(self.manifest_path, "a", encoding="utf-8") if self.manifest_path else None

        def finish(fut: Future) -> None:
            outcome = fut.result()
            outcomes.append(outcome)
            if outcome.status == "written":
                self._record(outcome.out, outcome.src, outcome.bytes, "done")
            bar.update()

        try:
            for task in pending:
                reads.append((task, readers.submit(self._read, task)))
                if len(reads) >= window:
                    break
            while reads:
                self._check_stop()
                batch = []
                while reads and len(batch) < self.batch_size:
                    task, fut = reads.popleft()
                    batch.append((task, fut.result()))
                    self._check_stop()
                    nxt = next(pending, None)
                    if nxt is not None:
                        reads.append((nxt, readers.submit(self._read, nxt)))
                for task, result in self._defend_batch(batch):
                    if isinstance(result, Outcome):
                        outcomes.append(result)
                        bar.update()
                    else:
                        writes.append(writers.submit(self._write, task, *result))
                while writes and (writes[0].done() or len(writes) > window):
                    finish(writes.popleft())
            while writes:
                self._check_stop()
                finish(writes.popleft())
        except BaseException:
            self.abort.set()
            readers.shutdown(wait=False, cancel_futures=True)
            writers.shutdown(wait=True, cancel_futures=True)  # running writes end whole or not at all
            for tmp in list(self.temps):
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
            for fut in writes:  # record what did finish before the stop
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    finish(fut)
            raise
        finally:
            readers.shutdown(wait=True)
            writers.shutdown(wait=True)
            if manifest is not None:
                manifest.close()

    def _record(self, out: str, src: str, size: int, state: str, sha256: Optional[str] = None) -> None:
        """Append a manifest line: "writing" (with the bytes' hash) just before an output's rename,
        "done" after it, so that a resumed run can tell its own finished outputs from anyone's."""
        if self.manifest is None:
            return
        rec = {"out": os.path.relpath(out, self.root), "src": src, "bytes": size, "settings": self.settings, "state": state}
        if sha256 is not None:
            rec["sha256"] = sha256
        with self.manifest_lock:
            self.manifest.write(json.dumps(rec) + "\n")
            self.manifest.flush()

    def _read(self, task: Task):
        if self.abort.is_set():
            return Outcome(task.src, "failed", task.out, "interrupted")
        try:
            return imagefiles.read(task.src, self.max_pixels)
        except BadImage as exc:
            return Outcome(task.src, "failed", task.out, str(exc))
        except MemoryError:
            return Outcome(task.src, "failed", task.out, "not enough memory to decode it")
        except Exception as exc:  # noqa: BLE001 - a decoder's odd error must not stop the run
            return Outcome(task.src, "failed", task.out, f"cannot read: {type(exc).__name__}: {exc}")

    def _defend_batch(self, batch):
        """Yield ``(task, Outcome)`` for failures and ``(task, (pixels, alpha, notes))`` for the
        defended images; images of one shape go through the defense as one stack."""
        groups: Dict[tuple, list] = {}
        for task, item in batch:
            if isinstance(item, Outcome):
                yield task, item
            else:
                groups.setdefault(item.pixels.shape, []).append((task, item))
        for members in groups.values():
            try:
                defended = self._apply(np.stack([d.pixels for _, d in members]))
                results = list(defended)
            except Exception:  # noqa: BLE001 - isolate the image the defense rejects
                results = []
                for task, d in members:
                    try:
                        results.append(self._apply(d.pixels[None])[0])
                    except Exception as exc:  # noqa: BLE001
                        results.append(Outcome(task.src, "failed", task.out, f"defense failed: {exc}"))
            for (task, d), out in zip(members, results):
                yield task, (out if isinstance(out, Outcome) else (out, d.alpha, d.notes))

    def _apply(self, stack: np.ndarray) -> np.ndarray:
        out = self.defend(stack)
        out = np.asarray(out)
        if out.shape != stack.shape or out.dtype != np.uint8:
            raise ValueError(f"defense returned {out.dtype} {out.shape} for uint8 {stack.shape}")
        return out

    def _write(self, task: Task, pixels: np.ndarray, alpha, notes) -> Outcome:
        if self.abort.is_set():
            return Outcome(task.src, "failed", task.out, "interrupted")
        try:
            data, more = imagefiles.encode(pixels, alpha, self.fmt, self.jpeg_file, self.png_level)
            os.makedirs(os.path.dirname(task.out), exist_ok=True)
            if self.manifest is not None:
                self._record(task.out, task.src, len(data), "writing", hashlib.sha256(data).hexdigest())
            imagefiles.atomic_write(task.out, data, self.temps)
        except Exception as exc:  # noqa: BLE001 - disk full, encoder error: report, go on
            return Outcome(task.src, "failed", task.out, f"cannot write output: {type(exc).__name__}: {exc}")
        return Outcome(task.src, "written", task.out, notes=list(notes) + more, bytes=len(data))
