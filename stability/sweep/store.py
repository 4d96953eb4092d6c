"""What the sweep writes besides the runs' own records: ``plan.json``, the record of a run that died, and
the count of signals that killed a cell's worker.

The run folders and their files are described in :mod:`stability.record.files`; a run's status and lock are in
:mod:`stability.record.status`. For the sweep, ``completed``/``diverged`` are finished, ``failed`` waits for
``--retry-failed``, anything else is still to run, resuming from its last checkpoint if it has one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stability.record.files import FAILED, KILLS, PLAN, TRACEBACK, RecordError, RunSummary, read_summary, write_atomic

PLAN_FORMAT = 1
# A worker killed by a signal (the OOM killer, an admin) does not make its cell "failed": a plain re-run
# tries it again, up to this many kills in all; then it is recorded failed, like a run that raised.
MAX_KILLS = 2


def write_plan(sweep_dir: Path, plan: dict[str, Any]) -> Path:
    """Write ``plan.json``. Its content depends only on the grid, so every re-run writes the same bytes."""
    path = sweep_dir / PLAN
    text = json.dumps(plan, indent=1, sort_keys=False) + "\n"
    if not (path.is_file() and path.read_text() == text):
        write_atomic(path, text)
    return path


def read_plan(sweep_dir: Path) -> dict[str, Any]:
    """``plan.json`` as written by :func:`write_plan`; raises OSError if missing, RecordError if malformed."""
    path = Path(sweep_dir) / PLAN
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # not UTF-8, not JSON
        raise RecordError(f"{path}: not a plan this program wrote ({' '.join(str(error).split())[:100]})") from None
    runs = plan.get("runs") if isinstance(plan, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("run_name"), str)
                                             for r in runs):
        raise RecordError(f"{path}: not a plan this program wrote (no list of runs)")
    return plan


def planned_threads(sweep_dir: Path) -> int | None:
    """The threads per run an earlier sweep on this folder fixed in its plan; None if there is none."""
    try:
        threads = read_plan(sweep_dir).get("threads")
    except (OSError, RecordError):
        return None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else None


def record_kill(run_dir: Path, signal_name: str) -> int:
    """Count one more kill of this cell's worker (``kills.json``); returns the count so far."""
    path = Path(run_dir) / KILLS
    try:
        signals = json.loads(path.read_text()).get("signals")
    except (OSError, ValueError, AttributeError):
        signals = None
    signals = [*(signals if isinstance(signals, list) else []), signal_name]
    write_atomic(path, json.dumps({"signals": signals}) + "\n")
    return len(signals)


def write_failure(run_dir: Path, run_name: str, run_id: str, error: str, traceback_text: str = "") -> None:
    """Record a failure the run itself could not record (its process died, or it raised before starting).

    The record is a :class:`~stability.record.files.RunSummary` like the run's own, with null where a value is not
    known, so tables built from summaries treat it like any failed run.
    """
    if traceback_text:
        write_atomic(run_dir / TRACEBACK, traceback_text)
    if read_summary(run_dir) is not None:
        return  # the run wrote its own record; it is the better one
    RunSummary(status=FAILED, run_name=run_name, run_id=run_id, error=error[:500]).write(run_dir)
