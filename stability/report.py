"""Comparison tables from a sweep folder, and the ``stability report`` command.

``stability report SWEEP [--out DIR] [--format md,csv,tex]`` reads the run records (through
:mod:`stability.results`), computes the statistics of :mod:`stability.metrics`, and writes

1. ``configurations``: per configuration (toggle combination, and learning rate when the grid has several)
   mean +- std over seeds of best/final validation accuracy, final training loss and the loss-curve
   statistics, with n runs and "k/n diverged";
2. ``effects``: for each toggle, "on minus off" over runs matched on every other axis (lr and seed
   included), mean and 95% t-interval over the n pairs, and the change of the divergence rate;
3. ``lr_sensitivity``: Wortsman et al. 2023's LR sensitivity per configuration, best LR, largest LR that
   did not diverge;
4. ``divergence``: fraction of runs diverged by toggle x warmup x learning rate;
5. ``edf``: Xiao et al. 2021's error distribution, fraction of runs within e of the best (when the grid
   samples hyperparameters);

and ``runs`` (every run with its status), as Markdown (``report.md`` gathers them), CSV (numbers, for
anything else) and LaTeX (booktabs, for papers), plus plots (``plots/``, PNG and PDF). Tables are built as
numeric DataFrames first (``Report.tables``, what the CSVs hold) and formatted afterwards
(``Report.text``: "mean +- std", "0.91 (n=1)").

What cannot be computed is named, not skipped: ``Report.gaps`` lists runs not finished, toggles without
matched pairs, missing curves..., and it is printed and written into ``report.md``.
Exit codes: 0 a report (possibly partial) was written; 1 nothing to report (no run finished, e.g. all
failed); 2 bad input (not a sweep folder, empty sweep, bad option).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stability import metrics as M
from stability.errors import ConfigError
from stability.results import FINISHED, Sweep, load_curves, load_sweep

FORMATS = ("md", "csv", "tex")
LOSS_TAG = "train/loss"

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
)
# Metrics compared in the toggle-effect table (losses of diverged runs count at the initial loss).
EFFECT_METRICS: tuple[tuple[str, str, int], ...] = (
    ("best_val_acc", "best val acc", 3),
    ("final_val_acc", "final val acc", 3),
    ("final_loss", "final train loss", 3),
    ("auc", "loss AUC", 3),
)
TITLES = {
    "configurations": "Per-configuration results (mean ± std over seeds)",
    "effects": "Effect of each toggle (on − off, matched pairs, 95% t-interval)",
    "lr_sensitivity": "Learning-rate sensitivity (Wortsman et al. 2023)",
    "divergence": "Runs diverged, by toggle × warmup × learning rate",
    "edf": "Error distribution (Xiao et al. 2021): fraction of runs within e of the best",
    "spikes": "Loss spikes (loss > spike factor × its smoothed history)",
    "runs": "All runs",
}


@dataclass(frozen=True)
class ReportOptions:
    """What the report computes; the curve definitions are in :class:`stability.metrics.CurveOptions`."""

    curve: M.CurveOptions = field(default_factory=M.CurveOptions)
    lr_loss: str = "final_val_loss"  # LR sensitivity uses the final validation loss, as Wortsman et al.
    edf_metric: str = "final_val_acc"  # EDF error = 1 - this
    edf_within: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10)  # EDF read at these error gaps
    confidence: float = 0.95


@dataclass
class Report:
    """Everything ``stability report`` writes, in memory (notebooks display the parts they want)."""

    sweep: Sweep
    runs: pd.DataFrame  # sweep.runs plus per-run curve statistics and final_loss/initial_loss_used
    curves: pd.DataFrame  # train/loss, long format (run, tag, step, value, wall_time)
    tables: dict[str, pd.DataFrame]  # numeric tables (the CSVs)
    text: dict[str, pd.DataFrame]  # the same, formatted (Markdown and LaTeX)
    gaps: list[str]  # what could not be reported, one line each
    notes: list[str]  # context: fixed settings, definitions
    options: ReportOptions = field(default_factory=ReportOptions)

    @property
    def has_results(self) -> bool:
        """True when at least one run finished (completed or diverged), i.e. there are numbers."""
        return bool(len(self.sweep.finished))


def build_report(sweep: Sweep | str | Path, options: ReportOptions | None = None,
                 curves: pd.DataFrame | None = None) -> Report:
    """Load a sweep and compute every table.

    Args:
        sweep: a sweep folder or a loaded :class:`~stability.results.Sweep`.
        options: definitions and thresholds (defaults documented in :mod:`stability.metrics`).
        curves: ``train/loss`` curves already loaded (default: read from the events).

    Raises:
        ConfigError: not a sweep folder / empty sweep (from :func:`~stability.results.load_sweep`).
    """
    options = options or ReportOptions()
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    gaps = list(sweep.problems)
    notes: list[str] = []
    finished_names = list(sweep.finished.index)
    if curves is None:
        curves = load_curves(sweep, tags=[LOSS_TAG], runs=finished_names)
    runs = _with_run_metrics(sweep, curves, options, gaps)
    tables: dict[str, pd.DataFrame] = {"runs": runs_table(sweep, runs)}
    gaps.extend(_status_gaps(sweep))
    if sweep.finished.empty:
        return Report(sweep, runs, curves, tables, {"runs": format_runs(tables["runs"])}, gaps, notes,
                      options)

    finished = runs.loc[finished_names]
    notes.extend(_fixed_settings(sweep, finished))
    tables["configurations"] = configuration_table(sweep, runs)
    tables["effects"] = effects_table(sweep, finished, options, gaps)
    if "lr" in sweep.varying_hparams:
        tables["lr_sensitivity"] = lr_sensitivity_table(sweep, finished, options, gaps)
    else:
        gaps.append("LR sensitivity: the sweep has a single learning rate; it needs a grid over lr")
    tables["divergence"] = divergence_table(sweep, finished)
    tables["spikes"] = spikes_table(runs, curves, finished_names, options)
    if [h for h in sweep.varying_hparams if h != "seed"]:
        tables["edf"] = edf_table(sweep, finished, options)
    else:
        gaps.append("EDF: no hyperparameter other than the seed varies, so there is no distribution of "
                    "hyperparameter settings to describe")
    text = {
        "runs": format_runs(tables["runs"]),
        "configurations": format_configurations(sweep, tables["configurations"]),
        "effects": format_effects(tables["effects"]),
        "divergence": format_divergence(tables["divergence"]),
        "spikes": format_spikes(tables["spikes"]),
    }
    if "lr_sensitivity" in tables:
        text["lr_sensitivity"] = format_lr_sensitivity(sweep, tables["lr_sensitivity"])
    if "edf" in tables:
        text["edf"] = format_edf(sweep, tables["edf"], options)
    order = ["configurations", "effects", "lr_sensitivity", "divergence", "edf", "spikes", "runs"]
    tables = {k: tables[k] for k in order if k in tables}
    text = {k: text[k] for k in order if k in text}
    return Report(sweep, runs, curves, tables, text, gaps, notes, options)


# --------------------------------------------------------------------------------------------- per run


def _with_run_metrics(sweep: Sweep, curves: pd.DataFrame, options: ReportOptions,
                      gaps: list[str]) -> pd.DataFrame:
    """The run table plus ``initial_loss_used``, ``final_loss`` and the loss-curve statistics."""
    runs = sweep.runs.copy()
    stat_cols = ["auc", "steps_to_target", "n_spikes", "max_spike", "final_min_gap", "final_smoothed"]
    for col in (*stat_cols, "initial_loss_used", "final_loss", "total_steps"):
        runs[col] = np.nan
    for col in ("initial_loss", "final_train_loss", "diverged_step"):
        if col not in runs:
            runs[col] = np.nan
    loss = curves[curves["tag"] == LOSS_TAG] if len(curves) else curves
    by_run = {name: g for name, g in loss.groupby("run")} if len(loss) else {}
    finished = sweep.finished.index
    no_curve = []
    for name in finished:
        g = by_run.get(name)
        initial = runs.at[name, "initial_loss"]
        if not _finite(initial) and g is not None and len(g):
            initial = float(g.sort_values("step")["value"].iloc[0])  # first logged loss stands in for step 0
        runs.at[name, "initial_loss_used"] = initial
        diverged = bool(runs.at[name, "diverged"])
        final = runs.at[name, "final_train_loss"]
        if diverged or not _finite(final):
            # A diverged run's last loss is NaN, inf or an explosion: count it as an untrained model's loss.
            final = initial if _finite(initial) else np.nan
        runs.at[name, "final_loss"] = final
        if g is None or g.empty:
            no_curve.append(name)
            continue
        runs.at[name, "total_steps"] = float(g["step"].max())
    # The planned length of a run = the longest finite curve among its configuration's runs that did not
    # diverge (same data, batch size and epochs), else in the whole sweep: a diverged run's AUC covers it.
    keys = _group_key(runs.loc[finished], sweep.config_columns)
    healthy = runs.loc[finished, "total_steps"].where(~runs.loc[finished, "diverged"].astype(bool))
    planned = healthy.groupby(keys).transform("max")
    planned = planned.fillna(healthy.max())
    for name in finished:
        g = by_run.get(name)
        if g is None or g.empty:
            continue
        g = g.sort_values("step")
        div_step = runs.at[name, "diverged_step"]
        stats = M.curve_stats(g["step"].to_numpy(), g["value"].to_numpy(),
                              initial_loss=runs.at[name, "initial_loss_used"],
                              diverged=bool(runs.at[name, "diverged"]),
                              diverged_step=float(div_step) if _finite(div_step) else None,
                              total_steps=planned.get(name) if _finite(planned.get(name)) else None,
                              options=options.curve)
        for col in stat_cols:
            runs.at[name, col] = stats[col]
    if no_curve:
        gaps.append(f"loss-curve statistics: {len(no_curve)} finished run(s) have no {LOSS_TAG} events: "
                    f"{_names(no_curve)}")
    missing_l0 = [n for n in finished if not _finite(runs.at[n, "initial_loss_used"])]
    if missing_l0:
        gaps.append(f"initial loss unknown (no summary initial_loss, no curve) for {_names(missing_l0)}: "
                    f"their diverged losses cannot be counted at the initial loss")
    return runs


# ------------------------------------------------------------------------------------- numeric tables


def runs_table(sweep: Sweep, runs: pd.DataFrame) -> pd.DataFrame:
    """Every run: configuration, seed, status, divergence step and reason or error, headline numbers."""
    cols = ["run", "status", *_display_columns(sweep), *(["seed"] if "seed" in runs else []),
            "diverged_step", "divergence_reason", "error", "steps", "best_val_acc", "final_val_acc",
            "final_loss", "auc", "steps_to_target", "n_spikes"]
    cols = [c for c in dict.fromkeys(cols) if c in runs]
    return runs[cols].reset_index(drop=True)


def configuration_table(sweep: Sweep, runs: pd.DataFrame) -> pd.DataFrame:
    """Numbers per configuration: ``<metric>_mean/_std/_n``, ``n_runs``, ``n_diverged``, ``not_finished``.

    One row per combination of the configuration columns (all toggles and the varying hparams except
    the seed) that has at least one finished run; runs not finished are counted in ``not_finished``.
    """
    cfg = sweep.config_columns
    key = _group_key(runs, cfg)
    finished_mask = runs["status"].isin(FINISHED)
    rows = []
    for k in _sorted_keys(runs[finished_mask], cfg, sweep, key[finished_mask]):
        members = runs[key == k]
        done = members[members["status"].isin(FINISHED)]
        row: dict[str, Any] = {c: done[c].iloc[0] for c in cfg}
        for col, _label, _ in RUN_METRICS:
            values = pd.to_numeric(done[col], errors="coerce") if col in done else pd.Series(dtype=float)
            values = values[np.isfinite(values)]
            row[f"{col}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
            row[f"{col}_n"] = len(values)
        row["n_runs"] = len(done)
        row["n_diverged"] = int(done["diverged"].sum())
        others = members.loc[~members["status"].isin(FINISHED), "status"].value_counts()
        row["not_finished"] = ", ".join(f"{n} {s}" for s, n in others.items())
        rows.append(row)
    return pd.DataFrame(rows)


def effects_table(sweep: Sweep, finished: pd.DataFrame, options: ReportOptions,
                  gaps: list[str]) -> pd.DataFrame:
    """Toggle effects, long format: one row per (toggle, value, metric) plus a ``diverged`` row.

    Pairs match on every configuration column except the toggle (and except columns the toggle
    determines, e.g. a warmup length that is 0 exactly when warmup is off) and on the seed. Metric rows
    hold ``mean, low, high, n``; the ``diverged`` row holds ``rate_off, rate_on, n`` (its mean = on - off).
    """
    rows = []
    match_all = [*sweep.config_columns, *(["seed"] if "seed" in finished else [])]
    metric_cols = [m for m, _, _ in EFFECT_METRICS if m in finished]
    for toggle in sweep.toggles:
        values = _distinct(finished[toggle])
        if len(values) < 2:
            continue
        baseline = sweep.baselines.get(toggle, values[0])
        if not any(M._same(v, baseline) for v in values):
            gaps.append(f"effect of {toggle}: its baseline {baseline!r} has no finished run; compared with "
                        f"{values[0]!r} instead")
            baseline = values[0]
        match_on = [c for c in match_all if c != toggle and not _determined_by(finished, toggle, c)]
        for value in values:
            if M._same(value, baseline):
                continue
            pairs = M.matched_pairs(finished, toggle, value, baseline, match_on, metric_cols)
            base = {"toggle": toggle, "value": value, "baseline": baseline}
            if pairs.empty:
                gaps.append(f"effect of {toggle}={value} vs {baseline}: no pair of finished runs agrees on "
                            f"every other axis ({', '.join(match_on) or 'none'})")
            for metric in metric_cols:
                ci = M.paired_effect(pairs, metric, options.confidence) if len(pairs) else M.Interval(
                    np.nan, np.nan, np.nan, 0)
                rows.append({**base, "metric": metric, "mean": ci.mean, "low": ci.low, "high": ci.high,
                             "n": ci.n, "rate_off": np.nan, "rate_on": np.nan})
            off, on, n = M.divergence_change(pairs)
            rows.append({**base, "metric": "diverged", "mean": on - off if n else np.nan, "low": np.nan,
                         "high": np.nan, "n": n, "rate_off": off, "rate_on": on})
    cols = ["toggle", "value", "baseline", "metric", "mean", "low", "high", "n", "rate_off", "rate_on"]
    return pd.DataFrame(rows, columns=cols)


def lr_sensitivity_table(sweep: Sweep, finished: pd.DataFrame, options: ReportOptions,
                         gaps: list[str]) -> pd.DataFrame:
    """LR sensitivity per configuration-without-lr (:func:`stability.metrics.lr_sensitivity`)."""
    cfg = [c for c in sweep.config_columns if c != "lr"]
    key = _group_key(finished, cfg)
    rows = []
    for k in _sorted_keys(finished, cfg, sweep, key):
        g = finished[key == k]
        loss_col = options.lr_loss
        if loss_col not in g or not np.isfinite(pd.to_numeric(g[loss_col], errors="coerce")).any():
            if not g["diverged"].all():
                gaps.append(f"LR sensitivity of {_label(sweep, g.iloc[0])}: no {loss_col}; "
                            f"used final_train_loss")
            loss_col = "final_train_loss"
        lrs = g["lr"].astype(float).to_numpy()
        losses = pd.to_numeric(g.get(loss_col), errors="coerce").to_numpy(dtype=float)
        res = M.lr_sensitivity(lrs, losses, g["initial_loss_used"].astype(float).to_numpy(),
                               g["diverged"].astype(bool).to_numpy(),
                               g["seed"].to_numpy() if "seed" in g else None)
        row = {c: g[c].iloc[0] for c in cfg}
        row.update(res._asdict())
        row.update(loss=loss_col, lr_min=float(lrs.min()), lr_max=float(lrs.max()), n_runs=len(g),
                   n_diverged=int(g["diverged"].sum()))
        rows.append(row)
    return pd.DataFrame(rows)


def divergence_table(sweep: Sweep, finished: pd.DataFrame) -> pd.DataFrame:
    """Fraction diverged, long format: toggle, value, warmup, lr, n, k, rate.

    One block per varying toggle (warmup is a dimension of every block, not a block of its own); a
    block "(all)" covers every run when no toggle but warmup varies.
    """
    has_warmup = "warmup" in finished
    has_lr = "lr" in finished
    toggles = [t for t in sweep.toggles if t != "warmup" and len(_distinct(finished[t])) > 1]
    blocks = toggles or ["(all)"]
    rows = []
    for toggle in blocks:
        dims = ([toggle] if toggle != "(all)" else []) + (["warmup"] if has_warmup else []) + \
            (["lr"] if has_lr else [])
        key = _group_key(finished, dims)
        for k in _sorted_keys(finished, dims, sweep, key):
            g = finished[key == k]
            first = g.iloc[0]
            rows.append({"toggle": toggle, "value": first[toggle] if toggle != "(all)" else "",
                         "warmup": first["warmup"] if has_warmup else None,
                         "lr": first["lr"] if has_lr else None, "n": len(g),
                         "k": int(g["diverged"].sum()), "rate": float(g["diverged"].mean())})
    return pd.DataFrame(rows, columns=["toggle", "value", "warmup", "lr", "n", "k", "rate"])


def edf_table(sweep: Sweep, finished: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    """Per toggle combination, over its hyperparameter settings and seeds: the best error and F(e).

    Error = 1 - ``edf_metric``; diverged runs (and runs without the metric) have infinite error. The
    reference is the best error of the same toggle combination (Xiao et al. compare each model's spread
    around its own best); ``best_err`` says where that is.
    """
    key = _group_key(finished, sweep.toggles)
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

    Same definition as the per-configuration counts (:func:`stability.metrics.loss_spikes`), so a count
    in the table can be traced to its steps here.
    """
    rows = []
    loss = curves[curves["tag"] == LOSS_TAG]
    for name, g in loss.groupby("run", sort=True):
        if name not in finished:
            continue
        run = report_runs.loc[name]
        div = run["diverged_step"] if bool(run["diverged"]) and _finite(run["diverged_step"]) else None
        steps, values = M.finite_prefix(g["step"], g["value"], div)
        l0 = run["initial_loss_used"] if _finite(run["initial_loss_used"]) else \
            (values[0] if len(values) else 0.0)
        for sp in M.loss_spikes(steps, values, factor=options.curve.spike_factor,
                                min_excess=options.curve.spike_min_excess * float(l0),
                                alpha=options.curve.ema_alpha):
            rows.append({"run": name, **sp._asdict()})
    return pd.DataFrame(rows, columns=["run", "step", "peak_step", "size", "length"])


