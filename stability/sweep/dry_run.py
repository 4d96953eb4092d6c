"""``stability sweep --dry-run``: the plan, whether its data is there, and what it will cost; nothing is written.

The cost comes from the runs that completed earlier in the sweep folder, else from the cost model of
:mod:`stability.sweep.cost` (FLOPs of each run, and the rate a training step reaches on this machine).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stability.errors import ConfigError
from stability.record.files import COMPLETED, FAILED, FINISHED, read_summary
from stability.record.identity import config_hash
from stability.record.status import run_status
from stability.sweep.drive import EXIT_OK
from stability.sweep.grid import GridSpec
from stability.sweep.local import usable_cores
from stability.sweep.plan import PlannedRun, Resolved, make_plan, quiet_parsing, resolve_batch, shard
from stability.sweep.progress import format_duration
from stability.sweep.workers import default_workers, visible_gpus, wants_gpu


def print_plan(spec: GridSpec, runs: list[PlannedRun], out: Path, retry_failed: bool) -> None:
    if spec.description:
        print("\n".join(f"# {line}" if line else "#" for line in spec.description.splitlines()))
    counts: dict[str, int] = {}
    width = len(str(len(runs)))
    for i, run in enumerate(runs):
        status = run_status(out / run.run_name)
        counts[status] = counts.get(status, 0) + 1
        print(f"{i:>{width}}  {status:<9}  {run.run_name}")
    finished = sum(counts.get(s, 0) for s in FINISHED)
    failed = counts.get(FAILED, 0)
    to_run = len(runs) - finished - (0 if retry_failed else failed)
    print(f"{len(runs)} runs -> {out}: {finished} finished, {failed} failed, {to_run} to run")


def _parse_only(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config without building the model or the data module (whose folder may be missing)."""
    from stability.training.cli import StabilityCLI
    from stability.training.messages import user_errors

    class ParseOnly(StabilityCLI):
        def instantiate_classes(self) -> None:
            pass

    with quiet_parsing(), user_errors():
        return ParseOnly(config).config_dump_dict()


def _resolve_without_data(configs: list[dict[str, Any]], missing: list[str]) -> list[Resolved]:
    """Resolve cells as the run will; a cell whose data is missing is resolved from its config alone (its
    name and id are the same: they hash the config), and the first such message is kept in ``missing``."""
    resolved: list[Resolved] = []
    for config, (cell, rid, error) in zip(configs, resolve_batch(configs), strict=True):
        if error is not None and error.startswith("data.data_dir:"):  # how the data modules say it is missing
            missing.append(error)
            cell = _parse_only(config)
            rid, error = config_hash(cell), None
        resolved.append((cell, rid, error))
    return resolved


def estimate_cost(runs: list[PlannedRun], out: Path, workers: int, threads: int, gpus: list[int]) -> str:
    """One line: what the runs left will cost, from the runs that completed earlier in ``out`` if any, else
    from the model's FLOPs and the rate a training step reaches on this machine (:mod:`stability.sweep.cost`)."""
    todo = [r for r in runs if run_status(out / r.run_name) not in FINISHED]
    if not todo:
        return "cost: nothing left to run"
    on = f"{workers} worker{'s' if workers > 1 else ''}"
    done = [s for s in (read_summary(out / r.run_name) for r in runs) if s and s.status == COMPLETED]
    walls = [s.wall_time_s for s in done if s.wall_time_s]
    if walls:
        each = sum(walls) / len(walls)
        return (f"cost: about {format_duration(len(todo) * each / workers)} for the {len(todo)} runs left on "
                f"{on} (measured: the {len(walls)} runs completed here took {each:.1f} s each)")
    import torch

    from stability.sweep.cost import SWEEP_STARTUP_S, measured_step_rate, run_work

    device = torch.device("cuda" if gpus and torch.cuda.is_available() else "cpu")
    rate = measured_step_rate(todo[0].config, device, threads)
    works = [run_work(r.config) for r in todo]
    seconds = SWEEP_STARTUP_S + sum(w.seconds(rate) for w in works) / workers
    where = f"GPU{'s' if len(gpus) > 1 else ''} {','.join(map(str, gpus))}" if device.type == "cuda" else \
        f"{threads} CPU thread{'s' if threads > 1 else ''} each"
    if device.type == "cpu" and wants_gpu(todo[0].config):
        where += " (no GPU visible here)"
    return (f"cost: about {format_duration(seconds)} for {len(todo)} runs on {on}, {where} (estimated: "
            f"{sum(w.flops for w in works) / 1e12:.3g} TFLOP at {rate / 1e9:.3g} GFLOP/s, the rate a training "
            f"step of this grid's model reaches here, plus start-up and Lightning's overhead per step and run)")


def dry_run(args: argparse.Namespace, spec: GridSpec, out: Path, shard_i: int, shard_n: int) -> int:
    """Print the plan, whether its data is there, and what it will cost; write nothing."""
    missing: list[str] = []
    runs = make_plan(spec, args.smoke, lambda configs: _resolve_without_data(configs, missing))
    mine = shard(runs, shard_i, shard_n)
    print_plan(spec, mine, out, args.retry_failed)
    if missing:
        print(f"data: missing: {missing[0]}")
        print("      the plan above is what will run once the data is there (the run names do not depend on it)")
    if not mine:
        return EXIT_OK
    gpus = visible_gpus() if wants_gpu(mine[0].config) else []
    workers = args.workers or default_workers(len(mine), gpus)
    threads = args.threads or max(1, usable_cores() // workers)
    try:
        print(estimate_cost(mine, out, workers, threads, gpus))
    except ConfigError as error:  # an unknown data set whose folder is missing: no size, no estimate
        print(f"cost: unknown ({error})")
    return EXIT_OK
