"""The sweep folder on disk: the plan, each run's status, and a lock per run.

Layout (the run folders themselves are written by :func:`stability.train.run`)::

    <sweep>/plan.json              every cell of the grid, written before any run starts
    <sweep>/<run_name>/.sweep.lock  flock'ed while a process runs this cell
    <sweep>/<run_name>/summary.json written last by the run: its status
    <sweep>/<run_name>/output.log   what the run printed (worker processes only)
    <sweep>/<run_name>/traceback.txt why a failed run failed

A run's status is read from disk only, never from memory, so any process (a re-run, a second sweep on
the same folder, a SLURM array task) sees the same truth: ``completed``/``diverged`` are finished,
``failed`` waits for ``--retry-failed``, anything else (no summary yet) is still to run, resuming from its
last checkpoint if it has one.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from stability.records import CONFIG, FINISHED, SUMMARY, read_summary, write_atomic

PLAN = "plan.json"
LOCK = ".sweep.lock"
TRACEBACK = "traceback.txt"
OUTPUT = "output.log"
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


def run_status(run_dir: Path) -> str:
    """``completed``, ``diverged``, ``failed`` (from summary.json), ``partial`` (started) or ``pending``."""
    summary = read_summary(run_dir)
    if summary is not None and summary.get("status") in (*FINISHED, "failed"):
        return str(summary["status"])
    if (run_dir / CONFIG).is_file() or (run_dir / "checkpoints").is_dir():
        return "partial"
    return "pending"


def write_failure(run_dir: Path, run_name: str, run_id: str, error: str, traceback_text: str = "") -> None:
    """Record a failure the run itself could not record (its process died, or it raised before starting).

    The record has the same keys as :func:`stability.train.run`'s failed summary where they are known;
    the others are null, so tables built from summaries treat it like any failed run.
    """
    if traceback_text:
        write_atomic(run_dir / TRACEBACK, traceback_text)
    if read_summary(run_dir) is not None:
        return  # the run wrote its own record; it is the better one
    summary = {"status": "failed", "run_name": run_name, "run_id": run_id, "toggles": None, "hparams": None,
               "diverged_step": None, "divergence_reason": None, "error": error[:500]}
    write_atomic(run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run_dir>/.sweep.lock``.

    flock locks belong to the open file, so the OS drops them when the holder dies, even by SIGKILL:
    there is never a stale lock to clean up after a crash.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; False if one does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(run_dir: Path) -> bool:
    """True if some process holds this run's lock right now (probing does not disturb the holder)."""
    path = Path(run_dir) / LOCK
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
