"""A comparison's numbers: cells matched by configuration and claims matched by their text, across sweeps.

One numeric DataFrame each (what ``compare_configurations.csv`` and ``compare_claims.csv`` hold), from the
sweeps' reports; how cells and claims are matched, what "identical" means for runs of the same cell and seed,
and how claims pair across data sets (whether a verdict *transfers*), is in :mod:`stability.report.compare`.
:mod:`stability.report.compare_text` formats these tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis import metrics as M
from stability.analysis.results import RECORD_COLUMNS, Sweep
from stability.analysis.verdicts import VERDICTS
from stability.record.identity import SEED
from stability.report.build import Report
from stability.report.configs import distinct_values, format_cell, group_key, is_finite

# (column, label, decimals): the numbers set side by side per cell (final_loss counts a diverged run at its
# initial loss, as in the report's configuration table).
COMPARED_METRICS: tuple[tuple[str, str, int], ...] = (
    ("final_val_acc", "final val acc", 3),
    ("test_acc", "test acc", 3),
    ("final_loss", "final train loss", 3),
)
# summary.json fields that describe the process rather than its outcome: never part of "identical".
PROCESS_FIELDS = ("wall_time_s", "train_time_s", "images_per_s", "threads")
# Verdicts that decide a claim one way or the other (an inconclusive one decides nothing): what can transfer.
DECIDED = tuple(v for v in VERDICTS if v != "inconclusive")
DATA = "data"  # the run table's column naming the data module by its class name (``DigitsDataModule``)


# ------------------------------------------------------------------------------------------------ cells


def match_columns(reports: Sequence[Report], notes: list[str]) -> list[str]:
    """Toggles and hyperparameters but the seed, in the first sweep's order; see :mod:`stability.report.compare`
    for a column that only some sweeps record."""
    per_sweep = [[*r.sweep.toggles, *r.sweep.hparams] for r in reports]
    union = list(dict.fromkeys(c for cols in per_sweep for c in cols if c != SEED))
    keep, dropped = [], []
    for c in union:
        holders = [r for r, cols in zip(reports, per_sweep, strict=True) if c in cols]
        if len(holders) < len(reports) and all(len(distinct_values(r.sweep.finished[c])) <= 1 for r in holders):
            dropped.append(c)
        else:
            keep.append(c)
    if dropped:
        notes.append(f"not matched on {', '.join(dropped)}: recorded by only some sweeps, one value in each")
    return keep


def _with_columns(frame: pd.DataFrame, finished: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with every match column: a column the sweep holds fixed (not in its configuration table) takes
    its one value; a column the sweep does not record is missing (None)."""
    frame = frame.copy()
    for c in columns:
        if c not in frame:
            frame[c] = finished[c].iloc[0] if c in finished and len(finished) else None
    frame["_key"] = group_key(frame, columns) if len(frame) else pd.Series(dtype=object)
    return frame


def cells_of(report: Report, columns: Sequence[str]) -> pd.DataFrame:
    """The report's configuration table (one row per cell with a finished run), keyed by the match columns."""
    return _with_columns(report.tables["configurations"], report.sweep.finished, columns)


def runs_of(report: Report, columns: Sequence[str]) -> pd.DataFrame:
    """Every run of the report (any status; per-run statistics included), keyed by the match columns."""
    return _with_columns(report.runs, report.sweep.finished, columns)


def why_disjoint(cells: Sequence[pd.DataFrame], labels: Sequence[str], columns: Sequence[str]) -> str:
    """The columns whose values no two sweeps share, e.g. ``max_epochs: A has 30, B has 10``; the data module
    first (other data sets explain everything else)."""
    parts = []
    for c in sorted(columns, key=lambda c: c != DATA):
        values = [{M.key_text(v): v for v in cell[c]} for cell in cells]
        shared = set(values[0]).intersection(*values[1:])
        if not shared:
            has = "; ".join(f"{lab} has {', '.join(format_cell(v) for v in vals.values())}"
                            for lab, vals in zip(labels, values, strict=True))
            parts.append(f"{c}: {has}")
    if parts:
        return "; ".join(parts[:4]) + (f"; and {len(parts) - 4} more columns" if len(parts) > 4 else "")
    sizes = ", ".join(f"{lab} has {len(cell)}" for lab, cell in zip(labels, cells, strict=True))
    return f"every column has a shared value, but no combination of them is shared; cells: {sizes}"


