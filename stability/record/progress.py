"""A running run's progress file, ``<run>/progress.json``: where it is, rewritten about once a second.

The run writes it (:class:`stability.training.telemetry.StabilityTelemetry`); the sweep's display
(:mod:`stability.sweep.progress`) reads it, from worker processes and SLURM jobs alike, since both write to
the shared run folders. It lives with the run record, below both, so neither imports the other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from stability.record.checked_read import read_json
from stability.record.files import write_atomic

PROGRESS = "progress.json"  # in the run folder, beside summary.json
WRITE_EVERY_S = 1.0  # how often a run rewrites its progress file (a few hundred bytes)


@dataclass
class RunProgress:
    """Where a run is: its optimiser ``step`` of ``total_steps``, ``epoch`` (from 0) of ``max_epochs``, the
    last training ``loss``, its mean training time per step so far (validation excluded) and when this was
    written (``time.time()``)."""

    step: int
    total_steps: int | None
    epoch: int
    max_epochs: int | None
    loss: float | None
    step_time_s: float | None
    updated: float

    def remaining_s(self) -> float | None:
        """Training time left at the run's measured rate; None while either is unknown."""
        if self.total_steps is None or self.step_time_s is None:
            return None
        return max(0, self.total_steps - self.step) * self.step_time_s

    def describe(self) -> str:
        """``epoch 3/10  step 120/200  loss 0.412``"""
        epochs = f"{self.epoch + 1}/{self.max_epochs}" if self.max_epochs else f"{self.epoch + 1}"
        steps = f"{self.step}/{self.total_steps}" if self.total_steps else f"{self.step}"
        loss = f"{self.loss:.4g}" if self.loss is not None else "?"
        return f"epoch {epochs}  step {steps}  loss {loss}"


def write_progress(run_dir: str | Path, progress: RunProgress) -> None:
    """Replace ``<run_dir>/progress.json`` (atomically: readers never see half a file)."""
    write_atomic(Path(run_dir) / PROGRESS, json.dumps(asdict(progress)) + "\n")


def read_progress(run_dir: str | Path) -> RunProgress | None:
    """The run's last progress, or None if it has not written one (or it cannot be read)."""
    try:
        data = read_json(Path(run_dir) / PROGRESS)  # regular files only, bounded: a FIFO never blocks
        return RunProgress(**{k: data[k] for k in RunProgress.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):  # RecordError is a ValueError
        return None
