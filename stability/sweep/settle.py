"""``stability sweep GRID --settle``: add seeds, in rounds, to the cells of the claims still inconclusive.

Each round runs what is unfinished, looks at every open verdict row again (its interval at the error rate that
look may spend: :mod:`stability.analysis.sequential`), stops the rows that settled, cannot settle (the control
did not converge: more seeds do not help) or reached ``--max-seeds``, and adds ``step`` new seeds to the cells
the open rows use: their treatment and control cells inside ``where`` (at the row's learning rate; the control
at every lr when its convergence gate needs each seed's best lr). Other cells never get the new seeds.

The state is ``settle.json`` in the sweep folder, written atomically after every look and before every
round: which seeds were added for which rows, and each row's looks. Re-running the same command resumes:
the rounds' runs resume like any sweep's, and a look is never taken twice. The report reads the same file
(:func:`load_rows`), recomputing every look from the run records.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stability.analysis.claims import Claim, parse_claims
from stability.analysis.metrics import same_value
from stability.analysis.results import load_sweep
from stability.analysis.sequential import (
    SPENDING,
    Look,
    SettledRow,
    look_alphas,
    row_verdict,
    schedule,
    take_look,
)
from stability.analysis.verdicts import evaluate, metric_of
from stability.errors import ConfigError
from stability.record.files import RecordError
from stability.record.identity import LR, hparams_of, toggles_of
from stability.sweep import store
from stability.sweep.cells import Cell, expand
from stability.sweep.claim_check import selects
from stability.sweep.drive import next_steps
from stability.sweep.grid import GridSpec
from stability.sweep.progress import format_duration

SETTLE = "settle.json"
SETTLE_FORMAT = 1
ALPHA = 0.05


def check_settle_args(args: argparse.Namespace, spec: GridSpec) -> tuple[int, int]:
    """(max seeds, seeds per round) for ``--settle``; one ConfigError line for what cannot be settled."""
    if not spec.claims:
        raise ConfigError(f"--settle: {spec.path} states no claims; there is nothing to settle")
    if not spec.seeds:
        raise ConfigError(f"--settle: {spec.path} has no seeds: list (the seed axis is where seeds are added)")
    if args.executor != "local" or args.shard:
        raise ConfigError("--settle: runs on the local executor, unsharded (it decides each round from the last)")
    first = len(spec.seeds)
    max_seeds = args.max_seeds if args.max_seeds is not None else 2 * first
    if max_seeds <= first:
        raise ConfigError(f"--max-seeds: got {max_seeds}; give more than the grid's {first} seeds")
    return max_seeds, max(1, math.ceil(first / 2))


def settle(args: argparse.Namespace, spec: GridSpec, out: Path, run_round: Any) -> int:
    """Rounds until every row stopped (module docstring). ``run_round(extra_cells) -> exit status`` runs the grid
    plus the added cells (:func:`stability.sweep.drive.run_local`). Returns the last round's exit status."""
    started = time.perf_counter()
    max_seeds, step = check_settle_args(args, spec)
    claims = parse_claims(spec.claims, str(spec.path))
    state = _load_state(out, spec, claims, max_seeds, step)
    looks = schedule(len(spec.seeds), step, max_seeds)
    while True:
        status = run_round(_added_cells(spec, args.smoke, claims, state))
        if status not in (0, 1):  # unfinished (held, killed, full disk): the next run of the command resumes
            return status
        sweep = load_sweep(out)
        rows = _look(state, claims, sweep.finished, sweep.config_columns, max_seeds, looks)
        _write_state(out, state)
        open_rows = [key for key, row in rows.items() if row.stopped is None]
        if not open_rows:
            break
        n = len(rows[open_rows[0]].looks[-1].seeds)
        used = [*spec.seeds, *(a["seed"] for a in state["added"])]
        new = [max(used) + 1 + i for i in range(min(step, max_seeds - n))]
        state["added"] += [{"seed": seed, "rows": open_rows} for seed in new]
        _write_state(out, state)
        print(f"settle: {len(open_rows)} verdict row(s) still open after {n} seeds; adding seeds "
              f"{', '.join(map(str, new))} to their cells", flush=True)
    for line in summary_lines(rows, time.perf_counter() - started):
        print(line)
    for line in next_steps(out):
        print(line)
    return status


def _load_state(out: Path, spec: GridSpec, claims: Sequence[Claim], max_seeds: int, step: int) -> dict[str, Any]:
    texts = [c.claim for c in claims]
    fresh = {"format": SETTLE_FORMAT, "method": SPENDING, "alpha": ALPHA, "max_seeds": max_seeds, "step": step,
             "grid_seeds": list(spec.seeds or []), "claims": texts, "added": [], "rows": {}}
    path = out / SETTLE
    if not path.exists():
        return fresh
    state = read_state(out)
    mine = {k: fresh[k] for k in ("format", "alpha", "max_seeds", "step", "grid_seeds", "claims")}
    theirs = {k: state.get(k) for k in mine}
    if theirs != mine:
        changed = next(k for k in mine if theirs[k] != mine[k])
        raise ConfigError(f"{path}: made with another {changed} ({theirs[changed]!r}, now {mine[changed]!r}); "
                          "settle into another --out, or move that file away to start the looks again")
    return state


