"""Which files ``fdjpeg defend`` reads and where each output goes: the inputs under SRC (a file, a
folder walked recursively, or a list file), one output per input under DST mirroring the tree, and
the checks that refuse any plan writing into SRC, over an input, or outside DST."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from .manifest import MANIFEST_NAME


FORMATS = {"png": ".png", "jpeg": ".jpg"}
LIST_EXTENSIONS = (".txt", ".lst", ".list")


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
                if not follow_links and os.path.islink(path) and not inside(os.path.realpath(path), real_src):
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
    src_dir = os.path.realpath(src_abs) if os.path.isdir(src_abs) else None
    if os.path.lexists(dst_root):  # a DST not made yet holds no input and no link: nothing to check below it
        _check_outputs(tasks, images, src_dir, dst_root)
    return Plan(tasks, ignored, dst_root, single, src_dir, skipped)


def _check_outputs(tasks: List[Task], images: List[str], src_dir: Optional[str], dst_root: str) -> None:
    """Refuse outputs that would land on an input, in SRC (``src_dir``, a real path) or, through a
    linked folder, outside DST."""
    real_path = RealPaths()
    inputs = {real_path(p) for p in images}
    real_root = os.path.realpath(dst_root)
    for t in tasks:
        if real_path(t.out) in inputs or (os.path.exists(t.out) and _same_as_any(t.out, images)):
            raise ValueError(f"output {t.out!r} would overwrite the input of the same name; choose another DST")
        # a folder in DST may be a link: where the file really lands decides (SRC may sit inside DST)
        real = real_path.folder(os.path.dirname(t.out))
        if src_dir is not None and inside(real, src_dir):
            raise ValueError(f"output {t.out!r} would be inside SRC (real path {real!r}); choose another DST")
        if not inside(real, real_root):
            raise ValueError(f"output {t.out!r} would land outside DST (a linked folder leads to {real!r}); choose another DST")


class RealPaths:
    """``os.path.realpath`` of many paths, each folder resolved once: a path whose last part is not
    a link is its folder's real path joined with its name (one ``lstat`` instead of one a part)."""

    def __init__(self) -> None:
        self.folders: Dict[str, str] = {}

    def folder(self, folder: str) -> str:
        real = self.folders.get(folder)
        if real is None:
            real = self.folders[folder] = os.path.realpath(folder)
        return real

    def __call__(self, path: str) -> str:
        folder, name = os.path.split(path)
        if name in ("", ".", "..") or os.path.islink(path):
            return os.path.realpath(path)
        return os.path.join(self.folder(folder), name)


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


def inside(path: str, folder: str) -> bool:
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
    if the_plan.src_dir is not None and inside(real, the_plan.src_dir):
        raise ValueError(f"--report {report!r} is inside SRC; nothing is written there")
    real_path = RealPaths()
    if any(real == real_path(t.src) for t in the_plan.tasks):
        raise ValueError(f"--report {report!r} is an input; it would be replaced")
    if any(real == real_path(t.out) for t in the_plan.tasks):
        raise ValueError(f"--report {report!r} is one of the outputs; choose another path")
    if not the_plan.single_file and real == os.path.realpath(os.path.join(the_plan.dst_root, MANIFEST_NAME)):
        raise ValueError(f"--report {report!r} is the run's manifest; choose another path")

