"""What a folder holds, to show that a run left it as it was."""

import hashlib
import os


def snapshot(root):
    """Bytes hash and mode of every file under ``root`` (links as their target name)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            p = os.path.join(folder, name)
            if os.path.islink(p):
                out[p] = ("link", os.readlink(p))
            else:
                with open(p, "rb") as f:
                    out[p] = (hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mode)
    return out
