"""The figures of ``stability report``: which plots a report has, their inputs, their files.

:mod:`stability.report.plots` draws DataFrames and knows nothing of the report; this module decides what a sweep
supports (training loss per varying toggle when there are curves, metrics against the learning rate when
it varies, error distributions when the report has an EDF table), names the configurations the way the
tables do (:func:`~stability.report.configs.config_label`), hands each plot the configurations' toggle
values (which give the colours of :mod:`stability.report.palette` and the facets) and writes each figure as PNG and
PDF. Importing it imports matplotlib, which is why :func:`stability.report.cli.write_report` imports it only
when plots are asked for.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from stability.record.identity import LR
from stability.report import plots as P
from stability.report.build import Report
from stability.report.certificates import certified_long
from stability.report.configs import config_label, display_columns, format_cell, is_finite
from stability.report.failure_map import failure_map_figure
from stability.report.failures import FIGURE_STEM, PROBES, probe_panels
from stability.report.plot_layout import facets
from stability.report.tables import MIN_EDF_RUNS, MIN_LR_POINTS, edf_curves

WINDOW = 200  # steps before a failure that its telemetry figure shows (a long run: its last 200 before it stopped)
# (column, axis label): the per-run numbers drawn against the learning rate, those the runs have.
LR_METRICS: tuple[tuple[str, str], ...] = (
    ("best_val_acc", "best val accuracy"),
    ("final_val_acc", "final val accuracy"),
    ("final_loss", "final train loss\n(diverged: initial)"),
)


def write_figures(report: Report, out_dir: Path) -> list[Path]:
    """Every plot of ``stability report`` into ``out_dir``: loss curves per varying toggle, metrics vs lr, EDFs.

    Returns the files written (PNG and PDF of each figure), in the order ``report.md`` shows them.
    """
    sweep = report.sweep
    finished = report.runs.loc[sweep.finished.index]
    written: list[Path] = []
    failure_map = report.tables.get("failure_map")
    if failure_map is not None and len(failure_map):
        title = f"{sweep.path.name}: runs failed (diverged or collapsed) of runs"
        written += P.save(failure_map_figure(failure_map, title), out_dir / "failure_map")
    varying = [t for t in sweep.toggles if t in display_columns(sweep)]
    if len(report.curves):
        for toggle in varying or [None]:
            fig = P.divergence_curves(finished, report.curves, toggle, title=sweep.path.name)
            written += P.save(fig, out_dir / f"curves_{toggle or 'all'}")
    if LR in sweep.varying_hparams:
        cfg = [c for c in sweep.config_columns if c != LR]
        labels = pd.Series({name: config_label(sweep, row, cfg) for name, row in finished.iterrows()},
                           dtype=object)
        n_lrs = finished.groupby(labels)[LR].nunique()
        finished = finished[labels.map(n_lrs) >= MIN_LR_POINTS]  # a "curve" of 1-2 points is noise
        labels = labels.loc[finished.index]
        metrics = [(c, n) for c, n in LR_METRICS
                   if c in finished and pd.to_numeric(finished[c], errors="coerce").notna().any()]
        if metrics and len(finished):
            written += P.save(P.lr_curves(labels, finished, metrics), out_dir / "lr_curves")
    if "edf" in report.tables:
        metric = report.options.edf_metric
        all_finished = report.runs.loc[sweep.finished.index]
        errors = {k: e for k, e in edf_curves(sweep, all_finished, metric).items() if len(e) >= MIN_EDF_RUNS}
        if errors:  # configurations with too few runs are left out (the EDF table says "too few runs")
            toggles = [t for t in sweep.toggles if t in all_finished]
            labels = pd.Series({name: config_label(sweep, row, columns=sweep.toggles)
                                for name, row in all_finished.iterrows()}, dtype=object)
            first = all_finished.groupby(labels, sort=False).head(1)
            configs = first[toggles].set_axis(labels.loc[first.index].to_list())  # label -> toggle values
            fig = P.edf_plot(errors, f"{sweep.path.name}: EDF of 1 − {metric}", configs=configs)
            written += P.save(fig, out_dir / "edf")
    for stem, fig in failure_telemetry(report):
        written += P.save(fig, out_dir / stem)
    # Certified robust accuracy against the radius, per configuration, when some run certified anything at a
    # radius above 0 (at 0 it is the clean accuracy; a sweep of unbounded models draws only zeros beyond it).
    finished = report.runs.loc[sweep.finished.index]
    certified = certified_long(sweep, finished)
    if ((certified["radius"] > 0) & (certified["accuracy"] > 0)).any():
        toggles = [t for t in sweep.toggles if t in finished]
        first = certified.drop_duplicates("configuration")
        configs = finished.loc[first["run"], toggles].set_axis(first["configuration"].to_list())
        title = f"{sweep.path.name}: certified accuracy (median, band min–max over seeds)"
        written += P.save(P.certified_accuracy(certified, title, configs=configs), out_dir / "certified_accuracy")
    return written


def failure_telemetry(report: Report, window: int = WINDOW) -> list[tuple[str, Figure]]:
    """The failures section's figures: (file stem, figure) per facet of at most
    :data:`~stability.report.plot_layout.MAX_LINES` failed runs, in the failures table's order.

    Each is :func:`stability.report.plots.run_telemetry` of the runs' telemetry (``Report.telemetry``) in the
    ``window`` steps before the step each stopped at, that step marked; runs are named as the table names them
    (configuration, lr, seed, status and step). More runs than fit one figure are split by toggle values as the
    other figures' panels are (:func:`~stability.report.plot_layout.facets`). The notebook ``curves.py`` draws
    the same figures through this function.
    """
    table = report.tables.get("failures")
    if table is None or table.empty or report.telemetry.empty:
        return []
    table = table[table["run"].isin(set(report.telemetry["run"]))].set_index("run", drop=False)
    toggles = [t for t in report.sweep.toggles if t in report.runs]
    configs = report.runs.loc[table.index, toggles]
    marks = {name: float(step) for name, step in table["step"].items()}
    labels = {name: _failure_label(row) for name, row in table.iterrows()}
    figures = []
    for i, (facet, members) in enumerate(facets(configs)[1]):
        title = f"{report.sweep.path.name}: telemetry before each failure" + (f" ({facet})" if facet else "")
        stem = FIGURE_STEM + (f"_{i + 1}" if i else "")
        figures.append((stem, P.run_telemetry(probe_panels(report.telemetry, members), members, mark=marks,
                                              window=window, labels=labels, title=title,
                                              panels=[p.title for p in PROBES])))
    return figures


def _failure_label(row: pd.Series) -> str:
    """A failed run as the legend names it: "baseline, lr 0.01, seed 1: diverged at step 20"."""
    step = f" at step {row['step']:.0f}" if is_finite(row["step"]) else ""
    return (f"{row['configuration']}, lr {format_cell(row[LR])}, seed {format_cell(row['seed'])}: "
            f"{row['status']}{step}")
