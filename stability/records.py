"""A run folder's record files: their names, the atomic write, and reading a run's summary.

Plain Python (no lightning import), shared by the training run that writes the record and the sweep that
reads it to decide what is left to run.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

CONFIG = "config.yaml"  # the fully resolved config, written first
SUMMARY = "summary.json"  # the result, written atomically and last
FINISHED = ("completed", "diverged")  # statuses that are results; "failed" runs may be retried


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: readers (and a killed writer) never leave half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``summary.json``, or None while there is none (running, cut off) or it cannot be read."""
    try:
        return json.loads((Path(run_dir) / SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return None
