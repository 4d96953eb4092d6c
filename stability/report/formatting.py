"""Text for people: cells ("mean ± std", intervals), each table's formatted version, Markdown and LaTeX.

Input: the numeric tables of :mod:`stability.report.tables` and :mod:`stability.report.certificates`; output:
DataFrames of strings (``Report.text``) and the strings written. The whole ``report.md`` document is
:mod:`stability.report.markdown`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stability.analysis.metrics import key_text
from stability.analysis.results import Sweep
from stability.errors import ConfigError
from stability.record.identity import LR
from stability.report.certificates import CERTIFIED_SQRT2, default_radius_column, radius_columns, unbounded_cause
from stability.report.configs import display_columns, format_cell, is_finite
from stability.report.tables import EFFECT_METRICS, MIN_EDF_RUNS, RUN_METRICS, ReportOptions

TITLES = {
    "claims": "Claims and verdicts (effect = treatment − control over seeds: mean [95% t-interval]; rates: "
              "difference of proportions [95% Newcombe]; largest stable lr: median [order-statistic interval]; "
              "held together: the verdict under Holm's correction over every test of the study; seeds to "
              "settle: an estimate at the measured effect and spread, 80% power)",
    "edges": "Stability edges by bisection (each side's largest stable lr per seed, searched on log lr; median "
             "over seeds [order-statistic interval, its coverage]; the widest bracket left)",
    "robust": "Robust summaries (Agarwal et al. 2021): interquartile mean over seeds [95% stratified bootstrap], "
              "probability of improvement over the reference, and where a t-interval and the bootstrap disagree",
    "failure_map": "Failure map: runs failed (diverged or collapsed) of runs, by configuration and learning rate",
    "failures": "Failed runs (diverged, collapsed or raised), by configuration and learning rate",
    "configurations": "Per-configuration results (mean ± std over seeds)",
    "lipschitz": "Lipschitz bounds and certified robust accuracy (test split, l2 radius in [0, 1] pixel space; "
                 "accuracies mean ± std over seeds, bounds median (min–max))",
    "effects": "Effect of each toggle per learning rate (on − off, mean [95% t-interval] over seeds; failure "
               "rate: difference [95% Newcombe])",
    "lr_sensitivity": "Learning-rate sensitivity (Wortsman et al. 2023)",
    "divergence": "Runs diverged (and collapsed), by toggle × warmup × learning rate",
    "edf": "Error distribution (Xiao et al. 2021): fraction of runs within e of the best",
    "spikes": "Loss spikes (loss > spike factor × its smoothed history)",
    "runs": "All runs",
}
NOT_MEASURED = "not measured"
# Telemetry a run may never have measured (no probe step before it stopped, a run that raised first): a missing
# value there is "not measured", which neither 0 nor a dash (no value of another kind) would say.
MEASURED_ONLY = ("max_attn_logit", "max_grad_norm")


# ---------------------------------------------------------------------------------------------- cells


def fmt_measured(value: Any, digits: int) -> str:
    """A telemetry value (``"12.3"``, ``"3.1e+07"`` from 1e5 on), ``"inf"`` when it was measured infinite, or
    "not measured" for a missing one (None, NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return NOT_MEASURED
    if math.isnan(number):
        return NOT_MEASURED
    if math.isinf(number):
        return str(number)
    return f"{number:.{digits}f}" if abs(number) < 1e5 else f"{number:.1e}"


def fmt_mean_std(mean: float, std: float, n: int, digits: int, n_expected: int | None = None) -> str:
    """``"0.912 ± 0.004"``; one value says so: ``"0.91 (n=1)"``; fewer values than runs: ``"(n=2)"``."""
    if n == 0 or not is_finite(mean):
        return "–"
    if n == 1:
        return f"{mean:.{max(digits - 1, 0)}f} (n=1)"
    text = f"{mean:.{digits}f} ± {std:.{digits}f}"
    if n_expected is not None and n != n_expected:
        text += f" (n={n})"
    return text


def fmt_interval(ci_mean: float, low: float, high: float, n: int, digits: int) -> str:
    """``"+0.012 [−0.004, +0.028]"``; with one pair no interval can be given: ``"+0.01 (n=1)"``."""
    if n == 0 or not is_finite(ci_mean):
        return "no pairs"
    if n == 1:
        return f"{ci_mean:+.{max(digits - 1, 0)}f} (n=1)"
    if not is_finite(low):
        return f"{ci_mean:+.{digits}f} (n={n})"
    return f"{ci_mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


# --------------------------------------------------------------------------------------------- tables


def format_configurations(sweep: Sweep, table: pd.DataFrame) -> pd.DataFrame:
    shown = display_columns(sweep)
    out = pd.DataFrame(index=table.index)
    if shown:
        for c in shown:
            out[c] = table[c].map(format_cell)
    else:
        out["configuration"] = "all runs"
    for col, label, digits in RUN_METRICS:
        if col == "steps_to_target" and table["auc_n"].any():  # "never" is a result: keep the column
            out[label] = [_fmt_reached(r) if r["auc_n"] else "–" for _, r in table.iterrows()]
            continue
        if f"{col}_n" not in table or not table[f"{col}_n"].any():
            continue
        out[label] = [NOT_MEASURED if col in MEASURED_ONLY and not r[f"{col}_n"] else
                      fmt_mean_std(r[f"{col}_mean"], r[f"{col}_std"], int(r[f"{col}_n"]), digits, int(r["n_runs"]))
                      for _, r in table.iterrows()]
    out["n"] = table["n_runs"].astype(int)
    out["diverged"] = _k_of_n(table["n_diverged"], table["n_runs"])
    out["collapsed"] = _k_of_n(table["n_collapsed"], table["n_runs"])
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


def format_lipschitz(table: pd.DataFrame) -> pd.DataFrame:
    """One line per configuration: test accuracy, certified accuracy per radius > 0 (and in the sqrt(2) L form
    at the default radius), the network and backbone upper bounds, the lower bound, the upper >= lower check.

    Radius 0 (plain accuracy on the certification pass) stays in the CSV only; bounds are in scientific
    notation from 1000 on (:func:`fmt_bound`); an unbounded configuration names the toggles responsible.
    """
    measured = [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")]
    certified = {c: r for c, r in radius_columns(measured).items() if r > 0}
    sqrt2 = default_radius_column(measured, CERTIFIED_SQRT2)
    out = pd.DataFrame(index=table.index)
    out["configuration"] = table["configuration"]
    out["test acc"] = _mean_std_cells(table, "test_acc", 3)
    for col, radius in certified.items():
        out[f"certified @ {radius_label(radius)}"] = _mean_std_cells(table, col, 3)
    if sqrt2 is not None:
        out[f"certified @ {radius_label(float(sqrt2.partition('.')[2]))}, sqrt(2) L form"] = \
            _mean_std_cells(table, sqrt2, 3)
    out["upper bound (network)"] = [_bound_cell(r, "upper") for _, r in table.iterrows()]
    out["backbone bound"] = [_bound_cell(r, "backbone") for _, r in table.iterrows()]
    out["lower bound"] = [fmt_mean_std(r["lower_mean"], r["lower_std"], int(r["lower_n"]),
                                       _decimals(r["lower_mean"]), int(r["n_runs"])) for _, r in table.iterrows()]
    out["upper ≥ lower"] = [f"{int(r['n_both'] - r['n_upper_below_lower'])}/{int(r['n_both'])}" if r["n_both"]
                            else "–" for _, r in table.iterrows()]
    out["n"] = table["n_runs"].astype(int)
    return out.reset_index(drop=True)


def radius_label(radius: float) -> str:
    """``"36/255"`` for a radius that is a whole number of grey levels (how LipShiFT states radii), else ``"0.05"``.

    summary.json keys have 4 significant digits (36/255 = ``0.1412``), so up to ~0.013 grey levels off.
    """
    levels = radius * 255
    if abs(levels - round(levels)) < 0.02:
        return f"{round(levels)}/255"
    return f"{radius:g}"


def fmt_bound(value: float) -> str:
    """A Lipschitz bound: 3 significant digits below 1000 (``"45.2"``), else 2 in scientific notation
    (``"5.3e3"``, ``"1.1e37"``): bounds span decades, and past the first two digits the slack dominates."""
    if not is_finite(value):
        return "–"
    if value == 0 or 1e-2 <= abs(value) < 1e3:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _bound_cell(r: pd.Series, name: str) -> str:
    """``"45.2 (44.7–45.8)"`` over seeds, ``"unbounded (norm=layernorm)"``, or both when seeds disagree."""
    n, n_runs = int(r[f"{name}_n"]), int(r["n_runs"])
    text = ""
    if n:
        text = fmt_bound(r[f"{name}_median"])
        if n > 1:
            text += f" ({fmt_bound(r[f'{name}_min'])}–{fmt_bound(r[f'{name}_max'])})"
        if n < n_runs and not r["n_unbounded"]:
            text += f" (n={n})"
    k = int(r["n_unbounded"])
    if not k:
        return text or "–"
    cause = f"unbounded ({unbounded_cause(str(r['unbounded']))})" if name == "upper" else "unbounded"
    if k == n_runs:
        return cause
    return f"{text}; {cause} in {k}/{n_runs}" if text else f"{cause} in {k}/{n_runs}"


def _mean_std_cells(table: pd.DataFrame, col: str, digits: int) -> list[str]:
    """Accuracies as mean ± std; ``"0"`` when every seed's is exactly 0 (what an uncertified model gets)."""
    cells = []
    for _, r in table.iterrows():
        n = int(r[f"{col}_n"])
        if n and r[f"{col}_mean"] == 0 and (n == 1 or r[f"{col}_std"] == 0):
            cells.append("0" if n == r["n_runs"] else f"0 (n={n})")
        else:
            cells.append(fmt_mean_std(r[f"{col}_mean"], r[f"{col}_std"], n, digits, int(r["n_runs"])))
    return cells


def _decimals(value: float) -> int:
    """Decimals that show 3 significant digits of ``value`` (none past 100): a lower bound of 91 or 0.52."""
    if not is_finite(value) or value == 0:
        return 3
    return max(0, 2 - math.floor(math.log10(abs(value))))


def format_effects(table: pd.DataFrame) -> pd.DataFrame:
    """One line per toggle value and learning rate: the effect on each metric over seeds, and the failures.

    A (toggle value, lr) cell with no pair of runs is left out: a grid that runs a toggle at one learning rate,
    or only inside a bundle, would otherwise fill the table with "no pairs" lines. The CSV keeps every cell
    (``n`` = 0) and the report's gaps name each toggle that has no pair at all. Failures are counted per run
    (``k/n`` off and on) and their change has Newcombe's interval (:func:`stability.report.tables.effects_table`).
    """
    rows = []
    labels = {m: (label, d) for m, label, d in EFFECT_METRICS}
    keys = table[["toggle", "value", LR]].map(key_text).agg("|".join, axis=1) if len(table) else []
    for _, g in table.groupby(keys, sort=False):
        first = g.iloc[0]
        row: dict[str, Any] = {"toggle": first["toggle"],
                               "on − off": f"{format_cell(first['value'])} − {format_cell(first['baseline'])}"}
        if is_finite(first[LR]):
            row[LR] = format_cell(first[LR])
        fail = g[g["metric"] == "failed"].iloc[0]
        if not (is_finite(fail["pairs"]) and fail["pairs"] > 0):
            continue
        row["seeds"] = int(fail["n"])
        for _, r in g[g["metric"] != "failed"].iterrows():
            label, digits = labels[r["metric"]]
            row[label] = fmt_interval(r["mean"], r["low"], r["high"], int(r["n"]), digits) if r["n"] else "no pairs"
        row["failed off → on"] = f"{int(fail['k_off'])}/{int(fail['n_off'])} → {int(fail['k_on'])}/{int(fail['n_on'])}"
        row["failure rate on − off"] = f"{fail['mean']:+.3f} [{fail['low']:+.3f}, {fail['high']:+.3f}]"
        rows.append(row)
    return pd.DataFrame(rows)


def _too_few_lrs(n: int) -> str:
    """A configuration run at fewer than MIN_LR_POINTS lrs: its "sensitivity" (0 at one lr) measures nothing."""
    return f"too few runs ({n} learning rate{'' if n == 1 else 's'})"


def format_lr_sensitivity(sweep: Sweep, table: pd.DataFrame) -> pd.DataFrame:
    shown = [c for c in display_columns(sweep) if c != LR]
    out = pd.DataFrame(index=table.index)
    for c in shown:
        out[c] = table[c].map(format_cell)
    if not shown:
        out["configuration"] = "all runs"
    out["LR sensitivity"] = [_too_few_lrs(int(r["n_lrs"])) if r.get("too_few_lrs", False) else
                             fmt_mean_std(r["value"], r["std"], int(r["n_seeds"]), 3)
                             if r["n_seeds"] else "– (no seed at every lr)" for _, r in table.iterrows()]
    out["best lr"] = table["best_lr"].map(format_cell)
    out["best loss"] = table["best_loss"].map(lambda v: f"{v:.3f}" if is_finite(v) else "–")
    out["largest lr trained"] = table["max_stable_lr"].map(
        lambda v: format_cell(v) if is_finite(v) else "none")
    out["lr grid"] = [f"{int(r['n_lrs'])} from {r['lr_min']:g} to {r['lr_max']:g}"
                      for _, r in table.iterrows()]
    out["diverged"] = _k_of_n(table["n_diverged"], table["n_runs"])
    out["collapsed"] = _k_of_n(table["n_collapsed"], table["n_runs"])
    out["loss"] = table["loss"]
    return out.reset_index(drop=True)


def format_divergence(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return pd.DataFrame()
    t = table.copy()
    t["cell"] = [f"{k}/{n}" + (f" (+{c} collapsed)" if c else "")
                 for k, n, c in zip(t["k"], t["n"], t["k_collapsed"], strict=True)]
    index = ["toggle", "value"] + (["warmup"] if t["warmup"].notna().any() else [])
    t["value"] = t["value"].map(format_cell)
    if "warmup" in index:
        t["warmup"] = t["warmup"].map(format_cell)
    if t[LR].notna().any():
        t[LR] = t[LR].map(lambda v: f"lr={v:g}")
        wide = t.pivot_table(index=index, columns=LR, values="cell", aggfunc="first", sort=False)
        lrs = sorted(t[LR].unique(), key=lambda s: float(s[3:]))
        wide = wide[lrs].fillna("–")
    else:
        wide = t.set_index(index)[["cell"]].rename(columns={"cell": "diverged"})
    wide.columns.name = None
    return wide.reset_index()


def format_edf(sweep: Sweep, table: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    shown = [c for c in display_columns(sweep) if c in sweep.toggles]
    out = pd.DataFrame(index=table.index)
    for c in shown:
        out[c] = table[c].map(format_cell)
    if not shown:
        out["configuration"] = "all runs"
    out["runs"] = table["n_runs"].astype(int)
    few = table["n_runs"] < MIN_EDF_RUNS
    out["best error"] = table["best_err"].map(lambda v: f"{v:.3f}" if is_finite(v) else "–")
    for e in options.edf_within:
        col = f"within_{e:g}"
        out[f"within {e:g}"] = [f"too few runs ({n})" if low else f"{f:.2f} ({round(f * n)}/{n})" for f, n, low in
                                zip(table[col], table["n_runs"].astype(int), few, strict=True)]
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
            out[col] = out[col].map(lambda v: f"{v:.3f}" if is_finite(v) else "–")
        elif col in ("diverged_step", "steps", "steps_to_target", "n_spikes"):
            out[col] = out[col].map(lambda v: f"{v:.0f}" if is_finite(v) else "–")
        elif col in MEASURED_ONLY:
            out[col] = out[col].map(lambda v: fmt_measured(v, 1))
        else:
            out[col] = out[col].map(lambda v: "–" if _isna(v) else format_cell(v))
    return out


def _k_of_n(k: pd.Series, n: pd.Series) -> list[str]:
    return [f"{int(a)}/{int(b)}" for a, b in zip(k, n, strict=True)]


def _isna(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ------------------------------------------------------------------------------------------ documents


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
    for plain, tex in (("±", r"$\pm$"), ("−", "--"), ("→", r"$\to$"), ("–", "--"), ("≥", r"$\geq$")):
        body = body.replace(plain, tex)
    if caption is None:
        return body
    label_line = f"\\label{{{label}}}\n" if label else ""
    return (f"\\begin{{table}}[t]\n\\centering\n\\caption{{{_tex_escape(caption)}}}\n{label_line}{body}"
            f"\\end{{table}}\n")


def check_formats(formats: Sequence[str], valid: Sequence[str], what: str = "") -> None:
    """One ConfigError line for ``--format`` values outside ``valid`` (``what``: e.g. " for a comparison")."""
    bad = [f for f in formats if f not in valid]
    if bad:
        raise ConfigError(f"--format: got {','.join(bad)!r}; valid values{what}: {', '.join(valid)} "
                          f"(comma-separated)")


def write_tables(out: Path, tables: dict[str, pd.DataFrame], text: dict[str, pd.DataFrame], formats: Sequence[str],
                 titles: dict[str, str], prefix: str = "") -> list[Path]:
    """Each table as ``{prefix}{name}.csv`` (the numbers), ``.md`` and ``.tex`` (the text), in ``formats``;
    returns the paths written. A table without text gets its CSV only."""
    written = []
    for name, table in tables.items():
        stem = out / f"{prefix}{name}"
        if "csv" in formats:
            written.append(write_text(stem.with_suffix(".csv"), table.to_csv(index=False)))
        if "md" in formats and name in text:
            written.append(write_text(stem.with_suffix(".md"), to_markdown(text[name]) + "\n"))
        if "tex" in formats and name in text:
            written.append(write_text(stem.with_suffix(".tex"), to_latex(text[name], titles[name],
                                                                         f"tab:{prefix}{name}")))
    return written


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``; returns the path."""
    path.write_text(text)
    return path


def _tex_escape(text: str) -> str:
    for plain, tex in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                       ("±", r"$\pm$"), ("−", "--"), ("–", "--"), ("×", r"$\times$"), ("≥", r"$\geq$")):
        text = text.replace(plain, tex)
    return text
