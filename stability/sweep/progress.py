"""Progress lines on the terminal: runs done / diverged / failed / left, and an ETA.

One line per run that ends, so the same output reads well live, in a log file and in CI.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from stability.records import FAILED, RECORDED
from stability.sweep.runner import Outcome


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Counts outcomes and prints them. ``total``: this invocation's runs (its shard), ended ones included."""

    def __init__(self, total: int, already: dict[str, int] | None = None,
                 stream: TextIO | None = None) -> None:
        self.total = total
        self.counts = {**dict.fromkeys(RECORDED, 0), "busy": 0}
        for status, n in (already or {}).items():
            self.counts[status] = self.counts.get(status, 0) + n
        self.ran = 0
        self.started = time.perf_counter()
        self.stream = stream or sys.stdout

    @property
    def left(self) -> int:
        return self.total - sum(self.counts.values())

    def eta(self) -> str:
        """Time left at this session's rate so far (runs ended per second of wall time)."""
        if self.ran == 0 or self.left == 0:
            return "?" if self.left else "0s"
        rate = self.ran / (time.perf_counter() - self.started)
        return format_duration(self.left / rate)

    def tally(self) -> str:
        c = self.counts
        return (f"done {c['completed']} diverged {c['diverged']} collapsed {c['collapsed']} failed {c['failed']} "
                f"left {self.left}")

    def record(self, outcome: Outcome) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if not outcome.ran:
            return
        self.ran += 1
        ended = sum(self.counts.values())
        detail = f"{outcome.wall_s:.1f}s"
        if outcome.status == FAILED and outcome.error:
            detail += f" {outcome.error[:120]}"
        elif outcome.final_val_acc is not None:
            detail += f" val_acc {outcome.final_val_acc:.3f}"
        width = len(str(self.total))
        self.print(f"[{ended:>{width}}/{self.total}] {outcome.status:<9} {outcome.run_name}  {detail}"
                   f"  | {self.tally()} | ETA {self.eta()}")

    def print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
