"""WebDataset-style tar shards: SRC is a ``.tar`` file, a folder of them (walked recursively) or a
list file naming them; DST gets one output shard per input shard at the same relative path, or,
with ``shard_size``, ``shard-000000.tar``, ``shard-000001.tar``, ... of that many samples each.

A sample is the run of consecutive members that share a key (the member's path up to the first dot
of its file name, as WebDataset reads it). A member whose field (what follows that dot) is an image
extension is decoded, defended and stored as ``KEY.png`` (or ``KEY.jpg`` with ``--format jpeg``);
every other member (labels, ``.cls``, ``.json``, masks such as ``seg.png``) is copied byte for byte,
in order. A sample with an image that cannot be defended is left out of the output and reported.
Each output shard is written to a temporary file in DST and renamed once complete (synced first
with ``--fsync``).
"""

from __future__ import annotations

import copy
import io
import os
import tarfile
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

from .. import imagefiles
from .manifest import Records
from .pipeline import Job, decode_stacks, defend_stacks
from .planning import LIST_EXTENSIONS, Plan, Task, image_extensions, inside
from .report import Outcome

SHARD_EXTENSION = ".tar"
#: Fields decoded and defended; any other member is copied as it is.
IMAGE_FIELDS = {"jpg", "jpeg", "png", "webp", "ppm", "pgm", "pbm", "pnm", "bmp", "tif", "tiff", "gif"}
_OUT_FIELD = {"png": "png", "jpeg": "jpg"}


@dataclass
class Unit:
    """One output shard: ``parts`` are ``(input shard, first sample, end sample or None)``."""

    task: Task
    parts: List[Tuple[str, int, Optional[int]]]


@dataclass
class ShardPlan(Plan):
    units: List[Unit] = field(default_factory=list)


def shard_inputs(src: str) -> Optional[Tuple[str, List[str]]]:
    """``(root, shards)`` when ``src`` names tar shards (a ``.tar`` file, a folder holding ``.tar``
    files and no images, or a list file of ``.tar`` paths), else None (image files)."""
    src = os.path.abspath(src)
    if os.path.isfile(src) and src.lower().endswith(SHARD_EXTENSION):
        return os.path.dirname(src), [src]
    if os.path.isdir(src):
        exts, tars = image_extensions(), []
        for folder, dirs, files in os.walk(src):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                if os.path.splitext(name)[1].lower() in exts:
                    return None  # images here: an image folder (its tars are not images)
                if name.lower().endswith(SHARD_EXTENSION):
                    tars.append(os.path.join(folder, name))
        return (src, tars) if tars else None
    if os.path.isfile(src) and src.lower().endswith(LIST_EXTENSIONS):
        base = os.path.dirname(src)
        with open(src, encoding="utf-8") as f:
            entries = [e.strip() for e in f if e.strip() and not e.strip().startswith("#")]
        if entries and all(e.lower().endswith(SHARD_EXTENSION) for e in entries):
            paths = list(dict.fromkeys(os.path.normpath(os.path.join(base, e)) for e in entries))
            missing = [p for p in paths if not os.path.isfile(p)]
            if missing:
                raise FileNotFoundError(f"list file {src!r} names shards that do not exist: {missing[0]!r}")
            return os.path.commonpath([os.path.dirname(p) for p in paths]), paths
    return None