def edf_curves(sweep: Sweep, finished: pd.DataFrame, metric: str = "final_val_acc") -> dict[str, np.ndarray]:
    """Per toggle combination label: the run errors (1 - metric; inf for diverged), for EDF plots."""
    key = _group_key(finished, sweep.toggles)
    out = {}
    for k in _sorted_keys(finished, sweep.toggles, sweep, key):
        g = finished[key == k]
        out[_label(sweep, g.iloc[0], columns=sweep.toggles)] = _errors(g, metric)
    return out


def _errors(g: pd.DataFrame, metric: str) -> np.ndarray:
    acc = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype=float) if metric in g else \
        np.full(len(g), np.nan)
    err = 1.0 - acc
    err[~np.isfinite(err) | g["diverged"].astype(bool).to_numpy()] = np.inf
    return err


# ----------------------------------------------------------------------------------------- formatting


def fmt_mean_std(mean: float, std: float, n: int, digits: int, n_expected: int | None = None) -> str:
    """``"0.912 ± 0.004"``; one value says so: ``"0.91 (n=1)"``; fewer values than runs: ``"(n=2)"``."""
    if n == 0 or not _finite(mean):
        return "–"
    if n == 1:
        return f"{mean:.{max(digits - 1, 0)}f} (n=1)"
    text = f"{mean:.{digits}f} ± {std:.{digits}f}"
    if n_expected is not None and n != n_expected:
        text += f" (n={n})"
    return text