def data_set_name(module: Any) -> str:
    """A data module's class name as people name the data set: ``DigitsDataModule`` -> ``digits``,
    ``FashionMNISTDataModule`` -> ``fashion-mnist``, ``CIFAR10DataModule`` -> ``cifar-10``."""
    name = str(module).rsplit(".", 1)[-1].removesuffix("DataModule") or str(module)
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])", "-", name).lower()


def data_sets(reports: Sequence[Report]) -> list[str] | None:
    """Each sweep's data set(s) (``digits``; ``digits+cifar-10`` for a sweep over both), or None when they are
    the same in every sweep or some sweep does not record its data module (an older record): only a
    difference is worth a label."""
    names = []
    for report in reports:
        finished = report.sweep.finished
        values = [v for v in distinct_values(finished[DATA]) if M.key_text(v) != "NA"] if DATA in finished else []
        if not values:
            return None
        names.append("+".join(data_set_name(v) for v in values))
    return names if len(set(names)) > 1 else None


def data_disjoint(reports: Sequence[Report]) -> bool:
    """True when no data module is in every sweep (each recording one): their cells cannot be the same."""
    per_sweep = []
    for report in reports:
        finished = report.sweep.finished
        values = {M.key_text(v) for v in finished[DATA]} - {"NA"} if DATA in finished else set()
        if not values:
            return False
        per_sweep.append(values)
    return not set.intersection(*per_sweep)


def compared_configurations(cells: Sequence[pd.DataFrame], runs: Sequence[pd.DataFrame], labels: Sequence[str],
                         columns: Sequence[str], fields: Sequence[Sequence[str]], notes: list[str]) -> pd.DataFrame:
    """One row per cell of any sweep: the match columns, ``sweeps`` (which have it), and per sweep ``L``:
    ``n_runs_L``, ``n_failed_L``, ``not_finished_L``, ``<metric>_mean_L`` / ``_std_L``; per sweep after the
    first: ``<metric>_diff_L`` (= L − A) and the same-seed comparison with A (:func:`_same_seeds`)."""
    order = list(dict.fromkeys(k for c in cells for k in c["_key"]))
    first = {k: row for c in reversed(cells) for k, row in c.set_index("_key", drop=False).iterrows()}
    rows = []
    for key in order:
        row: dict[str, Any] = {c: first[key][c] for c in columns}
        present = []
        for lab, cell, run in zip(labels, cells, runs, strict=True):
            match = cell[cell["_key"] == key]
            if match.empty:
                members = run[run["_key"] == key]
                row[f"n_runs_{lab}"] = 0
                row[f"not_finished_{lab}"] = ", ".join(f"{n} {s}" for s, n in members["status"].value_counts().items())
                continue
            present.append(lab)
            r = match.iloc[0]
            row[f"n_runs_{lab}"] = int(r["n_runs"])
            row[f"n_failed_{lab}"] = int(r["n_diverged"]) + int(r["n_collapsed"])
            row[f"not_finished_{lab}"] = r["not_finished"]
            for col, _, _ in COMPARED_METRICS:
                row[f"{col}_mean_{lab}"] = r[f"{col}_mean"]
                row[f"{col}_std_{lab}"] = r[f"{col}_std"]
        row = {**{c: row[c] for c in columns}, "sweeps": ",".join(present), **row}
        for lab_i, (lab, run) in enumerate(zip(labels, runs, strict=True)):
            if lab_i == 0 or labels[0] not in present or lab not in present:
                continue
            for col, _, _ in COMPARED_METRICS:
                row[f"{col}_diff_{lab}"] = row[f"{col}_mean_{lab}"] - row[f"{col}_mean_{labels[0]}"]
            both = list(dict.fromkeys([*fields[0], *fields[lab_i]]))
            same = _same_seeds(runs[0], run, key, (labels[0], lab), both, notes)
            row.update({f"{k}_{lab}": v for k, v in same.items()})
        rows.append(row)
    return _integers(pd.DataFrame(rows), ("n_runs_", "n_failed_", "shared_seeds_", "identical_seeds_"))


def outcome_columns(sweep: Sweep) -> list[str]:
    """The run-table columns that come from a run's ``summary.json`` and describe what the run did: status and
    every recorded number, history and text; not the toggles and hyperparameters (they define the cell), the
    run's name, id and folder, its timings and thread count, or the package versions."""
    skip = set(RECORD_COLUMNS) - {"status"} | set(sweep.toggles) | set(sweep.hparams) | set(PROCESS_FIELDS)
    return [c for c in sweep.runs.columns if c not in skip and not c.startswith("versions.")]


