"""A sweep you can watch: every running cell's epoch, step and loss, and an ETA from measured step times.

Each run writes ``<run>/progress.json`` about once a second (:func:`stability.record.progress.write_progress`, called by
:class:`stability.training.telemetry.StabilityTelemetry`): step, total steps, epoch, loss and its mean training
time per step so far. The sweep's process reads those files (worker processes and SLURM jobs alike write
to the shared run folders, so one mechanism serves both executors) and shows:

- on a terminal, tqdm bars: the sweep (runs ended, tally, ETA) and one bar per running cell;
- elsewhere (a log file, CI), plain lines: one per run that ends, and every ``plain_every_s`` seconds one
  per running cell.

The ETA adds up the work left: for each running cell its remaining steps times its own measured step
time; for each cell not started yet the mean wall time of the runs that ended in this session (startup,
validation and test included) or, before any has ended, the running cells' total steps times their step
time; divided by the number of workers.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from stability.record.files import FAILED, RECORDED
from stability.record.progress import RunProgress, read_progress

if TYPE_CHECKING:  # runs write progress files (stability.training.telemetry); the sweep runner runs runs: no cycle
    from stability.sweep.runner import Outcome



def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _is_terminal(stream: TextIO) -> bool:
    """A terminal wide enough for bars (a pseudo-terminal without a size reports 0 columns: plain lines)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns >= 40
    except (AttributeError, OSError, ValueError):
        return bool(getattr(stream, "isatty", lambda: False)())


