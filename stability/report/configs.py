"""How runs group into configurations and how configurations and their values read.

Group keys, the configurations' order (baseline first) and names (labels), and the value helpers (distinct
values, a value's text, "is there a number?") that the numeric tables (:mod:`stability.report.tables`,
:mod:`stability.report.certificates`), their text (:mod:`stability.report.formatting`), the comparison and the
figures share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis import metrics as M
from stability.analysis.results import Sweep
from stability.record.files import FINISHED


def display_columns(sweep: Sweep) -> list[str]:
    """The configuration columns that vary among the runs (finished ones, when any finished).

    Only these get a table column, a part in a configuration's label or a plot of their own; a setting that
    is the same for every run is noted once (the report's "Fixed:" note) instead of repeated on every row.
    """
    frame = sweep.finished if len(sweep.finished) else sweep.runs
    return [c for c in sweep.config_columns if c in frame and len(distinct_values(frame[c])) > 1]


def group_key(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Per row, one string from its values in ``columns`` (those present): the key to group runs by.

    Text (:func:`stability.analysis.metrics.key_text`) rather than the values themselves, so that missing values
    group together and ``1`` and ``1.0`` are one configuration; all rows share ``""`` without columns.
    """
    cols = [c for c in columns if c in frame]
    if not cols or frame.empty:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[cols].map(M.key_text).agg("|".join, axis=1)


def configuration_groups(sweep: Sweep, runs: pd.DataFrame) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """The configurations of the configuration table, in its order: (all its runs, its finished runs) each.

    A configuration = one combination of the configuration columns (every toggle and every varying hparam
    but the seed) with at least one finished run; tables per configuration share this so their rows match.
    """
    cfg = sweep.config_columns
    key = group_key(runs, cfg)
    finished_mask = runs["status"].isin(FINISHED)
    groups = []
    for k in sorted_keys(runs[finished_mask], cfg, sweep, key[finished_mask]):
        members = runs[key == k]
        groups.append((members, members[members["status"].isin(FINISHED)]))
    return groups


def sorted_keys(frame: pd.DataFrame, columns: Sequence[str], sweep: Sweep, key: pd.Series) -> list[str]:
    """Group keys with the baseline first, then toggles alphabetically and numbers ascending."""
    cols = [c for c in columns if c in frame]
    first = frame.groupby(key, sort=False).head(1)

    def order(row: pd.Series) -> tuple:
        out = []
        for c in cols:
            v = row[c]
            if c in sweep.baselines:
                out.append((0 if M.same_value(v, sweep.baselines[c]) else 1, 0.0, str(v)))
            elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                out.append((0, float(v) if is_finite(v) else math.inf, ""))
            else:
                out.append((0, 0.0, str(v)))
        return tuple(out)

    ranked = sorted(((order(r), key[i]) for i, r in first.iterrows()), key=lambda t: t[0])
    return [k for _, k in ranked]


def config_label(sweep: Sweep, row: pd.Series, columns: Sequence[str] | None = None) -> str:
    """A configuration's name, e.g. ``"norm=centernorm,lr=0.01"``, ``"baseline,lr=0.01"`` or ``"baseline"``.

    Names the values of ``row`` in ``columns`` (default: every configuration column) that vary in the sweep
    (:func:`display_columns`), leaving out toggles at their baseline: the label says what differs. When every
    toggle is at its baseline the label starts with ``baseline``, so that the baseline at 12 epochs reads
    ``baseline,max_epochs=12``, not as if the epochs were its trick."""
    shown = display_columns(sweep)
    cols = [c for c in (columns if columns is not None else sweep.config_columns) if c in shown]
    toggles, others = [], []
    for c in cols:
        if c in sweep.baselines and M.same_value(row[c], sweep.baselines[c]):
            continue
        (toggles if c in sweep.baselines else others).append(f"{c}={format_cell(row[c])}")
    return ",".join((toggles or ["baseline"]) + others)


def short_labels(sweep: Sweep, rows: Sequence[pd.Series]) -> list[str]:
    """Names for configurations (one row each): :func:`config_label` without the hyperparameters the toggles
    determine.

    A grid whose cells differ in recipe as well as in toggles (a LipShiFT cell with its own weight decay,
    drop-path rate...) would name every setting of that recipe; a hyperparameter that takes one value per
    toggle combination says nothing the toggles do not, so it is left out of the name (the table row still
    holds it). One that varies within a toggle combination (the learning rate of a grid over lr, a margin)
    stays in every name; the toggles' baseline is named "baseline" even then (``"baseline,lr=0.01"``, as
    :func:`config_label` names it).
    """
    frame = pd.DataFrame(list(rows))
    toggles = group_key(frame, sweep.toggles)
    keep = [c for c in display_columns(sweep) if c in sweep.toggles
            or frame.groupby(toggles)[c].agg(lambda v: len(distinct_values(v))).max() > 1]
    return [config_label(sweep, r, columns=keep) for r in rows]


def distinct_values(series: pd.Series) -> list[Any]:
    """The different values of ``series`` in order of first appearance, NaN and None counted as one value.

    ``Series.unique`` would keep every NaN apart and fail on unhashable values; this compares the values as
    :func:`stability.analysis.metrics.key_text` does, so "does this column vary?" has the same answer as the grouping.
    """
    seen: dict[str, Any] = {}
    for v in series:
        seen.setdefault(M.key_text(v), v)
    return list(seen.values())


def format_cell(v: Any) -> str:
    """A configuration value as people read it in a table or a label: ``0.001``, ``3``, ``True``, ``"–"``.

    Floats in ``g`` format (no ``0.0010000`` or ``3.0``), integers and booleans as themselves (numpy's too,
    which pandas hands out), and a missing value (None, NaN) as a dash rather than "None" or "nan". (A value in
    a run's name is :func:`stability.record.identity.format_value`: ``on``/``off``, 4 digits, no ``/``.)
    """
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return "–" if math.isnan(v) else f"{v:g}"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return "–" if v is None else str(v)


def is_finite(v: Any) -> bool:
    """True when ``v`` is a finite number (or converts to one): not None, NaN, inf or text.

    Table cells hold anything (None from JSON, NaN from pandas, strings); this asks "is there a number to
    show or compute with?" without raising on any of them.
    """
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
