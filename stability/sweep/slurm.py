"""SLURM executor (submitit): one job array over shards of the plan, each task running its shard's cells.

Why shards rather than one job per cell: a task pays Python's and Lightning's start-up once for many
cells, and ``--slurm-jobs`` bounds how many array tasks the scheduler sees. Each array task reads the plan
from ``plan.json`` (so the job pickles are tiny) and runs its cells with the same idempotent
:func:`stability.sweep.runner.run_task` the local pool uses: locks, skips and resumes behave the same.

Requeue is handled once. On preemption or timeout submitit signals the job, calls the job's
``checkpoint()`` (``submitit.helpers.Checkpointable``: resubmit the same shard) and requeues it; the cut-off
cell resumes from its ``last.ckpt``. Lightning would otherwise also claim the signal and ``scontrol
requeue`` the job itself, so inside SLURM jobs every run gets ``SLURMEnvironment(auto_requeue=False)``
(Lightning issue #13773). That plugin is added at run time, not in the plan, so a cell has the same
folder whether it runs here or on a cluster.

The executor's ``cluster`` is submitit's: ``None`` auto-detects SLURM (``sbatch`` on PATH), ``"local"``
runs the array as local processes (how the tests exercise this path), ``"debug"`` runs in-process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from stability.record.files import RECORDED, SUMMARY, read_summary
from stability.record.status import run_status
from stability.sweep.runner import Outcome, Task, run_task
from stability.sweep.store import read_plan

SLURM_ENVIRONMENT = "lightning.pytorch.plugins.environments.SLURMEnvironment"


def runtime_config(gpus_per_run: int) -> dict[str, Any]:
    """Settings for a run inside a SLURM job: where it runs, not what it is (so not in the run id)."""
    extra: dict[str, Any] = {}
    if gpus_per_run > 0:
        extra["trainer"] = {"accelerator": "gpu", "devices": gpus_per_run}
    if "SLURM_JOB_ID" in os.environ:  # a real SLURM job: Lightning must leave requeueing to submitit
        extra.setdefault("trainer", {})["plugins"] = [
            {"class_path": SLURM_ENVIRONMENT, "init_args": {"auto_requeue": False}}
        ]
    return extra


class ShardJob(submitit.helpers.Checkpointable):
    """One array task: run shard ``index`` of ``count`` of the plan in ``sweep_dir``, cell after cell.

    Checkpointable's ``checkpoint()`` resubmits the same call after a timeout or preemption; the shard then
    skips its finished cells and resumes the cut-off one, so nothing runs twice.
    """

    def __call__(self, sweep_dir: str, index: int, count: int, retry_failed: bool,
                 gpus_per_run: int) -> list[dict[str, Any]]:
        plan = read_plan(Path(sweep_dir))
        extra = runtime_config(gpus_per_run)
        # With several GPUs per run, every task of the job is one DDP rank of the same run: rank 0 holds the
        # run's lock and the others follow it (a cell locked by another sweep would stall them: keep one
        # sweep per folder when running multi-GPU cells).
        rank = submitit.JobEnvironment().global_rank
        outcomes = []
        for run in plan["runs"][index::count]:
            task = Task(run["run_id"], run["run_name"], str(Path(sweep_dir) / run["run_name"]), run["config"],
                        retry_failed)
            outcomes.append(run_task(task, extra, use_lock=rank == 0, capture_output=True).to_dict())
        return outcomes


@dataclass
class SlurmExecutor:
    """Submit the to-do cells as a submitit job array and follow them until they end.

    Args:
        sweep_dir: the sweep folder (its ``plan.json`` must exist); submitit's files go to ``.submitit/``.
        jobs: number of array tasks (shards); None = one per cell.
        gpus_per_run: GPUs per cell (one task per GPU: Lightning's DDP under SLURM).
        cpus_per_task, mem_gb, timeout_min, partition, array_parallelism: SLURM resources.
        cluster: submitit's cluster (None = detect, "local", "debug").
        poll_s: how often the follower re-reads the run folders.
    """

    sweep_dir: Path
    jobs: int | None = None
    gpus_per_run: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    partition: str | None = None
    array_parallelism: int = 64
    cluster: str | None = None
    poll_s: float = 10.0

    def submit(self, n_runs: int, retry_failed: bool) -> list[Any]:
        """Submit the array; shards stride over *the whole plan* (finished cells are skipped in the task)."""
        count = max(1, min(self.jobs or n_runs, n_runs))
        executor = submitit.AutoExecutor(folder=self.sweep_dir / ".submitit" / "%j", cluster=self.cluster)
        params: dict[str, Any] = {"name": f"stability-{self.sweep_dir.name}", "timeout_min": self.timeout_min,
                                  "tasks_per_node": max(1, self.gpus_per_run), "nodes": 1,
                                  "slurm_array_parallelism": self.array_parallelism}
        if self.gpus_per_run:
            params["gpus_per_node"] = self.gpus_per_run
        if self.cpus_per_task:
            params["cpus_per_task"] = self.cpus_per_task
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        if self.partition:
            params["slurm_partition"] = self.partition
        if executor.cluster != "slurm":  # keep submitit from warning about each SLURM-only key
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        executor.update_parameters(**params)
        n = count
        return executor.map_array(ShardJob(), [str(self.sweep_dir)] * n, list(range(n)), [n] * n,
                                  [retry_failed] * n, [self.gpus_per_run] * n)

    def follow(self, jobs: list[Any], runs: list[dict[str, Any]], on_outcome: Callable[[Outcome], None],
               seen: set[str], before: dict[str, int | None]) -> list[str]:
        """Report cells as their summaries appear, until every job ends; return the jobs' own errors.

        ``before`` holds each summary's mtime at submission: a failed run being retried keeps its old
        summary until the retry starts, and only a new one is its ending.
        """
        while True:
            done = all(job.done() for job in jobs)
            for run in runs:
                if run["run_id"] in seen:
                    continue
                run_dir = self.sweep_dir / run["run_name"]
                status = run_status(run_dir)
                if status in RECORDED and _mtime(run_dir / SUMMARY) != before.get(run["run_id"]):
                    seen.add(run["run_id"])
                    summary = read_summary(run_dir)
                    on_outcome(Outcome(run["run_id"], run["run_name"], status, True, summary and summary.error,
                                       float((summary and summary.wall_time_s) or 0.0),
                                       summary and summary.train_time_s, summary and summary.final_val_acc))
            if done:
                break
            time.sleep(self.poll_s)
        errors = []
        for job in jobs:
            exc = job.exception()
            if exc is not None:
                last = [line for line in str(exc).splitlines() if line.strip()]
                errors.append(f"job {job.job_id}: {last[-1] if last else type(exc).__name__}")
        return errors


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