def fmt_interval(ci_mean: float, low: float, high: float, n: int, digits: int) -> str:
    """``"+0.012 [−0.004, +0.028]"``; with one pair no interval can be given: ``"+0.01 (n=1)"``."""
    if n == 0 or not _finite(ci_mean):
        return "no pairs"
    if n == 1:
        return f"{ci_mean:+.{max(digits - 1, 0)}f} (n=1)"
    if not _finite(low):
        return f"{ci_mean:+.{digits}f} (n={n})"
    return f"{ci_mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def format_configurations(sweep: Sweep, table: pd.DataFrame) -> pd.DataFrame:
    shown = _display_columns(sweep)
    out = pd.DataFrame(index=table.index)
    if shown:
        for c in shown:
            out[c] = table[c].map(_fmt_value)
    else:
        out["configuration"] = "all runs"
    for col, label, digits in RUN_METRICS:
        if col == "steps_to_target" and table["auc_n"].any():  # "never" is a result: keep the column
            out[label] = [_fmt_reached(r) if r["auc_n"] else "–" for _, r in table.iterrows()]
            continue
        if f"{col}_n" not in table or not table[f"{col}_n"].any():
            continue
        out[label] = [fmt_mean_std(r[f"{col}_mean"], r[f"{col}_std"], int(r[f"{col}_n"]), digits,
                                   int(r["n_runs"])) for _, r in table.iterrows()]
    out["n"] = table["n_runs"].astype(int)
    out["diverged"] = _k_of_n(table["n_diverged"], table["n_runs"])
    if table["not_finished"].astype(bool).any():
        out["not finished"] = table["not_finished"]
    return out.reset_index(drop=True)


