"""A whole :class:`Report` from one sweep: per-run statistics, every table, its text, the gaps and notes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stability.analysis import metrics as M
from stability.analysis.results import Sweep, load_curves, load_sweep
from stability.record.identity import LR, SEED
from stability.report import failures as F
from stability.report.certificates import bound_violations, has_lipschitz, lipschitz_table
from stability.report.configs import display_columns, distinct_values, format_cell, group_key, is_finite
from stability.report.failure_map import failure_map_table, format_failure_map
from stability.report.formatting import (
    format_configurations,
    format_divergence,
    format_edf,
    format_effects,
    format_lipschitz,
    format_lr_sensitivity,
    format_runs,
    format_spikes,
)
from stability.report.study_tables import study_tables
from stability.report.tables import (
    LOSS_TAG,
    MIN_EDF_RUNS,
    MIN_LR_POINTS,
    ReportOptions,
    configuration_table,
    divergence_table,
    edf_table,
    effects_table,
    lr_sensitivity_table,
    runs_table,
    spikes_table,
)

CURVE_COLUMNS = ["run", "tag", "step", "value", "wall_time"]
LIPSCHITZ_NOTE = (
    "Lipschitz: bounds are l2 constants from pixels in [0, 1] to the logits (backbone: to the head's input); the "
    "lower bound is a slope the network was seen to reach. Certified = correct and provably unchanged within "
    "the l2 radius (LipShiFT's head-aware certificate with the backbone bound; sqrt(2) L form: top-two logit "
    "margin > sqrt(2) x upper bound x radius). Certified accuracies are fractions of the test images, as test acc "
    "is, so certified accuracy at radius 0 is test acc (in the CSV).")


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
    # the failed runs' telemetry (stability.report.failures.PROBES), long format like ``curves``: their figure
    telemetry: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CURVE_COLUMNS))

    @property
    def has_results(self) -> bool:
        """True when at least one run finished (completed or diverged), i.e. there are numbers."""
        return bool(len(self.sweep.finished))


def build_report(sweep: Sweep | str | Path, options: ReportOptions | None = None,
                 curves: pd.DataFrame | None = None) -> Report:
    """Load a sweep and compute every table.

    Args:
        sweep: a sweep folder or a loaded :class:`~stability.analysis.results.Sweep`.
        options: definitions and thresholds (defaults documented in :mod:`stability.analysis.metrics`).
        curves: ``train/loss`` curves already loaded (default: read from the events).

    Raises:
        ConfigError: not a sweep folder / empty sweep (from :func:`~stability.analysis.results.load_sweep`).
    """
    options = options or ReportOptions()
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    gaps = list(sweep.problems)
    notes: list[str] = []
    finished_names = list(sweep.finished.index)
    curves, telemetry = _load_curves(sweep, curves)
    runs = _with_run_metrics(sweep, curves, options, gaps)
    tables: dict[str, pd.DataFrame] = {"failures": F.failures_table(sweep, runs, telemetry),
                                       "runs": runs_table(sweep, runs)}
    gaps.extend(_status_gaps(sweep))
    gaps.extend(_telemetry_gaps(sweep, telemetry))
    if sweep.finished.empty:
        text = {"failures": F.format_failures(tables["failures"]), "runs": format_runs(tables["runs"])}
        return Report(sweep, runs, curves, tables, text, gaps, notes, options, telemetry)

    finished = runs.loc[finished_names]
    notes.extend(_fixed_settings(sweep, finished))
    study, study_text = study_tables(sweep, finished, options, gaps)
    tables.update(study)
    tables["configurations"] = configuration_table(sweep, runs)
    if has_lipschitz(finished):
        tables["lipschitz"] = lipschitz_table(sweep, runs)
        notes += [LIPSCHITZ_NOTE, _bound_check(finished, gaps)]
    tables["effects"] = effects_table(sweep, finished, options, gaps)
    if LR in sweep.varying_hparams:
        tables["lr_sensitivity"] = lr_sensitivity_table(sweep, finished, options, gaps)
        cfg = [c for c in sweep.config_columns if c != LR]
        most = int(finished.groupby(group_key(finished, cfg))[LR].nunique().max())
        if most < MIN_LR_POINTS:
            gaps.append(f"metrics against the learning rate: too few learning rates ({most}) per configuration "
                        f"to draw a curve (needs {MIN_LR_POINTS})")
    else:
        gaps.append("LR sensitivity: the sweep has a single learning rate; it needs a grid over lr")
    if LR in sweep.varying_hparams:
        tables["failure_map"] = failure_map_table(sweep, finished)
    tables["divergence"] = divergence_table(sweep, finished)
    tables["spikes"] = spikes_table(runs, curves, finished_names, options)
    if [h for h in sweep.varying_hparams if h != SEED]:
        tables["edf"] = edf_table(sweep, finished, options)
        few = tables["edf"][tables["edf"]["n_runs"] < MIN_EDF_RUNS]
        if len(few):
            gaps.append(f"EDF: too few runs ({', '.join(map(str, sorted(set(few['n_runs'].astype(int)))))}) for "
                        f"{len(few)} of {len(tables['edf'])} configurations (an error distribution needs "
                        f"{MIN_EDF_RUNS}); not drawn")
    else:
        gaps.append("EDF: no hyperparameter other than the seed varies, so there is no distribution of "
                    "hyperparameter settings to describe")
    text = {
        **study_text,
        "failures": F.format_failures(tables["failures"]),
        "runs": format_runs(tables["runs"]),
        "configurations": format_configurations(sweep, tables["configurations"]),
        "effects": format_effects(tables["effects"]),
        "divergence": format_divergence(tables["divergence"]),
        "spikes": format_spikes(tables["spikes"]),
    }
    if "lipschitz" in tables:
        text["lipschitz"] = format_lipschitz(tables["lipschitz"])
    if "failure_map" in tables:
        text["failure_map"] = format_failure_map(tables["failure_map"])
    if "lr_sensitivity" in tables:
        text["lr_sensitivity"] = format_lr_sensitivity(sweep, tables["lr_sensitivity"])
    if "edf" in tables:
        text["edf"] = format_edf(sweep, tables["edf"], options)
    order = ["claims", "edges", "failures", "failure_map", "configurations", "robust", "lipschitz", "effects",
             "lr_sensitivity", "divergence", "edf", "spikes", "runs"]
    tables = {k: tables[k] for k in order if k in tables}
    text = {k: text[k] for k in order if k in text}
    return Report(sweep, runs, curves, tables, text, gaps, notes, options, telemetry)


def _load_curves(sweep: Sweep, curves: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the finished runs' training loss, the failed runs' telemetry), each run's events read once.

    The failed runs' telemetry (:data:`stability.report.failures.TELEMETRY_TAGS`) gets the window of their
    summaries' ``failure`` records where they have one; ``curves`` given: only the telemetry is read.
    """
    failed = F.failed_names(sweep.runs)
    finished = list(sweep.finished.index)
    telemetry = load_curves(sweep, tags=[LOSS_TAG, *F.TELEMETRY_TAGS], runs=failed) if failed else \
        pd.DataFrame(columns=CURVE_COLUMNS)
    if curves is None:
        rest = [n for n in finished if n not in set(failed)]
        loss = [load_curves(sweep, tags=[LOSS_TAG], runs=rest) if rest else telemetry.iloc[:0],
                telemetry[(telemetry["tag"] == LOSS_TAG) & telemetry["run"].isin(finished)]]
        curves = pd.concat([f for f in loss if len(f)] or [telemetry.iloc[:0]], ignore_index=True)
        curves = curves.sort_values(["run", "tag", "step"], kind="stable").reset_index(drop=True)
    return curves, F.with_windows(telemetry, sweep.runs, failed)