def read_state(out: Path) -> dict[str, Any]:
    """``settle.json`` (module docstring); RecordError naming the file when it is not one."""
    return store.read_state(out / SETTLE, SETTLE_FORMAT, "a settle record", "rows", dict)


def _write_state(out: Path, state: dict[str, Any]) -> None:
    store.write_state(out / SETTLE, state)


def _row_seeds(state: dict[str, Any], key: str) -> list[int]:
    return [*state["grid_seeds"], *(a["seed"] for a in state["added"] if key in a["rows"])]


def _look(state: dict[str, Any], claims: Sequence[Claim], runs: Any, columns: Sequence[str], max_seeds: int,
          looks: Sequence[int]) -> dict[str, SettledRow]:
    """Take the looks not taken yet (the first: every row of every claim, on the grid's seeds)."""
    if not state["rows"]:
        alpha_1 = look_alphas(looks[:1], max_seeds, state["alpha"])[0]
        for i, claim in enumerate(claims):
            for verdict in evaluate(claim, runs, columns, 1 - alpha_1):
                state["rows"][f"{i}|{verdict.setting}"] = {"claim": claim.claim, "setting": verdict.setting,
                                                           "looks": [], "stopped": None}
    rows = rows_from_state(state, claims, runs, columns)
    for key, row in rows.items():
        seeds = _row_seeds(state, key)
        if row.stopped is None and (not row.looks or len(row.looks[-1].seeds) < len(seeds)):
            look = take_look(row, runs, columns, seeds, max_seeds, state["alpha"])
            state["rows"][key]["looks"].append({"seeds": look.seeds, "alpha": look.alpha,
                                                "verdict": look.verdict.verdict})
            state["rows"][key]["stopped"] = row.stopped
    return rows


def rows_from_state(state: dict[str, Any], claims: Sequence[Claim], runs: Any,
                    columns: Sequence[str]) -> dict[str, SettledRow]:
    """Every row's looks as recorded, each verdict recomputed from the run records (``runs``)."""
    rows: dict[str, SettledRow] = {}
    for key, record in state["rows"].items():
        claim = claims[int(key.split("|", 1)[0])]
        row = SettledRow(claim, record["setting"], stopped=record.get("stopped"))
        for look in record["looks"]:
            verdict = row_verdict(claim, runs, columns, look["seeds"], row.setting, look["alpha"])
            if verdict is not None:
                row.looks.append(Look(look["seeds"], look["alpha"], verdict))
        rows[key] = row
    return rows


def load_rows(out: Path, claims: Sequence[Claim], runs: Any, columns: Sequence[str]) -> list[SettledRow] | None:
    """A settled sweep's rows for the report; None when the sweep was not settled."""
    if not (out / SETTLE).exists():
        return None
    state = read_state(out)
    if state.get("claims") != [c.claim for c in claims]:
        raise RecordError(f"{out / SETTLE}: its claims are not the sweep's (the grid was edited after --settle)")
    return list(rows_from_state(state, claims, runs, columns).values())


def _added_cells(spec: GridSpec, smoke: bool, claims: Sequence[Claim], state: dict[str, Any]) -> list[Cell]:
    """The cells of the added seeds: for each, the cells its rows use (module docstring)."""
    cells: list[Cell] = []
    for added in state["added"]:
        seeded = GridSpec(**{**spec.__dict__, "seeds": [added["seed"]]})
        wanted = [(claims[int(key.split("|", 1)[0])], state["rows"][key]) for key in added["rows"]]
        for cell in expand(seeded, smoke):
            values = {**hparams_of(cell.config), **toggles_of(cell.config)}
            if any(_uses(claim, record["setting"], values) for claim, record in wanted):
                cells.append(cell)
    return cells


def _uses(claim: Claim, setting: str, values: dict[str, Any]) -> bool:
    """Whether a verdict row of ``claim`` at ``setting`` reads a run with these toggles and hparams."""
    metric = metric_of(claim)
    row_lr = float(setting.split()[1]) if setting.startswith("lr ") and " vs " not in setting else None
    at_lr = row_lr is None or same_value(values.get(LR), row_lr)
    if selects(values, claim.where) and selects(values, claim.treatment) and at_lr:
        return True
    where = {k: v for k, v in claim.where.items() if k != LR} if metric.at_convergence else claim.where
    return selects(values, where) and selects(values, claim.control) and (metric.at_convergence or at_lr)


def summary_lines(rows: dict[str, SettledRow], elapsed: float) -> list[str]:
    """What ``--settle`` found: per row the verdict, the seeds it rests on and why it stopped."""
    out = [f"settle ({SPENDING}; {format_duration(elapsed)}):"]
    for row in rows.values():
        if not row.looks:
            continue
        look = row.looks[-1]
        v = look.verdict
        out.append(f"  {row.claim.claim} ({row.setting}): {v.verdict.upper()} on {len(look.seeds)} seeds "
                   f"({_seed_span(look.seeds)}), look {len(row.looks)} at alpha {look.alpha:.3g}; "
                   f"{row.stopped or 'open'}")
    return out


def _seed_span(seeds: Sequence[int]) -> str:
    s = sorted(seeds)
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) else ", ".join(map(str, s))
