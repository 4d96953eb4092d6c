"""The report's "Robust summaries": per configuration, the IQM with its stratified-bootstrap interval and the
probability of improving on the baseline, beside the seed-mean with its t-interval (the statistics and their
definitions are :mod:`stability.analysis.robust`).

Why a table of its own: when a sweep compares many configurations, a mean over a few seeds can be moved by one
run that diverged, and a t-interval assumes a normal spread of seeds. The IQM and the bootstrap do not; where the
two readings disagree the row says so ("t vs bootstrap"), so no claim rests on the mean alone.

The table is made when it has something to say: at least :data:`MIN_CONFIGURATIONS` configurations with at least
:data:`~stability.analysis.verdicts.MIN_SEEDS` seeds each. A configuration with fewer seeds is still listed (named,
not skipped), its intervals marked "too few seeds".

The report build calls :func:`robust_table` (numbers, ``robust.csv``) and :func:`robust_markdown` (the section of
``report.md``); :func:`format_robust` is the same table as text for other formats.
"""

from __future__ import annotations

import math

import pandas as pd

from stability.analysis.results import Sweep
from stability.analysis.robust import AGREE, BootstrapOptions, robust_summary
from stability.analysis.verdicts import MIN_SEEDS
from stability.report.configs import config_label, group_key, is_finite, sorted_keys
from stability.report.formatting import to_markdown

MIN_CONFIGURATIONS = 3  # configurations with MIN_SEEDS seeds each that make the table worth showing
METRICS = ("test_acc", "final_val_acc")  # the metric summarised: the first of these that the runs recorded
TITLE = "Robust summaries"


def robust_table(sweep: Sweep, metric: str | None = None,
                 options: BootstrapOptions | None = None) -> pd.DataFrame | None:
    """The robust summary of ``metric`` per configuration (:func:`stability.analysis.robust.robust_summary`), in
    the report's configuration order (baseline first) with its ``configuration`` and ``reference`` labels; None
    when the sweep has fewer than :data:`MIN_CONFIGURATIONS` configurations with :data:`MIN_SEEDS` seeds.

    Args:
        sweep: a loaded sweep; its finished runs are summarised (diverged and collapsed runs count at chance
            accuracy, as in the verdicts).
        metric: default: the first of :data:`METRICS` that some finished run recorded.
        options: the bootstrap's resamples, confidence and seed (default 2,000, 95%, 0).
    """
    finished = sweep.finished
    metric = metric or next((m for m in METRICS if m in finished and
                             pd.to_numeric(finished[m], errors="coerce").notna().any()), None)
    if metric is None or finished.empty:
        return None
    cfg = sweep.config_columns
    summary = robust_summary(finished, cfg, sweep.baselines, metric, options=options)
    if int((summary["n_seeds"] >= MIN_SEEDS).sum()) < MIN_CONFIGURATIONS:
        return None
    if not summary["is_reference"].any():  # no run has every toggle at its baseline: the first configuration is
        first = summary.iloc[_order(sweep, summary)[0]]  # the reference (its label says which)
        summary = robust_summary(finished, cfg, {t: first[t] for t in sweep.toggles if t in summary}, metric,
                                 options=options)
    summary = summary.iloc[_order(sweep, summary)].reset_index(drop=True)
    labels = {r["key"]: config_label(sweep, r) for _, r in summary.iterrows()}
    summary.insert(0, "configuration", summary["key"].map(labels))
    summary.insert(summary.columns.get_loc("reference") + 1, "reference_label",
                   summary["reference"].map(lambda k: labels.get(k, "")))
    return summary


def _order(sweep: Sweep, summary: pd.DataFrame) -> list[int]:
    """Positions of the summary's rows in the report's configuration order (:func:`sorted_keys`)."""
    cols = [c for c in sweep.config_columns if c in summary]
    keys = group_key(summary, cols)
    position = {k: i for i, k in enumerate(keys)}
    return [position[k] for k in sorted_keys(summary, cols, sweep, keys)]


