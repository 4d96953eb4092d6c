"""Local executor: a pool of long-lived worker processes, one cell at a time each.

Why not ``multiprocessing.Pool`` or ``ProcessPoolExecutor``? A worker that dies mid-run (out of memory,
a segfault in a kernel) hangs the former and breaks every pending future of the latter. Here the parent
watches each worker's pipe *and* its process sentinel, so a dead worker costs exactly its own cell and is
replaced. A worker killed by a signal (the OOM killer, an admin's ``kill``) says nothing against the cell's
config: the kill is counted in the cell's ``kills.json`` and the cell stays resumable, so a plain re-run of
the sweep retries it, until it has killed :data:`~stability.sweep.store.MAX_KILLS` workers; then it is
recorded failed. A worker that exits with an error code is recorded failed at once.

Each worker:
- validates a share of the grid's cells while the parent plans (so the parent never imports lightning);
- is started with the ``spawn`` context (no forked copies of the parent's threads or CUDA state);
- imports :mod:`stability.training.run` once (``import lightning`` is ~5 s) and then runs many cells;
- uses ``threads`` torch threads, the plan's count (a run's numbers depend on it, not on the pool size);
- on a GPU machine gets its own ``CUDA_VISIBLE_DEVICES``;
- asks the kernel to SIGKILL it when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so a killed
  sweep leaves no orphan training behind; the cut-off cells resume on the next sweep;
- ignores SIGINT: Ctrl-C reaches the whole process group, and the parent alone decides what to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from stability.sweep.plan import Resolved, resolve_batch
from stability.sweep.runner import KILLED, OUT_OF_SPACE, Outcome, Task, run_task
from stability.sweep.store import MAX_KILLS, record_kill, write_failure

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def usable_cores() -> int:
    """CPU cores this process may run on (respects taskset / cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; a no-op elsewhere).

    PR_SET_PDEATHSIG fires when the parent *thread* that forked us exits; the sweep starts workers from
    its main thread, which lives as long as the sweep. If the parent died before this call, exit now.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)


@dataclass
class ResolveBatch:
    """Planning work for a worker: parse and resolve these cell configs (see :func:`resolve_batch`).

    Workers have lightning loaded anyway, so the parent hands them the validation of the grid: it never
    pays ``import lightning`` itself, and the cells are validated in parallel.
    """

    configs: list[dict[str, Any]]
    attempts: int = 0


