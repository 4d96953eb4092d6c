"""``stability sweep GRID``: expand a grid, write its plan, run what is not finished, report.

Re-running the same command is how a sweep resumes: finished runs (``completed`` or ``diverged``) are
skipped, cut-off runs continue from their last checkpoint, failed runs wait for ``--retry-failed``.

Exit status: 0 when every run of this invocation (its shard) is finished; 1 when any failed; 3 when
some are left unfinished (held by another sweep on the same folder, a worker killed by a signal, jobs that
ended early, a full disk); 2 for a malformed grid or bad option (raised as
:class:`stability.errors.ConfigError`, printed as one line by the dispatcher, before anything is written).

Every run computes with the same number of torch threads, fixed in ``plan.json`` when the sweep is first
planned (``--threads``, default :func:`default_threads`) and kept by every re-run: the last digits of a
run's numbers depend on the thread count, and must not depend on how many workers happened to run it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from stability.errors import ArgumentParser, ConfigError
from stability.record.config_files import ConfigLoader, get_dotted, read_yaml
from stability.record.files import (
    COLLAPSED,
    COMPLETED,
    CONFIG,
    DIVERGED,
    FAILED,
    FINISHED,
    LAST_CKPT,
    PENDING,
    RECORDED,
    RUNNING,
    SUMMARY,
    RecordError,
    read_summary,
)
from stability.record.identity import SEED_KEY, config_hash
from stability.record.status import run_status
from stability.sweep.grid import MAX_CELLS, GridSpec, expand, load_grid
from stability.sweep.local import LocalExecutor, usable_cores
from stability.sweep.plan import (
    PlannedRun,
    Resolved,
    default_out,
    make_plan,
    parse_shard,
    plan_document,
    quiet_parsing,
    resolve_batch,
    shard,
)
from stability.sweep.progress import Progress, format_duration
from stability.sweep.runner import KILLED, OUT_OF_SPACE, Outcome, Task
from stability.sweep.store import MAX_KILLS, planned_threads, read_plan, write_plan
from stability.training.tensorboard import write_sweep_view

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNFINISHED = 0, 1, 2, 3
# Measured with `stability bench sweep --workers 1,2 --fraction 1/4` on the project's 2-core machine (16 runs of
# ablations/digits.yaml): 1 worker x 2 threads 138.7 s, 2 workers x 1 thread 102.4 s (1.35x faster). Models
# this small gain little from a second intra-op thread (a run trains in 7.0 s with 2 threads, 9.6 s with 1),
# so the default is one single-threaded run per core. The thread count is a property of the plan, not of the
# pool: `--workers 1` then leaves a core idle rather than change the numbers.
CPU_THREADS_PER_WORKER = 1


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="stability sweep",
        description="Run every cell of an ablation grid; re-running the command resumes the sweep.",
    )
    parser.add_argument("grid", type=Path, help="grid file, e.g. ablations/digits.yaml")
    parser.add_argument("--out", type=Path, default=None,
                        help="sweep folder (default: runs/<grid file stem>; runs/<stem>-smoke with --smoke)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local worker processes (default: one per GPU, else one per CPU core)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run, fixed in plan.json for the whole sweep and its re-runs "
                             f"(default: the plan's, else {CPU_THREADS_PER_WORKER} on CPUs, cores / GPUs on GPUs)")
    parser.add_argument("--max-cells", type=int, default=MAX_CELLS,
                        help=f"refuse a grid of more cells than this (default {MAX_CELLS:,}); raise it to run a "
                             "huge grid on purpose")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its size; run nothing")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="run only runs I, I+N, I+2N, ... of the plan (0 <= I < N)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local")
    parser.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    parser.add_argument("--smoke", action="store_true",
                        help="shrink every run to a smoke test (the grid's `smoke:` block)")
    parser.add_argument("--seeds", default=None, metavar="S,S,...",
                        help="replace the grid's seeds, e.g. --seeds 3,4,5 (a second, independent replication)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                        help="override a config key in every cell, after the grid's overrides "
                             "(e.g. --set data.data_dir=/datasets/cifar); VALUE is YAML; repeatable")
    slurm = parser.add_argument_group("SLURM executor (needs submitit: pip install 'stability[slurm]')")
    slurm.add_argument("--slurm-jobs", type=int, default=None,
                       help="array tasks (shards); default: one per run")
    slurm.add_argument("--gpus-per-run", type=int, default=0,
                       help="GPUs per run (DDP inside the run when > 1)")
    slurm.add_argument("--cpus-per-task", type=int, default=None)
    slurm.add_argument("--mem-gb", type=float, default=None)
    slurm.add_argument("--timeout-min", type=int, default=24 * 60, help="time limit per array task")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--array-parallelism", type=int, default=64, help="array tasks running at once")
    slurm.add_argument("--cluster", choices=("auto", "slurm", "local", "debug"), default="auto",
                       help="submitit backend: 'local' runs the array as local processes (tests)")
    slurm.add_argument("--no-wait", action="store_true", help="submit and return; re-run to see the status")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    for name in ("workers", "threads", "slurm_jobs", "max_cells"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: got {value}; give an integer >= 1")
    if args.gpus_per_run < 0:
        raise ConfigError(f"--gpus-per-run: got {args.gpus_per_run}; give an integer >= 0")
    if args.executor == "slurm" and args.shard:
        raise ConfigError("--shard: not used with --executor slurm, which shards the plan into array tasks "
                          "itself (--slurm-jobs)")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out: {args.out} is a file; give a folder (it is created if missing)")


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


def parse_seeds(text: str, spec: GridSpec) -> list[int]:
    """``--seeds 3,4,5`` -> [3, 4, 5]: distinct non-negative integers, for a grid that does not vary the seed
    as an axis."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: got {text!r}; give distinct integers >= 0 separated by commas, e.g. 3,4,5")
    if SEED_KEY in spec.axes:
        raise ConfigError(f"--seeds: {spec.path} varies {SEED_KEY} as an axis; edit the grid instead")
    return seeds


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