def format_robust(table: pd.DataFrame) -> pd.DataFrame:
    """One line per configuration, as text: runs, failed, mean [t], IQM [bootstrap], P(improvement) [bootstrap],
    t vs bootstrap. A seeds column appears when some configuration has fewer seeds than runs."""
    level = _percent(float(table["confidence"].iloc[0])) if len(table) else "95%"
    rows = []
    show_seeds = bool((table["n_seeds"] != table["n_runs"]).any())
    for _, r in table.iterrows():
        n, few = int(r["n_seeds"]), int(r["n_seeds"]) < MIN_SEEDS
        row = {"configuration": r["configuration"], "runs": str(int(r["n_runs"])),
               "failed": f"{int(r['n_failed'])}/{int(r['n_runs'])}"}
        if show_seeds:
            row["seeds"] = str(n)
        row[f"mean [{level} t]"] = _level(r["mean"], r["t_low"], r["t_high"], n)
        row[f"IQM [{level} bootstrap]"] = _level(r["iqm"], r["iqm_low"], r["iqm_high"], n)
        if r["is_reference"]:
            p, flag = "reference", _flag(r["t_vs_bootstrap"])
        elif not r["reference"]:
            p, flag = "no reference run", _flag(r["t_vs_bootstrap"])
        else:
            p = _level(r["p_improve"], r["p_low"], r["p_high"], min(n, int(
                table.loc[table["key"] == r["reference"], "n_seeds"].iloc[0])), digits=2)
            flag = _flag(r["t_vs_bootstrap"])
        row["P(better than reference)"] = p
        row["t vs bootstrap"] = "too few seeds" if few else flag
        rows.append(row)
    return pd.DataFrame(rows)


def robust_markdown(table: pd.DataFrame) -> str:
    """The "Robust summaries" section of ``report.md``: heading, what the numbers are, the table."""
    if table is None or table.empty:
        return ""
    r = table.iloc[0]
    metric, level = str(r["metric"]), _percent(float(r["confidence"]))
    direction = "X > Y" if bool(r["higher_is_better"]) else "X < Y (lower is better)"
    refs = sorted({lab for lab in table["reference_label"] if lab})
    text = (
        f"Per configuration, `{metric}` over its seeds' finished runs: the seed-mean with its {level} t-interval, "
        f"and the interquartile mean (IQM: the mean of the middle half of the seeds, `scipy.stats.trim_mean(x, "
        f"0.25)`) with a {level} stratified-bootstrap interval (`scipy.stats.bootstrap`, percentile method, "
        f"{int(r['n_resamples']):,} resamples, seed {int(r['bootstrap_seed'])}; each configuration's seeds "
        f"resampled among themselves; Agarwal et al. 2021). *P(better than reference)* is the probability of "
        f"improvement P({direction}) of a run of the configuration over a run of its reference "
        f"({', '.join(refs) or 'none'}: every toggle at its baseline, the other settings the same), ties counting "
        f"half, with its stratified-bootstrap interval. *Failed* = diverged or collapsed: such a run without "
        f"`{metric}` counts at chance (1/classes), as in the verdicts; runs that raised or have not finished are "
        f"not counted (see Gaps). *t vs bootstrap* flags a configuration whose Welch t-interval of the mean "
        f"difference and bootstrap interval of the IQM difference to its reference disagree about zero, or whose "
        f"t-interval and IQM interval overlap by less than half the narrower one: there the mean alone misleads. "
        f"Intervals need {MIN_SEEDS} seeds to be read (else: too few seeds)."
    )
    flagged = int(table["disagree"].sum())
    if flagged:
        text += f" {flagged} of {len(table)} configuration(s) flagged."
    return "\n".join([f"## {TITLE}", "", text, "", to_markdown(format_robust(table)), ""])


def _level(point: float, low: float, high: float, n: int, digits: int = 3) -> str:
    """``"0.912 [0.900, 0.925]"``; one value: ``"0.91 (n=1)"``; below MIN_SEEDS seeds the interval is kept and
    marked ``(n=2)``; nothing: a dash."""
    if n == 0 or not is_finite(point):
        return "–"
    if n == 1 or not (is_finite(low) and is_finite(high)):
        return f"{point:.{max(digits - 1, 0)}f} (n={n})"
    text = f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return text + (f" (n={n})" if n < MIN_SEEDS else "")


def _flag(verdict: str) -> str:
    if not verdict:
        return "–"
    return verdict if verdict == AGREE else f"DIFFER: {verdict}"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%" if math.isfinite(fraction) else "95%"
