"""A full disk while a report is written: one line naming the file, not a library's traceback or ``.``.

The report's files are written by pandas, matplotlib (PNG through Pillow, PDF through its own writer and zlib)
and plain ``Path.write_text``. When the disk fills, what they raise rarely says which file: a failed
``write()`` gives an ``OSError`` without a file name, Pillow's PNG writer may raise while cleaning up, and
matplotlib's PDF writer lets a ``zlib.error`` out, with the ``OSError`` only in its context. So the file is
taken from the writes themselves: while :func:`naming_full_disk` is active, every file opened for writing
under the folder it watches is noted (through Python's ``open`` audit event, which every one of those
libraries goes through), and a full-disk error anywhere in the exception's chain becomes
:class:`~stability.errors.OutOfSpace` naming the file being written (exit 3, one ``error:`` line).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from stability.errors import OutOfSpace, full_disk_error

# The folder watched and the files opened for writing under it, while a report is written (None otherwise).
_WATCH: ContextVar[tuple[str, list[str]] | None] = ContextVar("report_writes", default=None)
_WRITING = os.O_WRONLY | os.O_RDWR


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """The ``open`` audit event (``path, mode, flags``: both ``open()`` and ``os.open``): note a write under the
    watched folder. Audit hooks run on every audited event, so this returns at once for anything else."""
    if event != "open":
        return
    watch = _WATCH.get()
    if watch is None or len(args) < 3 or not isinstance(args[2], int) or not args[2] & _WRITING:
        return
    path = args[0]
    if isinstance(path, (str, bytes, os.PathLike)):
        name = os.path.abspath(os.fsdecode(path))
        if name.startswith(watch[0]):
            watch[1].append(name)


@functools.cache
def _install_hook() -> None:
    """Install :func:`_audit` once per process: an audit hook cannot be removed, and it is idle outside a report."""
    sys.addaudithook(_audit)


@contextlib.contextmanager
def naming_full_disk(folder: Path, shown: Callable[[Path], Path] = lambda path: path,
                     during: str = "writing the report") -> Iterator[None]:
    """Turn a full disk (ENOSPC, EDQUOT, EFBIG anywhere in the exception's chain) into
    :class:`~stability.errors.OutOfSpace` naming the file being written under ``folder``.

    Args:
        shown: the name to give a file written under ``folder`` (a staged file: its place in the report).
        during: what was being done, for the message.
    """
    _install_hook()
    opened: list[str] = []
    token = _WATCH.set((os.path.join(os.path.abspath(folder), ""), opened))
    try:
        yield
    except Exception as error:
        full = full_disk_error(error)
        if full is None:
            raise
        # the error's own file name where it has one (an open() that failed); else the file last opened
        name = full.filename if isinstance(full.filename, (str, os.PathLike)) else (opened[-1] if opened else None)
        raise OutOfSpace(shown(Path(name)) if name is not None else folder, during) from None
    finally:
        _WATCH.reset(token)
