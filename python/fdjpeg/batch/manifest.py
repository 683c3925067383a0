"""What DST holds besides the outputs: the manifest (``.fdjpeg-manifest.jsonl``: a line with the
settings just before each output's rename and another once it is done, so that ``--resume`` skips
only outputs these settings finished), the lock one run holds on ``.fdjpeg-lock``,
and the temporary files killed runs left behind."""

from __future__ import annotations

import json
import os

try:
    import fcntl
except ImportError:  # Windows: no flock; runs on one DST are not kept apart there
    fcntl = None
from typing import TYPE_CHECKING, Any, Dict, Optional

from .. import imagefiles
from .report import Outcome

if TYPE_CHECKING:
    from .planning import Task


MANIFEST_NAME = ".fdjpeg-manifest.jsonl"
LOCK_NAME = ".fdjpeg-lock"  # held (flock) by the run writing into DST; left in place, as removing it races


def settings_key(defense: str, params: Dict[str, Any], fmt: str, **more: Any) -> str:
    """The settings an output was made with, as the manifest stores them (``more``: the shard size)."""
    chosen = {k: v for k, v in params.items() if k != "threads"}  # threads do not change pixels
    more = {k: v for k, v in more.items() if v is not None}
    return json.dumps({"defense": defense, "params": chosen, "format": fmt, **more}, sort_keys=True, default=str)


class Records:
    """Appends manifest lines: "writing" just before an output's rename, "done" after it, so that a
    resumed run can tell its own finished outputs from anyone's, and redoes one it was replacing
    when it stopped. One write() of an O_APPEND descriptor per line keeps the lines of several
    processes whole."""

    def __init__(self, path: Optional[str], root: str, settings: str):
        self.root, self.settings = root, settings
        self.prefix = os.path.join(root, "")
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666) if path else None

    def record(self, out: str, src: str, size: int, state: str) -> None:
        if self.fd is None:
            return
        # outputs are planned as root + relative path: slicing gives relpath's answer without its cost
        rel = out[len(self.prefix):] if out.startswith(self.prefix) else os.path.relpath(out, self.root)
        rec = {"out": rel, "src": src, "bytes": size, "settings": self.settings, "state": state}
        os.write(self.fd, (json.dumps(rec) + "\n").encode())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def load_manifest(path: str) -> Dict[str, dict]:
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



def existing_output(task: Task, manifest: Dict[str, dict], settings: str, root: str, resume: bool,
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
    if rec.get("state") == "writing":  # stopped while replacing it (renamed or not): this run's own path, redo it
        return None
    if rec.get("bytes") == os.path.getsize(task.out):
        return Outcome(task.src, "complete", task.out)
    return Outcome(task.src, "failed", task.out, "output changed since this DST's run wrote it; --overwrite to redo it")


def remove_stale_temps(folder: str, recursive: bool = True, keep_out: Optional[str] = None) -> int:
    """Delete temporary files left in ``folder`` (and below) by killed runs (their process is gone);
    the folder ``keep_out`` (SRC, a real path, when it sits inside DST) is not entered."""
    removed = 0
    walk = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
    for dirpath, dirs, files in walk:
        if keep_out is not None:
            dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(dirpath, d)) != keep_out]
        for name in files:
            pid = temp_writer(name)
            if pid is not None and pid != os.getpid() and not process_alive(pid):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def temp_writer(name: str) -> Optional[int]:
    """The id of the process that wrote the temporary file ``name`` (see ``imagefiles.atomic_write``),
    or None when ``name`` is not such a file."""
    if not (name.startswith(imagefiles.TEMP_PREFIX) and name.endswith(".tmp")):
        return None
    pid = name[len(imagefiles.TEMP_PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True



class DstBusy(ValueError):
    """Another run holds DST's lock."""


def lock_dst(folder: str):
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

