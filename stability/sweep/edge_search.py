"""``stability sweep GRID --edge-search``: find each configuration's stability edge per seed by bisection.

A ladder of learning rates places the largest stable lr only to the ladder's spacing (half a decade on the
default study's ladder), so two configurations whose edges differ by less than one rung look the same. For every
``largest_stable_lr`` claim of the grid, each round of the search takes, per seed, the bracket of each side
(treatment and control, inside the claim's ``where``): the largest lr that ran stable and the smallest lr above it
that failed (diverged or collapsed), within the range the grid's ladder spans. Where a bracket is wider than
``--edge-resolution`` decades, its geometric midpoint (2 significant digits) is probed, on *both* sides of the
claim at that seed. Probing both sides keeps the learning rates of treatment and control common, which is what
the verdict on the largest stable lr reads (:mod:`stability.analysis.grid_metrics`): it stays the same statistic,
now on a finer grid. The search stops after ``--edge-rounds`` rounds or when every bracket is narrow enough.

State: ``edges.json`` in the sweep folder (the probes added, by claim and seed), written atomically before each
round: re-running the command resumes. The learning rates added also enter every other lr-grid table of that
folder (LR sensitivity averages over them): read those from the ladder sweep.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis.claims import Claim, parse_claims
from stability.analysis.intervals import median_interval
from stability.analysis.metrics import key_text
from stability.analysis.results import load_sweep
from stability.errors import ConfigError
from stability.record.config_files import set_dotted
from stability.record.files import COLLAPSED, DIVERGED
from stability.record.identity import LR, LR_KEY, SEED, SEED_KEY, hparams_of, toggles_of
from stability.sweep import store
from stability.sweep.cells import Cell, expand
from stability.sweep.claim_check import selects
from stability.sweep.drive import next_steps
from stability.sweep.grid import GridSpec
from stability.sweep.progress import format_duration

EDGES = "edges.json"
EDGES_FORMAT = 1
EDGE_METRIC = "largest_stable_lr"


def check_edge_args(args: argparse.Namespace, spec: GridSpec) -> list[Claim]:
    """The grid's largest-stable-lr claims; one ConfigError line when there is nothing to search."""
    claims = [c for c in parse_claims(spec.claims, str(spec.path)) if c.metric == EDGE_METRIC]
    if not claims:
        raise ConfigError(f"--edge-search: {spec.path} states no {EDGE_METRIC} claim; there is no edge to find")
    if LR_KEY not in spec.axes or len(spec.axes[LR_KEY]) < 2:
        raise ConfigError(f"--edge-search: {spec.path} needs a ladder of learning rates as an axis ({LR_KEY}: "
                          "[...]); its span is the range searched")
    if args.executor != "local" or args.shard or getattr(args, "settle", False):
        raise ConfigError("--edge-search: runs on the local executor, unsharded, and not with --settle")
    if not args.edge_resolution > 0:
        raise ConfigError(f"--edge-resolution: got {args.edge_resolution}; give decades > 0, e.g. 0.1")
    return claims


def search_edges(args: argparse.Namespace, spec: GridSpec, out: Path, run_round: Any) -> int:
    """Rounds of probes (module docstring); ``run_round(extra_cells) -> exit status``."""
    started = time.perf_counter()
    claims = check_edge_args(args, spec)
    ladder = sorted(float(v) for v in spec.axes[LR_KEY])
    state = _load_state(out, claims, ladder, args)
    status = 0
    for _ in range(args.edge_rounds + 1):
        status = run_round(probe_cells(spec, args.smoke, claims, state))
        if status not in (0, 1):
            return status
        if state["rounds_done"] >= args.edge_rounds:
            break
        runs = load_sweep(out).finished
        new = _next_probes(claims, runs, state, spec.seeds or [])
        if not new:
            break
        state["probes"] += new
        state["rounds_done"] += 1
        _write(out, state)
        lrs = ", ".join(f"{lr:g}" for lr in sorted({p["lr"] for p in new}))
        print(f"edge search: round {state['rounds_done']}: probing {len(new)} learning rate(s) ({lrs})", flush=True)
    runs = load_sweep(out).finished
    print(f"edge search ({format_duration(time.perf_counter() - started)}; brackets to "
          f"{state['resolution']:g} decades within {ladder[0]:g}-{ladder[-1]:g}):")
    for line in edge_table(claims, runs, state).to_string(index=False).splitlines():
        print("  " + line)
    _write(out, state)
    for line in next_steps(out):
        print(line)
    return status


def _load_state(out: Path, claims: Sequence[Claim], ladder: list[float], args: argparse.Namespace) -> dict[str, Any]:
    fresh = {"format": EDGES_FORMAT, "claims": [c.claim for c in claims], "range": [ladder[0], ladder[-1]],
             "resolution": args.edge_resolution, "rounds_done": 0, "probes": []}
    path = out / EDGES
    if not path.exists():
        return fresh
    state = read_edges(out)
    for key in ("claims", "range", "resolution"):
        if state.get(key) != fresh[key]:
            raise ConfigError(f"{path}: made with another {key} ({state.get(key)!r}, now {fresh[key]!r}); search "
                              "into another --out, or move that file away")
    return state


