"""Defending image files in bulk: the engine of ``fdjpeg defend``.

The flow: find the inputs (a file, a folder walked recursively, or a list file) and plan one output
per input under the destination, mirroring the tree; refuse any plan that could write into the
source or over an input. Then reader threads decode images (Pillow releases the GIL), the calling
thread groups them by shape and runs the defense on each stack (the native core uses all cores),
and writer threads encode and write atomically (temporary file, fsync, rename) while the next
batch is read and defended. A bad file becomes a line in the report, never the end of the run.

Resume: ``DST/.fdjpeg-manifest.jsonl`` gets a line with the settings and the bytes' hash just before
each output's rename and another once it is done; ``resume=True`` skips only outputs the manifest
says these settings made (an output without such a record is reported, never taken as complete).
One run at a time writes into a DST (a lock on ``DST/.fdjpeg-lock``).
"""

from __future__ import annotations

import hashlib
import json
import os

try:
    import fcntl
except ImportError:  # Windows: no flock; runs on one DST are not kept apart there
    fcntl = None
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from . import imagefiles
from .defenses import build_defense
from .imagefiles import BadImage

FORMATS = {"png": ".png", "jpeg": ".jpg"}
LIST_EXTENSIONS = (".txt", ".lst", ".list")
MANIFEST_NAME = ".fdjpeg-manifest.jsonl"
LOCK_NAME = ".fdjpeg-lock"  # held (flock) by the run writing into DST; left in place, as removing it races
REPORT_NAME = "fdjpeg-report.json"
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def image_extensions() -> set:
    """File name endings of the formats Pillow can open here (lower case, with the dot)."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


# ------------------------------------------------------------------------------------------------
# Planning: which files, written where


@dataclass
class Task:
    src: str  # absolute input path
    out: str  # absolute output path
    renamed: bool = False  # the plain name clashed with another input's (see _mirror)


@dataclass
class Plan:
    tasks: List[Task]
    ignored: List[str]  # files under SRC that are not images by their name (reported, not failed)
    dst_root: str  # folder of the manifest and the default report
    single_file: bool
    src_dir: Optional[str] = None  # real path of SRC when it is a folder (nothing is written below it)
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (link, why): links not followed


def find_inputs(src: str, follow_links: bool = False) -> Tuple[str, List[str], List[str], List[Tuple[str, str]]]:
    """``(root, images, ignored, skipped)``: absolute image paths under ``src`` and the folder they
    are relative to. ``src`` is an image file, a folder (walked recursively, hidden entries skipped)
    or a list file (``.txt``/``.lst``/``.list``: one path a line, relative to the list's folder,
    ``#`` comments). In a folder, links to files outside it and links to folders are ``skipped``
    ``(path, why)`` unless ``follow_links``; a followed folder link seen before (a loop) is skipped."""
    if not os.path.exists(src):
        raise FileNotFoundError(f"SRC {src!r} does not exist")
    src = os.path.abspath(src)
    if os.path.isdir(src):
        exts = image_extensions()
        real_src = os.path.realpath(src)
        images, ignored, skipped = [], [], []
        walked = {real_src}
        for folder, dirs, files in os.walk(src, followlinks=follow_links):
            walked.add(os.path.realpath(folder))
            kept = []
            for d in sorted(d for d in dirs if not d.startswith(".")):
                path = os.path.join(folder, d)
                if not os.path.islink(path):
                    kept.append(d)
                elif not follow_links:
                    skipped.append((path, f"link to a folder ({os.path.realpath(path)}), not walked; --follow-links to walk it"))
                elif os.path.realpath(path) in walked:
                    skipped.append((path, f"link to a folder already walked ({os.path.realpath(path)}); not walked twice"))
                else:
                    walked.add(os.path.realpath(path))
                    kept.append(d)
            dirs[:] = kept
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = os.path.join(folder, name)
                if not follow_links and os.path.islink(path) and not _inside(os.path.realpath(path), real_src):
                    skipped.append((path, f"link to a file outside SRC ({os.path.realpath(path)}); --follow-links to defend it"))
                    continue
                (images if os.path.splitext(name)[1].lower() in exts else ignored).append(path)
        return src, images, ignored, skipped
    if src.lower().endswith(LIST_EXTENSIONS):
        base = os.path.dirname(src)
        with open(src, encoding="utf-8") as f:
            entries = [line.strip() for line in f]
        images = [os.path.normpath(os.path.join(base, e)) for e in entries if e and not e.startswith("#")]
        if not images:
            raise ValueError(f"list file {src!r} names no images")
        root = os.path.commonpath([os.path.dirname(p) for p in images])
        return root, list(dict.fromkeys(images)), [], []
    return os.path.dirname(src), [src], [], []


def plan(src: str, dst: str, fmt: str, follow_links: bool = False) -> Plan:
    """Map every input to its output and check that no output lands in SRC or on an input."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    root, images, ignored, skipped = find_inputs(src, follow_links)
    dst_abs = os.path.abspath(dst)
    src_abs = os.path.abspath(src)
    if os.path.isdir(src_abs):
        real_src, real_dst = os.path.realpath(src_abs), os.path.realpath(dst_abs)
        if real_dst == real_src or real_dst.startswith(real_src.rstrip(os.sep) + os.sep):
            raise ValueError(f"DST {dst!r} is SRC or inside it; choose a destination outside {src!r}")
    single = os.path.isfile(src_abs) and not src_abs.lower().endswith(LIST_EXTENSIONS)
    target_ext = os.path.splitext(dst_abs)[1].lower()
    if single and target_ext in (".png", ".jpg", ".jpeg") and not os.path.isdir(dst_abs):
        if (target_ext == ".png") != (fmt == "png"):
            raise ValueError(f"DST {dst!r} names a {target_ext} file but the format is {fmt}")
        tasks = [Task(images[0], dst_abs)]
        dst_root = os.path.dirname(dst_abs)
    else:
        tasks = [Task(p, out, renamed) for p, (out, renamed) in zip(images, _mirror(root, images, dst_abs, FORMATS[fmt]))]
        dst_root = dst_abs
    inputs = {os.path.realpath(p) for p in images}
    src_dir = os.path.realpath(src_abs) if os.path.isdir(src_abs) else None
    real_root = os.path.realpath(dst_root)
    folders: Dict[str, str] = {}  # output folder -> its real path (links resolved once per folder)
    for t in tasks:
        if os.path.realpath(t.out) in inputs or (os.path.exists(t.out) and _same_as_any(t.out, images)):
            raise ValueError(f"output {t.out!r} would overwrite the input of the same name; choose another DST")
        # a folder in DST may be a link: where the file really lands decides (SRC may sit inside DST)
        parent = os.path.dirname(t.out)
        real = folders.get(parent)
        if real is None:
            real = folders[parent] = os.path.realpath(parent)
        if src_dir is not None and _inside(real, src_dir):
            raise ValueError(f"output {t.out!r} would be inside SRC (real path {real!r}); choose another DST")
        if not _inside(real, real_root):
            raise ValueError(f"output {t.out!r} would land outside DST (a linked folder leads to {real!r}); choose another DST")
    return Plan(tasks, ignored, dst_root, single, src_dir, skipped)


def _mirror(root: str, images: Sequence[str], dst: str, ext: str) -> List[Tuple[str, bool]]:
    """``(output path, renamed)`` for each input: its path relative to ``root`` under ``dst`` with
    ``ext`` instead of its extension. Names are made unique after that rename, deterministically:
    a name only one input maps to keeps it; inputs that share one keep their own extension
    (``a.jpg`` -> ``a.jpg.png``); a name that still clashes gets ``~2``, ``~3``, ... before ``ext``
    (``a.jpg~2.png``), the first free one in input order."""
    rels = [os.path.relpath(p, root) for p in images]
    plain = [os.path.splitext(r)[0] + ext for r in rels]
    counts: Dict[str, int] = {}
    for p in plain:
        counts[p] = counts.get(p, 0) + 1
    taken = {p for p in plain if counts[p] == 1}  # unique plain names have the first claim
    names: List[Tuple[str, bool]] = []
    for p, r in zip(plain, rels):
        if counts[p] == 1:
            names.append((p, False))
            continue
        name, n = r + ext, 1
        while name in taken:
            n += 1
            name = f"{r}~{n}{ext}"
        taken.add(name)
        names.append((name, True))
    return [(os.path.join(dst, name), renamed) for name, renamed in names]


def _same_as_any(out: str, images: Sequence[str]) -> bool:
    return any(os.path.exists(p) and os.path.samefile(out, p) for p in images)


def _inside(path: str, folder: str) -> bool:
    """Whether real path ``path`` is ``folder`` or below it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_folder_can_be_made(folder: str, what: str) -> None:
    """Refuse, before anything is created, a folder that exists as something else, or that would
    go below a file or into a folder this process cannot write (root writes anywhere)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{what} {folder!r} is a file, not a folder")
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{what} {folder!r} cannot be made: {existing!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {folder!r} is not writable ({existing!r} does not let this user write)")


def check_report_path(report: str, the_plan: Plan) -> None:
    """Refuse a ``--report`` path that would replace an input, an output or the manifest, or land
    in SRC: the JSON would silently take the place of a file the user or this run needs."""
    real = os.path.realpath(report)
    if os.path.isdir(real):
        raise ValueError(f"--report {report!r} is a folder; name a file")
    check_folder_can_be_made(os.path.dirname(real), "--report's folder")
    if the_plan.src_dir is not None and _inside(real, the_plan.src_dir):
        raise ValueError(f"--report {report!r} is inside SRC; nothing is written there")
    if any(real == os.path.realpath(t.src) for t in the_plan.tasks):
        raise ValueError(f"--report {report!r} is an input; it would be replaced")
    if any(real == os.path.realpath(t.out) for t in the_plan.tasks):
        raise ValueError(f"--report {report!r} is one of the outputs; choose another path")
    if not the_plan.single_file and real == os.path.realpath(os.path.join(the_plan.dst_root, MANIFEST_NAME)):
        raise ValueError(f"--report {report!r} is the run's manifest; choose another path")


# ------------------------------------------------------------------------------------------------
# Outcomes, manifest, report


@dataclass
class Outcome:
    src: str
    status: str  # "written", "complete" (found finished on --resume), "failed", "ignored", "skipped" (a link)
    out: Optional[str] = None
    reason: str = ""
    notes: List[str] = field(default_factory=list)
    bytes: int = 0
    renamed: bool = False  # the output name is not the plain rename (it clashed; see _mirror)


@dataclass
class Summary:
    counts: Dict[str, int]
    outcomes: List[Outcome]
    seconds: float
    report_path: Optional[str]
    interrupted: bool = False

    @property
    def exit_status(self) -> int:
        return 1 if self.counts.get("failed", 0) else 0

    @property
    def images_per_second(self) -> float:
        return self.counts.get("written", 0) / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        c = self.counts
        line = (
            f"{c.get('written', 0)} written, {c.get('complete', 0)} already complete, "
            f"{c.get('failed', 0)} failed, {c.get('ignored', 0)} not images, {c.get('skipped', 0)} skipped links; "
            f"{c.get('converted', 0)} converted on the way; {self.seconds:.1f} s "
            f"({self.images_per_second:.1f} images/s)"
        )
        bad = [o for o in self.outcomes if o.status == "failed"]
        lines = [line] + [f"  failed: {shown(o.src)}: {shown(o.reason)}" for o in bad[:20]]
        if len(bad) > 20:
            lines.append(f"  ... and {len(bad) - 20} more")
        renamed = sum(1 for o in self.outcomes if o.renamed)
        if renamed:
            lines.append(f"  {renamed} outputs named apart from inputs that would share a name (the report maps them)")
        if self.report_path:
            lines.append(f"report: {shown(self.report_path)}")
        return "\n".join(lines)


def shown(text: str) -> str:
    """``text`` as printable UTF-8: a file name's bytes that are not UTF-8 (held by Python as lone
    surrogates) become ``\\xff`` escapes, so a summary or report never fails on a name."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that do not stand for bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _shown_entry(o: "Outcome") -> dict:
    entry = {k: v for k, v in asdict(o).items() if v not in (None, "", [], 0, False)}
    return {k: (shown(v) if isinstance(v, str) else [shown(n) for n in v] if isinstance(v, list) else v)
            for k, v in entry.items()}


def _settings_key(defense: str, params: Dict[str, Any], fmt: str) -> str:
    chosen = {k: v for k, v in params.items() if k != "threads"}  # threads do not change pixels
    return json.dumps({"defense": defense, "params": chosen, "format": fmt}, sort_keys=True, default=str)


def _load_manifest(path: str) -> Dict[str, dict]:
    records: Dict[str, dict] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    records[rec["out"]] = rec
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill: that output is re-checked by decoding
    return records


def _write_report(path: str, summary: Summary, settings: str) -> None:
    """JSON: the run's settings, counts, and one entry per file that failed, was converted, was
    not an image or got an output name other than the plain rename (files written as they were
    are only counted)."""
    entries = [
        _shown_entry(o)
        for o in summary.outcomes
        if o.status in ("failed", "ignored", "skipped") or o.notes or o.renamed
    ]
    doc = {
        "settings": json.loads(settings),
        "counts": summary.counts,
        "seconds": round(summary.seconds, 3),
        "interrupted": summary.interrupted,
        "files": entries,
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    imagefiles.atomic_write(path, json.dumps(doc, indent=1).encode())


def remove_stale_temps(folder: str, recursive: bool = True, keep_out: Optional[str] = None) -> int:
    """Delete temporary files left in ``folder`` (and below) by killed runs (their process is gone);
    the folder ``keep_out`` (SRC, a real path, when it sits inside DST) is not entered."""
    removed = 0
    walk = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
    for dirpath, dirs, files in walk:
        if keep_out is not None:
            dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(dirpath, d)) != keep_out]
        for name in files:
            if not (name.startswith(imagefiles.TEMP_PREFIX) and name.endswith(".tmp")):
                continue
            pid = name[len(imagefiles.TEMP_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------------------
# Progress


class DstBusy(ValueError):
    """Another run holds DST's lock."""


def _lock_dst(folder: str):
    """Open and lock ``folder``/LOCK_NAME for this run (None without fcntl); DstBusy when another
    process holds it. The lock goes with the process, so a killed run leaves no stale lock."""
    if fcntl is None:
        return None
    path = os.path.join(folder, LOCK_NAME)
    handle = open(path, "a")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DstBusy(f"DST {folder!r} is busy: another fdjpeg defend run is writing there (it holds {path!r})") from None
    return handle


class Progress:
    """tqdm when installed, else one self-rewriting line on stderr (images/s and ETA)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled
        self.start = self.last = time.perf_counter()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="img", dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last >= 1.0 or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            sys.stderr.write(f"\r{self.done}/{self.total} images  {rate:.1f} img/s  ETA {eta:.0f} s ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


# ------------------------------------------------------------------------------------------------
# The run


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
    progress: bool = True,
    stop: Optional[threading.Event] = None,
) -> Summary:
    """Defend every image under ``src`` into ``dst`` (see the module doc). Returns the summary;
    the report (JSON) goes to ``report`` or ``DST/fdjpeg-report.json``. KeyboardInterrupt (Ctrl-C),
    or ``stop`` being set (the command sets it from SIGINT / SIGTERM), stops the run with no partial
    output left behind; with ``stop`` the run ends at the next safe point and raises
    KeyboardInterrupt there."""
    params = dict(params or {})
    if fmt is None:
        fmt = "jpeg" if os.path.splitext(dst)[1].lower() in (".jpg", ".jpeg") else "png"
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    the_plan = plan(src, dst, fmt, follow_links)
    defend = build_defense(defense, params, threads)
    jpeg_file = imagefiles.jpeg_spec_of(defend)
    if fmt == "jpeg" and jpeg_file is None:
        raise ValueError(f"defense {defense!r} has no quantization tables of its own to store in a JPEG; use --format png")
    settings = _settings_key(defense, params, fmt)
    if report:
        check_report_path(report, the_plan)
    report_path = report or (None if the_plan.single_file else os.path.join(the_plan.dst_root, REPORT_NAME))
    check_folder_can_be_made(the_plan.dst_root, "DST" if not the_plan.single_file else "DST's folder")
    try:
        os.makedirs(the_plan.dst_root, exist_ok=True)
    except OSError as exc:  # a race with the checks above, or a file system that refuses
        raise ValueError(f"cannot make DST {the_plan.dst_root!r}: {exc.strerror}") from None
    # one output file needs no lock (its folder may be anyone's): the atomic rename keeps it whole
    lock = None if the_plan.single_file else _lock_dst(the_plan.dst_root)
    try:
        return _run_locked(the_plan, defend, fmt, jpeg_file, settings, report_path, resume, overwrite,
                           io_threads, batch_size, max_pixels, png_level, progress, stop)
    finally:
        if lock is not None:
            lock.close()


def _run_locked(the_plan, defend, fmt, jpeg_file, settings, report_path, resume, overwrite,
                io_threads, batch_size, max_pixels, png_level, progress, stop) -> Summary:
    remove_stale_temps(the_plan.dst_root, recursive=not the_plan.single_file, keep_out=the_plan.src_dir)
    # one output file keeps no manifest (its folder may be anyone's), so --resume never vouches for it
    manifest_path = None if the_plan.single_file else os.path.join(the_plan.dst_root, MANIFEST_NAME)
    manifest = _load_manifest(manifest_path) if manifest_path else {}

    outcomes: List[Outcome] = [Outcome(p, "ignored", reason="not an image file name (extension)") for p in the_plan.ignored]
    outcomes += [Outcome(p, "skipped", reason=why) for p, why in the_plan.skipped]
    todo: List[Task] = []
    for task in the_plan.tasks:
        done = _existing_output(task, manifest, settings, the_plan.dst_root, resume, overwrite)
        if done is None:
            todo.append(task)
        else:
            outcomes.append(done)

    start = time.perf_counter()
    bar = Progress(len(todo), progress)
    runner = _Runner(defend, fmt, jpeg_file, png_level, max_pixels, io_threads, batch_size, manifest_path, the_plan.dst_root, settings)
    runner.stop = stop or threading.Event()
    interrupted = False
    try:
        runner.run(todo, outcomes, bar)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        bar.close()
        renamed = {t.src for t in the_plan.tasks if t.renamed}
        for o in outcomes:
            o.renamed = o.src in renamed
        summary = _summarize(outcomes, time.perf_counter() - start, report_path, interrupted)
        if report_path:
            _write_report(report_path, summary, settings)
    return summary


def _summarize(outcomes: List[Outcome], seconds: float, report_path: Optional[str], interrupted: bool) -> Summary:
    counts = {s: 0 for s in ("written", "complete", "failed", "ignored", "skipped")}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    counts["converted"] = sum(1 for o in outcomes if o.notes and o.status == "written")
    return Summary(counts, outcomes, seconds, report_path, interrupted)


def _existing_output(task: Task, manifest: Dict[str, dict], settings: str, root: str, resume: bool,
                     overwrite: bool) -> Optional[Outcome]:
    """None when ``task`` must run; else its outcome (already complete, or refused). On resume an
    output counts as complete only when the manifest says this run's settings made it: a file the
    manifest does not vouch for may be anyone's, or made with other settings, so it is reported."""
    if not os.path.lexists(task.out) or overwrite:
        return None
    if not resume:
        return Outcome(task.src, "failed", task.out, "output exists (use --resume to keep finished outputs or --overwrite to replace them)")
    rec = manifest.get(os.path.relpath(task.out, root))
    if rec is None:
        return Outcome(task.src, "failed", task.out, "output exists but no manifest record says these settings made it "
                       "(another run, another tool, or a single-file run, which keeps none); --overwrite to redo it")
    if rec.get("settings") != settings:
        return Outcome(task.src, "failed", task.out, f"output exists from a run with other settings {rec.get('settings')}; use another DST or --overwrite")
    if rec.get("state") == "writing":  # recorded just before its rename: complete only if it is those bytes
        if rec.get("bytes") == os.path.getsize(task.out) and rec.get("sha256") == _sha256_of(task.out):
            return Outcome(task.src, "complete", task.out)
        return None  # the rename did not happen: this run's own path, redo it
    if rec.get("bytes") == os.path.getsize(task.out):
        return Outcome(task.src, "complete", task.out)
    return Outcome(task.src, "failed", task.out, "output changed since this DST's run wrote it; --overwrite to redo it")


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Runner:
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