# -------------------------------------------------------------------------------------------- per run


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
        if not is_finite(initial) and g is not None and len(g):
            initial = float(g.sort_values("step")["value"].iloc[0])  # first logged loss stands in for step 0
        runs.at[name, "initial_loss_used"] = initial
        diverged = bool(runs.at[name, "diverged"])
        final = runs.at[name, "final_train_loss"]
        if diverged or not is_finite(final):
            # A diverged run's last loss is NaN, inf or an explosion: count it as an untrained model's loss.
            final = initial if is_finite(initial) else np.nan
        runs.at[name, "final_loss"] = final
        if g is None or g.empty:
            no_curve.append(name)
            continue
        runs.at[name, "total_steps"] = float(g["step"].max())
    # The planned length of a run = the longest finite curve among its configuration's runs that did not
    # diverge (same data, batch size and epochs), else in the whole sweep: a diverged run's AUC covers it.
    keys = group_key(runs.loc[finished], sweep.config_columns)
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
                              diverged_step=float(div_step) if is_finite(div_step) else None,
                              total_steps=planned.get(name) if is_finite(planned.get(name)) else None,
                              options=options.curve)
        for col in stat_cols:
            runs.at[name, col] = stats[col]
    if no_curve:
        gaps.append(f"loss-curve statistics: {len(no_curve)} finished run(s) have no {LOSS_TAG} events: "
                    f"{_names(no_curve)}")
    missing_l0 = [n for n in finished if not is_finite(runs.at[n, "initial_loss_used"])]
    if missing_l0:
        gaps.append(f"initial loss unknown (no summary initial_loss, no curve) for {_names(missing_l0)}: "
                    f"their diverged losses cannot be counted at the initial loss")
    return runs