def read_edges(out: Path) -> dict[str, Any]:
    """``edges.json``; RecordError naming the file when it is not one."""
    return store.read_state(out / EDGES, EDGES_FORMAT, "an edge-search record", "probes", list)


def _write(out: Path, state: dict[str, Any]) -> None:
    store.write_state(out / EDGES, state)


def _side_runs(runs: pd.DataFrame, claim: Claim, side: dict[str, Any], seed: Any) -> pd.DataFrame:
    mask = runs.apply(lambda r: selects(r, claim.where) and selects(r, side), axis=1) if len(runs) else []
    chosen = runs[mask] if len(runs) else runs
    return chosen[chosen[SEED].map(key_text) == key_text(seed)]


def bracket(side: pd.DataFrame, lo: float, hi: float) -> tuple[float, float]:
    """(largest stable lr, smallest failed lr above it) of one side at one seed, within [lo, hi]; the range's
    ends stand in where no run is stable (lo) or none above the stable one failed (hi)."""
    lrs = side[LR].astype(float)
    failed = side["status"].isin([DIVERGED, COLLAPSED])
    stable = lrs[~failed & (lrs >= lo) & (lrs <= hi)]
    edge = float(stable.max()) if len(stable) else lo
    above = lrs[failed & (lrs > edge) & (lrs <= hi)]
    return edge, float(above.min()) if len(above) else hi


def _next_probes(claims: Sequence[Claim], runs: pd.DataFrame, state: dict[str, Any],
                 seeds: Sequence[int]) -> list[dict[str, Any]]:
    lo, hi = state["range"]
    out: list[dict[str, Any]] = []
    for i, claim in enumerate(claims):
        for seed in seeds:
            tested = {key_text(p["lr"]) for p in state["probes"] if p["claim"] == i and p["seed"] == seed}
            for side in (claim.treatment, claim.control):
                a, b = bracket(_side_runs(runs, claim, side, seed), lo, hi)
                if b > a and math.log10(b / a) > state["resolution"]:
                    mid = float(f"{math.sqrt(a * b):.2g}")
                    if a < mid < b and key_text(mid) not in tested:
                        tested.add(key_text(mid))
                        out.append({"claim": i, "seed": seed, "lr": mid})
    return out


def probe_cells(spec: GridSpec, smoke: bool, claims: Sequence[Claim], state: dict[str, Any]) -> list[Cell]:
    """The probes' cells: each claim side's cell at that seed (within ``where``), at the probe's lr."""
    cells: list[Cell] = []
    by_seed: dict[int, list[Cell]] = {}
    for probe in state["probes"]:
        seed, claim = probe["seed"], claims[probe["claim"]]
        if seed not in by_seed:
            by_seed[seed] = expand(GridSpec(**{**spec.__dict__, "seeds": [seed]}), smoke)
        seen: set[str] = set()
        for cell in by_seed[seed]:
            values = {**hparams_of(cell.config), **toggles_of(cell.config)}
            inside = {k: v for k, v in claim.where.items() if k != LR}
            if not selects(values, inside) or not (selects(values, claim.treatment) or selects(values, claim.control)):
                continue
            config = copy.deepcopy(cell.config)
            set_dotted(config, LR_KEY, probe["lr"])
            key = json.dumps(config, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                cells.append(Cell({**cell.params, LR_KEY: probe["lr"], SEED_KEY: seed}, config))
    return cells


def edge_table(claims: Sequence[Claim], runs: pd.DataFrame, state: dict[str, Any]) -> pd.DataFrame:
    """Per claim and side: each seed's edge (largest stable lr) and bracket, the median edge over seeds with its
    order-statistic interval (:func:`stability.analysis.intervals.median_interval`, on log10 lr)."""
    lo, hi = state["range"]
    rows = []
    for claim in claims:
        for name, side in (("treatment", claim.treatment), ("control", claim.control)):
            seeds = sorted({s for s in runs[SEED]}, key=float) if len(runs) else []
            edges, widths = [], []
            for seed in seeds:
                part = _side_runs(runs, claim, side, seed)
                if len(part):
                    a, b = bracket(part, lo, hi)
                    edges.append(math.log10(a))
                    widths.append(math.log10(b / a))
            ci, coverage = median_interval(np.asarray(edges))
            rows.append({"claim": claim.claim, "side": name,
                         "configuration": ", ".join(f"{k}={v}" for k, v in side.items()), "seeds": len(edges),
                         "edge (median lr)": f"{10 ** ci.mean:.3g}" if edges else "–",
                         "interval": f"[{10 ** ci.low:.3g}, {10 ** ci.high:.3g}] ({coverage:.0%})" if edges else "–",
                         "bracket width (decades, max)": round(max(widths), 2) if widths else math.nan})
    return pd.DataFrame(rows)
