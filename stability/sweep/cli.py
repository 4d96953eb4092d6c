"""``stability sweep GRID``: expand a grid, write its plan, run what is not finished, report.

Re-running the same command is how a sweep resumes: finished runs (``completed`` or ``diverged``) are
skipped, cut-off runs continue from their last checkpoint, failed runs wait for ``--retry-failed``.

Exit status: 0 when every run of this invocation (its shard) is finished; 1 when any failed; 3 when
some are left unfinished (held by another sweep on the same folder, a worker killed by a signal, jobs that
ended early, a full disk); 2 for a malformed grid or bad option (raised as
:class:`stability.errors.ConfigError`, printed as one line by the dispatcher, before anything is written).

This module parses and checks the options; :mod:`~stability.sweep.drive` runs the plan (locally or on
SLURM) and prints the closing lines; :mod:`~stability.sweep.dry_run` is ``--dry-run``;
:mod:`~stability.sweep.workers` decides workers and threads (a run's thread count is fixed by the plan).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml

from stability.errors import ArgumentParser, ConfigError, folder_argument
from stability.record.config_files import ConfigLoader
from stability.record.identity import SEED_KEY
from stability.sweep.claim_check import check_claims
from stability.sweep.drive import run_local, run_slurm
from stability.sweep.dry_run import dry_run
from stability.sweep.edge_search import check_edge_args, search_edges
from stability.sweep.grid import MAX_CELLS, GridSpec, check_run_dir, grid_from_mapping, load_grid
from stability.sweep.plan import default_out, parse_shard
from stability.sweep.settle import check_settle_args, settle
from stability.sweep.workers import CPU_THREADS_PER_WORKER


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="stability sweep",
        description="Run every cell of an ablation grid; re-running the command resumes the sweep.",
    )
    parser.add_argument("grid", type=Path, nargs="?", default=None,
                        help="grid file, e.g. ablations/digits.yaml (or give --base and --axis instead)")
    quick = parser.add_argument_group("quick study (no grid file)")
    quick.add_argument("--base", action="append", default=[], metavar="CONFIG",
                       help="base config of a quick study, as a grid's base: (relative to the current folder, "
                            "or shipped, e.g. stability:digits.yaml); repeatable, merged in order")
    quick.add_argument("--axis", action="append", default=[], metavar="KEY=V1,V2,...", dest="axes",
                       help="an axis of a quick study, e.g. --axis model.vit.norm=layernorm,rmsnorm; each value is "
                            "YAML, as with --set; repeatable")
    parser.add_argument("--out", type=folder_argument, default=None,
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
    settle = parser.add_argument_group("adaptive replication")
    settle.add_argument("--settle", action="store_true",
                        help="after the grid, add seeds in rounds to the cells of inconclusive claims until each "
                             "settles or --max-seeds is reached (looks corrected by alpha spending; see settle.json)")
    settle.add_argument("--max-seeds", type=int, default=None,
                        help="the most seeds --settle may give a claim (default: twice the grid's)")
    edges = parser.add_argument_group("stability edge by bisection")
    edges.add_argument("--edge-search", action="store_true",
                       help="after the grid, bisect each largest-stable-lr claim's edge per seed on log lr, within "
                            "the span of the grid's lr ladder (see edges.json)")
    edges.add_argument("--edge-rounds", type=int, default=3, help="rounds of probes (default 3)")
    edges.add_argument("--edge-resolution", type=float, default=0.1,
                       help="stop a bracket once it is this many decades wide (default 0.1)")
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
    for name in ("workers", "threads", "slurm_jobs", "max_cells", "max_seeds", "edge_rounds"):
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


def parse_axis(item: str) -> tuple[str, list]:
    """``KEY=V1,V2`` -> (key, [V1, V2]), each value YAML as with ``--set`` (``1e-3`` a number, ``[1, 2]`` a
    list, so a value may hold commas inside brackets)."""
    key, sep, text = item.partition("=")
    usage = "give KEY=V1,V2,... with a dotted config key, e.g. --axis model.vit.norm=layernorm,rmsnorm"
    if not sep or not key.strip() or " " in key.strip() or not text.strip():
        raise ConfigError(f"--axis: got {item!r}; {usage}")
    try:
        values = yaml.load(f"[{text}]", Loader=ConfigLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"--axis {key}: {text!r} is not a comma-separated list of YAML values "
                          f"({str(error).splitlines()[0]})") from None
    if not isinstance(values, list) or not values:
        raise ConfigError(f"--axis {key}: got {text!r}, no values; {usage}")
    return key.strip(), values


def quick_name(axes: list[str]) -> str:
    """``runs/<name>`` of a quick study: ``quick-`` and the last part of each axis key (``quick-norm-lr``)."""
    parts = [re.sub(r"[^A-Za-z0-9_]+", "_", key.rsplit(".", 1)[-1]).strip("_") or "axis" for key in axes]
    return "-".join(["quick", *parts])


def load_spec(args: argparse.Namespace) -> GridSpec:
    """The grid file, or the quick study its options define, checked as a grid file with ``base:`` and
    ``axes:`` (``--seeds`` then sets its seeds, as for a grid file)."""
    if (args.grid is None) == (not args.base):
        raise ConfigError("give a grid file or --base CONFIG (with --axis KEY=V1,V2,...), exactly one: "
                          + ("got both" if args.base else "got neither"))
    if args.grid is not None:
        if args.axes:
            raise ConfigError("--axis: only for a quick study (--base); edit the grid file's axes instead")
        return load_grid(args.grid, args.max_cells)
    axes: dict[str, list] = {}
    for item in args.axes:
        key, values = parse_axis(item)
        if key in axes:
            raise ConfigError(f"--axis {key}: given twice; give its values once, e.g. --axis {key}=A,B")
        axes[key] = values
    name = quick_name(list(axes))
    command = " ".join(["stability sweep", *(f"--base {b}" for b in args.base),
                        *(f"--axis {item}" for item in args.axes),
                        *([f"--seeds {args.seeds}"] if args.seeds is not None else [])])
    spec = grid_from_mapping({"base": list(args.base), "axes": axes}, Path(name), Path(),
                             args.max_cells, f"Quick study: {command}")
    spec.quick = {"base": list(args.base), "axes": axes, "command": command}
    return spec


def main(argv: list[str]) -> int:
    """Entry point used by ``stability sweep``; raises ConfigError for a malformed grid or bad options."""
    args = build_parser().parse_args(argv)
    _check_args(args)
    spec = load_spec(args)
    for item in args.sets:
        key, value = parse_set(item)
        spec.overrides[key] = value
    check_run_dir(spec)  # --set run_dir=... too: the sweep names run folders itself
    if args.seeds is not None:
        spec.seeds = parse_seeds(args.seeds, spec)
    check_claims(spec)  # a claim that can select no run is a grid error, found before anything runs
    shard_i, shard_n = parse_shard(args.shard) if args.shard else (0, 1)
    out = args.out or default_out(spec, args.smoke)
    if args.edge_search:
        check_edge_args(args, spec)
    if args.settle:
        check_settle_args(args, spec)
    elif args.max_seeds is not None:
        raise ConfigError("--max-seeds: only with --settle")
    if args.dry_run:
        return dry_run(args, spec, out, shard_i, shard_n)
    out = out.resolve()  # run folders are recorded in each config.yaml: keep them independent of the cwd
    if args.edge_search:
        return search_edges(args, spec, out, lambda extra: run_local(args, spec, out, 0, 1, extra, False))
    if args.settle:
        return settle(args, spec, out, lambda extra: run_local(args, spec, out, 0, 1, extra, False))
    if args.executor == "slurm":
        return run_slurm(args, spec, out)
    return run_local(args, spec, out, shard_i, shard_n)
