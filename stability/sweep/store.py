"""What the sweep writes besides the runs' own records: ``plan.json`` and the record of a run that died.

The run folders and their files are described in :mod:`stability.records`; a run's status and lock are in
:mod:`stability.status`. For the sweep, ``completed``/``diverged`` are finished, ``failed`` waits for
``--retry-failed``, anything else is still to run, resuming from its last checkpoint if it has one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stability.records import FAILED, PLAN, TRACEBACK, RunSummary, read_summary, write_atomic

PLAN_FORMAT = 1


def write_plan(sweep_dir: Path, plan: dict[str, Any]) -> Path:
    """Write ``plan.json``. Its content depends only on the grid, so every re-run writes the same bytes."""
    path = sweep_dir / PLAN
    text = json.dumps(plan, indent=1, sort_keys=False) + "\n"
    if not (path.is_file() and path.read_text() == text):
        write_atomic(path, text)
    return path


def read_plan(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((Path(sweep_dir) / PLAN).read_text())


def write_failure(run_dir: Path, run_name: str, run_id: str, error: str, traceback_text: str = "") -> None:
    """Record a failure the run itself could not record (its process died, or it raised before starting).

    The record is a :class:`~stability.records.RunSummary` like the run's own, with null where a value is not
    known, so tables built from summaries treat it like any failed run.
    """
    if traceback_text:
        write_atomic(run_dir / TRACEBACK, traceback_text)
    if read_summary(run_dir) is not None:
        return  # the run wrote its own record; it is the better one
    RunSummary(status=FAILED, run_name=run_name, run_id=run_id, error=error[:500]).write(run_dir)
