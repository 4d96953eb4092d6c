"""The report's numbers: each table as a numeric DataFrame (what the CSVs hold), from a loaded sweep.

The statistics are those of :mod:`stability.analysis.metrics`; :mod:`stability.report.formatting` turns the tables into
text. How runs group into configurations, and how those are ordered and named, is :mod:`stability.report.configs`;
the Lipschitz and certified-accuracy table is :mod:`stability.report.certificates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis import intervals
from stability.analysis import metrics as M
from stability.analysis.grid_metrics import MIN_LR_POINTS
from stability.analysis.results import Sweep
from stability.record.files import COLLAPSED, DIVERGED, FINISHED
from stability.record.identity import LR, SEED
from stability.report.configs import (
    config_label,
    configuration_groups,
    display_columns,
    distinct_values,
    group_key,
    is_finite,
    sorted_keys,
)

LOSS_TAG = "train/loss"
# Below these, a distribution or a curve over the grid is noise: tables say "too few runs (n)", plots skip it.
MIN_EDF_RUNS = 10  # runs of one configuration for its error distribution (Xiao et al. draw dozens)
# MIN_LR_POINTS (stability.analysis.grid_metrics): learning rates of one configuration for its LR sensitivity and for a
# curve against the lr
# (column, label, decimals): the per-run numbers the configuration table aggregates over seeds.
RUN_METRICS: tuple[tuple[str, str, int], ...] = (
    ("best_val_acc", "best val acc", 3),
    ("final_val_acc", "final val acc", 3),
    ("test_acc", "test acc", 3),
    ("final_loss", "final train loss", 3),
    ("auc", "loss AUC", 3),
    ("steps_to_target", "steps to target", 0),
    ("n_spikes", "spikes", 1),
    ("max_spike", "max spike", 2),
    ("final_min_gap", "final-min gap", 3),
    ("max_attn_logit", "max attn logit", 1),
    ("max_log_z", "max log Z", 2),
)
# Metrics compared in the toggle-effect table (losses of diverged runs count at the initial loss).
EFFECT_METRICS: tuple[tuple[str, str, int], ...] = (
    ("best_val_acc", "best val acc", 3),
    ("final_val_acc", "final val acc", 3),
    ("final_loss", "final train loss", 3),
    ("auc", "loss AUC", 3),
)


@dataclass(frozen=True)
class ReportOptions:
    """What the report computes; the curve definitions are in :class:`stability.analysis.metrics.CurveOptions`."""

    curve: M.CurveOptions = field(default_factory=M.CurveOptions)
    lr_loss: str = "final_val_loss"  # LR sensitivity uses the final validation loss, as Wortsman et al.
    edf_metric: str = "final_val_acc"  # EDF error = 1 - this
    edf_within: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10)  # EDF read at these error gaps
    confidence: float = 0.95


# ------------------------------------------------------------------------------------- numeric tables


def runs_table(sweep: Sweep, runs: pd.DataFrame) -> pd.DataFrame:
    """Every run: configuration, seed, status, divergence step and reason or error, headline numbers."""
    cols = ["run", "status", *display_columns(sweep), *([SEED] if SEED in runs else []),
            "diverged_step", "divergence_reason", "error", "steps", "best_val_acc", "final_val_acc",
            "final_loss", "auc", "steps_to_target", "n_spikes"]
    cols = [c for c in dict.fromkeys(cols) if c in runs]
    return runs[cols].reset_index(drop=True)


def configuration_table(sweep: Sweep, runs: pd.DataFrame) -> pd.DataFrame:
    """Numbers per configuration: ``<metric>_mean/_std/_n``, ``n_runs``, ``n_diverged``, ``n_collapsed``,
    ``not_finished``.

    One row per combination of the configuration columns (all toggles and the varying hparams except
    the seed) that has at least one finished run; runs not finished are counted in ``not_finished``.
    """
    cfg = sweep.config_columns
    rows = []
    for members, done in configuration_groups(sweep, runs):
        row: dict[str, Any] = {c: done[c].iloc[0] for c in cfg}
        for col, _name, _ in RUN_METRICS:
            values = pd.to_numeric(done[col], errors="coerce") if col in done else pd.Series(dtype=float)
            values = values[np.isfinite(values)]
            row[f"{col}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            row[f"{col}_n"] = len(values)
        row["n_runs"] = len(done)
        row["n_diverged"] = int(done["diverged"].sum())
        row["n_collapsed"] = int(done["collapsed"].sum())
        others = members.loc[~members["status"].isin(FINISHED), "status"].value_counts()
        row["not_finished"] = ", ".join(f"{n} {s}" for s, n in others.items())
        rows.append(row)
    return pd.DataFrame(rows)


def effects_table(sweep: Sweep, finished: pd.DataFrame, options: ReportOptions,
                  gaps: list[str]) -> pd.DataFrame:
    """Toggle effects, long format: one row per (toggle, value, lr, metric), plus a ``failed`` row.

    A run pairs with the run that differs from it in this toggle alone: the same seed and the same value of
    every other configuration column, except hyperparameters the toggle determines (a warmup length that is 0
    exactly when warmup is off). Never another toggle: toggles that always move together (a bundle) give no
    pairs, and the gap is named, rather than charging the bundle to one of them. Each row is the mean ``on -
    off`` over the seeds (pairs of one seed averaged first) with its interval
    (:func:`stability.analysis.metrics.seed_effect`): ``mean, low, high, n`` (n = seeds). The ``failed`` row
    (diverged or collapsed) counts each run of the paired cells as one Bernoulli trial (``k_off/n_off``,
    ``k_on/n_on``, rates ``rate_off, rate_on``, ``pairs`` = paired cells): ``mean`` is ``rate_on - rate_off``
    and ``low, high`` Newcombe's interval (:func:`stability.analysis.intervals.newcombe_difference`), as the
    failure-rate claims get.
    """
    rows = []
    cols = ["toggle", "value", "baseline", LR, "metric", "mean", "low", "high", "n", "pairs", "rate_off",
            "rate_on", "k_off", "n_off", "k_on", "n_on"]
    if SEED not in finished:
        gaps.append("toggle effects: the runs record no seed, so effects over seeds cannot be computed")
        return pd.DataFrame(columns=cols)
    finished = finished.assign(failed=finished["status"].isin([DIVERGED, COLLAPSED]).astype(float))
    metric_cols = [m for m, _, _ in EFFECT_METRICS if m in finished]
    lrs = distinct_values(finished[LR]) if LR in finished and LR in sweep.varying_hparams else [None]
    for toggle in sweep.toggles:
        values = distinct_values(finished[toggle])
        if len(values) < 2:
            continue
        baseline = sweep.baselines.get(toggle, values[0])
        if not any(M.same_value(v, baseline) for v in values):
            gaps.append(f"effect of {toggle}: its baseline {baseline!r} has no finished run; compared with "
                        f"{values[0]!r} instead")
            baseline = values[0]
        match_on = [c for c in sweep.config_columns if c not in (toggle, SEED)
                    and (c in sweep.toggles or not _determined_by(finished, toggle, c))]
        for value in values:
            if M.same_value(value, baseline):
                continue
            n_pairs = 0
            for lr in lrs:
                at = finished if lr is None else finished[finished[LR].map(lambda x, v=lr: M.same_value(x, v))]
                treat = at[at[toggle].map(lambda x, v=value: M.same_value(x, v))]
                ctrl = at[at[toggle].map(lambda x, v=baseline: M.same_value(x, v))]
                base = {"toggle": toggle, "value": value, "baseline": baseline, LR: lr}
                for metric in metric_cols:
                    ci, _ = M.seed_effect(M.paired_by_seed(treat, ctrl, metric, match_on), options.confidence)
                    rows.append({**base, "metric": metric, "mean": ci.mean, "low": ci.low, "high": ci.high,
                                 "n": ci.n})
                rows.append({**base, **_failure_change(treat, ctrl, match_on, options.confidence)})
                n_pairs += rows[-1]["pairs"]
            if not n_pairs:
                gaps.append(f"effect of {toggle}={value} vs {baseline}: not in the effects table, no two finished "
                            f"runs differ in {toggle} alone (same seed and {', '.join(match_on) or 'nothing else'}); "
                            f"where it varies only inside a bundle, a claim can compare the bundle")
    return pd.DataFrame(rows, columns=cols)


def _failure_change(treat: pd.DataFrame, ctrl: pd.DataFrame, match_on: Sequence[str],
                    confidence: float) -> dict[str, Any]:
    """The ``failed`` row of the effects table: failures counted per run over the paired cells, and the change
    of the rate with Newcombe's interval (a t-interval over seeds of 0/1 values leaves [-1, 1] and has width
    zero when every seed agrees)."""
    counts = intervals.paired_counts(treat, ctrl, "failed", match_on)
    ci = intervals.newcombe_difference(counts.k_on, counts.n_on, counts.k_off, counts.n_off, confidence,
                                       n=len(counts.seeds))
    return {"metric": "failed", "mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n, "pairs": counts.pairs,
            "rate_off": counts.k_off / counts.n_off if counts.n_off else np.nan,
            "rate_on": counts.k_on / counts.n_on if counts.n_on else np.nan,
            "k_off": counts.k_off, "n_off": counts.n_off, "k_on": counts.k_on, "n_on": counts.n_on}


def _determined_by(frame: pd.DataFrame, toggle: str, column: str) -> bool:
    """True when ``column`` takes exactly one value per value of ``toggle`` (and varies): it moves with it."""
    if column in (toggle, SEED) or column not in frame:
        return False
    per_value = frame.groupby(frame[toggle].map(M.key_text))[column].agg(lambda s: len(distinct_values(s)))
    return bool((per_value == 1).all()) and len(distinct_values(frame[column])) > 1


def lr_sensitivity_table(sweep: Sweep, finished: pd.DataFrame, options: ReportOptions,
                         gaps: list[str]) -> pd.DataFrame:
    """LR sensitivity per configuration-without-lr (:func:`stability.analysis.metrics.lr_sensitivity`).

    ``too_few_lrs``: the configuration ran at fewer than MIN_LR_POINTS learning rates, where the "sensitivity"
    is one difference (or, at one lr, 0 by construction); the report says "too few runs" instead."""
    cfg = [c for c in sweep.config_columns if c != LR]
    key = group_key(finished, cfg)
    rows = []
    for k in sorted_keys(finished, cfg, sweep, key):
        g = finished[key == k]
        loss_col = options.lr_loss
        if loss_col not in g or not np.isfinite(pd.to_numeric(g[loss_col], errors="coerce")).any():
            if not g["diverged"].all():
                gaps.append(f"LR sensitivity of {config_label(sweep, g.iloc[0])}: no {loss_col}; "
                            f"used final_train_loss")
            loss_col = "final_train_loss"
        lrs = g[LR].astype(float).to_numpy()
        losses = pd.to_numeric(g.get(loss_col), errors="coerce").to_numpy(dtype=float)
        failed = (g["diverged"] | g["collapsed"]).astype(bool).to_numpy()  # count at the initial loss
        res = M.lr_sensitivity(lrs, losses, g["initial_loss_used"].astype(float).to_numpy(), failed,
                               g[SEED].to_numpy() if SEED in g else None)
        row = {c: g[c].iloc[0] for c in cfg}
        row.update(res._asdict())
        row.update(loss=loss_col, lr_min=float(lrs.min()), lr_max=float(lrs.max()), n_runs=len(g),
                   n_diverged=int(g["diverged"].sum()), n_collapsed=int(g["collapsed"].sum()),
                   too_few_lrs=res.n_lrs < MIN_LR_POINTS)
        rows.append(row)
    return pd.DataFrame(rows)


def divergence_table(sweep: Sweep, finished: pd.DataFrame) -> pd.DataFrame:
    """Fraction diverged, long format: toggle, value, warmup, lr, n, k, rate.

    One block per varying toggle (warmup is a dimension of every block, not a block of its own); a
    block "(all)" covers every run when no toggle but warmup varies.
    """
    has_warmup = "warmup" in finished
    has_lr = LR in finished
    toggles = [t for t in sweep.toggles if t != "warmup" and len(distinct_values(finished[t])) > 1]
    blocks = toggles or ["(all)"]
    rows = []
    for toggle in blocks:
        dims = ([toggle] if toggle != "(all)" else []) + (["warmup"] if has_warmup else []) + \
            ([LR] if has_lr else [])
        key = group_key(finished, dims)
        for k in sorted_keys(finished, dims, sweep, key):
            g = finished[key == k]
            first = g.iloc[0]
            rows.append({"toggle": toggle, "value": first[toggle] if toggle != "(all)" else "",
                         "warmup": first["warmup"] if has_warmup else None,
                         LR: first[LR] if has_lr else None, "n": len(g),
                         "k": int(g["diverged"].sum()), "rate": float(g["diverged"].mean()),
                         "k_collapsed": int(g["collapsed"].sum())})
    return pd.DataFrame(rows, columns=["toggle", "value", "warmup", LR, "n", "k", "rate", "k_collapsed"])


def edf_table(sweep: Sweep, finished: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    """Per toggle combination, over its hyperparameter settings and seeds: the best error and F(e).

    Error = 1 - ``edf_metric``; diverged runs (and runs without the metric) have infinite error. The
    reference is the best error of the same toggle combination (Xiao et al. compare each model's spread
    around its own best); ``best_err`` says where that is.
    """
    key = group_key(finished, sweep.toggles)
    rows = []
    for k in sorted_keys(finished, sweep.toggles, sweep, key):
        g = finished[key == k]
        err = _errors(g, options.edf_metric)
        row: dict[str, Any] = {t: g[t].iloc[0] for t in sweep.toggles}
        finite = err[np.isfinite(err)]
        row.update(n_runs=len(g), n_infinite=int((~np.isfinite(err)).sum()),
                   best_err=float(finite.min()) if len(finite) else np.nan,
                   median_gap=float(np.median(finite - finite.min())) if len(finite) else np.nan)
        for e in options.edf_within:
            row[f"within_{e:g}"] = M.fraction_within(err, e)
        rows.append(row)
    return pd.DataFrame(rows)


def spikes_table(report_runs: pd.DataFrame, curves: pd.DataFrame, finished: Sequence[str],
                 options: ReportOptions) -> pd.DataFrame:
    """Every loss spike of every finished run: run, step, peak_step, size (ratio), length (logged steps).

    Same definition as the per-configuration counts (:func:`stability.analysis.metrics.loss_spikes`), so a count
    in the table can be traced to its steps here.
    """
    rows = []
    loss = curves[curves["tag"] == LOSS_TAG]
    for name, g in loss.groupby("run", sort=True):
        if name not in finished:
            continue
        run = report_runs.loc[name]
        div = run["diverged_step"] if bool(run["diverged"]) and is_finite(run["diverged_step"]) else None
        steps, values = M.finite_prefix(g["step"], g["value"], div, through_divergence=False)  # as curve_stats
        l0 = run["initial_loss_used"] if is_finite(run["initial_loss_used"]) else \
            (values[0] if len(values) else 0.0)
        for sp in M.loss_spikes(steps, values, factor=options.curve.spike_factor,
                                min_excess=options.curve.spike_min_excess * float(l0),
                                alpha=options.curve.ema_alpha):
            rows.append({"run": name, **sp._asdict()})
    return pd.DataFrame(rows, columns=["run", "step", "peak_step", "size", "length"])


def edf_curves(sweep: Sweep, finished: pd.DataFrame, metric: str = "final_val_acc") -> dict[str, np.ndarray]:
    """Per toggle combination label: the run errors (1 - metric; inf for diverged), for EDF plots."""
    key = group_key(finished, sweep.toggles)
    out = {}
    for k in sorted_keys(finished, sweep.toggles, sweep, key):
        g = finished[key == k]
        out[config_label(sweep, g.iloc[0], columns=sweep.toggles)] = _errors(g, metric)
    return out


def _errors(g: pd.DataFrame, metric: str) -> np.ndarray:
    acc = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype=float) if metric in g else \
        np.full(len(g), np.nan)
    err = 1.0 - acc
    err[~np.isfinite(err) | g["diverged"].astype(bool).to_numpy()] = np.inf
    return err
