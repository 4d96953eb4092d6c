"""The report's numbers: each table as a numeric DataFrame (what the CSVs hold), from a loaded sweep.

The statistics are those of :mod:`stability.analysis.metrics`; :mod:`stability.report.formatting` turns the tables into
text. The helpers at the end (configuration keys, order and names; value checks and text) are shared with
the formatting, :mod:`stability.report.build` and :mod:`stability.report.figures`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis import metrics as M
from stability.analysis.results import Sweep
from stability.record.files import COLLAPSED, DIVERGED, FINISHED

LOSS_TAG = "train/loss"
# Below these, a distribution or a curve over the grid is noise: tables say "too few runs (n)", plots skip it.
MIN_EDF_RUNS = 10  # runs of one configuration for its error distribution (Xiao et al. draw dozens)
MIN_LR_POINTS = 3  # learning rates of one configuration for a curve against the lr
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
    cols = ["run", "status", *display_columns(sweep), *(["seed"] if "seed" in runs else []),
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
    off`` over the seeds (pairs of one seed averaged first) with its interval (:func:`stability.analysis.metrics.seed_effect`):
    ``mean, low, high, n`` (n = seeds); the ``failed`` row (diverged or collapsed) holds ``rate_off, rate_on``
    over the paired cells and ``pairs``, their count.
    """
    rows = []
    cols = ["toggle", "value", "baseline", "lr", "metric", "mean", "low", "high", "n", "pairs", "rate_off",
            "rate_on"]
    if "seed" not in finished:
        gaps.append("toggle effects: the runs record no seed, so effects over seeds cannot be computed")
        return pd.DataFrame(columns=cols)
    finished = finished.assign(failed=finished["status"].isin([DIVERGED, COLLAPSED]).astype(float))
    metric_cols = [m for m, _, _ in EFFECT_METRICS if m in finished]
    lrs = distinct_values(finished["lr"]) if "lr" in finished and "lr" in sweep.varying_hparams else [None]
    for toggle in sweep.toggles:
        values = distinct_values(finished[toggle])
        if len(values) < 2:
            continue
        baseline = sweep.baselines.get(toggle, values[0])
        if not any(M.same_value(v, baseline) for v in values):
            gaps.append(f"effect of {toggle}: its baseline {baseline!r} has no finished run; compared with "
                        f"{values[0]!r} instead")
            baseline = values[0]
        match_on = [c for c in sweep.config_columns if c not in (toggle, "seed")
                    and (c in sweep.toggles or not _determined_by(finished, toggle, c))]
        for value in values:
            if M.same_value(value, baseline):
                continue
            n_pairs = 0
            for lr in lrs:
                at = finished if lr is None else finished[finished["lr"].map(lambda x, v=lr: M.same_value(x, v))]
                treat = at[at[toggle].map(lambda x, v=value: M.same_value(x, v))]
                ctrl = at[at[toggle].map(lambda x, v=baseline: M.same_value(x, v))]
                base = {"toggle": toggle, "value": value, "baseline": baseline, "lr": lr}
                for metric in metric_cols:
                    ci, _ = M.seed_effect(M.paired_by_seed(treat, ctrl, metric, match_on), options.confidence)
                    rows.append({**base, "metric": metric, "mean": ci.mean, "low": ci.low, "high": ci.high,
                                 "n": ci.n})
                failed = M.paired_by_seed(treat, ctrl, "failed", match_on)
                ci, _ = M.seed_effect(failed, options.confidence)
                n_pairs += len(failed)
                rows.append({**base, "metric": "failed", "mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n,
                             "pairs": len(failed), "rate_off": failed["off"].mean() if len(failed) else np.nan,
                             "rate_on": failed["on"].mean() if len(failed) else np.nan})
            if not n_pairs:
                gaps.append(f"effect of {toggle}={value} vs {baseline}: not in the effects table, no two finished "
                            f"runs differ in {toggle} alone (same seed and {', '.join(match_on) or 'nothing else'}); "
                            f"where it varies only inside a bundle, a claim can compare the bundle")
    return pd.DataFrame(rows, columns=cols)


