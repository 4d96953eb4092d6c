"""Plots of a sweep: divergence curves, accuracy/loss against learning rate, error distribution functions.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend: the Agg
canvas renders PNG, the PDF backend PDF), so the same functions work in a headless ``stability report``
and in a notebook, where the returned Figure displays itself.

The functions draw DataFrames in the formats of :mod:`stability.results` (the runs table, indexed by run
name; the long-format curves) and plain values (titles, labels); they know nothing of sweep folders or of
the report, which decides what to draw (:mod:`stability.report.figures`), so a notebook can draw any subset
of runs the same way.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stability import metrics as M

DPI = 150


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=DPI, bbox_inches="tight")
    return paths


def divergence_curves(runs: pd.DataFrame, curves: pd.DataFrame, toggle: str | None, title: str = "",
                      tag: str = "train/loss") -> Figure:
    """Training loss against step, one panel per learning rate, one line per run coloured by ``toggle``.

    Args:
        runs: the runs to draw, indexed by run name, with ``diverged``, ``lr`` (one panel per value; one
            panel if absent) and the ``toggle`` column.
        curves: long-format curves (:func:`stability.results.load_curves`), with ``tag`` among them.
        toggle: the column that colours the lines; None: one colour.
        title: what the runs are (the report gives the sweep's name); the figure's title is
            ``"{title}: {tag} by {toggle} (x = diverged)"``, without the prefix when empty.
    A diverged run ends in a cross at its last finite point (its divergence step is in the legend's
    count); the y axis is logarithmic so early explosions and late small spikes both show.
    """
    data = curves[curves["tag"] == tag]
    lrs = sorted(runs["lr"].dropna().unique()) if "lr" in runs else [None]
    lrs = lrs or [None]
    ncols = min(len(lrs), 4)
    nrows = math.ceil(len(lrs) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 2.8 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    values = _values(runs, toggle)
    colours = {repr(v): f"C{i}" for i, v in enumerate(values)}
    for ax, lr in zip(axes, lrs, strict=False):
        panel = runs if lr is None else runs[runs["lr"] == lr]
        for name, run in panel.iterrows():
            g = data[data["run"] == name].sort_values("step")
            if g.empty:
                continue
            steps, loss = M.finite_prefix(g["step"], g["value"])
            colour = colours[repr(run[toggle])] if toggle else "C0"
            ax.plot(steps, loss, color=colour, lw=0.9, alpha=0.8)
            if bool(run["diverged"]) and len(steps):
                ax.plot(steps[-1], loss[-1], "x", color=colour, ms=7, mew=1.5)
        ax.set_title("all runs" if lr is None else f"lr = {lr:g}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
    for ax in axes[len(lrs):]:
        ax.set_visible(False)
    axes[0].set_ylabel(tag)
    if toggle:
        for v in values:
            sub = runs[runs[toggle].map(lambda x, v=v: M.same_value(x, v))]
            label = f"{toggle}={v} ({int(sub['diverged'].sum())}/{len(sub)} diverged)"
            axes[0].plot([], [], color=colours[repr(v)], label=label)
        fig.legend(loc="outside lower center", ncols=min(len(values), 3), fontsize=8, frameon=False)
    what = f"{tag} by {toggle or 'run'} (x = diverged)"
    fig.suptitle(f"{title}: {what}" if title else what, fontsize=10)
    return fig


def run_telemetry(curves: pd.DataFrame, runs: Sequence[str], mark: dict[str, float] | None = None,
                  window: int | None = None) -> Figure:
    """One panel per tag family (``attn/max_logit/layer_*`` share a panel), one colour per run.

    Args:
        curves: long-format curves (:func:`stability.results.load_curves`).
        runs: run names to draw.
        mark: run -> step to mark with a dashed line (its divergence step).
        window: with ``mark``, show only the ``window`` steps before the marked step (and after it).
    Attention-logit growth and gradient-norm growth before a divergence (Wortsman et al. 2023, sec. 3)
    are what this is for.
    """
    data = curves[curves["run"].isin(list(runs))].copy()
    data["family"] = data["tag"].str.replace(r"/(layer|block)_\d+$", "/*", regex=True)
    families = sorted(dict.fromkeys(data["family"]), key=lambda f: (f != "train/loss", f)) or ["(no curves)"]
    ncols = min(len(families), 3)
    nrows = math.ceil(len(families) / ncols)
    fig = Figure(figsize=(3.8 * ncols, 2.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, family in zip(axes, families, strict=False):
        for i, run in enumerate(runs):
            sub = data[(data["run"] == run) & (data["family"] == family)]
            step = (mark or {}).get(run)
            if window and step is not None and math.isfinite(step):
                sub = sub[(sub["step"] >= step - window) & (sub["step"] <= step + window)]
            for j, (_, g) in enumerate(sub.groupby("tag")):
                ax.plot(g["step"], g["value"], color=f"C{i}", lw=0.9, alpha=1.0 if j == 0 else 0.5,
                        label=run if j == 0 else None)
            if step is not None and math.isfinite(step):
                ax.axvline(step, color=f"C{i}", ls="--", lw=0.8)
        ax.set_title(family, fontsize=9)
        ax.set_xlabel("step")
        if family.startswith(("train/loss", "train/grad_norm", "attn/max_logit")):
            ax.set_yscale("log")
    for ax in axes[len(families):]:
        ax.set_visible(False)
    if len(runs):
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", fontsize=7,
                   frameon=False)
    return fig


def lr_curves(labels: pd.Series, runs: pd.DataFrame, metrics: Sequence[tuple[str, str]]) -> Figure:
    """Each metric against learning rate (log x), one line per configuration: seed mean and std bars.

    Args:
        labels: configuration label per run (same index as ``runs``).
        metrics: (column, axis label) pairs, e.g. best validation accuracy and final loss.
    Diverged runs are drawn as crosses at their (capped) value, so the mean's fall has a visible cause.
    """
    fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
    for i, label in enumerate(dict.fromkeys(labels)):
        g = runs[labels == label]
        for ax, (col, _) in zip(axes, metrics, strict=True):
            y = pd.to_numeric(g[col], errors="coerce")
            stats = y.groupby(g["lr"]).agg(["mean", "std"]).sort_index()
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), color=f"C{i}", marker="o",
                        ms=3, lw=1.2, capsize=2, label=label if ax is axes[0] else None)
            div = g[g["diverged"].astype(bool)]
            if len(div):
                ax.plot(div["lr"], pd.to_numeric(div[col], errors="coerce"), "x", color=f"C{i}", ms=7)
    lrs = sorted(pd.to_numeric(runs["lr"], errors="coerce").dropna().unique())
    for ax, (_, name) in zip(axes, metrics, strict=True):
        ax.set_xscale("log")
        ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])  # the grid's own values, not a log axis' minor ticks
        ax.minorticks_off()
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel(name)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return fig


def edf_plot(errors: dict[str, np.ndarray], title: str = "") -> Figure:
    """Error distribution functions (Xiao et al. 2021, Fig. 5): cumulative fraction of runs whose error
    is within x of the best; a curve that stays below 1 has that fraction of runs diverged/missing."""
    fig = Figure(figsize=(4.8, 3.4), layout="constrained")
    ax = fig.subplots()
    curves = {label: M.edf(err) for label, err in errors.items()}
    right = max((x[-1] for x, _ in curves.values() if len(x)), default=0.0) * 1.05 or 0.01
    for i, (label, (x, f)) in enumerate(curves.items()):
        if len(x) == 0:
            continue
        # Drawn on to the right edge: a curve that stays below 1 there has runs that diverged.
        ax.step(np.concatenate([[0.0], x, [right]]), np.concatenate([[0.0], f, [f[-1]]]), where="post",
                color=f"C{i}", label=f"{label} (n={len(errors[label])})")
    ax.set_xlim(0, right)
    ax.set_xlabel("error − best error")
    ax.set_ylabel("cumulative fraction of runs")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def _values(runs: pd.DataFrame, toggle: str | None) -> list:
    if not toggle:
        return []
    seen: dict[str, object] = {}
    for v in runs[toggle]:
        seen.setdefault(repr(v), v)
    return list(seen.values())


def certified_accuracy(data: pd.DataFrame, title: str = "") -> Figure:
    """Certified robust accuracy against the l2 radius, one line per configuration (LipShiFT, Menon et al. 2025,
    report it at one radius; the curve shows how fast certification falls off around it).

    Args:
        data: long format, one row per run and radius: ``configuration`` (label), ``radius`` (l2, pixels in
            [0, 1]), ``accuracy`` (:func:`stability.report.tables.certified_long`).
        title: the figure's title.
    Each line is the median over the configuration's runs with a band from their minimum to their maximum
    (seeds are few: quantiles between would be one run's value); x is in grey levels (radius x 255, how
    radii are stated), y is clipped to [0, 1]. Lines at 0 (nothing certified) are drawn over the axis; lines
    drawn later are thinner with smaller markers, so configurations with the same numbers stay visible.
    """
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    markers = "osD^v<>p"
    labels = list(dict.fromkeys(data["configuration"]))
    for i, label in enumerate(labels):
        size = 3.0 + 4.0 * (len(labels) - 1 - i) / max(len(labels) - 1, 1)  # 7 for the first, 3 for the last
        g = data[data["configuration"] == label]
        stats = g.groupby("radius")["accuracy"].agg(["median", "min", "max", "count"]).sort_index()
        x = stats.index.to_numpy(dtype=float) * 255
        lo, mid, hi = (np.clip(stats[c].to_numpy(dtype=float), 0.0, 1.0) for c in ("min", "median", "max"))
        n = int(g["run"].nunique()) if "run" in g else int(stats["count"].max())
        ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.2, lw=0, clip_on=False)
        name = textwrap.fill(f"{label.replace(',', ', ')} (n={n})", 80, subsequent_indent="  ")  # long names wrap
        ax.plot(x, mid, color=f"C{i}", marker=markers[i % len(markers)], ms=size, lw=size / 3, clip_on=False,
                label=name)
    radii = sorted(data["radius"].unique() * 255) if len(data) else []
    ax.set_xticks(radii, [f"{r:.0f}" for r in radii])
    ax.set_xlabel("l2 radius (/255, pixels in [0, 1])")
    ax.set_ylabel("certified robust accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=1, fontsize=7, frameon=False)
    ax.set_title(title or "certified accuracy (median, band: min–max over seeds)", fontsize=9)
    return fig