# -- the sweep's display -------------------------------------------------------------------------------------
class Progress:
    """Counts the outcomes of a sweep's runs, watches the running ones and prints both.

    Args:
        total: this invocation's runs (its shard), those that ended earlier included.
        already: how many of them ended earlier, by status.
        stream: where to print (default: stdout); tqdm bars only if it is a terminal.
        runs: (name, folder) of the runs to watch (those still to run).
        workers: runs that run at once (for the ETA).
        poll_s: how often the running cells are read.
        plain_every_s: without a terminal, how often the running cells are listed.
        live: force the tqdm display on or off (default: whether ``stream`` is a terminal).
    """

    def __init__(self, total: int, already: dict[str, int] | None = None, stream: TextIO | None = None, *,
                 runs: Sequence[tuple[str, Path]] = (), workers: int = 1, poll_s: float = 1.0,
                 plain_every_s: float = 30.0, live: bool | None = None) -> None:
        self.total = total
        self.counts = {**dict.fromkeys(RECORDED, 0), "busy": 0}
        for status, n in (already or {}).items():
            self.counts[status] = self.counts.get(status, 0) + n
        self.ran = 0
        self.run_walls: list[float] = []  # wall time of each run that ended in this session
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.stream = stream or sys.stdout
        self.runs = {name: Path(folder) for name, folder in runs}
        self.ended: set[str] = set()
        self.running: dict[str, RunProgress] = {}
        self.workers = max(1, workers)
        self.poll_s, self.plain_every_s = poll_s, plain_every_s
        self.live = _is_terminal(self.stream) if live is None else live
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bars: dict[str, tuple[Any, int]] = {}  # run name -> (its tqdm bar, its line)
        self._overall: Any = None
        self._last_plain = time.perf_counter()

    # -- counts and ETA ------------------------------------------------------------------------------------
    @property
    def left(self) -> int:
        return self.total - sum(self.counts.values())

    def eta_seconds(self) -> float | None:
        """Seconds until every run has ended (see the module docstring); None while nothing is measured."""
        left = self.left
        if left <= 0:
            return 0.0
        running = {n: p for n, p in self.running.items() if n not in self.ended}
        remaining = [p.remaining_s() for p in running.values()]
        known = [r for r in remaining if r is not None]
        if self.run_walls:
            per_run: float | None = sum(self.run_walls) / len(self.run_walls)
        else:
            totals = [p.total_steps * p.step_time_s for p in running.values()
                      if p.total_steps is not None and p.step_time_s is not None]
            per_run = sum(totals) / len(totals) if totals else None
        pending = max(0, left - len(running))
        if per_run is None and (pending or not known):
            return None
        work = sum(known) + (len(remaining) - len(known) + pending) * (per_run or 0.0)
        return work / self.workers

    def eta(self) -> str:
        seconds = self.eta_seconds()
        return "?" if seconds is None else format_duration(seconds)

    def tally(self) -> str:
        c = self.counts
        return (f"done {c['completed']} diverged {c['diverged']} collapsed {c['collapsed']} failed {c['failed']} "
                f"left {self.left}")

    # -- events --------------------------------------------------------------------------------------------
    def record(self, outcome: Outcome) -> None:
        """A run ended (or was skipped): count it and, if it ran, print its line."""
        with self._lock:
            self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
            self.ended.add(outcome.run_name)
            self.running.pop(outcome.run_name, None)
            self._close_bar(outcome.run_name)
            if not outcome.ran:
                self._refresh_overall()
                return
            self.ran += 1
            if outcome.status != FAILED and outcome.wall_s:
                self.run_walls.append(outcome.wall_s)
            ended = sum(self.counts.values())
            detail = f"{outcome.wall_s:.1f}s"
            if outcome.status == FAILED and outcome.error:
                detail += f" {outcome.error[:120]}"
            elif outcome.final_val_acc is not None:
                detail += f" val_acc {outcome.final_val_acc:.3f}"
            width = len(str(self.total))
            self.print(f"[{ended:>{width}}/{self.total}] {outcome.status:<9} {outcome.run_name}  {detail}"
                       f"  | {self.tally()} | ETA {self.eta()}")
            self._refresh_overall()

    def poll(self) -> None:
        """Read the progress files of the runs not ended yet; update the bars or print the plain lines."""
        with self._lock:
            for name, folder in self.runs.items():
                if name in self.ended:
                    continue
                progress = read_progress(folder)
                # a file from before this sweep started is a cut-off run's last word, not a running cell
                if progress is not None and progress.updated >= self.started_wall - 1.0:
                    progress.loss = _finite(progress.loss)
                    self.running[name] = progress
            if self.live:
                for name, progress in self.running.items():
                    self._update_bar(name, progress)
                self._refresh_overall()
            elif self.running and time.perf_counter() - self._last_plain >= self.plain_every_s:
                self._last_plain = time.perf_counter()
                for name, progress in sorted(self.running.items()):
                    left = progress.remaining_s()
                    ends = f"  ({format_duration(left)} left)" if left is not None else ""
                    self.print(f"  running {name}  {progress.describe()}{ends}")
                self.print(f"  {self.tally()} | ETA {self.eta()}")

    def print(self, line: str) -> None:
        with self._lock:
            if self.live and (self._bars or self._overall is not None):
                from tqdm import tqdm

                tqdm.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)

    # -- the watching thread -------------------------------------------------------------------------------
    def start(self) -> Progress:
        """Start watching the running cells (a daemon thread; :meth:`stop` ends it)."""
        if self.runs and self._thread is None:
            if self.live:
                self._open_overall()
            self._thread = threading.Thread(target=self._watch, name="sweep-progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            for name in list(self._bars):
                self._close_bar(name)
            if self._overall is not None:
                self._overall.close()
                self._overall = None

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception as error:  # noqa: BLE001 - the display must never stop the sweep
                self.print(f"  (progress display stopped: {type(error).__name__}: {error})")
                return

    # -- tqdm ----------------------------------------------------------------------------------------------
    def _open_overall(self) -> None:
        from tqdm import tqdm

        self._overall = tqdm(total=self.total, initial=sum(self.counts.values()), file=self.stream, position=0,
                             desc="sweep", unit="run", dynamic_ncols=True, leave=False,
                             bar_format="{desc} {bar:20} {n_fmt}/{total_fmt} runs{postfix}")
        self._refresh_overall()

    def _refresh_overall(self) -> None:
        if self._overall is not None:
            self._overall.n = sum(self.counts.values())
            self._overall.set_postfix_str(f"{self.tally()} | ETA {self.eta()}", refresh=True)

    def _update_bar(self, name: str, progress: RunProgress) -> None:
        from tqdm import tqdm

        if name not in self._bars:
            used = {position for _, position in self._bars.values()}
            position = next(i for i in range(1, len(self._bars) + 2) if i not in used)  # the lowest free line
            label = name if len(name) <= 48 else name[:45] + "..."
            self._bars[name] = (tqdm(total=progress.total_steps, file=self.stream, position=position, leave=False,
                                     desc=f"{label:<48}", dynamic_ncols=True,
                                     bar_format="{desc} {bar:16}{postfix}"), position)
        bar = self._bars[name][0]
        bar.total = progress.total_steps
        bar.n = progress.step
        left = progress.remaining_s()
        ends = f" | {format_duration(left)} left" if left is not None else ""
        bar.set_postfix_str(progress.describe() + ends, refresh=True)

    def _close_bar(self, name: str) -> None:
        entry = self._bars.pop(name, None)
        if entry is not None:
            entry[0].close()
