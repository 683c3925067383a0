"""The user cache folder for things fdjpeg builds once and reuses (never the package folder)."""

from __future__ import annotations

import os


def cache_dir(name: str) -> str:
    """``$FDJPEG_CACHE/name``, else ``$XDG_CACHE_HOME/fdjpeg/name``, else ``~/.cache/fdjpeg/name``."""
    root = os.environ.get("FDJPEG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fdjpeg"
    )
    return os.path.join(root, name)
