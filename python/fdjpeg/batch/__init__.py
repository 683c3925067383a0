"""Defending image files in bulk: the engine of ``fdjpeg defend``.

- :mod:`.planning`: which files, written where, and the checks that keep SRC and everything
  outside DST untouched;
- :mod:`.manifest`: DST's manifest (what ``--resume`` may skip), the run's lock, stale temporaries;
- :mod:`.pipeline`: decode -> defend -> encode -> write, with bounded queues;
- :mod:`.progress`: the progress bar;
- :mod:`.report`: outcomes, the summary and the JSON report;
- :mod:`.run`: :func:`defend_files`, one run from the plan to the report.
"""

from .manifest import LOCK_NAME, MANIFEST_NAME, DstBusy, remove_stale_temps
from .planning import FORMATS, LIST_EXTENSIONS, Plan, Task, check_folder_can_be_made, check_report_path, find_inputs, image_extensions, plan
from .progress import Progress
from .report import REPORT_NAME, Outcome, Summary, shown
from .run import DEFAULT_MAX_PIXELS, defend_files

__all__ = [
    "DEFAULT_MAX_PIXELS", "FORMATS", "LIST_EXTENSIONS", "LOCK_NAME", "MANIFEST_NAME", "REPORT_NAME", "DstBusy",
    "Outcome", "Plan", "Progress", "Summary", "Task", "check_folder_can_be_made", "check_report_path",
    "defend_files", "find_inputs", "image_extensions", "plan", "remove_stale_temps", "shown",
]