def _determined_by(frame: pd.DataFrame, toggle: str, column: str) -> bool:
    """True when ``column`` takes exactly one value per value of ``toggle`` (and varies): it moves with it."""
    if column in (toggle, "seed") or column not in frame:
        return False
    per_value = frame.groupby(frame[toggle].map(M.key_text))[column].agg(lambda s: len(distinct_values(s)))
    return bool((per_value == 1).all()) and len(distinct_values(frame[column])) > 1


def lr_sensitivity_table(sweep: Sweep, finished: pd.DataFrame, options: ReportOptions,
                         gaps: list[str]) -> pd.DataFrame:
    """LR sensitivity per configuration-without-lr (:func:`stability.analysis.metrics.lr_sensitivity`)."""
    cfg = [c for c in sweep.config_columns if c != "lr"]
    key = group_key(finished, cfg)
    rows = []
    for k in _sorted_keys(finished, cfg, sweep, key):
        g = finished[key == k]
        loss_col = options.lr_loss
        if loss_col not in g or not np.isfinite(pd.to_numeric(g[loss_col], errors="coerce")).any():
            if not g["diverged"].all():
                gaps.append(f"LR sensitivity of {config_label(sweep, g.iloc[0])}: no {loss_col}; "
                            f"used final_train_loss")
            loss_col = "final_train_loss"
        lrs = g["lr"].astype(float).to_numpy()
        losses = pd.to_numeric(g.get(loss_col), errors="coerce").to_numpy(dtype=float)
        failed = (g["diverged"] | g["collapsed"]).astype(bool).to_numpy()  # count at the initial loss
        res = M.lr_sensitivity(lrs, losses, g["initial_loss_used"].astype(float).to_numpy(), failed,
                               g["seed"].to_numpy() if "seed" in g else None)
        row = {c: g[c].iloc[0] for c in cfg}
        row.update(res._asdict())
        row.update(loss=loss_col, lr_min=float(lrs.min()), lr_max=float(lrs.max()), n_runs=len(g),
                   n_diverged=int(g["diverged"].sum()), n_collapsed=int(g["collapsed"].sum()))
        rows.append(row)
    return pd.DataFrame(rows)


def divergence_table(sweep: Sweep, finished: pd.DataFrame) -> pd.DataFrame:
    """Fraction diverged, long format: toggle, value, warmup, lr, n, k, rate.

    One block per varying toggle (warmup is a dimension of every block, not a block of its own); a
    block "(all)" covers every run when no toggle but warmup varies.
    """
    has_warmup = "warmup" in finished
    has_lr = "lr" in finished
    toggles = [t for t in sweep.toggles if t != "warmup" and len(distinct_values(finished[t])) > 1]
    blocks = toggles or ["(all)"]
    rows = []
    for toggle in blocks:
        dims = ([toggle] if toggle != "(all)" else []) + (["warmup"] if has_warmup else []) + \
            (["lr"] if has_lr else [])
        key = group_key(finished, dims)
        for k in _sorted_keys(finished, dims, sweep, key):
            g = finished[key == k]
            first = g.iloc[0]
            rows.append({"toggle": toggle, "value": first[toggle] if toggle != "(all)" else "",
                         "warmup": first["warmup"] if has_warmup else None,
                         "lr": first["lr"] if has_lr else None, "n": len(g),
                         "k": int(g["diverged"].sum()), "rate": float(g["diverged"].mean()),
                         "k_collapsed": int(g["collapsed"].sum())})
    return pd.DataFrame(rows, columns=["toggle", "value", "warmup", "lr", "n", "k", "rate", "k_collapsed"])


def edf_table(sweep: Sweep, finished: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    """Per toggle combination, over its hyperparameter settings and seeds: the best error and F(e).

    Error = 1 - ``edf_metric``; diverged runs (and runs without the metric) have infinite error. The
    reference is the best error of the same toggle combination (Xiao et al. compare each model's spread
    around its own best); ``best_err`` says where that is.
    """
    key = group_key(finished, sweep.toggles)
    rows = []
    for k in _sorted_keys(finished, sweep.toggles, sweep, key):
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
        steps, values = M.finite_prefix(g["step"], g["value"], div)
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
    for k in _sorted_keys(finished, sweep.toggles, sweep, key):
        g = finished[key == k]
        out[config_label(sweep, g.iloc[0], columns=sweep.toggles)] = _errors(g, metric)
    return out


def _errors(g: pd.DataFrame, metric: str) -> np.ndarray:
    acc = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype=float) if metric in g else \
        np.full(len(g), np.nan)
    err = 1.0 - acc
    err[~np.isfinite(err) | g["diverged"].astype(bool).to_numpy()] = np.inf
    return err