def _same_seeds(runs_a: pd.DataFrame, runs_b: pd.DataFrame, key: str, labels: tuple[str, str],
                fields: Sequence[str], notes: list[str]) -> dict[str, Any]:
    """One cell's runs of two sweeps that share a seed, compared: ``shared_seeds``, ``identical_seeds``, the
    largest ``|B − A|`` of each headline number (``<metric>_moved``), ``fields_moved`` (the summary fields that
    differ anywhere) and ``status_changes``. Every run with a summary counts (a failed one too), so a run that
    completed before a change and failed after it shows as a status change."""
    out: dict[str, Any] = {"shared_seeds": 0, "identical_seeds": 0, "fields_moved": "", "status_changes": ""}
    if SEED not in runs_a or SEED not in runs_b:  # no seed recorded: nothing to pair runs by
        return {**out, **{f"{col}_moved": np.nan for col, _, _ in COMPARED_METRICS}}
    recorded = []
    for lab, runs in zip(labels, (runs_a, runs_b), strict=True):
        cell = runs[(runs["_key"] == key) & runs["has_summary"].astype(bool)]
        seeds = cell[SEED].map(M.key_text)
        twice = sorted(set(seeds[seeds.duplicated()]))
        if twice:
            shown = ", ".join(dict.fromkeys(format_cell(s) for s, t in zip(cell[SEED], seeds, strict=True)
                                            if t in twice))
            notes.append(f"{lab}: seed(s) {shown} recorded more than once in the configuration of "
                         f"{cell['run'].iloc[0]}; those seeds are not compared run by run")
        recorded.append(cell[~seeds.isin(twice)].set_index(seeds[~seeds.isin(twice)]))
    a, b = recorded
    shared = [s for s in a.index if s in b.index]
    out["shared_seeds"] = len(shared)
    moved: dict[str, None] = {}
    changes = []
    largest = {col: 0.0 for col, _, _ in COMPARED_METRICS}
    for seed in shared:
        ra, rb = a.loc[seed], b.loc[seed]
        differ = [f for f in fields if M.key_text(ra.get(f)) != M.key_text(rb.get(f))]
        if not differ:
            out["identical_seeds"] += 1
            continue
        moved.update(dict.fromkeys(differ))
        if ra["status"] != rb["status"]:
            changes.append(f"seed {format_cell(ra['seed'])}: {ra['status']} → {rb['status']}")
        for col, _, _ in COMPARED_METRICS:
            va, vb = ra.get(col), rb.get(col)
            if is_finite(va) and is_finite(vb):
                largest[col] = max(largest[col], abs(float(vb) - float(va)))
            elif M.key_text(va) != M.key_text(vb):
                largest[col] = math.inf  # a number on one side only
    out.update({f"{col}_moved": largest[col] if shared else np.nan for col in largest})
    out["fields_moved"] = ", ".join(moved)
    out["status_changes"] = "; ".join(changes)
    return out


# ----------------------------------------------------------------------------------------------- claims


