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
- **Different data sets** (or any sweeps without a configuration in common: other ``max_epochs``, image sizes):
  there are no cells to line up, so only the claims are compared (one note says why the per-cell table is
  left out) and each sweep is named by its data set (``A: digits, B: fashion-mnist``). A claim's rows pair by
  setting where every sweep tests it at the same settings; otherwise, since each data set has its own lr
  ladder, in order, first with first (the lowest lr tested on one with the lowest on the other), a sweep's
  extra rows standing alone. Each pair says whether the verdict *transfers* (decided the same way in every
  sweep), *changes* (decided differently), is decided in some sweeps only, or nowhere; the summary lists the
  claims that hold on every sweep. With neither a shared configuration nor a claim every sweep states, there
  is nothing to line up: that is an error.
- **Same cell, same seed** (a re-run, the same grid before and after a code change): the two runs'
  ``summary.json`` outcomes (:func:`~stability.report.compare_tables.outcome_columns`) are compared value by
  value: *identical* means bit for bit; otherwise the largest change of each headline number is given.

The numbers are :mod:`stability.report.compare_tables`, their text :mod:`stability.report.compare_text`; this
module puts a :class:`Comparison` together (:func:`compare_reports`) and writes it (``compare.md``, the tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stability.analysis.results import Sweep
from stability.analysis.verdicts import sorted_values
from stability.errors import ConfigError
from stability.record.identity import SEED
from stability.report.build import Report
from stability.report.compare_tables import (
    cells_of,
    compared_claims,
    compared_configurations,
    data_disjoint,
    data_sets,
    match_columns,
    outcome_columns,
    runs_of,
    why_disjoint,
)
from stability.report.compare_text import (
    TABLES,
    format_compared_claims,
    format_compared_configurations,
    shown_columns,
    summary_lines,
)
from stability.report.configs import format_cell
from stability.report.formatting import check_formats, to_markdown, write_tables, write_text

COMPARE_FORMATS = ("md", "csv", "tex")


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
    claims_only: bool = False  # no configuration in every sweep (other data sets): no per-cell table
    data_sets: list[str] | None = None  # each sweep's data set, where they differ ("digits", "fashion-mnist")

    @property
    def sweeps(self) -> list[Sweep]:
        return [r.sweep for r in self.reports]


def compare_reports(reports: Sequence[Report]) -> Comparison:
    """Line up the reports of two or more sweeps (module docstring).

    Sweeps without a configuration in common (other data sets) are compared by their claims alone.

    Raises:
        ConfigError: fewer than two reports, a sweep without finished runs, or neither a cell nor a claim in
            every sweep.
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
    names = data_sets(reports)
    if names:
        notes.append("data sets: " + ", ".join(f"{lab}: {n}" for lab, n in zip(labels, names, strict=True)))
    columns = match_columns(reports, notes)
    cells = [cells_of(r, columns) for r in reports]
    common = set(cells[0]["_key"])
    for c in cells[1:]:
        common &= set(c["_key"])
    if not common or data_disjoint(reports):
        return _claims_only(reports, labels, columns, notes, names, why_disjoint(cells, labels, columns))
    runs = [runs_of(r, columns) for r in reports]
    fields = [outcome_columns(r.sweep) for r in reports]
    config_table = compared_configurations(cells, runs, labels, columns, fields, notes)
    claims = compared_claims(reports, labels, notes)
    shown = shown_columns(config_table, columns)
    text = {
        "claims": format_compared_claims(claims, labels, common=True),
        "claims_elsewhere": format_compared_claims(claims, labels, common=False),
        "configurations": format_compared_configurations(config_table, labels, shown, common=True),
        "configurations_elsewhere": format_compared_configurations(config_table, labels, shown, common=False),
    }
    return Comparison(reports, labels, columns, {"configurations": config_table, "claims": claims}, text, notes,
                      summary_lines(config_table, claims, labels), data_sets=names)


def _claims_only(reports: list[Report], labels: list[str], columns: list[str], notes: list[str],
                 names: list[str] | None, why: str) -> Comparison:
    """Sweeps with no configuration in common: their claims side by side, each verdict's transfer; no cells."""
    claims = compared_claims(reports, labels, notes, by_order=True)
    if claims.empty or not (claims["sweeps"] == ",".join(labels)).any():
        raise ConfigError(f"comparison: no configuration is in every sweep ({why}), and no claim is stated by "
                          f"every sweep: nothing to line up (state the same claims in each grid to compare "
                          f"verdicts across data sets)")
    notes.insert(1 if names else 0, f"configurations not compared: no configuration is in every sweep ({why}); "
                 f"claims are compared by their text")
    empty = pd.DataFrame()
    text = {"claims": format_compared_claims(claims, labels, common=True, transfer=True),
            "claims_elsewhere": format_compared_claims(claims, labels, common=False),
            "configurations": empty, "configurations_elsewhere": empty}
    return Comparison(reports, labels, columns, {"claims": claims}, text, notes,
                      summary_lines(None, claims, labels), claims_only=True, data_sets=names)


def legend(comparison: Comparison) -> pd.DataFrame:
    """Which sweep is A, B, ...: its folder, runs, seeds, cells and claims."""
    rows = []
    for lab, report in zip(comparison.labels, comparison.reports, strict=True):
        sweep = report.sweep
        counts = sweep.runs["status"].value_counts()
        seeds = sorted_values(sweep.finished[SEED]) if SEED in sweep.finished else []
        rows.append({"sweep": lab, "folder": str(sweep.path),
                     "runs": f"{len(sweep.runs)} (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")",
                     "seeds": ", ".join(format_cell(s) for s in seeds) or "–",
                     "configurations": str(len(report.tables["configurations"])),
                     "claims": str(len(sweep.claims))})
    legend_table = pd.DataFrame(rows)
    if comparison.data_sets:
        legend_table.insert(1, "data", comparison.data_sets)
    return legend_table