# ------------------------------------------------------------------------ Lipschitz bounds, certificates

# summary.json's Lipschitz fields (stability.record.files.RunSummary); certified accuracies are dicts radius ->
# accuracy that the run table flattens to columns "certified_acc.<radius>" (split on the first dot).
LIPSCHITZ_FIELDS = ("lipschitz_upper", "lipschitz_backbone", "lipschitz_unbounded", "lipschitz_lower")
CERTIFIED = "certified_acc"  # head-aware certificate (LipShiFT's pairwise margin, Menon et al. 2025)
CERTIFIED_SQRT2 = "certified_acc_sqrt2"  # the plain f_y - max f_i > sqrt(2) L r form (Tsuzuku et al. 2018)
# LipShiFT's evaluation radius 36/255 as summary.json writes it (4 significant digits, the key
# stability.model.lipschitz.bounds.DEFAULT_RADIUS gets; not imported from there: that module imports torch).
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


# -------------------------------------------------------------------------------------------- helpers


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
    for k in _sorted_keys(runs[finished_mask], cfg, sweep, key[finished_mask]):
        members = runs[key == k]
        groups.append((members, members[members["status"].isin(FINISHED)]))
    return groups


def _sorted_keys(frame: pd.DataFrame, columns: Sequence[str], sweep: Sweep, key: pd.Series) -> list[str]:
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
    """A configuration's name, e.g. ``"norm=centernorm,lr=0.01"``, or ``"baseline"``.

    Names the values of ``row`` in ``columns`` (default: every configuration column) that vary in the sweep
    (:func:`display_columns`), leaving out toggles at their baseline: the label says what differs."""
    shown = display_columns(sweep)
    cols = [c for c in (columns if columns is not None else sweep.config_columns) if c in shown]
    parts = []
    for c in cols:
        if c in sweep.baselines and M.same_value(row[c], sweep.baselines[c]):
            continue
        parts.append(f"{c}={format_value(row[c])}")
    return ",".join(parts) or "baseline"


def short_labels(sweep: Sweep, rows: Sequence[pd.Series]) -> list[str]:
    """Names for configurations (one row each): :func:`config_label` without the hyperparameters the toggles
    determine.

    A grid whose cells differ in recipe as well as in toggles (a LipShiFT cell with its own weight decay,
    drop-path rate...) would name every setting of that recipe; a hyperparameter that takes one value per
    toggle combination says nothing the toggles do not, so it is left out of the name (the table row still
    holds it). One that varies within a toggle combination (the learning rate of a grid over lr, a margin)
    stays in every name; the toggles' baseline is named "baseline" even then (``"baseline,lr=0.01"``).
    """
    frame = pd.DataFrame(list(rows))
    toggles = group_key(frame, sweep.toggles)
    keep = [c for c in display_columns(sweep) if c in sweep.toggles
            or frame.groupby(toggles)[c].agg(lambda v: len(distinct_values(v))).max() > 1]
    labels = []
    for r in rows:
        label = config_label(sweep, r, columns=keep)
        at_baseline = config_label(sweep, r, columns=sweep.toggles) == "baseline"
        labels.append(f"baseline,{label}" if at_baseline and label != "baseline" else label)  # not "lr=0.01"
    return labels


def distinct_values(series: pd.Series) -> list[Any]:
    """The different values of ``series`` in order of first appearance, NaN and None counted as one value.

    ``Series.unique`` would keep every NaN apart and fail on unhashable values; this compares the values as
    :func:`stability.analysis.metrics.key_text` does, so "does this column vary?" has the same answer as the grouping.
    """
    seen: dict[str, Any] = {}
    for v in series:
        seen.setdefault(M.key_text(v), v)
    return list(seen.values())


def format_value(v: Any) -> str:
    """A configuration value as people read it in a table or a label: ``0.001``, ``3``, ``True``, ``"–"``.

    Floats in ``g`` format (no ``0.0010000`` or ``3.0``), integers and booleans as themselves (numpy's too,
    which pandas hands out), and a missing value (None, NaN) as a dash rather than "None" or "nan".
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
