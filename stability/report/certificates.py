"""Lipschitz bounds and certified accuracy: which run-table columns hold them, and their table per configuration.

The numbers come from the runs' ``summary.json`` (:class:`stability.record.files.RunSummary`); the table has
the configuration table's rows (:func:`stability.report.configs.configuration_groups`), and
:mod:`stability.report.formatting` turns it into text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis.results import Sweep
from stability.report.configs import configuration_groups, is_finite, short_labels

# summary.json's Lipschitz fields (stability.record.files.RunSummary); certified accuracies are dicts radius ->
# accuracy that the run table flattens to columns "certified_acc.<radius>" (split on the first dot).
LIPSCHITZ_FIELDS = ("lipschitz_upper", "lipschitz_backbone", "lipschitz_unbounded", "lipschitz_lower")
CERTIFIED = "certified_acc"  # head-aware certificate (LipShiFT's pairwise margin, Menon et al. 2025)
CERTIFIED_SQRT2 = "certified_acc_sqrt2"  # the plain f_y - max f_i > sqrt(2) L r form (Tsuzuku et al. 2018)
# LipShiFT's evaluation radius 36/255 as summary.json writes it (4 significant digits, the key
# stability.model.lipschitz.certify.DEFAULT_RADIUS gets; not imported from there: that module imports torch).
DEFAULT_RADIUS_KEY = "0.1412"
_TOGGLE_IN_REASON = re.compile(r"\((\w+)='([^']*)'")  # "(norm='layernorm')": the toggle value responsible


def radius_columns(columns: Iterable[str], prefix: str = CERTIFIED) -> dict[str, float]:
    """``{"certified_acc.0.1412": 0.1412, ...}``: the flattened columns of one certified-accuracy dict, by radius.

    The radius is the text after the first dot (a radius has a dot of its own); ``certified_acc_sqrt2.*``
    columns are not ``certified_acc`` ones.
    """
    out: dict[str, float] = {}
    for col in columns:
        head, dot, key = str(col).partition(".")
        if head != prefix or not dot:
            continue
        try:
            out[col] = float(key)
        except ValueError:
            continue
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def has_lipschitz(runs: pd.DataFrame) -> bool:
    """True when some run recorded a Lipschitz measurement or a certified accuracy (newer summaries do)."""
    cols = [c for c in LIPSCHITZ_FIELDS if c in runs] + list(radius_columns(runs.columns)) + \
        list(radius_columns(runs.columns, CERTIFIED_SQRT2))
    return any(runs[c].map(lambda v: v is not None and not (isinstance(v, float) and math.isnan(v))).any()
               for c in cols)


def default_radius_column(columns: Iterable[str], prefix: str = CERTIFIED) -> str | None:
    """Of ``columns``, the one of the default radius 36/255 when there is one, else of the smallest radius > 0."""
    cols = radius_columns(columns, prefix)
    wanted = f"{prefix}.{DEFAULT_RADIUS_KEY}"
    if wanted in cols:
        return wanted
    return next((c for c, r in cols.items() if r > 0), None)


def lipschitz_table(sweep: Sweep, runs: pd.DataFrame) -> pd.DataFrame:
    """Lipschitz bounds and certified accuracy per configuration (the configuration table's rows).

    Columns: the configuration columns and ``configuration`` (its label); ``n_runs``; ``test_acc`` and every
    ``certified_acc.<radius>`` and ``certified_acc_sqrt2.<radius>`` as ``_mean/_std/_n`` over seeds;
    ``upper`` and ``backbone`` bounds as ``_median/_min/_max/_n`` (bounds of one configuration span decades
    over seeds, so a mean would be one seed's); ``n_unbounded`` and ``unbounded`` (the first unbounded run's
    reason); ``lower_mean/_std/_n``; ``n_both`` runs with both network bounds and ``n_upper_below_lower`` of
    them violating upper >= lower (which a correct bound never does).
    """
    certified = [*radius_columns(runs.columns), *radius_columns(runs.columns, CERTIFIED_SQRT2)]
    groups = configuration_groups(sweep, runs)
    labels = short_labels(sweep, [done.iloc[0] for _, done in groups])
    rows = []
    for (_members, done), label in zip(groups, labels, strict=True):
        row: dict[str, Any] = {c: done[c].iloc[0] for c in sweep.config_columns}
        row["configuration"] = label
        row["n_runs"] = len(done)
        for col in ("test_acc", *certified):
            values = _finite(done, col)
            row[f"{col}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            row[f"{col}_n"] = len(values)
        for name, col in (("upper", "lipschitz_upper"), ("backbone", "lipschitz_backbone")):
            values = _finite(done, col)
            row[f"{name}_median"] = float(values.median()) if len(values) else np.nan
            row[f"{name}_min"] = float(values.min()) if len(values) else np.nan
            row[f"{name}_max"] = float(values.max()) if len(values) else np.nan
            row[f"{name}_n"] = len(values)
        reasons = done["lipschitz_unbounded"].dropna().astype(str) if "lipschitz_unbounded" in done else \
            pd.Series(dtype=object)
        reasons = reasons[reasons != ""]
        row["n_unbounded"] = len(reasons)
        row["unbounded"] = reasons.iloc[0] if len(reasons) else ""
        lower = _finite(done, "lipschitz_lower")
        row["lower_mean"] = float(lower.mean()) if len(lower) else np.nan
        row["lower_std"] = float(lower.std(ddof=1)) if len(lower) > 1 else np.nan
        row["lower_n"] = len(lower)
        both = bound_violations(done, everything=True)
        row["n_both"] = len(both)
        row["n_upper_below_lower"] = int(both["violated"].sum()) if len(both) else 0
        rows.append(row)
    return pd.DataFrame(rows)


def bound_violations(runs: pd.DataFrame, everything: bool = False) -> pd.DataFrame:
    """The runs whose network upper bound is below their empirical lower bound: run, upper, lower.

    The lower bound is a slope the network was seen to reach, so a correct upper bound is never below it;
    a run here has a bound that is wrong (or a lower bound that is). Runs without both numbers (unbounded,
    not measured) cannot be checked; ``everything`` returns every checkable run with a ``violated`` column.
    """
    upper = pd.to_numeric(runs.get("lipschitz_upper", pd.Series(np.nan, index=runs.index)), errors="coerce")
    lower = pd.to_numeric(runs.get("lipschitz_lower", pd.Series(np.nan, index=runs.index)), errors="coerce")
    both = np.isfinite(upper) & np.isfinite(lower)
    out = pd.DataFrame({"run": runs.index[both], "upper": upper[both].to_numpy(), "lower": lower[both].to_numpy()})
    out["violated"] = out["upper"] < out["lower"]
    return out if everything else out[out["violated"]].drop(columns="violated").reset_index(drop=True)


def unbounded_cause(reason: str) -> str:
    """The toggle values a ``lipschitz_unbounded`` reason names, ``"attention=dot, norm=layernorm"``.

    stability.model.lipschitz.bounds ends each reason with the toggle value that builds the unbounded layer in brackets
    (``(norm='layernorm')``); a reason without one is returned whole.
    """
    causes = list(dict.fromkeys(f"{k}={v}" for k, v in _TOGGLE_IN_REASON.findall(reason)))
    return ", ".join(causes) if causes else reason


def certified_long(sweep: Sweep, finished: pd.DataFrame, prefix: str = CERTIFIED) -> pd.DataFrame:
    """Certified accuracy per run and radius, long format: configuration (label), run, radius, accuracy.

    For plots against the radius: configurations in the configuration table's order; runs without the
    number at a radius have no row there.
    """
    rows = []
    cols = radius_columns(finished.columns, prefix)
    groups = configuration_groups(sweep, finished)
    for (_members, done), label in zip(groups, short_labels(sweep, [d.iloc[0] for _, d in groups]), strict=True):
        for name, run in done.iterrows():
            for col, radius in cols.items():
                if is_finite(run[col]):
                    rows.append({"configuration": label, "run": name, "radius": radius,
                                 "accuracy": float(run[col])})
    return pd.DataFrame(rows, columns=["configuration", "run", "radius", "accuracy"])


def _finite(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame:
        return pd.Series(dtype=float)
    values = pd.to_numeric(frame[col], errors="coerce")
    return values[np.isfinite(values)]