def _fmt_reached(r: pd.Series) -> str:
    n, reached = int(r["n_runs"]), int(r["steps_to_target_n"])
    if reached == 0:
        return "never"
    if reached < n:  # the mean is over the runs that got there; say how many did
        text = f"{r['steps_to_target_mean']:.0f}" if reached == 1 else \
            f"{r['steps_to_target_mean']:.0f} ± {r['steps_to_target_std']:.0f}"
        return f"{text} [{reached}/{n} reached]"
    return fmt_mean_std(r["steps_to_target_mean"], r["steps_to_target_std"], reached, 0)


def format_effects(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    labels = {m: (label, d) for m, label, d in EFFECT_METRICS}
    for (toggle, value), g in table.groupby(["toggle", "value"], sort=False):
        base = g["baseline"].iloc[0]
        row: dict[str, Any] = {"toggle": toggle, "on − off": f"{_fmt_value(value)} − {_fmt_value(base)}"}
        div = g[g["metric"] == "diverged"].iloc[0]
        n = int(div["n"])
        row["pairs"] = n
        for _, r in g[g["metric"] != "diverged"].iterrows():
            label, digits = labels[r["metric"]]
            cell = fmt_interval(r["mean"], r["low"], r["high"], int(r["n"]), digits)
            if 1 < int(r["n"]) != n:
                cell += f" (n={int(r['n'])})"
            row[label] = cell
        if n:
            k_off, k_on = round(div["rate_off"] * n), round(div["rate_on"] * n)
            change = 100 * (div["rate_on"] - div["rate_off"])
            row["diverged off → on"] = f"{k_off}/{n} → {k_on}/{n} ({change:+.0f} pp)"
        else:
            row["diverged off → on"] = "no pairs"
        rows.append(row)
    return pd.DataFrame(rows)


def format_lr_sensitivity(sweep: Sweep, table: pd.DataFrame) -> pd.DataFrame:
    shown = [c for c in _display_columns(sweep) if c != "lr"]
    out = pd.DataFrame(index=table.index)
    for c in shown:
        out[c] = table[c].map(_fmt_value)
    if not shown:
        out["configuration"] = "all runs"
    out["LR sensitivity"] = [fmt_mean_std(r["value"], r["std"], int(r["n_seeds"]), 3)
                             if r["n_seeds"] else "– (no seed at every lr)" for _, r in table.iterrows()]
    out["best lr"] = table["best_lr"].map(_fmt_value)
    out["best loss"] = table["best_loss"].map(lambda v: f"{v:.3f}" if _finite(v) else "–")
    out["largest lr not diverged"] = table["max_stable_lr"].map(
        lambda v: _fmt_value(v) if _finite(v) else "none")
    out["lr grid"] = [f"{int(r['n_lrs'])} from {r['lr_min']:g} to {r['lr_max']:g}"
                      for _, r in table.iterrows()]
    out["diverged"] = _k_of_n(table["n_diverged"], table["n_runs"])
    out["loss"] = table["loss"]
    return out.reset_index(drop=True)


def format_divergence(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return pd.DataFrame()
    t = table.copy()
    t["cell"] = [f"{k}/{n}" for k, n in zip(t["k"], t["n"], strict=True)]
    index = ["toggle", "value"] + (["warmup"] if t["warmup"].notna().any() else [])
    t["value"] = t["value"].map(_fmt_value)
    if "warmup" in index:
        t["warmup"] = t["warmup"].map(_fmt_value)
    if t["lr"].notna().any():
        t["lr"] = t["lr"].map(lambda v: f"lr={v:g}")
        wide = t.pivot_table(index=index, columns="lr", values="cell", aggfunc="first", sort=False)
        lrs = sorted(t["lr"].unique(), key=lambda s: float(s[3:]))
        wide = wide[lrs].fillna("–")
    else:
        wide = t.set_index(index)[["cell"]].rename(columns={"cell": "diverged"})
    wide.columns.name = None
    return wide.reset_index()


def format_edf(sweep: Sweep, table: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    shown = [c for c in _display_columns(sweep) if c in sweep.toggles]
    out = pd.DataFrame(index=table.index)
    for c in shown:
        out[c] = table[c].map(_fmt_value)
    if not shown:
        out["configuration"] = "all runs"
    out["runs"] = table["n_runs"].astype(int)
    out["best error"] = table["best_err"].map(lambda v: f"{v:.3f}" if _finite(v) else "–")
    for e in options.edf_within:
        col = f"within_{e:g}"
        out[f"within {e:g}"] = [f"{f:.2f} ({round(f * n)}/{n})" for f, n in
                                zip(table[col], table["n_runs"].astype(int), strict=True)]
    out["diverged/missing"] = table["n_infinite"].astype(int)
    return out.reset_index(drop=True)


def format_spikes(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    out["size"] = out["size"].map(lambda v: f"{v:.2f}x")
    return out


def format_runs(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for col in out.columns:
        if col in ("best_val_acc", "final_val_acc", "final_loss", "auc"):
            out[col] = out[col].map(lambda v: f"{v:.3f}" if _finite(v) else "–")
        elif col in ("diverged_step", "steps", "steps_to_target", "n_spikes"):
            out[col] = out[col].map(lambda v: f"{v:.0f}" if _finite(v) else "–")
        else:
            out[col] = out[col].map(lambda v: "–" if _isna(v) else _fmt_value(v))
    return out


# -------------------------------------------------------------------------------------------- writing


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown (pandas + tabulate); every cell already formatted as text."""
    if table.empty:
        return "_(empty)_"
    return table.to_markdown(index=False, disable_numparse=True)


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs ``tabular`` (pandas ``to_latex``), special characters escaped, ± as ``$\\pm$``."""
    if table.empty:
        return "% (empty table)\n"
    body = table.astype(str).to_latex(index=False, escape=True)
    for plain, tex in (("±", r"$\pm$"), ("−", "--"), ("→", r"$\to$"), ("–", "--")):
        body = body.replace(plain, tex)
    if caption is None:
        return body
    label_line = f"\\label{{{label}}}\n" if label else ""
    return (f"\\begin{{table}}[t]\n\\centering\n\\caption{{{_tex_escape(caption)}}}\n{label_line}{body}"
            f"\\end{{table}}\n")


def write_report(report: Report, out_dir: str | Path, formats: Sequence[str] = FORMATS,
                 plots: bool = True) -> list[Path]:
    """Write every table in every format (plus ``report.md`` and, with ``plots``, ``plots/``).

    Returns the paths written. CSVs hold the numeric tables (``Report.tables``); Markdown and LaTeX the
    formatted ones (``Report.text``).
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"--format: got {','.join(bad)!r}; valid values: {', '.join(FORMATS)} "
                          f"(comma-separated)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, table in report.tables.items():
        if "csv" in formats:
            written.append(_write(out / f"{name}.csv", table.to_csv(index=False)))
        if "md" in formats and name in report.text:
            written.append(_write(out / f"{name}.md", to_markdown(report.text[name]) + "\n"))
        if "tex" in formats and name in report.text:
            written.append(_write(out / f"{name}.tex", to_latex(report.text[name], TITLES[name],
                                                                 f"tab:{name}")))
    figures: list[Path] = []
    if plots and report.has_results:
        from stability import plots as P  # matplotlib only when plots are asked for

        figures = P.report_plots(report, out / "plots")
        written.extend(figures)
    if "md" in formats:
        written.append(_write(out / "report.md", render_markdown(report, figures, out)))
    return written


def render_markdown(report: Report, figures: Sequence[Path] = (), base: Path | None = None) -> str:
    """The whole report as one Markdown document: counts, notes, every table, gaps, plots."""
    sweep = report.sweep
    counts = sweep.runs["status"].value_counts()
    lines = [f"# Report: {sweep.path.name}", "",
             f"Sweep folder `{sweep.path}`: {len(sweep.runs)} runs ("
             + ", ".join(f"{n} {s}" for s, n in counts.items()) + ").", ""]
    lines += [f"- {n}" for n in report.notes]
    lines += ["", *_definitions(), ""]
    for name, table in report.text.items():
        lines += [f"## {TITLES[name]}", "", to_markdown(table), ""]
    lines += ["## Gaps", ""]
    lines += [f"- {g}" for g in report.gaps] or ["None: every run finished and every table is complete."]
    if figures:
        lines += ["", "## Plots", ""]
        for f in figures:
            if f.suffix == ".png":
                rel = f.relative_to(base) if base is not None else f
                lines.append(f"![{f.stem}]({rel.as_posix()})")
    return "\n".join(lines) + "\n"


def _definitions() -> list[str]:
    return [
        "Definitions: accuracies are fractions; *final train loss* counts a diverged run at its initial "
        "loss; *loss AUC* = mean training loss over normalised steps (diverged runs at the initial loss "
        "after divergence); *steps to target* = first step where the smoothed loss ≤ the target; *spikes* = "
        "runs of steps where the loss exceeds its smoothed history by the spike factor, *max spike* = "
        "largest ratio; "
        "*final-min gap* = last minus minimum smoothed loss (stability.metrics has the formulas). "
        "A cell with one value says (n=1); effects are mean [95% t-interval] over matched pairs.",
    ]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str]) -> int:
    """``stability report SWEEP [--out DIR] [--format md,csv,tex] [--no-plots]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="stability report",
        description="Tables and plots from a sweep folder's run records: per-configuration results, toggle "
                    "effects, LR sensitivity, divergence, error distributions.")
    parser.add_argument("sweep", help="sweep folder (one sub-folder per run)")
    parser.add_argument("--out", help="output folder (default: SWEEP/report)")
    parser.add_argument("--format", default="md,csv,tex", help="comma-separated subset of md,csv,tex")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG/PDF plots")
    parser.add_argument("--target-loss", type=float, default=None,
                        help="absolute loss for 'steps to target' (default: target-fraction x initial loss)")
    parser.add_argument("--target-fraction", type=float, default=0.25,
                        help="'steps to target' waits for this fraction of the initial loss (default 0.25)")
    parser.add_argument("--spike-factor", type=float, default=1.5,
                        help="a loss above this factor x its smoothed history is a spike")
    args = parser.parse_args(argv)
    try:
        formats = [f.strip() for f in args.format.split(",") if f.strip()]
        options = ReportOptions(curve=M.CurveOptions(target_loss=args.target_loss,
                                                     target_fraction=args.target_fraction,
                                                     spike_factor=args.spike_factor))
        bad = [f for f in formats if f not in FORMATS] or ([] if formats else [args.format])
        if bad:
            raise ConfigError(f"--format: got {args.format!r}; valid values: {', '.join(FORMATS)} "
                              f"(comma-separated)")
        report = build_report(args.sweep, options)
        out = Path(args.out) if args.out else Path(args.sweep) / "report"
        written = write_report(report, out, formats, plots=not args.no_plots)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not report.has_results:
        print(f"error: nothing to report in {args.sweep}: {_why_nothing(report.sweep)}", file=sys.stderr)
        print(f"(the run list is in {out})", file=sys.stderr)
        return 1
    print(f"# {TITLES['configurations']}\n")
    print(to_markdown(report.text["configurations"]))
    print(f"\n# {TITLES['effects']}\n")
    print(to_markdown(report.text["effects"]) if not report.text["effects"].empty
          else "(no toggle varies in this sweep)")
    for gap in report.gaps:
        print(f"warning: {gap}", file=sys.stderr)
    print(f"\nwrote {len(written)} files to {out} (main: {out / 'report.md'})" if "md" in formats
          else f"\nwrote {len(written)} files to {out}")
    return 0


def _k_of_n(k: pd.Series, n: pd.Series) -> list[str]:
    return [f"{int(a)}/{int(b)}" for a, b in zip(k, n, strict=True)]


def _why_nothing(sweep: Sweep) -> str:
    runs = sweep.runs
    counts = runs["status"].value_counts()
    parts = ", ".join(f"{n} {s}" for s, n in counts.items())
    if (runs["status"] == "failed").all():
        errors = runs["error"].dropna().astype(str)
        first = errors.value_counts()
        detail = "; ".join(f"{n}x {e.splitlines()[0][:200]}" for e, n in first.head(3).items()) \
            if len(first) else "no error recorded"
        return f"all {len(runs)} runs failed ({detail})"
    return f"no run has finished yet ({parts})"


# ---------------------------------------------------------------------------------------------- helpers


def _status_gaps(sweep: Sweep) -> list[str]:
    gaps = []
    runs = sweep.runs
    for status, what in (("failed", "failed (raised an exception; not in the tables)"),
                         ("running", "still running (not in the tables yet)"),
                         ("incomplete", "incomplete: no summary and no recent activity (cut off?)"),
                         ("pending", "pending: planned, never started")):
        names = list(runs.index[runs["status"] == status])
        if not names:
            continue
        line = f"{len(names)} run(s) {what}: {_names(names)}"
        if status == "failed":
            errs = runs.loc[names, "error"].dropna().astype(str)
            if len(errs):
                line += f"; first error: {errs.iloc[0].splitlines()[0][:200]}"
        gaps.append(line)
    return gaps


def _fixed_settings(sweep: Sweep, finished: pd.DataFrame) -> list[str]:
    fixed = [f"{c}={_fmt_value(finished[c].iloc[0])}" for c in [*sweep.toggles, *sweep.hparams]
             if c in finished and c != "seed" and len(_distinct(finished[c])) == 1]
    notes = []
    varying = _display_columns(sweep)
    notes.append("Varied: " + (", ".join(varying) if varying else "nothing but the seed"))
    if "seed" in finished:
        notes.append(f"Seeds: {', '.join(_fmt_value(s) for s in _distinct(finished['seed']))}")
    if fixed:
        notes.append("Fixed: " + ", ".join(fixed))
    return notes


def _display_columns(sweep: Sweep) -> list[str]:
    """Configuration columns worth a table column: those that vary among the runs (others are noted once)."""
    frame = sweep.finished if len(sweep.finished) else sweep.runs
    return [c for c in sweep.config_columns if c in frame and len(_distinct(frame[c])) > 1]


def _determined_by(frame: pd.DataFrame, toggle: str, column: str) -> bool:
    """True when ``column`` takes exactly one value per value of ``toggle`` (and varies): it moves with it."""
    if column in (toggle, "seed") or column not in frame:
        return False
    per_value = frame.groupby(frame[toggle].map(M._key_text))[column].agg(lambda s: len(_distinct(s)))
    return bool((per_value == 1).all()) and len(_distinct(frame[column])) > 1


def _group_key(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    cols = [c for c in columns if c in frame]
    if not cols or frame.empty:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[cols].map(M._key_text).agg("|".join, axis=1)


def _sorted_keys(frame: pd.DataFrame, columns: Sequence[str], sweep: Sweep, key: pd.Series) -> list[str]:
    """Group keys with the baseline first, then toggles alphabetically and numbers ascending."""
    cols = [c for c in columns if c in frame]
    first = frame.groupby(key, sort=False).head(1)

    def order(row: pd.Series) -> tuple:
        out = []
        for c in cols:
            v = row[c]
            if c in sweep.baselines:
                out.append((0 if M._same(v, sweep.baselines[c]) else 1, 0.0, str(v)))
            elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                out.append((0, float(v) if _finite(v) else math.inf, ""))
            else:
                out.append((0, 0.0, str(v)))
        return tuple(out)

    ranked = sorted(((order(r), key[i]) for i, r in first.iterrows()), key=lambda t: t[0])
    return [k for _, k in ranked]


def _label(sweep: Sweep, row: pd.Series, columns: Sequence[str] | None = None) -> str:
    """A configuration's name: its non-baseline toggles and varying hparams, or "baseline"."""
    shown = _display_columns(sweep)
    cols = [c for c in (columns if columns is not None else sweep.config_columns) if c in shown]
    parts = []
    for c in cols:
        if c in sweep.baselines and M._same(row[c], sweep.baselines[c]):
            continue
        parts.append(f"{c}={_fmt_value(row[c])}")
    return ",".join(parts) or "baseline"


def _distinct(series: pd.Series) -> list[Any]:
    seen: dict[str, Any] = {}
    for v in series:
        seen.setdefault(M._key_text(v), v)
    return list(seen.values())


def _fmt_value(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return "–" if math.isnan(v) else f"{v:g}"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return "–" if v is None else str(v)


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _isna(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _tex_escape(text: str) -> str:
    for plain, tex in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                       ("±", r"$\pm$"), ("−", "--"), ("×", r"$\times$")):
        text = text.replace(plain, tex)
    return text

