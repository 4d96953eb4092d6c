"""``stability bench sweep``: what the sweep layer costs, and how well the local pool uses the cores.

For each worker count it runs the grid as a user would (``python -m stability.cli sweep`` in a fresh
folder, so the process start-up, ``import lightning``, planning and worker start-up are all counted) and
reads the run records back:

- overhead = sweep wall time x workers / sum of the runs' ``train_time_s``: worker-seconds the sweep
  occupied per second spent inside training loops (1.0 would be none at all; with one worker it is plain
  "sweep wall time / summed train time"). It includes what each run does besides training steps
  (validation every epoch, test, checkpoints), which the sweep layer cannot remove;
- sweep share = sweep wall time x workers / sum of the runs' ``wall_time_s``: what the sweep layer alone
  adds on top of the runs (start-up, planning, dispatch, idle workers at the tail);
- speedup and parallel efficiency against the first worker count given (1 by default).

Timings on a machine shared with other work are inflated and noisy; the load average is printed beside
them. ``--fraction 1/k`` benchmarks every k-th run of the grid (``--shard 0/k``) to save time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stability.errors import ArgumentParser, ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="stability bench sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path, default=Path("ablations/digits.yaml"))
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare")
    parser.add_argument("--fraction", default="1/1", metavar="1/K", help="run every K-th run of the grid")
    parser.add_argument("--smoke", action="store_true", help="shrink every run (the grid's smoke block)")
    parser.add_argument("--out", type=Path, default=None, help="keep the sweep folders here (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return parser


def _cpu_seconds() -> float:
    """CPU time of this process's waited-for children (user + system): the sweeps we ran."""
    usage = os.times()
    return usage.children_user + usage.children_system


def measure(grid: Path, workers: int, out: Path, fraction: int, smoke: bool) -> dict[str, Any]:
    """Run one sweep in a subprocess and return its figures."""
    argv = [sys.executable, "-m", "stability.cli", "sweep", str(grid), "--out", str(out),
            "--workers", str(workers)]
    if fraction > 1:
        argv += ["--shard", f"0/{fraction}"]
    if smoke:
        argv.append("--smoke")
    load = os.getloadavg()[0]
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    if proc.returncode not in (0, 1):  # 1 = some runs failed: still a measurement
        raise RuntimeError(f"sweep with {workers} workers exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-500:]}")
    records = [json.loads(p.read_text()) for p in out.glob("*/summary.json")]
    train = sum(r.get("train_time_s") or 0.0 for r in records)
    run_wall = sum(r.get("wall_time_s") or 0.0 for r in records)
    return {
        "workers": workers, "runs": len(records), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
        "sum_train_time_s": round(train, 1), "sum_run_wall_s": round(run_wall, 1),
        "overhead": round(wall * workers / train, 3) if train else None,
        "sweep_share": round(wall * workers / run_wall, 3) if run_wall else None,
        "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
    }


def bench_sweep(argv: list[str]) -> int:
    """Entry point of ``stability bench sweep`` (wired into ``stability bench`` by stability.bench.cli)."""
    args = _parser().parse_args(argv)
    try:
        counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ConfigError(f"--workers: got {args.workers!r}; give worker counts >= 1, comma-separated, e.g. 1,2")
    head, _, k = args.fraction.partition("/")
    try:
        fraction = int(k) if head == "1" else 0
    except ValueError:
        fraction = 0
    if fraction < 1:
        raise ConfigError(f"--fraction: got {args.fraction!r}; give 1/K with a whole K >= 1, e.g. 1/4")
    if not args.grid.is_file():
        raise ConfigError(f"--grid: {args.grid} does not exist")
    root = args.out or Path(tempfile.mkdtemp(prefix="stability-bench-sweep-"))
    print(f"bench sweep: {args.grid} (1/{fraction} of its runs{', smoke' if args.smoke else ''}), "
          f"workers {counts}, {os.cpu_count()} CPUs, folders in {root}", flush=True)
    rows = []
    try:
        for workers in counts:
            out = root / f"workers{workers}"
            if out.exists():
                shutil.rmtree(out)
            rows.append(measure(args.grid, workers, out, fraction, args.smoke))
            row = rows[-1]
            print(f"  {workers} worker(s): {row['runs']} runs in {row['wall_s']:.1f} s wall "
                  f"({row['cpu_s']:.0f} s CPU); overhead {row['overhead']} (wall x workers / sum train_time_s "
                  f"{row['sum_train_time_s']:.1f} s), sweep share {row['sweep_share']}; "
                  f"load {row['load_before']} -> {row['load_after']}", flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
    first = rows[0]
    for row in rows:
        row["speedup"] = round(first["wall_s"] / row["wall_s"], 3)
        row["parallel_efficiency"] = round(row["speedup"] * first["workers"] / row["workers"], 3)
    print(f"{'workers':>7} {'runs':>5} {'wall_s':>8} {'cpu_s':>7} {'sum_train_s':>11} {'overhead':>8} "
          f"{'sweep_share':>11} {'speedup':>7} {'efficiency':>10}")
    for r in rows:
        print(f"{r['workers']:>7} {r['runs']:>5} {r['wall_s']:>8.1f} {r['cpu_s']:>7.1f} "
              f"{r['sum_train_time_s']:>11.1f} {r['overhead']!s:>8} {r['sweep_share']!s:>11} "
              f"{r['speedup']:>7.2f} {r['parallel_efficiency']:>10.2f}")
    best = min(rows, key=lambda r: r["wall_s"])
    print(f"fastest: {best['workers']} worker(s)")
    if args.json:
        args.json.write_text(json.dumps({"grid": str(args.grid), "fraction": fraction, "rows": rows},
                                        indent=2))
    return 0
