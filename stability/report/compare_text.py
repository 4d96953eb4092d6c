"""A comparison's text: its tables' cells as people read them, side by side, and the summary lines.

Input: the numeric tables of :mod:`stability.report.compare_tables`; output: DataFrames of strings
(``Comparison.text``, under the titles of :data:`TABLES`) and the few lines of ``Comparison.summary``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from stability.report.compare_tables import COMPARED_METRICS
from stability.report.configs import distinct_values, format_cell, is_finite

TABLES = {
    "claims": "Claims: verdicts side by side (effect = treatment − control over seeds: mean [95% t-interval]; "
              "rates: difference [95% Newcombe]; largest stable lr: median [order-statistic interval])",
    "claims_elsewhere": "Claims stated in only some sweeps",
    "configurations": "Configurations side by side (mean over seeds; B − A = difference of the means)",
    "configurations_elsewhere": "Configurations in only some sweeps",
}


# --------------------------------------------------------------------------------------------- formatting


def shown_columns(table: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """The match columns that vary among the cells: the ones a table names."""
    return [c for c in columns if len(distinct_values(table[c])) > 1]


def format_compared_claims(table: pd.DataFrame, labels: Sequence[str], common: bool,
                           transfer: bool = False) -> pd.DataFrame:
    """Claims every sweep states (``common``): verdict and effect (with its interval) per sweep and ``agree``, or
    with ``transfer`` (sweeps on different data sets) whether the verdict transfers; else the others, with the
    sweeps that state them."""
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
        if common and transfer:
            out["transfer"] = r["transfer"]
        elif common:
            out["agree"] = "yes" if r["agree"] else "no"
        rows.append(out)
    return pd.DataFrame(rows)


def format_compared_configurations(table: pd.DataFrame, labels: Sequence[str], shown: Sequence[str],
                           common: bool) -> pd.DataFrame:
    """Cells in every sweep (``common``): n, the headline means per sweep, their differences from A, failures
    and the same-seed comparison; else the cells some sweep lacks, with what each sweep has of them."""
    everywhere = table["sweeps"] == ",".join(labels)
    part = table[everywhere if common else ~everywhere]
    rows = []
    for _, r in part.iterrows():
        out: dict[str, str] = {c: format_cell(r[c]) for c in shown} if shown else {"configuration": "all runs"}
        if not common:
            for lab in labels:
                out[lab] = _n_text(r, lab) if r[f"n_runs_{lab}"] else \
                    (f"no finished run ({r[f'not_finished_{lab}']})" if r[f"not_finished_{lab}"] else "absent")
            rows.append(out)
            continue
        out[f"n ({', '.join(labels)})"] = ", ".join(_n_text(r, lab) for lab in labels)
        for col, label, digits in COMPARED_METRICS:
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
    parts = [f"{label} by ≤ {_amount(r[f'{col}_moved_{lab}'])}" for col, label, _ in COMPARED_METRICS
             if r[f"{col}_moved_{lab}"] > 0]
    if not parts:
        fields = r[f"fields_moved_{lab}"].split(", ")
        parts = ["headline numbers equal; differ in " + ", ".join(fields[:3]) + (" ..." if len(fields) > 3 else "")]
    changes = r[f"status_changes_{lab}"]
    return f"moved ({shared - same}/{shared} seeds): " + (f"{changes}; " if changes else "") + ", ".join(parts)


def _amount(v: float) -> str:
    return "a value on one side only" if math.isinf(v) else f"{v:.3g}"


def summary_lines(configurations: pd.DataFrame | None, claims: pd.DataFrame, labels: Sequence[str]) -> list[str]:
    """Counts for people: cells in every sweep, verdicts that agree (naming those that do not), same-seed cells,
    the claims that hold on every sweep. ``configurations`` None: sweeps compared by their claims alone (other
    data sets), where what counts is whether each verdict transfers."""
    lines = []
    if configurations is not None:
        everywhere = configurations["sweeps"] == ",".join(labels)
        lines.append(f"{int(everywhere.sum())} configurations in every sweep, {int((~everywhere).sum())} in only some")
    else:
        lines.append("no configuration in every sweep: claims compared by their text only")
    if len(claims):
        common = claims[claims["sweeps"] == ",".join(labels)]
        lines.append(_agree_line(common) if configurations is not None else _transfer_line(common))
        if len(common) < len(claims):
            lines.append(f"{claims.loc[claims['sweeps'] != ','.join(labels), 'claim'].nunique()} claim(s) stated "
                         f"by only some sweeps")
        lines.append(holds_line(common, labels))
    for lab in labels[1:]:
        shared = None if configurations is None else configurations.get(f"shared_seeds_{lab}")
        if shared is None or not shared.fillna(0).gt(0).any():
            continue
        with_seeds = configurations[shared.fillna(0) > 0]
        same = with_seeds[f"identical_seeds_{lab}"] == with_seeds[f"shared_seeds_{lab}"]
        lines.append(f"{lab} vs {labels[0]}, runs of the same cell and seed: {int(same.sum())} of {len(with_seeds)} "
                     f"cells identical, {int((~same).sum())} moved")
    return lines


def _agree_line(common: pd.DataFrame) -> str:
    differ = common.loc[~common["agree"].astype(bool), "claim"]
    line = f"{int(common['agree'].sum())} of {len(common)} verdicts agree"
    return line + ("; they differ on: " + "; ".join(dict.fromkeys(differ)) if len(differ) else "")


def _transfer_line(common: pd.DataFrame) -> str:
    """``verdicts: 1 of 3 transfers, 1 changes (X), 1 decided in A only``."""
    counts = common["transfer"].value_counts()
    parts = [f"{int(counts.get('transfers', 0))} of {len(common)} transfer"]
    changed = common.loc[common["transfer"] == "changes", "claim"]
    if len(changed):
        parts.append(f"{len(changed)} change{'s' if len(changed) == 1 else ''} (" + "; ".join(dict.fromkeys(changed))
                     + ")")
    parts += [f"{n} {what}" for what, n in counts.items() if what not in ("transfers", "changes")]
    return "verdicts: " + ", ".join(parts)


def holds_line(common: pd.DataFrame, labels: Sequence[str]) -> str:
    """The claims every sweep decides the same way, by verdict: ``holds on both: supported: X; contradicted: Y``
    (a claim tested at several settings names the setting)."""
    where = "both" if len(labels) == 2 else "every sweep"
    held = common[common["transfer"] == "transfers"] if len(common) else common
    if held.empty:
        return f"holds on {where}: no claim (none is decided the same way in every sweep)"
    several = common["claim"].value_counts()
    parts = []
    for verdict, rows in held.groupby(held[f"verdict_{labels[0]}"], sort=False):
        names = [r["claim"] + (f" at {r['setting']}" if several[r["claim"]] > 1 else "") for _, r in rows.iterrows()]
        parts.append(f"{verdict}: " + "; ".join(names))
    return f"holds on {where}: " + " — ".join(parts)