# ------------------------------------------------------------------------------------- gaps and notes


def _status_gaps(sweep: Sweep) -> list[str]:
    gaps = []
    runs = sweep.runs
    for status, what in (("failed", "failed (raised an exception: under failed runs, not in the result tables)"),
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


def _telemetry_gaps(sweep: Sweep, telemetry: pd.DataFrame) -> list[str]:
    """A gap naming the failed runs whose telemetry the failures figure cannot draw (no events, no window)."""
    failed = F.failed_names(sweep.runs)
    drawn = set(telemetry["run"]) if len(telemetry) else set()
    missing = [n for n in failed if n not in drawn]
    if not missing:
        return []
    return [f"failure telemetry: {len(missing)} of {len(failed)} failed run(s) logged no loss, gradient norm or "
            f"attention logit (no events, no failure window in the summary): {_names(missing)}"]


def _fixed_settings(sweep: Sweep, finished: pd.DataFrame) -> list[str]:
    fixed = [f"{c}={format_cell(finished[c].iloc[0])}" for c in [*sweep.toggles, *sweep.hparams]
             if c in finished and c != SEED and len(distinct_values(finished[c])) == 1]
    notes = []
    varying = display_columns(sweep)
    notes.append("Varied: " + (", ".join(varying) if varying else "nothing but the seed"))
    if SEED in finished:
        notes.append(f"Seeds: {', '.join(format_cell(s) for s in distinct_values(finished['seed']))}")
    if fixed:
        notes.append("Fixed: " + ", ".join(fixed))
    return notes


def _bound_check(finished: pd.DataFrame, gaps: list[str]) -> str:
    """The note "upper >= lower in every run" over the runs with both bounds; a gap naming each run without."""
    checked = bound_violations(finished, everything=True)
    bad = checked[checked["violated"]]
    if len(bad):
        runs = "; ".join(f"{r.run} (upper {r.upper:.4g} < lower {r.lower:.4g})" for r in bad.itertuples())
        gaps.append(f"Lipschitz: upper bound < lower bound in {len(bad)} of {len(checked)} run(s), so a bound "
                    f"is wrong there: {runs}")
    unchecked = len(finished) - len(checked)
    rest = f"; {unchecked} run(s) without both (unbounded or not measured)" if unchecked else ""
    if not len(checked):
        return f"Lipschitz check upper ≥ lower: no run has both bounds{rest}"
    verdict = "holds in every one" if not len(bad) else f"FAILS in {len(bad)}"
    return f"Lipschitz check upper ≥ lower: {verdict} of the {len(checked)} run(s) with both bounds{rest}"


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
