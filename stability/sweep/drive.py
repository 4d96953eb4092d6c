"""Running a planned sweep: locally on a process pool or on SLURM, then its closing lines and exit status.

Before anything is written, every run's folder is checked to hold that run or nothing; runs that ended
earlier are skipped; what is left runs under a progress display; the closing lines are read from the run
folders (the truth), and say what to run next.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stability.errors import ConfigError
from stability.record.config_files import read_yaml
from stability.record.files import (
    COLLAPSED,
    COMPLETED,
    CONFIG,
    DIVERGED,
    FAILED,
    FINISHED,
    LAST_CKPT,
    RECORDED,
    RUNNING,
    SUMMARY,
    RecordError,
    read_summary,
)
from stability.record.identity import config_hash
from stability.record.status import run_status
from stability.sweep.cells import Cell, expand
from stability.sweep.grid import GridSpec
from stability.sweep.local import LocalExecutor
from stability.sweep.plan import PlannedRun, make_plan, plan_document, shard
from stability.sweep.progress import Progress, format_duration
from stability.sweep.runner import KILLED, OUT_OF_SPACE, Outcome, Task
from stability.sweep.store import MAX_KILLS, read_plan, write_plan
from stability.sweep.workers import capped_workers, default_workers, plan_threads, visible_gpus, wants_gpu
from stability.training.tensorboard import write_sweep_view

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNFINISHED = 0, 1, 2, 3


def _tasks(runs: list[PlannedRun], out: Path, retry_failed: bool, threads: int | None = None) -> list[Task]:
    return [Task(r.run_id, r.run_name, str(out / r.run_name), r.config, retry_failed, threads) for r in runs]


def check_run_folders(runs: list[PlannedRun], out: Path) -> None:
    """Raise ConfigError if a run's folder holds something else than that run (before anything is written):
    a file in its place, or a ``config.yaml`` that is not the cell's (edited by hand, or damaged)."""
    for run in runs:
        run_dir = out / run.run_name
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{run_dir}: a file where this sweep keeps a run's folder; move it away")
        path = run_dir / CONFIG
        if not path.exists():
            continue
        advice = "move that folder away (or sweep into another --out)"
        try:
            stored = read_yaml(path)
        except ConfigError as error:
            raise ConfigError(f"{path}: not a config this program wrote ({error}); {advice}") from None
        if not isinstance(stored, dict) or not _same_cell(stored, run.config):
            raise ConfigError(f"{path}: not the config of this run (id {run.run_id}), though the folder has its "
                              f"name; {advice}")


# Trainer settings an executor may add at run time (stability.sweep.slurm.runtime_config): where a cell runs,
# not what it is. A cell cut off on a cluster records them in its config.yaml and still resumes anywhere.
RUNTIME_TRAINER_KEYS = ("accelerator", "devices", "plugins")


def _same_cell(stored: dict[str, Any], planned: dict[str, Any]) -> bool:
    stored = {**stored}
    if isinstance(stored.get("trainer"), dict) and isinstance(planned.get("trainer"), dict):
        trainer = {k: v for k, v in stored["trainer"].items() if k not in RUNTIME_TRAINER_KEYS}
        stored["trainer"] = trainer | {k: v for k, v in planned["trainer"].items() if k in RUNTIME_TRAINER_KEYS}
    return config_hash(stored) == config_hash(planned)


def _split(runs: list[PlannedRun], out: Path, retry_failed: bool) -> tuple[list[PlannedRun], dict[str, int]]:
    """Runs still to do, and the count of the others by status (finished, or failed and not retried)."""
    todo, already = [], dict.fromkeys(RECORDED, 0)
    for run in runs:
        status = run_status(out / run.run_name)
        if status in FINISHED or (status == FAILED and not retry_failed):
            already[status] += 1
        else:
            todo.append(run)
    return todo, already