def _worker_main(conn: Connection, parent_pid: int, threads: int, env: dict[str, str]) -> None:
    """Worker process: set up once, then do what the parent sends (cells to run, configs to resolve)."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)  # before torch is imported: OMP_NUM_THREADS, CUDA_VISIBLE_DEVICES
    import torch

    torch.set_num_threads(threads)
    import stability.training.run  # noqa: F401 - the one-off ~5 s import, paid before the first cell

    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the parent is gone
            return
        if job is None:
            return
        if isinstance(job, ResolveBatch):
            conn.send(("result", resolve_batch(job.configs)))
        else:
            conn.send(("result", run_task(job, capture_output=True)))


@dataclass
class _Worker:
    index: int
    process: Any
    conn: Connection
    ready: bool = False
    job: Task | ResolveBatch | None = None


@dataclass
class LocalExecutor:
    """A pool of ``workers`` processes with ``threads`` torch threads each: it validates the grid's cells
    (:meth:`resolve`, for planning) and then runs them (:meth:`run`).

    Args:
        workers: number of worker processes.
        threads: torch (and OpenMP) threads per worker.
        gpus: GPU indices to hand out, one per worker (``CUDA_VISIBLE_DEVICES``); None on CPU machines.
    """

    workers: int
    threads: int
    gpus: list[int] | None = None
    _pool: list[_Worker] = field(default_factory=list)
    _failed_starts: int = 0

    def start(self) -> None:
        """Start the workers (each imports lightning once, in parallel with the others)."""
        ctx = mp.get_context("spawn")
        self._ctx = ctx
        for i in range(self.workers):
            self._pool.append(self._spawn(i))

    def _spawn(self, index: int) -> _Worker:
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpus[index % len(self.gpus)])
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=_worker_main, args=(child_conn, os.getpid(), self.threads, env),
                                    name=f"stability-sweep-worker-{index}", daemon=False)
        process.start()
        child_conn.close()
        return _Worker(index, process, parent_conn)

    def run(self, tasks: list[Task], on_outcome: Callable[[Outcome], None]) -> list[Outcome]:
        """Run every task; call ``on_outcome`` as each ends. Returns the outcomes in the order they ended.

        Once a run reports the disk full, no further task is started (each would fail the same way); the
        ones running finish or fail on their own, and the rest stay as they were for the next sweep.
        """
        outcomes: list[Outcome] = []
        pending: list[Task] = list(tasks)

        def done(task: Task, outcome: Outcome) -> None:
            outcomes.append(outcome)
            on_outcome(outcome)
            if outcome.status == OUT_OF_SPACE:
                pending.clear()

        def died(task: Task, code: int | None) -> bool:
            done(task, self._worker_died(task, code))
            return False  # never retried in this sweep: a cell that kills its worker would do it again

        self._drive(pending, done, died)
        return outcomes

    @staticmethod
    def _worker_died(task: Task, code: int | None) -> Outcome:
        """Record a worker's death on its cell: a kill counts towards MAX_KILLS, any other death fails it."""
        run_dir = Path(task.run_dir)
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            kills = record_kill(run_dir, name)
            if kills < MAX_KILLS:
                return Outcome(task.run_id, task.run_name, KILLED, True,
                               f"worker killed by {name} ({kills} of {MAX_KILLS} kills allowed); a re-run of the "
                               "sweep retries this cell")
            error = (f"worker killed by a signal {kills} times while running this cell (last: {name}), maybe out of "
                     "memory; not retried by a plain re-run (--retry-failed tries again)")
        else:
            error = f"worker process died (exit code {code}) while running this cell"
        write_failure(run_dir, task.run_name, task.run_id, error)
        return Outcome(task.run_id, task.run_name, "failed", True, error)

    def resolve(self, configs: list[dict[str, Any]]) -> list[Resolved]:
        """Resolve configs on the workers, in parallel (the ``resolve_many`` of :func:`make_plan`)."""
        size = max(1, -(-len(configs) // (2 * self.workers)))  # two batches per worker balance the load
        batches = [ResolveBatch(configs[i:i + size]) for i in range(0, len(configs), size)]
        results: dict[int, list[Resolved]] = {}

        def done(batch: ResolveBatch, resolved: list[Resolved]) -> None:
            results[id(batch)] = resolved

        def died(batch: ResolveBatch, code: int | None) -> bool:
            batch.attempts += 1
            if batch.attempts > 1:
                raise RuntimeError(f"sweep workers died twice (exit code {code}) while validating the grid")
            return True

        self._drive(list(batches), done, died)
        return [item for batch in batches for item in results[id(batch)]]

    def _drive(self, jobs: list[Any], done: Callable[[Any, Any], None],
               died: Callable[[Any, int | None], bool]) -> None:
        """Hand ``jobs`` to idle workers until all are done; ``died`` says whether a dead worker's job is retried."""
        if not self._pool:
            self.start()
        pending = jobs  # consumed from the front; ``done`` may empty it to stop handing out work
        while pending or any(w.job is not None for w in self._pool):
            for worker in self._pool:  # hand out work
                if worker.ready and worker.job is None and pending:
                    worker.job = pending.pop(0)
                    worker.conn.send(worker.job)
            waitables: list[Any] = [w.conn for w in self._pool] + [w.process.sentinel for w in self._pool]
            ready = wait(waitables, timeout=5.0)
            for worker in list(self._pool):
                dead = worker.process.sentinel in ready
                if worker.conn in ready:  # read its last message first, even if it then died
                    try:
                        kind, payload = worker.conn.recv()
                    except (EOFError, OSError):
                        dead = True
                    else:
                        if kind == "ready":
                            worker.ready = True
                        else:
                            job, worker.job = worker.job, None
                            done(job, payload)
                if dead:
                    job, code = worker.job, self._bury(worker)
                    if job is not None and died(job, code):
                        pending.insert(0, job)
                    self._replace(worker, code, needed=bool(pending))

    def _bury(self, worker: _Worker) -> int | None:
        """Reap a worker whose pipe or process ended; return its exit code."""
        worker.process.join(timeout=5)
        if worker.process.is_alive():  # its pipe broke but it lingers: finish it off
            worker.process.kill()
            worker.process.join()
        return worker.process.exitcode

    def _replace(self, worker: _Worker, code: int | None, needed: bool) -> None:
        """Swap a dead worker for a new one if work remains; give up if workers keep dying on start-up."""
        if not worker.ready:
            self._failed_starts += 1
            if self._failed_starts > 2 * self.workers:
                self.kill()
                raise RuntimeError(f"sweep workers keep dying on start-up (last exit code {code}); "
                                   "run `python -c 'import stability.training.run'` to see why")
        index = self._pool.index(worker)
        worker.conn.close()
        if needed:
            self._pool[index] = self._spawn(worker.index)
        else:
            self._pool.pop(index)

    def close(self) -> None:
        """Let idle workers exit and wait for them (workers still starting up are killed: nothing to lose)."""
        for worker in self._pool:
            if not worker.ready and worker.job is None and worker.process.is_alive():
                worker.process.kill()
        for worker in self._pool:
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for worker in self._pool:
            worker.process.join(timeout=30)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._pool.clear()

    def kill(self) -> None:
        """SIGKILL every worker now (Ctrl-C): their cells are cut off and resume on the next sweep."""
        for worker in self._pool:
            if worker.process.is_alive():
                worker.process.kill()
        for worker in self._pool:
            worker.process.join()
            worker.conn.close()
        self._pool.clear()
