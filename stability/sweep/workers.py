"""How a local sweep uses the machine: which GPUs it sees, how many workers it starts, and how many torch
threads each run computes with.

Every run computes with the same number of torch threads, fixed in ``plan.json`` when the sweep is first
planned (``--threads``, default :func:`default_threads`) and kept by every re-run: the last digits of a
run's numbers depend on the thread count, and must not depend on how many workers happened to run it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from stability.errors import ConfigError
from stability.record.config_files import get_dotted
from stability.record.files import PENDING
from stability.record.status import run_status
from stability.sweep.local import usable_cores
from stability.sweep.store import planned_threads, read_plan

# Measured with `stability bench sweep --workers 1,2 --fraction 1/4` on the project's 2-core machine (16 runs of
# ablations/digits.yaml): 1 worker x 2 threads 138.7 s, 2 workers x 1 thread 102.4 s (1.35x faster). Models
# this small gain little from a second intra-op thread (a run trains in 7.0 s with 2 threads, 9.6 s with 1),
# so the default is one single-threaded run per core. The thread count is a property of the plan, not of the
# pool: `--workers 1` then leaves a core idle rather than change the numbers.
CPU_THREADS_PER_WORKER = 1


def visible_gpus() -> list[int]:
    """GPU indices this process may use, found without importing torch (so workers start sooner)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [int(x) for x in listed.split(",") if x.strip().isdigit()]
    gpus = Path("/proc/driver/nvidia/gpus")
    return list(range(len(list(gpus.iterdir())))) if gpus.is_dir() else []


def wants_gpu(config: dict[str, Any]) -> bool:
    return str(get_dotted(config, "trainer.accelerator", "auto")) in ("auto", "gpu", "cuda")


def default_workers(n_cells: int, gpus: list[int], threads: int = CPU_THREADS_PER_WORKER) -> int:
    """One worker per GPU; on CPUs as many as the cores hold runs of ``threads``; never more than cells."""
    per_machine = len(gpus) if gpus else max(1, usable_cores() // threads)
    return max(1, min(per_machine, n_cells))


def capped_workers(asked: int, n_cells: int, gpus: list[int],
                   threads: int = CPU_THREADS_PER_WORKER) -> tuple[int, str | None]:
    """``--workers N`` bounded by what can run at once: never more workers than runs left to run, and on CPUs
    never more than the cores hold runs of ``threads`` (each worker is a process that imports Lightning; 1,000
    of them would storm the machine). GPUs may be shared by several workers on purpose, so with GPUs only the
    runs bound it. Returns (workers, the one line saying so, or None when nothing was capped)."""
    cores = usable_cores()
    bounds = [max(1, n_cells)] + ([] if gpus else [max(1, cores // threads)])
    workers = min(asked, *bounds)
    if workers == asked or n_cells == 0:  # nothing to run: no worker starts, nothing to say
        return workers, None
    why = f"{n_cells} run{'s' if n_cells != 1 else ''} to run"
    if not gpus:
        why += f", {cores} core{'s' if cores != 1 else ''} at {threads} thread{'s' if threads != 1 else ''} each"
    return workers, f"note: --workers {asked}: using {workers} ({why})"


def default_threads(gpus: list[int]) -> int:
    """Threads per run for a new plan, from the machine alone: on CPUs CPU_THREADS_PER_WORKER (measured
    fastest for sweeps of small models), on GPUs the cores shared among the GPUs (data loading, Python)."""
    return max(1, usable_cores() // len(gpus)) if gpus else CPU_THREADS_PER_WORKER


def plan_threads(args: argparse.Namespace, out: Path, gpus: list[int]) -> int:
    """The thread count of this sweep's runs: the earlier plan's on a re-run, else ``--threads`` or the default.

    Changing it once runs have started would give one sweep's runs different last digits: refused.
    """
    planned = planned_threads(out)
    if args.threads is None:
        return planned or default_threads(gpus)
    if planned is not None and planned != args.threads:
        started = [r["run_name"] for r in read_plan(out)["runs"] if run_status(out / r["run_name"]) != PENDING]
        if started:
            raise ConfigError(f"--threads {args.threads}: the sweep in {out} was planned with {planned} thread"
                              f"{'s' if planned > 1 else ''} per run and {len(started)} of its runs have started; a "
                              f"run's numbers depend on it, so keep --threads {planned} (or leave it out), or use "
                              "another --out")
    return args.threads
