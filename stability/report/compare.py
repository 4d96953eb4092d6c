"""Two or more sweeps side by side: the same cells and the same claims, each sweep's numbers next to the others'.

Why: three seeds can give a verdict that the next three do not, and a code change can move numbers it should
not. Both questions ("did the verdicts replicate?", "did this change move anything?") are answered by lining
up the reports of the sweeps (:func:`stability.report.build.build_report`, one per sweep); no statistic is
recomputed here.

- **Cells are matched by configuration**: every toggle and every hyperparameter but the seed, with the values
  the records hold; never by run name or config hash (both include the seed, and the hash changes with any
  config key, e.g. a setting added to the run configuration later). A hyperparameter that only some sweeps
  record (an older record format) is left out of the match when each sweep that records it has one value of
  it, and the notes say so. A cell missing from some sweep is listed, with what that sweep has of it.
- **Claims are matched by their text** and where they were tested (``lr 0.03``); claims that only some sweeps
  state are listed. Sweep "A" (the first) is the reference: differences read ``B − A``.
- **Same cell, same seed** (a re-run, the same grid before and after a code change): the two runs'
  ``summary.json`` outcomes (:func:`outcome_columns`) are compared value by value: *identical* means bit for
  bit; otherwise the largest change of each headline number is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis import metrics as M
from stability.analysis.results import RECORD_COLUMNS, Sweep
from stability.analysis.verdicts import sorted_values
from stability.errors import ConfigError
from stability.report.build import Report
from stability.report.formatting import check_formats, to_markdown, write_tables, write_text
from stability.report.tables import distinct_values, format_value, group_key, is_finite

# (column, label, decimals): the numbers set side by side per cell (final_loss counts a diverged run at its
# initial loss, as in the report's configuration table).
HEADLINE: tuple[tuple[str, str, int], ...] = (
    ("final_val_acc", "final val acc", 3),
    ("test_acc", "test acc", 3),
    ("final_loss", "final train loss", 3),
)
# summary.json fields that describe the process rather than its outcome: never part of "identical".
PROCESS_FIELDS = ("wall_time_s", "train_time_s", "images_per_s", "threads")
COMPARE_FORMATS = ("md", "csv", "tex")
TABLES = {
    "claims": "Claims: verdicts side by side (effect = treatment − control, mean [95% t-interval] over seeds)",
    "claims_elsewhere": "Claims stated in only some sweeps",
    "configurations": "Configurations side by side (mean over seeds; B − A = difference of the means)",
    "configurations_elsewhere": "Configurations in only some sweeps",
}


@dataclass
class Comparison:
    """Everything ``stability report A B ...`` writes, in memory."""

    reports: list[Report]  # one per sweep, in the order given
    labels: list[str]  # "A", "B", ...: the sweeps' names in the tables
    columns: list[str]  # the configuration columns cells are matched on
    tables: dict[str, pd.DataFrame]  # numeric: "configurations", "claims" (every cell / claim; the CSVs)
    text: dict[str, pd.DataFrame]  # formatted: TABLES' keys
    notes: list[str]  # how cells were matched, duplicate seeds, claims defined differently
    summary: list[str]  # a few lines: how many verdicts agree, cells identical

    @property
    def sweeps(self) -> list[Sweep]:
        return [r.sweep for r in self.reports]


def compare_reports(reports: Sequence[Report]) -> Comparison:
    """Line up the reports of two or more sweeps (module docstring).

    Raises:
        ConfigError: fewer than two reports, a sweep without finished runs, or no cell in every sweep.
    """
    reports = list(reports)
    if len(reports) < 2:
        raise ConfigError(f"comparison: needs at least 2 sweeps, got {len(reports)}")
    if len(reports) > 26:
        raise ConfigError(f"comparison: at most 26 sweeps (named A to Z), got {len(reports)}")
    labels = [chr(ord("A") + i) for i in range(len(reports))]
    for report in reports:
        if not report.has_results:
            raise ConfigError(f"sweep folder: {str(report.sweep.path)!r} has no finished run to compare")
    notes: list[str] = []
    columns = _match_columns(reports, notes)
    cells = [_cells(r, columns) for r in reports]
    common = set(cells[0]["_key"])
    for c in cells[1:]:
        common &= set(c["_key"])
    if not common:
        raise ConfigError(f"comparison: no configuration is in every sweep ({_why_disjoint(cells, labels, columns)})")
    runs = [_runs(r, columns) for r in reports]
    fields = [outcome_columns(r.sweep) for r in reports]
    config_table = _configuration_table(cells, runs, labels, columns, fields, notes)
    claims = _claims_table(reports, labels, notes)
    text = {
        "claims": _format_claims(claims, labels, common=True),
        "claims_elsewhere": _format_claims(claims, labels, common=False),
        "configurations": _format_configurations(config_table, labels, _shown(config_table, columns), common=True),
        "configurations_elsewhere": _format_configurations(config_table, labels, _shown(config_table, columns),
                                                           common=False),
    }
    return Comparison(reports, labels, columns, {"configurations": config_table, "claims": claims}, text, notes,
                      _summary(config_table, claims, labels))


# ------------------------------------------------------------------------------------------------ cells


def _match_columns(reports: Sequence[Report], notes: list[str]) -> list[str]:
    """Toggles and hyperparameters but the seed, in the first sweep's order; see the module docstring for a
    column that only some sweeps record."""
    per_sweep = [[*r.sweep.toggles, *r.sweep.hparams] for r in reports]
    union = list(dict.fromkeys(c for cols in per_sweep for c in cols if c != "seed"))
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


def _cells(report: Report, columns: Sequence[str]) -> pd.DataFrame:
    """The report's configuration table (one row per cell with a finished run), keyed by the match columns."""
    return _with_columns(report.tables["configurations"], report.sweep.finished, columns)


