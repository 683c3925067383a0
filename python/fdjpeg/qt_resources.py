"""Reading files out of a Qt binary resource bundle (``.rcc``, as ``rcc --binary`` writes it).

Debian's ``gcompris-qt-data`` ships its activities' photographs inside such bundles; this reads them
without Qt. The layout (Qt's ``rcc.cpp``/``qresource.cpp``): a header ``qres``, format version, and
the offsets of three tables, all big-endian. The tree table holds one node per file or folder: name
offset, flags (1: zlib-compressed as ``qCompress``, 2: folder, 4: zstd), then for a folder its child
count and first child, for a file its locale and data offset; format 2 and later append an 8-byte
modification time. Names are UTF-16 with a length and a hash in front; data blobs have a length.
"""

from __future__ import annotations

import struct
import zlib
from typing import Dict

FLAG_ZLIB, FLAG_FOLDER, FLAG_ZSTD = 1, 2, 4


def read_qt_resources(path: str) -> Dict[str, bytes]:
    """Every file in the bundle at ``path``: ``{"/folder/name": bytes}``.

    Raises ``ValueError`` for a file that is not a Qt resource bundle or is cut short, and for
    zstd-compressed entries (Qt 6's default; Debian's GCompris uses zlib or none)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 20 or blob[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource bundle (no 'qres' header)")
    version, tree, data, names = struct.unpack_from(">IIII", blob, 4)
    if version not in (1, 2, 3):
        raise ValueError(f"{path}: Qt resource format {version} is not supported (1-3 are)")
    node_size = 14 if version == 1 else 22

    def unpack(fmt: str, offset: int) -> tuple:
        if offset < 0 or offset + struct.calcsize(fmt) > len(blob):
            raise ValueError(f"{path}: truncated or corrupt (offset {offset} past the end)")
        return struct.unpack_from(fmt, blob, offset)

    def name_at(offset: int) -> str:
        (length,) = unpack(">H", names + offset)
        start = names + offset + 6  # length, then a 4-byte hash
        if start + 2 * length > len(blob):
            raise ValueError(f"{path}: truncated or corrupt name table")
        return blob[start : start + 2 * length].decode("utf-16-be")

    files: Dict[str, bytes] = {}
    pending = [(0, "")]  # (node index, path of its parent folder); node 0 is the root
    seen = set()
    while pending:
        index, parent = pending.pop()
        if index in seen:  # a corrupt tree that loops back
            raise ValueError(f"{path}: corrupt tree (node {index} reached twice)")
        seen.add(index)
        node = tree + index * node_size
        name_offset, flags = unpack(">IH", node)
        name = name_at(name_offset) if index else ""
        if flags & FLAG_FOLDER:
            count, first = unpack(">II", node + 6)
            pending.extend((child, f"{parent}{name}/") for child in range(first, first + count))
            continue
        (data_offset,) = unpack(">I", node + 10)
        (length,) = unpack(">I", data + data_offset)
        start = data + data_offset + 4
        if start + length > len(blob):
            raise ValueError(f"{path}: truncated data for {parent}{name}")
        content = blob[start : start + length]
        if flags & FLAG_ZSTD:
            raise ValueError(f"{path}: {parent}{name} is zstd-compressed, which is not supported")
        if flags & FLAG_ZLIB:  # qCompress: a 4-byte big-endian size, then a zlib stream
            content = zlib.decompress(content[4:])
        files[parent + name] = content
    return files
