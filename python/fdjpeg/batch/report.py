"""What a run did: one :class:`Outcome` per file, the :class:`Summary` printed at the end, and the
JSON report (``DST/fdjpeg-report.json`` or ``--report``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from .. import imagefiles


REPORT_NAME = "fdjpeg-report.json"


@dataclass
class Outcome:
    src: str
    status: str  # "written", "complete" (found finished on --resume), "failed", "ignored", "skipped" (a link)
    out: Optional[str] = None
    reason: str = ""
    notes: List[str] = field(default_factory=list)
    bytes: int = 0
    renamed: bool = False  # the output name is not the plain rename (it clashed; see _mirror)
    images: int = 0  # images defended into an output tar shard


@dataclass
class Summary:
    counts: Dict[str, int]
    outcomes: List[Outcome]
    seconds: float
    report_path: Optional[str]
    interrupted: bool = False
    shards: bool = False  # outputs are tar shards: "written" counts shards, "images" their images

    @property
    def exit_status(self) -> int:
        return 1 if self.counts.get("failed", 0) else 0

    @property
    def images_per_second(self) -> float:
        done = self.counts.get("images" if self.shards else "written", 0)
        return done / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        c = self.counts
        written = f"{c.get('written', 0)} shards written ({c.get('images', 0)} images)" if self.shards else f"{c.get('written', 0)} written"
        line = (
            f"{written}, {c.get('complete', 0)} already complete, "
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


def shown_entry(o: "Outcome") -> dict:
    entry = {k: v for k, v in asdict(o).items() if v not in (None, "", [], 0, False)}
    return {k: (shown(v) if isinstance(v, str) else [shown(n) for n in v] if isinstance(v, list) else v)
            for k, v in entry.items()}




def summarize(outcomes: List[Outcome], seconds: float, report_path: Optional[str], interrupted: bool,
              shards: bool = False) -> Summary:
    counts = {s: 0 for s in ("written", "complete", "failed", "ignored", "skipped")}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    counts["converted"] = sum(1 for o in outcomes if o.notes and o.status == "written")
    if shards:
        counts["images"] = sum(o.images for o in outcomes if o.status == "written")
    return Summary(counts, outcomes, seconds, report_path, interrupted, shards)



def write_report(path: str, summary: Summary, settings: str) -> None:
    """JSON: the run's settings, counts, and one entry per file that failed, was converted, was
    not an image or got an output name other than the plain rename (files written as they were
    are only counted)."""
    entries = [
        shown_entry(o)
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