def _runs(report: Report, columns: Sequence[str]) -> pd.DataFrame:
    """Every run of the report (any status; per-run statistics included), keyed by the match columns."""
    return _with_columns(report.runs, report.sweep.finished, columns)


def _why_disjoint(cells: Sequence[pd.DataFrame], labels: Sequence[str], columns: Sequence[str]) -> str:
    """The columns whose values no two sweeps share, e.g. ``max_epochs: A has 30, B has 10``."""
    parts = []
    for c in columns:
        values = [{M.key_text(v): v for v in cell[c]} for cell in cells]
        shared = set(values[0]).intersection(*values[1:])
        if not shared:
            has = "; ".join(f"{lab} has {', '.join(format_value(v) for v in vals.values())}"
                            for lab, vals in zip(labels, values, strict=True))
            parts.append(f"{c}: {has}")
    if parts:
        return "; ".join(parts[:4]) + (f"; and {len(parts) - 4} more columns" if len(parts) > 4 else "")
    sizes = ", ".join(f"{lab} has {len(cell)}" for lab, cell in zip(labels, cells, strict=True))
    return f"every column has a shared value, but no combination of them is shared; cells: {sizes}"


def _shown(table: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """The match columns that vary among the cells: the ones a table names."""
    return [c for c in columns if len(distinct_values(table[c])) > 1]


def _configuration_table(cells: Sequence[pd.DataFrame], runs: Sequence[pd.DataFrame], labels: Sequence[str],
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
            for col, _, _ in HEADLINE:
                row[f"{col}_mean_{lab}"] = r[f"{col}_mean"]
                row[f"{col}_std_{lab}"] = r[f"{col}_std"]
        row = {**{c: row[c] for c in columns}, "sweeps": ",".join(present), **row}
        for lab_i, (lab, run) in enumerate(zip(labels, runs, strict=True)):
            if lab_i == 0 or labels[0] not in present or lab not in present:
                continue
            for col, _, _ in HEADLINE:
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
    if "seed" not in runs_a or "seed" not in runs_b:  # no seed recorded: nothing to pair runs by
        return {**out, **{f"{col}_moved": np.nan for col, _, _ in HEADLINE}}
    recorded = []
    for lab, runs in zip(labels, (runs_a, runs_b), strict=True):
        cell = runs[(runs["_key"] == key) & runs["has_summary"].astype(bool)]
        seeds = cell["seed"].map(M.key_text)
        twice = sorted(set(seeds[seeds.duplicated()]))
        if twice:
            shown = ", ".join(dict.fromkeys(format_value(s) for s, t in zip(cell["seed"], seeds, strict=True)
                                            if t in twice))
            notes.append(f"{lab}: seed(s) {shown} recorded more than once in the configuration of "
                         f"{cell['run'].iloc[0]}; those seeds are not compared run by run")
        recorded.append(cell[~seeds.isin(twice)].set_index(seeds[~seeds.isin(twice)]))
    a, b = recorded
    shared = [s for s in a.index if s in b.index]
    out["shared_seeds"] = len(shared)
    moved: dict[str, None] = {}
    changes = []
    largest = {col: 0.0 for col, _, _ in HEADLINE}
    for seed in shared:
        ra, rb = a.loc[seed], b.loc[seed]
        differ = [f for f in fields if M.key_text(ra.get(f)) != M.key_text(rb.get(f))]
        if not differ:
            out["identical_seeds"] += 1
            continue
        moved.update(dict.fromkeys(differ))
        if ra["status"] != rb["status"]:
            changes.append(f"seed {format_value(ra['seed'])}: {ra['status']} → {rb['status']}")
        for col, _, _ in HEADLINE:
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


def _claims_table(reports: Sequence[Report], labels: Sequence[str], notes: list[str]) -> pd.DataFrame:
    """One row per (claim text, where tested) of any sweep: ``claim``, ``setting``, ``metric``, ``sweeps`` (which
    state the claim), per sweep ``verdict_L``, ``effect_L``, ``low_L``, ``high_L``, ``n_seeds_L`` and the two
    cells of its text (``effect_text_L``, ``verdict_text_L``, as the sweep's report formats them), and
    ``agree`` (every sweep gave the same verdict, and each on paired runs or none on any)."""
    per_sweep: list[dict[tuple[str, str], tuple[pd.Series, pd.Series]]] = []
    for lab, report in zip(labels, reports, strict=True):
        found: dict[tuple[str, str], tuple[pd.Series, pd.Series]] = {}
        if "claims" in report.tables:
            numbers, text = report.tables["claims"], report.text["claims"]
            for i in range(len(numbers)):
                row = numbers.iloc[i]
                key = (row["claim"], row["setting"])
                if key in found:
                    notes.append(f"{lab}: claim {row['claim']!r} at {row['setting']} stated twice; the first is "
                                 f"compared")
                    continue
                found[key] = (row, text.iloc[i])
        per_sweep.append(found)
    stated = [{claim for claim, _ in found} for found in per_sweep]
    everywhere = set.intersection(*stated)
    rows = []
    for key in dict.fromkeys(k for found in per_sweep for k in found):
        claim, setting = key
        row: dict[str, Any] = {"claim": claim, "setting": setting, "metric": None,
                               "sweeps": ",".join(lab for lab, s in zip(labels, stated, strict=True) if claim in s)}
        definitions = {}
        for lab, found in zip(labels, per_sweep, strict=True):
            if key not in found:
                continue
            numbers, text = found[key]
            row["metric"] = row["metric"] or numbers["metric"]
            definitions[lab] = text["metric"]
            row.update({f"verdict_{lab}": numbers["verdict"], f"effect_{lab}": numbers["effect"],
                        f"low_{lab}": numbers["low"], f"high_{lab}": numbers["high"],
                        f"n_seeds_{lab}": numbers["n_seeds"], f"effect_text_{lab}": text["effect"],
                        f"verdict_text_{lab}": text["verdict"]})
        if len(set(definitions.values())) > 1:
            notes.append(f"claim {claim!r} tests different things: "
                         + "; ".join(f"{lab}: {d}" for lab, d in definitions.items()))
        # A verdict reached without a single pair (no runs to test it) does not agree with one reached on runs.
        verdicts = [(row.get(f"verdict_{lab}"), bool(row.get(f"n_seeds_{lab}"))) for lab in labels]
        row["agree"] = claim in everywhere and all(v is not None for v, _ in verdicts) and len(set(verdicts)) == 1
        rows.append(row)
    return _integers(pd.DataFrame(rows), ("n_seeds_",))


def _integers(table: pd.DataFrame, prefixes: Sequence[str]) -> pd.DataFrame:
    """Counts as integers in the CSV (``3``, not ``3.0``), missing where a sweep lacks the row."""
    for c in table.columns:
        if c.startswith(tuple(prefixes)):
            table[c] = pd.to_numeric(table[c]).astype("Int64")
    return table


# --------------------------------------------------------------------------------------------- formatting


def _format_claims(table: pd.DataFrame, labels: Sequence[str], common: bool) -> pd.DataFrame:
    """Claims every sweep states (``common``): verdict and effect per sweep and ``agree``; else the others, with
    the sweeps that state them."""
    if table.empty:
        return pd.DataFrame()
    everywhere = table["sweeps"] == ",".join(labels)
    rows = []
    for _, r in table[everywhere if common else ~everywhere].iterrows():
        out = {"claim": r["claim"], "tested at": r["setting"]}
        if not common:
            out["stated by"] = r["sweeps"].replace(",", ", ")
        for lab in labels:
            if isinstance(r.get(f"verdict_{lab}"), str):
                out[f"verdict {lab}"], out[f"effect {lab}"] = r[f"verdict_text_{lab}"], r[f"effect_text_{lab}"]
            else:
                out[f"verdict {lab}"] = out[f"effect {lab}"] = "not tested" if lab in r["sweeps"] else "–"
        if common:
            out["agree"] = "yes" if r["agree"] else "no"
        rows.append(out)
    return pd.DataFrame(rows)


def _format_configurations(table: pd.DataFrame, labels: Sequence[str], shown: Sequence[str],
                           common: bool) -> pd.DataFrame:
    """Cells in every sweep (``common``): n, the headline means per sweep, their differences from A, failures
    and the same-seed comparison; else the cells some sweep lacks, with what each sweep has of them."""
    everywhere = table["sweeps"] == ",".join(labels)
    part = table[everywhere if common else ~everywhere]
    rows = []
    for _, r in part.iterrows():
        out: dict[str, str] = {c: format_value(r[c]) for c in shown} if shown else {"configuration": "all runs"}
        if not common:
            for lab in labels:
                out[lab] = _n_text(r, lab) if r[f"n_runs_{lab}"] else \
                    (f"no finished run ({r[f'not_finished_{lab}']})" if r[f"not_finished_{lab}"] else "absent")
            rows.append(out)
            continue
        out[f"n ({', '.join(labels)})"] = ", ".join(_n_text(r, lab) for lab in labels)
        for col, label, digits in HEADLINE:
            for lab in labels:
                out[f"{label} {lab}"] = _number(r[f"{col}_mean_{lab}"], digits)
            for lab in labels[1:]:
                out[f"{label} {lab} − {labels[0]}"] = _number(r[f"{col}_diff_{lab}"], digits, sign=True)
        out[f"failed ({', '.join(labels)})"] = ", ".join(f"{int(r[f'n_failed_{lab}'])}/{int(r[f'n_runs_{lab}'])}"
                                                       for lab in labels)
        if any(table.get(f"shared_seeds_{lab}", pd.Series(0)).fillna(0).gt(0).any() for lab in labels[1:]):
            for lab in labels[1:]:
                out[f"same seeds {lab} vs {labels[0]}"] = _same_seeds_text(r, lab)
        rows.append(out)
    return pd.DataFrame(rows)


def _n_text(r: pd.Series, lab: str) -> str:
    n = str(int(r[f"n_runs_{lab}"]))
    others = r.get(f"not_finished_{lab}")
    return f"{n} (+{others})" if isinstance(others, str) and others else n


def _number(v: Any, digits: int, sign: bool = False) -> str:
    if not is_finite(v):
        return "–"
    return f"{float(v):+.{digits}f}" if sign else f"{float(v):.{digits}f}"


def _same_seeds_text(r: pd.Series, lab: str) -> str:
    """``identical (3 seeds)``; ``moved (2/3 seeds): test acc by ≤ 0.011``; ``no shared seed``."""
    shared = r.get(f"shared_seeds_{lab}")
    if not is_finite(shared) or not shared:
        return "no shared seed"
    shared, same = int(shared), int(r[f"identical_seeds_{lab}"])
    if same == shared:
        return f"identical ({shared} seed{'s' if shared > 1 else ''})"
    parts = [f"{label} by ≤ {_amount(r[f'{col}_moved_{lab}'])}" for col, label, _ in HEADLINE
             if r[f"{col}_moved_{lab}"] > 0]
    if not parts:
        fields = r[f"fields_moved_{lab}"].split(", ")
        parts = ["headline numbers equal; differ in " + ", ".join(fields[:3]) + (" ..." if len(fields) > 3 else "")]
    changes = r[f"status_changes_{lab}"]
    return f"moved ({shared - same}/{shared} seeds): " + (f"{changes}; " if changes else "") + ", ".join(parts)


def _amount(v: float) -> str:
    return "a value on one side only" if math.isinf(v) else f"{v:.3g}"


def _summary(configurations: pd.DataFrame, claims: pd.DataFrame, labels: Sequence[str]) -> list[str]:
    """Counts for people: cells in every sweep, verdicts that agree (naming those that do not), same-seed cells."""
    everywhere = configurations["sweeps"] == ",".join(labels)
    lines = [f"{int(everywhere.sum())} configurations in every sweep, {int((~everywhere).sum())} in only some"]
    if len(claims):
        common = claims[claims["sweeps"] == ",".join(labels)]
        differ = common.loc[~common["agree"].astype(bool), "claim"]
        line = f"{int(common['agree'].sum())} of {len(common)} verdicts agree"
        if len(differ):
            line += "; they differ on: " + "; ".join(dict.fromkeys(differ))
        lines.append(line)
        if len(common) < len(claims):
            lines.append(f"{claims.loc[claims['sweeps'] != ','.join(labels), 'claim'].nunique()} claim(s) stated "
                         f"by only some sweeps")
    for lab in labels[1:]:
        shared = configurations.get(f"shared_seeds_{lab}")
        if shared is None or not shared.fillna(0).gt(0).any():
            continue
        with_seeds = configurations[shared.fillna(0) > 0]
        same = with_seeds[f"identical_seeds_{lab}"] == with_seeds[f"shared_seeds_{lab}"]
        lines.append(f"{lab} vs {labels[0]}, runs of the same cell and seed: {int(same.sum())} of {len(with_seeds)} "
                     f"cells identical, {int((~same).sum())} moved")
    return lines


def legend(comparison: Comparison) -> pd.DataFrame:
    """Which sweep is A, B, ...: its folder, runs, seeds, cells and claims."""
    rows = []
    for lab, report in zip(comparison.labels, comparison.reports, strict=True):
        sweep = report.sweep
        counts = sweep.runs["status"].value_counts()
        seeds = sorted_values(sweep.finished["seed"]) if "seed" in sweep.finished else []
        rows.append({"sweep": lab, "folder": str(sweep.path),
                     "runs": f"{len(sweep.runs)} (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")",
                     "seeds": ", ".join(format_value(s) for s in seeds) or "–",
                     "configurations": str(len(report.tables["configurations"])),
                     "claims": str(len(sweep.claims))})
    return pd.DataFrame(rows)


def sweep_gaps(comparison: Comparison) -> list[str]:
    """Each sweep's report gaps, prefixed by the sweeps that have them (``A, B: EDF: too few runs ...``): the
    same grid gives the same gaps, said once."""
    holders: dict[str, list[str]] = {}
    for lab, report in zip(comparison.labels, comparison.reports, strict=True):
        for gap in report.gaps:
            holders.setdefault(gap, []).append(lab)
    return [f"{', '.join(labs)}: {gap}" for gap, labs in holders.items()]


def render_markdown(comparison: Comparison) -> str:
    """``compare.md``: the legend, the counts, the claims and configurations side by side, notes and gaps."""
    names = " vs ".join(s.path.name for s in comparison.sweeps)
    lines = [f"# Comparison: {names}", "", to_markdown(legend(comparison)), ""]
    lines += [f"- {s}" for s in comparison.summary]
    lines += ["", "Cells are matched by configuration (toggles and hyperparameters but the seed, as recorded), not by "
              "run name or id. *failed* = diverged or collapsed. *same seeds*: the runs of one cell and seed in two "
              "sweeps; *identical* = every outcome in summary.json equal bit for bit (timings, thread count and "
              "versions aside), else the largest change of each headline number.", ""]
    for name, title in TABLES.items():
        table = comparison.text[name]
        if table.empty and name.endswith("elsewhere"):
            continue
        lines += [f"## {title}", "", to_markdown(table) if not table.empty else "_(no sweep states claims)_", ""]
    gaps = [*comparison.notes, *sweep_gaps(comparison)]
    lines += ["## Notes and gaps", "", *([f"- {g}" for g in gaps] or ["None."])]
    return "\n".join(lines) + "\n"


def write_comparison(comparison: Comparison, out_dir: str | Path, formats: Sequence[str] = COMPARE_FORMATS
                     ) -> list[Path]:
    """``compare.md`` (with md), ``compare_claims`` and ``compare_configurations`` as .md, .csv (every row,
    numeric) and .tex; returns the paths written."""
    check_formats(formats, COMPARE_FORMATS, " for a comparison")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("claims", "configurations")
    written = write_tables(out, {n: comparison.tables[n] for n in names}, {n: comparison.text[n] for n in names},
                           formats, TABLES, prefix="compare_")
    if "md" in formats:
        written.append(write_text(out / "compare.md", render_markdown(comparison)))
    return written


__all__ = ["HEADLINE", "TABLES", "Comparison", "compare_reports", "legend", "outcome_columns", "render_markdown",
           "sweep_gaps", "write_comparison"]
