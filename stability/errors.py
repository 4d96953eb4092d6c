"""The errors the command line turns into one line and an exit code (see :mod:`stability.cli`).

Exit codes: 2 for a :class:`ConfigError` (bad input: nothing was written), 3 for :class:`OutOfSpace` (the
disk or quota filled up: nothing is corrupt, re-running the same command resumes).
"""

from __future__ import annotations

import argparse
import errno
import stat
from pathlib import Path
from typing import NoReturn

# errno values meaning "the storage is full", not "this path is wrong"
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class ConfigError(ValueError):
    """A user-facing configuration error: the message is one line naming the key, the value and what is valid."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the subcommands: a bad option is a :class:`ConfigError` (one ``error:`` line, exit 2)
    instead of argparse's usage block plus a message."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def folder_argument(text: str) -> Path:
    """An argparse type for ``--out``: a folder name; an empty one (``--out ''``) would mean the current folder
    by accident, so it is refused (argparse names the option in its one-line error)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"got {text!r}; give a folder (e.g. runs/my-sweep)")
    return Path(text)


def special_file(mode: int) -> str | None:
    """What a path is, in words, when it is neither a regular file nor a folder (``mode`` from ``os.stat``).

    A FIFO named where a config, grid or image is expected would block the first ``open`` or ``read``
    forever, and a device like ``/dev/zero`` never ends: such paths are refused by their mode, before any
    read, with one line saying what they are.
    """
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


class OutOfSpace(RuntimeError):
    """A write failed because the file system or quota is full.

    Raised instead of recording the run as failed: nothing about its config is wrong, every record file
    and checkpoint is written atomically (the last complete ones stay), so the same command resumes it
    once there is space again.
    """

    def __init__(self, path: object, during: str = "") -> None:
        self.path = path
        where = f" while {during}" if during else ""
        super().__init__(f"{path}: no space left on the device{where}; free some space, then run the same "
                         "command again (finished runs are kept, cut-off runs resume from their last checkpoint)")


def full_disk_error(error: BaseException | None) -> OSError | None:
    """The OSError meaning "storage full" in ``error`` or anywhere down its cause/context chain, else None.

    Lightning and TensorBoard re-raise a failed write wrapped in their own exceptions; the errno survives
    only in the chain.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


class RunFailed(RuntimeError):
    """A run raised inside training; its record says ``failed`` with the error message."""
