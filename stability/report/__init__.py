"""Comparison tables from a sweep folder, and the ``stability report`` command.

``stability report SWEEP [--out DIR] [--format md,csv,tex,html]`` reads the run records (through
:mod:`stability.analysis.results`), computes the statistics of :mod:`stability.analysis.metrics`, and writes

0. ``claims``: each claim of the grid (:mod:`stability.analysis.claims`) with its effect over seeds and its verdict
   (:mod:`stability.analysis.verdicts`), first; then ``failures`` (:mod:`stability.report.failures`): "k of n runs
   failed" and every run that diverged, collapsed or raised, by configuration and lr, with the step it stopped at,
   why, and a figure of its loss, gradient norm and attention logits before it (one line when none failed);
1. ``configurations``: per configuration (toggle combination, and learning rate when the grid has several)
   mean +- std over seeds of best/final validation accuracy, final training loss and the loss-curve
   statistics, with n runs and "k/n diverged";
2. ``effects``: for each toggle and learning rate, "on minus off" over runs that differ in that toggle alone
   (same seed), mean and 95% t-interval over the seeds, and the change of the failure rate (runs counted,
   Newcombe's 95% interval);
3. ``lr_sensitivity``: Wortsman et al. 2023's LR sensitivity per configuration (too few runs below 3 learning
   rates), best LR, largest LR that did not diverge;
4. ``divergence``: fraction of runs diverged by toggle x warmup x learning rate;
5. ``edf``: Xiao et al. 2021's error distribution, fraction of runs within e of the best (when the grid
   samples hyperparameters);

and ``runs`` (every run with its status), as Markdown (``report.md`` gathers them), CSV (numbers, for
anything else) and LaTeX (booktabs, for papers), plus plots (``plots/``, PNG and PDF). Tables are built as
numeric DataFrames first (``Report.tables``, what the CSVs hold) and formatted afterwards
(``Report.text``: "mean +- std", "0.91 (n=1)").

What cannot be computed is named, not skipped: ``Report.gaps`` lists runs not finished, toggles without
matched pairs, missing curves..., and it is printed and written into ``report.md``.

Modules, in the order data flows through them:
- :mod:`~stability.report.configs`: how runs group into configurations, their order and names, a value's text;
- :mod:`~stability.report.tables`: each table as a numeric DataFrame (:class:`ReportOptions`: what is computed);
- :mod:`~stability.report.certificates`: the Lipschitz bounds and certified accuracy, their columns and table;
- :mod:`~stability.report.formatting`: text for people: cells, formatted tables, Markdown and LaTeX tables;
- :mod:`~stability.report.claims_text`: the claims table for people (the study-wide verdict, seeds to settle);
- :mod:`~stability.report.robust_table`: robust summaries over many configurations (IQM, bootstrap);
- :mod:`~stability.report.study_tables`: the claims (settled ones too), the searched edges, the robust table;
- :mod:`~stability.report.failures`: the failed runs, their step, reason and last telemetry (plain pandas);
- :mod:`~stability.report.build`: :func:`build_report`: one sweep -> a :class:`Report` (tables, text, gaps);
- :mod:`~stability.report.writes`: a full disk while the report is written named by the file it hit;
- :mod:`~stability.report.markdown`: ``report.md``, the whole report as one Markdown document;
- :mod:`~stability.report.figures`: which plots a report has, drawn by :mod:`stability.report.plots` with the
  layout of :mod:`stability.report.plot_layout` and the colours of :mod:`stability.report.palette` (the first
  three are not imported here: they import matplotlib, which only the plots need);
- :mod:`~stability.report.html`: ``report.html``, the same report as one self-contained page;
- :mod:`~stability.report.compare_tables`, :mod:`~stability.report.compare_text` and
  :mod:`~stability.report.compare`: ``stability report A B ...``: several sweeps' reports side by side, cell by
  cell and claim by claim (the numbers, their text, the comparison and its files);
- :mod:`~stability.report.curve_export`: ``--curves FILE``: every run's scalar curves as one long table (CSV, Parquet);
- :mod:`~stability.report.cli`: ``stability report``: options, files written, exit codes.
"""

from stability.report.build import Report, build_report
from stability.report.cli import main, write_report
from stability.report.formatting import TITLES, fmt_interval, fmt_mean_std, to_latex, to_markdown
from stability.report.markdown import render_markdown
from stability.report.tables import ReportOptions, edf_curves, effects_table

__all__ = [
    "TITLES",
    "Report",
    "ReportOptions",
    "build_report",
    "edf_curves",
    "effects_table",
    "fmt_interval",
    "fmt_mean_std",
    "main",
    "render_markdown",
    "to_latex",
    "to_markdown",
    "write_report",
]