def final_report(name: str, runs: list[PlannedRun], out: Path, outcomes: list[Outcome], elapsed: float,
                 extra_errors: list[str] = (), show_next: bool = True) -> int:
    """Print the closing lines from the run folders (the truth) and return the exit status."""
    statuses = {r.run_id: run_status(out / r.run_name) for r in runs}
    count = {s: sum(1 for v in statuses.values() if v == s) for s in RECORDED}
    left = len(runs) - sum(count.values())
    unfinished = {run_id for run_id, status in statuses.items() if status not in RECORDED}
    busy = len({o.run_id for o in outcomes if o.status == "busy"} & unfinished)  # still held, not a running total
    killed = len({o.run_id for o in outcomes if o.status == KILLED} & unfinished)
    if show_next and not count[FAILED] and not left:
        for line in next_steps(out):
            print(line)
    print(f"sweep {name}: {len(runs)} runs in {out}: {count[COMPLETED]} completed, "
          f"{count[DIVERGED]} diverged, {count[COLLAPSED]} collapsed, {count[FAILED]} failed, {left} left "
          f"({format_duration(elapsed)})")
    full = next((o for o in outcomes if o.status == OUT_OF_SPACE), None)
    if full is not None:  # one line: the cause, and that re-running resumes
        print(f"error: {full.error}", file=sys.stderr)
        return EXIT_UNFINISHED
    for error in extra_errors:
        print(f"  {error}", file=sys.stderr)
    if count[FAILED]:
        failed = [r for r in runs if statuses[r.run_id] == FAILED]
        for run in failed[:10]:
            summary = read_summary(out / run.run_name)
            print(f"  failed: {run.run_name}: {(summary and summary.error) or '?'}", file=sys.stderr)
        if len(failed) > 10:
            print(f"  ... and {len(failed) - 10} more", file=sys.stderr)
        print(f"FAILED: {count[FAILED]} of {len(runs)} runs failed (their summary.json and traceback.txt "
              "say why); re-run with --retry-failed to run them again", file=sys.stderr)
        return EXIT_FAILED
    if left:
        why = [f"{busy} held by another sweep on this folder"] if busy else []
        if killed:
            why.append(f"{killed} whose worker was killed by a signal (maybe out of memory): a re-run retries "
                       f"{'it' if killed == 1 else 'them'}, up to {MAX_KILLS} kills per run")
        held = f" ({'; '.join(why)})" if why else ""
        print(f"UNFINISHED: {left} of {len(runs)} runs are not finished{held}; re-run the same command to "
              "finish them", file=sys.stderr)
        return EXIT_UNFINISHED
    return EXIT_OK


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def next_steps(out: Path) -> list[str]:
    """What to run once a sweep has finished: its report, and TensorBoard on the pages that answer."""
    shown = _shown(out)
    return [f"next: stability report {shown}        (tables and figures into {shown}/report)",
            f"      tensorboard --logdir {shown}    (then http://localhost:6006/#hparams: the runs' table; "
            "#timeseries: loss and failure markers first; #custom_scalars: per-layer attention logits, grad norms)"]


def describe_todo(todo: list[PlannedRun], out: Path) -> str:
    """What the runs to run are, when some are not new: ' (2 resume from their last checkpoint, 5 new)'."""
    kinds = {"resume from their last checkpoint": 0, "restart (cut off before a checkpoint)": 0,
             "failed before and run again": 0, "are held by another sweep": 0, "new": 0}
    for run in todo:
        status = run_status(out / run.run_name)
        if status == FAILED:
            kinds["failed before and run again"] += 1
        elif status == RUNNING:
            kinds["are held by another sweep"] += 1
        elif (out / run.run_name / LAST_CKPT).is_file():
            kinds["resume from their last checkpoint"] += 1
        elif (out / run.run_name).is_dir() and any((out / run.run_name).glob("events.out.tfevents.*")):
            kinds["restart (cut off before a checkpoint)"] += 1
        else:
            kinds["new"] += 1
    if kinds["new"] == len(todo):
        return ""
    return " (" + ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n) + ")"


