"""A run folder's status: the one its ``summary.json`` records, or the one its files imply.

The status is read from disk only, never from memory, so any process (a re-run, a second sweep on the
same folder, a SLURM array task, the report) sees the same truth. Without a summary:

- ``running``: a sweep worker holds the run's lock (``.sweep.lock``), or, for runs started outside the
  sweep runner and file systems where flock does not reach across machines, a file in the folder changed
  within ``stale_after_s`` seconds;
- ``incomplete``: it logged (events or checkpoints) but went quiet: cut off, and resumable;
- ``pending``: planned (``config.yaml`` at most) but never logged a step.

The lock is an exclusive ``flock``: flock locks belong to the open file, so the OS drops them when the
holder dies, even by SIGKILL, and there is never a stale lock to clean up after a crash.
"""

from __future__ import annotations

import fcntl
import os
import time
from fnmatch import fnmatch
from pathlib import Path

from stability.record.checked_read import entry_names
from stability.record.files import (
    CHECKPOINTS,
    CONFIG,
    EVENTS_GLOB,
    INCOMPLETE,
    LOCK,
    PENDING,
    RUNNING,
    SUMMARY,
    RecordError,
    RunSummary,
    load_summary,
)

# Entries last_change looks at, at most: a run folder holds a dozen; a folder linked or copied in by mistake
# (a dataset, a home directory) must not make a status check walk it all.
MAX_WALK = 10_000


def run_status(run_dir: str | Path, *, stale_after_s: float = 0.0, now: float | None = None) -> str:
    """The run's status (:data:`stability.record.files.STATUSES`).

    Args:
        run_dir: the run folder.
        stale_after_s: a run without summary whose files changed less than this many seconds ago counts as
            running even without the lock. 0 (the sweep's choice: only the lock says a run is taken) or,
            for reports, several TensorBoard flush intervals.
        now: the clock for that rule (seconds since the epoch); default: the current time.
    """
    return status_and_summary(Path(run_dir), stale_after_s=stale_after_s, now=now)[0]


def status_and_summary(run_dir: Path, *, stale_after_s: float = 0.0, now: float | None = None,
                       root: Path | None = None) -> tuple[str, RunSummary | None, str | None]:
    """(status, the summary or None, why the summary could not be read or None).

    ``root``: the sweep folder, where a link named ``summary.json`` may point (else only inside the run folder).
    """
    try:
        summary = load_summary(run_dir, root)
    except RecordError as error:
        return INCOMPLETE, None, str(error)
    if summary is not None:
        return summary.status, summary, None
    now = time.time() if now is None else now
    if is_locked(run_dir) or (stale_after_s > 0 and last_change(run_dir) >= now - stale_after_s):
        return RUNNING, None, None
    return (INCOMPLETE if has_logged(run_dir) else PENDING), None, None


def has_logged(run_dir: Path) -> bool:
    """Whether the run got far enough to write events or a checkpoint (by name: nothing is followed or read)."""
    return any(name == CHECKPOINTS or fnmatch(name, EVENTS_GLOB) for name in entry_names(run_dir))


def is_run_dir(path: Path) -> bool:
    """Whether a folder looks like a run folder (a config, a summary or events), by the names in it alone; a
    folder that cannot be listed is none."""
    return any(name in (SUMMARY, CONFIG) or fnmatch(name, EVENTS_GLOB) for name in entry_names(path))


def last_change(run_dir: Path) -> float:
    """The newest modification time of the folder and anything in it (0 when it cannot be read).

    Links are not followed (a link's own time counts), entries that vanish or cannot be read are skipped, and
    at most :data:`MAX_WALK` entries are looked at: a link loop, a dangling link or a huge folder linked in
    cannot stop or stall a status check.
    """
    try:
        newest = os.stat(run_dir).st_mtime
    except OSError:
        return 0.0
    folders, seen = [run_dir], 0
    while folders and seen < MAX_WALK:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > MAX_WALK:
                        break
                    try:
                        newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
                        if entry.is_dir(follow_symlinks=False):
                            folders.append(Path(entry.path))
                    except OSError:  # a checkpoint being replaced as we look
                        continue
        except OSError:  # a sub-folder without permission, or removed meanwhile
            continue
    return newest


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run_dir>/.sweep.lock`` (see the module docstring)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if no other process holds it; False if one does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0o666 minus the umask, like every file: a group-writable umask lets the group resume a shared sweep
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
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


def is_locked(run_dir: str | Path) -> bool:
    """True if some process holds this run's lock right now (probing does not disturb the holder)."""
    path = Path(run_dir) / LOCK
    if not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO put there must not block the probe
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
