"""Text for people: cells ("mean ± std", intervals), each table's formatted version, Markdown and LaTeX.

Also the whole ``report.md`` document (:func:`render_markdown`). Input: the numeric tables of
:mod:`stability.report.tables`; output: DataFrames of strings (``Report.text``) and the strings written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from stability.metrics import key_text
from stability.report.tables import (
    EFFECT_METRICS,
    MIN_EDF_RUNS,
    RUN_METRICS,
    ReportOptions,
    display_columns,
    format_value,
    is_finite,
)
from stability.results import Sweep

if TYPE_CHECKING:
    from stability.report.build import Report


TITLES = {
    "claims": "Claims and verdicts (effect = treatment − control, mean [95% t-interval] over seeds)",
    "configurations": "Per-configuration results (mean ± std over seeds)",
    "effects": "Effect of each toggle per learning rate (on − off, mean [95% t-interval] over seeds)",
    "lr_sensitivity": "Learning-rate sensitivity (Wortsman et al. 2023)",
    "divergence": "Runs diverged (and collapsed), by toggle × warmup × learning rate",
    "edf": "Error distribution (Xiao et al. 2021): fraction of runs within e of the best",
    "spikes": "Loss spikes (loss > spike factor × its smoothed history)",
    "runs": "All runs",
}


# ---------------------------------------------------------------------------------------------- cells


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
            out[c] = table[c].map(format_value)
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


def format_claims(table: pd.DataFrame) -> pd.DataFrame:
    """One line per verdict: the claim, where it was tested, the effect over seeds, the verdict and why."""
    rows = []
    for _, r in table.iterrows():
        digits = 1 if r["unit"] == "decades" else 3
        effect = fmt_interval(r["effect"], r["low"], r["high"], int(r["n_seeds"]), digits) \
            if is_finite(r["effect"]) else "no pairs"
        rows.append({
            "claim": r["claim"],
            "metric": f"{r['metric']} ({r['direction']} ≥ {r['min_effect']:g} {r['unit']})",
            "tested at": r["setting"],
            "effect": effect,
            "seeds": f"{int(r['n_seeds'])} ({r['seeds']})" if r["seeds"] else "0",
            "verdict": r["verdict"].upper() if r["verdict"] != "inconclusive" else "inconclusive",
            "why": r["why"],
            "control converged": r["control_converged"],
        })
    return pd.DataFrame(rows)


def format_effects(table: pd.DataFrame) -> pd.DataFrame:
    """One line per toggle value and learning rate: the effect on each metric over seeds, and the failures.

    A (toggle value, lr) cell with no pair of runs is left out: a grid that runs a toggle at one learning rate,
    or only inside a bundle, would otherwise fill the table with "no pairs" lines. The CSV keeps every cell
    (``n`` = 0) and the report's gaps name each toggle that has no pair at all.
    """
    rows = []
    labels = {m: (label, d) for m, label, d in EFFECT_METRICS}
    keys = table[["toggle", "value", "lr"]].map(key_text).agg("|".join, axis=1) if len(table) else []
    for _, g in table.groupby(keys, sort=False):
        first = g.iloc[0]
        row: dict[str, Any] = {"toggle": first["toggle"],
                               "on − off": f"{format_value(first['value'])} − {format_value(first['baseline'])}"}
        if is_finite(first["lr"]):
            row["lr"] = format_value(first["lr"])
        fail = g[g["metric"] == "failed"].iloc[0]
        if not (is_finite(fail["pairs"]) and fail["pairs"] > 0):
            continue
        row["seeds"] = int(fail["n"])
        for _, r in g[g["metric"] != "failed"].iterrows():
            label, digits = labels[r["metric"]]
            row[label] = fmt_interval(r["mean"], r["low"], r["high"], int(r["n"]), digits) if r["n"] else "no pairs"
        pairs = int(fail["pairs"])
        k_off, k_on = round(fail["rate_off"] * pairs), round(fail["rate_on"] * pairs)
        row["failed off → on"] = f"{k_off}/{pairs} → {k_on}/{pairs}"
        rows.append(row)
    return pd.DataFrame(rows)


def format_lr_sensitivity(sweep: Sweep, table: pd.DataFrame) -> pd.DataFrame:
    shown = [c for c in display_columns(sweep) if c != "lr"]
    out = pd.DataFrame(index=table.index)
    for c in shown:
        out[c] = table[c].map(format_value)
    if not shown:
        out["configuration"] = "all runs"
    out["LR sensitivity"] = [fmt_mean_std(r["value"], r["std"], int(r["n_seeds"]), 3)
                             if r["n_seeds"] else "– (no seed at every lr)" for _, r in table.iterrows()]
    out["best lr"] = table["best_lr"].map(format_value)
    out["best loss"] = table["best_loss"].map(lambda v: f"{v:.3f}" if is_finite(v) else "–")
    out["largest lr trained"] = table["max_stable_lr"].map(
        lambda v: format_value(v) if is_finite(v) else "none")
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
    t["value"] = t["value"].map(format_value)
    if "warmup" in index:
        t["warmup"] = t["warmup"].map(format_value)
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
    shown = [c for c in display_columns(sweep) if c in sweep.toggles]
    out = pd.DataFrame(index=table.index)
    for c in shown:
        out[c] = table[c].map(format_value)
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
        else:
            out[col] = out[col].map(lambda v: "–" if _isna(v) else format_value(v))
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
    for plain, tex in (("±", r"$\pm$"), ("−", "--"), ("→", r"$\to$"), ("–", "--")):
        body = body.replace(plain, tex)
    if caption is None:
        return body
    label_line = f"\\label{{{label}}}\n" if label else ""
    return (f"\\begin{{table}}[t]\n\\centering\n\\caption{{{_tex_escape(caption)}}}\n{label_line}{body}"
            f"\\end{{table}}\n")


def _tex_escape(text: str) -> str:
    for plain, tex in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                       ("±", r"$\pm$"), ("−", "--"), ("×", r"$\times$")):
        text = text.replace(plain, tex)
    return text


def render_markdown(report: Report, figures: Sequence[Path] = (), base: Path | None = None) -> str:
    """The whole report as one Markdown document: counts, notes, every table, gaps, plots."""
    sweep = report.sweep
    counts = sweep.runs["status"].value_counts()
    lines = [f"# Report: {sweep.path.name}", "",
             f"Sweep folder `{sweep.path}`: {len(sweep.runs)} runs ("
             + ", ".join(f"{n} {s}" for s, n in counts.items()) + ").", ""]
    lines += [f"- {n}" for n in report.notes]
    lines += ["", *definitions(), ""]
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


def definitions() -> list[str]:
    return [
        "Definitions: accuracies are fractions; *final train loss* counts a diverged run at its initial "
        "loss; *loss AUC* = mean training loss over normalised steps (diverged runs at the initial loss "
        "after divergence); *steps to target* = first step where the smoothed loss ≤ the target; *spikes* = "
        "runs of steps where the loss exceeds its smoothed history by the spike factor, *max spike* = "
        "largest ratio; "
        "*final-min gap* = last minus minimum smoothed loss (stability.metrics has the formulas). "
        "A cell with one value says (n=1); effects are mean [95% t-interval] over seeds, each seed the mean of "
        "its pairs of runs that differ in that toggle alone; *failed* = diverged or collapsed.",
    ]
