"""The progress bar of a run: images (or shards) done, their rate and ETA."""

from __future__ import annotations

import sys
import time


class Progress:
    """tqdm when installed, else one self-rewriting line on stderr (images/s and ETA)."""

    def __init__(self, total: int, enabled: bool, unit: str = "images"):
        self.total, self.done, self.enabled, self.unit = total, 0, enabled, unit
        self.start = self.last = time.perf_counter()
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="img" if unit == "images" else unit.rstrip("s"), dynamic_ncols=True, file=sys.stderr)
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
            sys.stderr.write(f"\r{self.done}/{self.total} {self.unit}  {rate:.1f} {'img' if self.unit == 'images' else self.unit}/s  ETA {eta:.0f} s ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")