def sweep_gaps(comparison: Comparison) -> list[str]:
    """Each sweep's report gaps, prefixed by the sweeps that have them (``A, B: EDF: too few runs ...``): the
    same grid gives the same gaps, said once."""
    holders: dict[str, list[str]] = {}
    for lab, report in zip(comparison.labels, comparison.reports, strict=True):
        for gap in report.gaps:
            holders.setdefault(gap, []).append(lab)
    return [f"{', '.join(labs)}: {gap}" for gap, labs in holders.items()]


def render_comparison(comparison: Comparison) -> str:
    """``compare.md``: the legend, the counts, the claims and configurations side by side, notes and gaps."""
    names = " vs ".join(s.path.name for s in comparison.sweeps)
    lines = [f"# Comparison: {names}", "", to_markdown(legend(comparison)), ""]
    lines += [f"- {s}" for s in comparison.summary]
    if comparison.claims_only:
        lines += ["", "No configuration is in every sweep, so only the claims are compared (the reason is in the "
                  "notes). Claims are matched by their text; a claim's rows pair by setting where every sweep tests "
                  "it at the same settings, else in order, first with first (e.g. each data set's lowest lr). "
                  "*transfers* = decided the same way in every sweep; *changes* = decided differently; *decided in "
                  "A only* = inconclusive or not tested elsewhere.", ""]
    else:
        lines += ["", "Cells are matched by configuration (toggles and hyperparameters but the seed, as recorded), "
                  "not by run name or id. *failed* = diverged or collapsed. *same seeds*: the runs of one cell and "
                  "seed in two sweeps; *identical* = every outcome in summary.json equal bit for bit (timings, thread "
                  "count and versions aside), else the largest change of each headline number.", ""]
    for name, title in TABLES.items():
        if comparison.claims_only and name.startswith("configurations"):
            continue
        table = comparison.text[name]
        if table.empty and name.endswith("elsewhere"):
            continue
        lines += [f"## {title}", "", to_markdown(table) if not table.empty else "_(no sweep states claims)_", ""]
    gaps = [*comparison.notes, *sweep_gaps(comparison)]
    lines += ["## Notes and gaps", "", *([f"- {g}" for g in gaps] or ["None."])]
    return "\n".join(lines) + "\n"


def write_comparison(comparison: Comparison, out_dir: str | Path, formats: Sequence[str] = COMPARE_FORMATS
                     ) -> list[Path]:
    """``compare.md`` (with md), ``compare_claims`` and ``compare_configurations`` (not when comparing claims only)
    as .md, .csv (every row, numeric) and .tex; returns the paths written."""
    check_formats(formats, COMPARE_FORMATS, " for a comparison")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in ("claims", "configurations") if n in comparison.tables]  # claims only: no cells
    written = write_tables(out, {n: comparison.tables[n] for n in names}, {n: comparison.text[n] for n in names},
                           formats, TABLES, prefix="compare_")
    if "md" in formats:
        written.append(write_text(out / "compare.md", render_comparison(comparison)))
    return written


__all__ = ["COMPARE_FORMATS", "Comparison", "compare_reports", "legend", "render_comparison", "sweep_gaps",
           "write_comparison"]
