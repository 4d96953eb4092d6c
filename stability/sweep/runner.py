"""Run one planned cell under its lock: the unit of work every executor (local pool, SLURM task) performs.

It is idempotent, so any executor may hand it any cell at any time: a finished cell is left untouched, a
cell another process holds is left to that process, a cut-off cell resumes from its last checkpoint (that
is :func:`stability.training.run.run`'s job given the same folder), and a failed cell is retried only on request.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stability.errors import OutOfSpace, RunFailed, full_disk_error
from stability.record.files import FAILED, FINISHED, KILLS, OUTPUT, TRACEBACK, RunSummary, read_summary
from stability.record.status import RunLock, run_status
from stability.sweep.store import write_failure

KILLED = "killed"  # an outcome, not a record: the worker died of a signal; a re-run retries the cell
OUT_OF_SPACE = "out-of-space"  # an outcome, not a record: the disk filled up; the cell stays resumable


@dataclass
class Task:
    """One cell as an executor sees it (picklable: it crosses process boundaries)."""

    run_id: str
    run_name: str
    run_dir: str
    config: dict[str, Any]
    retry_failed: bool = False
    threads: int | None = None  # torch threads for the run, fixed by the plan (None: the process's setting)


@dataclass
class Outcome:
    """What became of a task. ``ran`` is False when the cell was skipped (finished, failed, or busy)."""

    run_id: str
    run_name: str
    status: str  # completed | diverged | failed | busy | killed | out-of-space
    ran: bool
    error: str | None = None
    wall_s: float = 0.0
    train_time_s: float | None = None
    final_val_acc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _outcome(task: Task, status: str, ran: bool, started: float, summary: RunSummary | None = None,
             error: str | None = None) -> Outcome:
    return Outcome(task.run_id, task.run_name, status, ran, error or (summary.error if summary else None),
                   round(time.perf_counter() - started, 3), summary.train_time_s if summary else None,
                   summary.final_val_acc if summary else None)


@contextlib.contextmanager
def output_to(path: Path | None) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C code's output too) to ``path``.

    A worker's Lightning progress bars and info lines belong with its run, not interleaved on the sweep's
    terminal: they are appended to ``<run>/output.log``, where a failed run's story can be read later.
    """
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run_task(task: Task, extra_config: dict[str, Any] | None = None, use_lock: bool = True,
             capture_output: bool = False) -> Outcome:
    """Run ``task`` unless it is finished, failed (without ``retry_failed``) or locked by another process.

    Args:
        extra_config: executor-specific settings merged into the config at run time only (e.g. the SLURM
            environment plugin); they are not part of the cell's identity.
        use_lock: False for the non-zero ranks of a multi-GPU SLURM run, which follow rank 0 into the run
            that rank 0 holds the lock for.
        capture_output: append the run's stdout/stderr to ``<run>/output.log`` (worker processes).
    """
    started = time.perf_counter()
    run_dir = Path(task.run_dir)
    lock = RunLock(run_dir)
    if use_lock and not lock.acquire():
        return _outcome(task, "busy", False, started)
    try:
        status = run_status(run_dir)  # re-read under the lock: another sweep may have finished it meanwhile
        if status in FINISHED or (status == FAILED and not task.retry_failed):
            return _outcome(task, status, False, started, read_summary(run_dir))
        if status == FAILED:  # a retry: the old traceback and kill count would outlive the record they explained
            (run_dir / TRACEBACK).unlink(missing_ok=True)
            (run_dir / KILLS).unlink(missing_ok=True)
        from stability.record.config_files import deep_merge
        from stability.training.run import run  # lazy: lightning is imported once per worker

        config = deep_merge(copy.deepcopy(task.config), extra_config) if extra_config else task.config
        try:
            with output_to(run_dir / OUTPUT if capture_output else None), warnings.catch_warnings():
                # the worker's sys.argv is not this run's config: LightningCLI's warning about it is noise
                warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter is intended")
                # the plan's run id, unless extra_config changed the config (then the run hashes its own)
                summary = run(config, run_dir, task.threads, None if extra_config else task.run_id)
        except OutOfSpace as exc:  # nothing is recorded: the cell resumes once there is space
            return _outcome(task, OUT_OF_SPACE, True, started, error=str(exc))
        except RunFailed:
            # The run recorded its own failure; keep the traceback beside it for whoever reads the record.
            write_failure(run_dir, task.run_name, task.run_id, "", traceback.format_exc())
            return _outcome(task, FAILED, True, started, read_summary(run_dir))
        except Exception as exc:  # noqa: BLE001 - anything raised outside the run's own guard
            error = " ".join(f"{type(exc).__name__}: {exc}".split())
            try:
                write_failure(run_dir, task.run_name, task.run_id, error, traceback.format_exc())
            except OSError as failed_write:  # the disk is full even for the record: leave the cell resumable
                if full_disk_error(failed_write) is None:
                    raise
                return _outcome(task, OUT_OF_SPACE, True, started, error=str(OutOfSpace(run_dir)))
            return _outcome(task, FAILED, True, started, read_summary(run_dir), error)
        return _outcome(task, summary.status, True, started, summary)
    finally:
        lock.release()
