"""What the sweep writes besides the runs' own records: ``plan.json``, the record of a run that died, the
count of signals that killed a cell's worker, and the state of an adaptive sweep (``settle.json``,
``edges.json``).

The run folders and their files are described in :mod:`stability.record.files`; a run's status and lock are in
:mod:`stability.record.status`. For the sweep, ``completed``/``diverged`` are finished, ``failed`` waits for
``--retry-failed``, anything else is still to run, resuming from its last checkpoint if it has one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from stability.errors import ConfigError
from stability.record.checked_read import MAX_PLAN_BYTES, read_bounded, read_json, shown
from stability.record.files import FAILED, KILLS, PLAN, TRACEBACK, RecordError, RunSummary, read_summary, write_atomic

PLAN_FORMAT = 1
# A worker killed by a signal (the OOM killer, an admin) does not make its cell "failed": a plain re-run
# tries it again, up to this many kills in all; then it is recorded failed, like a run that raised.
MAX_KILLS = 2
# Most torch threads per run a plan may fix: 4 per CPU of this machine, and never less than 256, so a plan made
# on a bigger machine still resumes here (slowly), while a hand-edited 10**12 is refused before any worker starts.
MIN_THREADS_BOUND = 256


def max_threads() -> int:
    return max(MIN_THREADS_BOUND, 4 * (os.cpu_count() or 1))


def write_plan(sweep_dir: Path, plan: dict[str, Any]) -> Path:
    """Write ``plan.json``. Its content depends only on the grid, so every re-run writes the same bytes."""
    path = sweep_dir / PLAN
    text = json.dumps(plan, indent=1, sort_keys=False) + "\n"
    try:
        same = read_bounded(path, [sweep_dir], MAX_PLAN_BYTES) == text.encode()
    except RecordError:  # a FIFO or a link where the plan goes: replaced (the link, not its target)
        same = False
    if not same:
        write_atomic(path, text)
    return path


def read_plan(sweep_dir: Path) -> dict[str, Any]:
    """``plan.json`` as written by :func:`write_plan`; raises OSError if missing, RecordError if malformed (not a
    regular file of bounded size, not JSON, a run whose name is not a folder name, a thread count out of range)."""
    plan = _runs_of(Path(sweep_dir))
    problem = _threads_problem(plan.get("threads"))
    if problem:
        raise RecordError(f"{Path(sweep_dir) / PLAN}: {problem}")
    return plan


def planned_threads(sweep_dir: Path) -> int | None:
    """The threads per run an earlier sweep on this folder fixed in its plan; None if there is none (or no plan
    this program wrote: it is planned afresh). A plan whose thread count is out of range is a ConfigError: the
    count decides the numbers of the runs already started, so it is not guessed."""
    try:
        plan = _runs_of(Path(sweep_dir))
    except (OSError, RecordError):
        return None
    threads = plan.get("threads")
    problem = _threads_problem(threads)
    if problem:
        raise ConfigError(f"{Path(sweep_dir) / PLAN}: {problem}; put back the count the sweep was planned with, "
                          "or move plan.json away to plan afresh")
    return threads


def _runs_of(sweep_dir: Path) -> dict[str, Any]:
    """plan.json read (bounded, regular files only) with its list of runs checked; threads not yet."""
    path = sweep_dir / PLAN
    plan = read_json(path, [sweep_dir], MAX_PLAN_BYTES)
    runs = plan.get("runs") if isinstance(plan, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("run_name"), str)
                                             for r in runs):
        raise RecordError(f"{path}: not a plan this program wrote (no list of runs)")
    for i, run in enumerate(runs):
        name = run["run_name"]
        if name in ("", ".", "..") or "/" in name or "\0" in name:  # the sweep joins it to its folder
            raise RecordError(f"{path}: runs[{i}].run_name: got {shown(name)}; expected a folder name")
        for key, kind in (("run_id", str), ("config", dict), ("params", dict)):
            if key in run and not isinstance(run[key], kind):
                raise RecordError(f"{path}: runs[{i}].{key}: got {shown(run[key])}; expected "
                                  f"{'text' if kind is str else 'an object'}")
    return plan


def _threads_problem(threads: Any) -> str | None:
    """What is wrong with a plan's ``threads`` (None: not fixed, or valid)."""
    if threads is None or (isinstance(threads, int) and not isinstance(threads, bool)
                           and 1 <= threads <= max_threads()):
        return None
    return f"threads: got {shown(threads)}; expected a whole number from 1 to {max_threads()}"


def record_kill(run_dir: Path, signal_name: str) -> int:
    """Count one more kill of this cell's worker (``kills.json``); returns the count so far."""
    path = Path(run_dir) / KILLS
    try:
        signals = read_json(path).get("signals")
    except (OSError, ValueError, AttributeError):  # RecordError is a ValueError
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


def read_state(path: Path, fmt: int, what: str, key: str, kind: type) -> dict[str, Any]:
    """An adaptive sweep's state file (``--settle``, ``--edge-search``), read like any record (a regular file,
    bounded: :mod:`stability.record.checked_read`); a RecordError naming the file when it is not ``what`` of
    format ``fmt`` whose ``key`` holds a ``kind``."""
    try:
        state = read_json(path)
    except OSError as error:
        raise RecordError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not isinstance(state, dict) or state.get("format") != fmt or not isinstance(state.get(key), kind):
        raise RecordError(f"{path}: not {what} of format {fmt}")
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write an adaptive sweep's state atomically (a kill leaves the previous state whole)."""
    write_atomic(path, json.dumps(state, indent=1) + "\n")