def parse_set(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, YAML value); ``1e-3`` is a number, ``data`` a string, ``[1, 2]`` a list."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip() or " " in key.strip():
        raise ConfigError(f"--set: got {item!r}; give KEY=VALUE with a dotted config key, e.g. "
                          "--set data.data_dir=/datasets/cifar")
    try:
        value = yaml.load(text, Loader=ConfigLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {key}: {text!r} is not a YAML value ({str(error).splitlines()[0]})") from None
    return key.strip(), value


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


def final_report(name: str, runs: list[PlannedRun], out: Path, outcomes: list[Outcome], elapsed: float,
                 extra_errors: list[str] = ()) -> int:
    """Print the closing lines from the run folders (the truth) and return the exit status."""
    statuses = {r.run_id: run_status(out / r.run_name) for r in runs}
    count = {s: sum(1 for v in statuses.values() if v == s) for s in RECORDED}
    left = len(runs) - sum(count.values())
    unfinished = {run_id for run_id, status in statuses.items() if status not in RECORDED}
    busy = len({o.run_id for o in outcomes if o.status == "busy"} & unfinished)  # still held, not a running total
    killed = len({o.run_id for o in outcomes if o.status == KILLED} & unfinished)
    if not count[FAILED] and not left:
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


def _run_local(args: argparse.Namespace, spec: GridSpec, out: Path, shard_i: int, shard_n: int) -> int:
    started = time.perf_counter()
    cells = expand(spec, args.smoke)
    gpus = visible_gpus() if cells and wants_gpu(cells[0].config) else []
    threads = plan_threads(args, out, gpus)
    expected = _expected_work(spec, out, args, shard_n)
    workers = args.workers or default_workers(expected, gpus, threads)
    pool = LocalExecutor(workers, threads, gpus or None)
    # From a fresh interpreter, start the workers first when there is likely work: they import lightning
    # (~5 s) once, then validate the cells in parallel and run them; a malformed grid kills them before any
    # run starts. A process that has loaded the training code already (tests, a notebook) validates here.
    early = bool(expected) and "stability.training.run" not in sys.modules
    if early:
        pool.start()
        import stability.model  # noqa: F401 - naming runs needs it (torch): load it while the workers start
    outcomes: list[Outcome] = []
    finished_ok = False
    try:
        # every cell is validated before anything is written
        runs = make_plan(spec, args.smoke, pool.resolve) if early else make_plan(spec, args.smoke)
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
    return final_report(spec.name, mine, out, outcomes, time.perf_counter() - started)


def _run_slurm(args: argparse.Namespace, spec: GridSpec, out: Path) -> int:
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


# -- the dry run -----------------------------------------------------------------------------------------------
def _parse_only(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config without building the model or the data module (whose folder may be missing)."""
    from stability.training.run import StabilityCLI, user_errors

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
    from the model's FLOPs and the rate a training step reaches on this machine (:mod:`stability.bench.model`)."""
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

    from stability.bench.model import SWEEP_STARTUP_S, measured_step_rate, run_work

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


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def main(argv: list[str]) -> int:
    """Entry point used by ``stability sweep``; raises ConfigError for a malformed grid or bad options."""
    args = build_parser().parse_args(argv)
    _check_args(args)
    spec = load_grid(args.grid, args.max_cells)
    for item in args.sets:
        key, value = parse_set(item)
        spec.overrides[key] = value
    if args.seeds is not None:
        spec.seeds = parse_seeds(args.seeds, spec)
    shard_i, shard_n = parse_shard(args.shard) if args.shard else (0, 1)
    out = args.out or default_out(spec, args.smoke)
    if args.dry_run:
        return dry_run(args, spec, out, shard_i, shard_n)
    out = out.resolve()  # run folders are recorded in each config.yaml: keep them independent of the cwd
    if args.executor == "slurm":
        return _run_slurm(args, spec, out)
    return _run_local(args, spec, out, shard_i, shard_n)