def compared_claims(reports: Sequence[Report], labels: Sequence[str], notes: list[str],
                    by_order: bool = False) -> pd.DataFrame:
    """One row per claim text and setting (paired across sweeps, :func:`_pair_settings`): ``claim``, ``setting``
    (where tested; ``A: lr 0.01; B: lr 0.003`` where the paired rows differ), ``metric``, ``sweeps`` (which state
    the claim), per sweep ``setting_L``, ``verdict_L``, ``effect_L``, ``low_L``, ``high_L``, ``n_seeds_L`` and the
    two cells of its text (``effect_text_L``, ``verdict_text_L``, as the sweep's report formats them); ``agree``
    (every sweep gave the same verdict, and each on paired runs or none on any) and ``transfer``
    (:func:`transfer_of`). ``by_order``: the rows of a claim tested at different settings in different sweeps
    (each data set's own lr ladder) pair in order rather than not at all."""
    per_sweep = [_claim_rows(lab, report, notes) for lab, report in zip(labels, reports, strict=True)]
    stated = [set(found) for found in per_sweep]
    everywhere = set.intersection(*stated)
    rows = []
    for claim in dict.fromkeys(c for found in per_sweep for c in found):
        settings = [list(found.get(claim, {})) for found in per_sweep]
        for slot in _pair_settings(settings, by_order):
            row: dict[str, Any] = {"claim": claim, "setting": None, "metric": None,
                                   "sweeps": ",".join(lab for lab, s in zip(labels, stated, strict=True)
                                                      if claim in s)}
            definitions, where = {}, {}
            for lab, found, setting in zip(labels, per_sweep, slot, strict=True):
                if setting is None:
                    continue
                numbers, text = found[claim][setting]
                where[lab] = setting
                row["metric"] = row["metric"] or numbers["metric"]
                definitions[lab] = text["metric"]
                row.update({f"setting_{lab}": setting, f"verdict_{lab}": numbers["verdict"],
                            f"effect_{lab}": numbers["effect"], f"low_{lab}": numbers["low"],
                            f"high_{lab}": numbers["high"], f"n_seeds_{lab}": numbers["n_seeds"],
                            f"effect_text_{lab}": text["effect"], f"verdict_text_{lab}": text["verdict"]})
            row["setting"] = next(iter(where.values())) if len(set(where.values())) == 1 else \
                "; ".join(f"{lab}: {s}" for lab, s in where.items())
            if len(set(definitions.values())) > 1:
                notes.append(f"claim {claim!r} tests different things: "
                             + "; ".join(f"{lab}: {d}" for lab, d in definitions.items()))
            # A verdict reached without a single pair (no runs to test it) does not agree with one reached on runs.
            verdicts = [(row.get(f"verdict_{lab}"), bool(row.get(f"n_seeds_{lab}"))) for lab in labels]
            row["agree"] = claim in everywhere and all(v is not None for v, _ in verdicts) and len(set(verdicts)) == 1
            row["transfer"] = transfer_of({lab: row.get(f"verdict_{lab}") for lab in labels})
            rows.append(row)
    return _integers(pd.DataFrame(rows), ("n_seeds_",))


def _claim_rows(label: str, report: Report, notes: list[str]) -> dict[str, dict[str, tuple[pd.Series, pd.Series]]]:
    """One sweep's claims table: claim text -> setting -> (numbers, text), in the report's order."""
    found: dict[str, dict[str, tuple[pd.Series, pd.Series]]] = {}
    if "claims" not in report.tables:
        return found
    numbers, text = report.tables["claims"], report.text["claims"]
    for i in range(len(numbers)):
        row = numbers.iloc[i]
        rows = found.setdefault(row["claim"], {})
        if row["setting"] in rows:
            notes.append(f"{label}: claim {row['claim']!r} at {row['setting']} stated twice; the first is compared")
            continue
        rows[row["setting"]] = (row, text.iloc[i])
    return found


def _pair_settings(settings: Sequence[Sequence[str]], by_order: bool) -> list[list[str | None]]:
    """Which rows of one claim go side by side: one list per table row, one setting (or None) per sweep.

    By setting (the same lr in every sweep) where every sweep that states the claim tests it at the same
    settings, or where ``by_order`` is off; otherwise in order, first with first (for an lr claim, each data
    set's lowest tested lr with the other's lowest), a sweep's extra rows standing alone.
    """
    stating = [set(s) for s in settings if s]
    if not by_order or all(s == stating[0] for s in stating):
        union = list(dict.fromkeys(x for s in settings for x in s))
        return [[x if x in s else None for s in settings] for x in union]
    return [[s[i] if i < len(s) else None for s in settings] for i in range(max(len(s) for s in settings))]


def transfer_of(verdicts: dict[str, Any]) -> str:
    """Whether a claim's verdict carries over between sweeps (label -> verdict, None where not tested):
    ``transfers`` (every sweep decided it, the same way), ``changes`` (decided differently somewhere),
    ``decided in A only`` (the others inconclusive or not testing it), ``undecided`` (decided nowhere)."""
    decided = {lab: v for lab, v in verdicts.items() if v in DECIDED}
    if not decided:
        return "undecided"
    if len(set(decided.values())) > 1:
        return "changes"
    if len(decided) == len(verdicts):
        return "transfers"
    return f"decided in {', '.join(decided)} only"


def _integers(table: pd.DataFrame, prefixes: Sequence[str]) -> pd.DataFrame:
    """Counts as integers in the CSV (``3``, not ``3.0``), missing where a sweep lacks the row."""
    for c in table.columns:
        if c.startswith(tuple(prefixes)):
            table[c] = pd.to_numeric(table[c]).astype("Int64")
    return table