def split_name(name: str) -> Tuple[str, str]:
    """``(key, field)`` of a member name: ``a/b/x01.seg.png`` -> ``("a/b/x01", "seg.png")``."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


def samples(path: str, first: int = 0, end: Optional[int] = None) -> Iterator[Tuple[str, list]]:
    """``(key, [(TarInfo, bytes or None), ...])`` of samples ``first`` to ``end`` of a shard, read
    as a stream (one sample in memory at a time)."""
    index, key, members = 0, None, []
    with tarfile.open(path, "r|") as tar:
        for m in tar:
            k = split_name(m.name)[0]
            if members and k != key:
                if index >= first:
                    yield key, members
                index += 1
                members = []
                if end is not None and index >= end:
                    return
            key = k
            data = tar.extractfile(m).read() if m.isfile() and index >= first else None
            members.append((m, data))
        if members and index >= first and (end is None or index < end):
            yield key, members


def count_samples(path: str) -> int:
    """Samples in a shard, from the member names alone."""
    n, key = 0, None
    with tarfile.open(path, "r|") as tar:
        for m in tar:
            k = split_name(m.name)[0]
            if k != key:
                n, key = n + 1, k
    return n


def plan_shards(root: str, shards: List[str], src: str, dst: str, shard_size: Optional[int]) -> ShardPlan:
    """Output shards under ``dst``; refuses a DST in SRC and an output over an input."""
    dst = os.path.abspath(dst)
    real_dst = os.path.realpath(dst)
    src_dir = os.path.realpath(src) if os.path.isdir(src) else None
    if src_dir is not None and inside(real_dst, src_dir):
        raise ValueError(f"DST {dst!r} is SRC or inside it; choose a destination outside {src!r}")
    if os.path.isfile(dst):
        raise ValueError(f"DST {dst!r} is a file; tar shards are written into a folder")
    units: List[Unit] = []
    if shard_size is None:
        for path in shards:
            units.append(Unit(Task(path, os.path.join(dst, os.path.relpath(path, root))), [(path, 0, None)]))
    else:
        parts: List[Tuple[str, int, Optional[int]]] = []
        room = shard_size
        for path in shards:
            n, at = count_samples(path), 0
            while at < n:
                take = min(room, n - at)
                parts.append((path, at, at + take))
                at, room = at + take, room - take
                if room == 0:
                    units.append(_unit(dst, len(units), parts))
                    parts, room = [], shard_size
        if parts:
            units.append(_unit(dst, len(units), parts))
    inputs = {os.path.realpath(p) for p in shards}
    for u in units:
        real = os.path.realpath(u.task.out)
        if real in inputs:
            raise ValueError(f"output {u.task.out!r} would overwrite the input shard of the same name; choose another DST")
        if src_dir is not None and inside(real, src_dir):
            raise ValueError(f"output {u.task.out!r} would be inside SRC; choose another DST")
        if not inside(os.path.realpath(os.path.dirname(u.task.out)), real_dst):
            raise ValueError(f"output {u.task.out!r} would land outside DST (a linked folder); choose another DST")
    return ShardPlan([u.task for u in units], [], dst, False, src_dir, [], units)


def _unit(dst: str, k: int, parts) -> Unit:
    names = sorted({os.path.basename(p) for p, _, _ in parts})
    return Unit(Task(",".join(names), os.path.join(dst, f"shard-{k:06d}{SHARD_EXTENSION}")), list(parts))


class ShardWriter:
    """Defends whole shards in the process it lives in (a worker, or the main process); the images
    of ``batch_size`` samples at a time are decoded, defended (one core call per shape) and encoded."""

    def __init__(self, job: Job, abort, batch_size: int):
        self.job, self.abort, self.batch_size = job, abort, batch_size
        self.records = Records(job.manifest_path, job.root, job.settings)

    def close(self) -> None:
        self.records.close()

    def run(self, unit: Unit) -> List[Outcome]:
        out = unit.task.out
        os.makedirs(os.path.dirname(out), exist_ok=True)
        fd, tmp = imagefiles.create_temp(os.path.dirname(out))
        outcomes: List[Outcome] = []
        try:
            with os.fdopen(fd, "wb") as f:
                with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    images, kept = 0, 0
                    for group in self._groups(unit):
                        if self.abort.is_set():
                            raise KeyboardInterrupt
                        n, k = self._write_group(tar, group, unit, outcomes)
                        images, kept = images + n, kept + k
                f.flush()
                if self.job.fsync:
                    os.fsync(f.fileno())
                size = f.tell()
            self.records.record(out, unit.task.src, size, "writing")
            os.replace(tmp, out)
        except KeyboardInterrupt:
            _unlink(tmp)
            return outcomes
        except BaseException as exc:
            _unlink(tmp)
            if not isinstance(exc, Exception):
                raise
            return outcomes + [Outcome(unit.task.src, "failed", out, f"cannot write the shard: {type(exc).__name__}: {exc}")]
        self.records.record(out, unit.task.src, size, "done")
        return outcomes + [Outcome(unit.task.src, "written", out, bytes=size, images=images)]

    def _groups(self, unit: Unit) -> Iterator[list]:
        group = []
        for path, first, end in unit.parts:
            for key, members in samples(path, first, end):
                group.append((path, key, members))
                if len(group) >= self.batch_size:
                    yield group
                    group = []
        if group:
            yield group

    def _write_group(self, tar: tarfile.TarFile, group: list, unit: Unit, outcomes: List[Outcome]) -> Tuple[int, int]:
        """Decode, defend and encode the images of ``group``'s samples, then add the samples that
        came through whole, in order. Returns (images, samples) written."""
        job = self.job
        field_out = _OUT_FIELD[job.fmt]
        opened, where, failed = [], [], {}
        for s, (path, key, members) in enumerate(group):
            for m, (info, data) in enumerate(members):
                if data is None or split_name(info.name)[1].lower() not in IMAGE_FIELDS:
                    continue
                try:
                    opened.append(imagefiles.open_bytes(data, job.max_pixels))
                    where.append((s, m))
                except imagefiles.BadImage as exc:
                    failed.setdefault(s, f"{info.name}: {exc}")
        decoded, stacks = decode_stacks(opened)
        encoded = {}
        for (s, m), d, y in zip(where, decoded, defend_stacks(job.defend, stacks, len(opened))):
            if s in failed:
                continue
            if isinstance(d, Exception):
                failed[s] = f"{group[s][2][m][0].name}: {d}"
                continue
            if isinstance(y, Exception):
                failed[s] = f"{group[s][2][m][0].name}: defense failed: {y}"
                continue
            try:
                encoded[(s, m)] = imagefiles.encode(y, d.alpha, job.fmt, job.jpeg_file, job.png_level)[0]
            except Exception as exc:  # noqa: BLE001
                failed[s] = f"{group[s][2][m][0].name}: cannot encode: {type(exc).__name__}: {exc}"
        images = samples_kept = 0
        for s, (path, key, members) in enumerate(group):
            names = [split_name(info.name)[0] + "." + field_out if (s, m) in encoded else info.name
                     for m, (info, _) in enumerate(members)]
            if s not in failed and len(set(names)) < len(names):
                failed[s] = f"two members would both be named {names[0]!r}... after the image rename"
            if s in failed:
                outcomes.append(Outcome(f"{path}:{key}", "failed", unit.task.out, f"sample left out: {failed[s]}"))
                continue
            for m, (info, data) in enumerate(members):
                if (s, m) in encoded:
                    new = copy.copy(info)
                    new.name, data = names[m], encoded[(s, m)]
                    new.size = len(data)
                    tar.addfile(new, io.BytesIO(data))
                    images += 1
                else:
                    tar.addfile(info, io.BytesIO(data) if data is not None else None)
            samples_kept += 1
        return images, samples_kept


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def lost_shard(unit: Unit) -> List[Outcome]:
    return [Outcome(unit.task.src, "failed", unit.task.out, "the worker process writing it died (out of memory?); --resume to retry")]
