"""Skip helpers for tests that need the ``eval`` extra's data packages.

Without the package a test is skipped (the core does not need them); CI sets FDJPEG_REQUIRE_EVAL=1 so a
missing package fails there instead of silently skipping.
"""

import importlib.util
import os

import pytest


def needs(*packages: str):
    if os.environ.get("FDJPEG_REQUIRE_EVAL"):
        return pytest.mark.skipif(False, reason="FDJPEG_REQUIRE_EVAL is set")
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (the eval extra)")