def _expected_work(spec: GridSpec, out: Path, args: argparse.Namespace, shard_n: int) -> int:
    """How many runs this sweep will likely run, known before planning (which imports lightning).

    A folder with a plan.json from an earlier sweep: its unfinished runs. Otherwise: every cell. Used
    only to decide whether to start workers early and how many; the plan decides what actually runs.
    """
    try:
        planned = read_plan(out)["runs"]
    except (OSError, RecordError):
        return -(-len(expand(spec, args.smoke)) // shard_n)
    statuses = [run_status(out / r["run_name"]) for r in planned]
    return sum(1 for s in statuses if s not in FINISHED and (s != FAILED or args.retry_failed))


def run_local(args: argparse.Namespace, spec: GridSpec, out: Path, shard_i: int, shard_n: int,
              extra: Sequence[Cell] = (), show_next: bool = True) -> int:
    """Run the grid's unfinished cells (and ``extra`` cells: the seeds ``--settle`` adds) on local workers;
    ``show_next``: end with what to run next (not between the rounds of ``--settle``)."""
    started = time.perf_counter()
    cells = [*expand(spec, args.smoke), *extra]
    gpus = visible_gpus() if cells and wants_gpu(cells[0].config) else []
    threads = plan_threads(args, out, gpus)
    expected = _expected_work(spec, out, args, shard_n) + len(extra)  # extra: at most that many more
    workers = args.workers or default_workers(expected, gpus, threads)
    if args.workers:
        workers, note = capped_workers(args.workers, expected, gpus, threads)
        if note:
            print(note, flush=True)
    pool = LocalExecutor(workers, threads, gpus or None)
    # From a fresh interpreter, start the workers first when there is likely work: they import lightning
    # (~5 s) once, then validate the cells in parallel and run them; a malformed grid kills them before any
    # run starts. A process that has loaded the training code already (tests, a notebook) validates here.
    early = bool(expected) and "stability.training.cli" not in sys.modules
    if early:
        pool.start()
    outcomes: list[Outcome] = []
    finished_ok = False
    try:
        # every cell is validated before anything is written
        runs = make_plan(spec, args.smoke, pool.resolve, extra) if early else make_plan(spec, args.smoke, extra=extra)
        mine = shard(runs, shard_i, shard_n)
        todo, already = _split(mine, out, args.retry_failed)
        check_run_folders(todo, out)
        write_plan(out, plan_document(spec, runs, args.smoke, threads))
        write_sweep_view(out, [r.config for r in runs])
        where = f" (shard {shard_i}/{shard_n}: {len(mine)} of {len(runs)})" if shard_n > 1 else ""
        on = f"{workers} worker{'s' if workers > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
        on += f" (GPUs {','.join(map(str, gpus))})" if gpus else ""
        print(f"sweep {spec.name}: {len(runs)} runs{where} -> {out}: {sum(already.values())} ended earlier, "
              f"{len(todo)} to run{describe_todo(todo, out)}" + (f" on {on}" if todo else ""), flush=True)
        if todo:
            with Progress(len(mine), already, runs=[(r.run_name, out / r.run_name) for r in todo],
                          workers=workers) as progress:
                outcomes = pool.run(_tasks(todo, out, args.retry_failed, threads), progress.record)
        finished_ok = True
    finally:
        if finished_ok:
            pool.close()
        else:
            pool.kill()  # a malformed grid, Ctrl-C or an error: cut-off runs resume on the next sweep
    return final_report(spec.name, mine, out, outcomes, time.perf_counter() - started, show_next=show_next)


def run_slurm(args: argparse.Namespace, spec: GridSpec, out: Path) -> int:
    try:
        from stability.sweep.slurm import SlurmExecutor
    except ImportError:
        raise ConfigError("--executor slurm: needs submitit; install it with "
                          "pip install 'stability[slurm]'") from None
    started = time.perf_counter()
    runs = make_plan(spec, args.smoke)
    todo, already = _split(runs, out, args.retry_failed)
    check_run_folders(todo, out)
    write_plan(out, plan_document(spec, runs, args.smoke, args.threads))
    write_sweep_view(out, [r.config for r in runs])
    if not todo:
        print(f"sweep {spec.name}: {len(runs)} runs -> {out}: {sum(already.values())} ended earlier, 0 to run")
        return final_report(spec.name, runs, out, [], time.perf_counter() - started)
    executor = SlurmExecutor(out.resolve(), jobs=args.slurm_jobs, gpus_per_run=args.gpus_per_run,
                             cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb,
                             timeout_min=args.timeout_min,
                             partition=args.partition, array_parallelism=args.array_parallelism,
                             cluster=None if args.cluster == "auto" else args.cluster,
                             poll_s=1.0 if args.cluster in ("local", "debug") else 10.0)
    # A failed run being retried still has its old summary until the retry starts: only a summary that
    # changes after submission counts as its new ending.
    before = {r.run_id: _mtime(out / r.run_name / SUMMARY) for r in todo}
    jobs = executor.submit(len(runs), args.retry_failed)
    print(f"sweep {spec.name}: {len(runs)} runs -> {out}: {sum(already.values())} ended earlier, "
          f"{len(todo)} to run{describe_todo(todo, out)}; submitted {len(jobs)} array task(s), first job id "
          f"{jobs[0].job_id}", flush=True)
    if args.no_wait:
        print(f"not waiting; see the status with: stability sweep {args.grid} --dry-run --out {out}")
        return EXIT_OK
    todo_ids = {r.run_id for r in todo}
    seen = {r.run_id for r in runs if r.run_id not in todo_ids}
    at_once = min(len(jobs), args.array_parallelism)
    with Progress(len(runs), already, runs=[(r.run_name, out / r.run_name) for r in todo],
                  workers=at_once) as progress:
        errors = executor.follow(jobs, [r.to_dict() for r in todo], progress.record, seen, before)
    return final_report(spec.name, runs, out, [], time.perf_counter() - started, errors)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None
