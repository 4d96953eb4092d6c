"""A grid metric per seed: one value per configuration and seed over its learning rates (the largest stable lr,
LR sensitivity), and the treatment's minus the control's, as :mod:`stability.analysis.verdicts` reads them.

Only the learning rates both sides ran for a seed count, and at least :data:`MIN_LR_POINTS` of them: with two,
"sensitivity" is one difference and a "largest stable lr" one of two values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from stability.analysis import metrics as M
from stability.analysis.claims import Claim, Metric
from stability.record.files import COLLAPSED, DIVERGED
from stability.record.identity import LR, SEED

# Learning rates per seed that a metric over the lr grid needs, common to treatment and control (and, in the
# report, per configuration for its LR sensitivity and its curves against the lr).
MIN_LR_POINTS = 3


def row_keys(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    cols = [c for c in columns if c in frame]
    if not cols:
        return pd.Series("", index=frame.index)
    return frame[cols].map(M.key_text).agg("|".join, axis=1)


def grid_differences(claim: Claim, metric: Metric, treat: pd.DataFrame, ctrl: pd.DataFrame,
                      other: Sequence[str]) -> tuple[pd.Series, int]:
    """Per seed: the grid metric of the treatment minus the control's, over the lrs both sides have (at least
    MIN_LR_POINTS); several settings of the other axes in one seed are averaged (ordinal: their median).

    Returns the per-seed differences and how many seeds had too few common lrs (and were left out)."""
    if treat.empty or ctrl.empty or SEED not in treat or LR not in treat:
        return pd.Series(dtype=float), 0

    def per_group(frame: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
        keys = list(zip(frame[SEED].map(M.key_text), row_keys(frame, other), strict=True))
        return {k: frame[[kk == k for kk in keys]] for k in dict.fromkeys(keys)}

    t_groups, c_groups = per_group(treat), per_group(ctrl)
    diffs: dict[str, list[float]] = {}
    short: set[str] = set()
    for k, t in t_groups.items():
        c = c_groups.get(k)
        if c is None:
            continue
        common = set(t[LR].map(M.key_text)) & set(c[LR].map(M.key_text))
        if len(common) < MIN_LR_POINTS:
            short.add(k[0])
            continue
        t = t[t[LR].map(M.key_text).isin(common)]
        c = c[c[LR].map(M.key_text).isin(common)]
        diffs.setdefault(k[0], []).append(grid_value(claim.metric, t) - grid_value(claim.metric, c))
    middle = np.median if metric.kind == "ordinal" else np.mean
    per_seed = pd.Series({seed: float(middle(v)) for seed, v in diffs.items()}, dtype=float).dropna()
    return per_seed, len(short - set(per_seed.index))


def grid_value(metric: str, runs: pd.DataFrame) -> float:
    """One configuration and seed over its lr grid."""
    failed = runs["status"].isin([DIVERGED, COLLAPSED])
    if metric == "largest_stable_lr":
        stable = runs.loc[~failed, LR].astype(float)
        return float(np.log10(stable.max())) if len(stable) else float(np.log10(runs[LR].astype(float).min()) - 1)
    initial = pd.to_numeric(runs.get("initial_loss"), errors="coerce").fillna(math.log(10))
    loss = pd.to_numeric(runs.get("final_val_loss"), errors="coerce")
    res = M.lr_sensitivity(runs[LR].astype(float).to_numpy(), loss.to_numpy(dtype=float), initial.to_numpy(),
                           failed.to_numpy())
    return res.value


