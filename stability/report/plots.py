"""Plots of a sweep: divergence curves, accuracy/loss against learning rate, error distribution functions.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state, no GUI backend: the Agg
canvas renders PNG, the PDF backend PDF), so the same functions work in a headless ``stability report``
and in a notebook. Such a Figure does not display itself in Jupyter (only pyplot registers the inline
display hook): show it with :func:`png` and ``IPython.display.Image``, as the notebooks do.

The functions draw DataFrames in the formats of :mod:`stability.analysis.results` (the runs table, indexed by run
name; the long-format curves) and plain values (titles, labels); they know nothing of sweep folders or of
the report, which decides what to draw (:mod:`stability.report.figures`), so a notebook can draw any subset
of runs the same way.

What every figure shares, so that a paper can use them as they are:

- colours from :mod:`stability.report.palette`: one colour per toggle value in every figure (baselines grey);
- legends outside the panels, below them or in a key column of their own, the figure grown to hold them
  (:func:`~stability.report.plot_layout.make_room`, :func:`~stability.report.plot_layout.fit_keys`), so a long
  legend never shrinks the panels;
- at most :data:`~stability.report.plot_layout.MAX_LINES` configurations per panel: more are split into facets,
  one per value of the toggle(s) that split them most evenly (:func:`~stability.report.plot_layout.facets`),
  each titled by those values;
- a statistic over seeds is a median with an interquartile band, the single runs faint behind it, a diverged
  run ending in a cross; bands are clipped to the metric's range (:func:`~stability.report.plot_layout.metric_range`:
  accuracies in [0, 1]) and a y axis is logarithmic when its values span a decade or more.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from stability.analysis import metrics as M
from stability.record.identity import LR, TOGGLES, format_value
from stability.report import palette
from stability.report.plot_layout import (
    LEGEND_FONT,
    PANEL,
    config_legend,
    facets,
    fit_keys,
    fit_range,
    keyed_grid,
    legend_columns,
    log_scale,
    make_room,
    metric_range,
    row_major,
    spans_decades,
    toggle_values,
    varying_toggles,
)

DPI = 150
BAND_ALPHA = 0.25  # interquartile band
RAW_ALPHA = 0.2  # single runs behind a median


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=DPI, bbox_inches="tight")
    return paths


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (as :func:`save` writes it), for ``IPython.display.Image(data=...)``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ the figures
def divergence_curves(runs: pd.DataFrame, curves: pd.DataFrame, toggle: str | None, title: str = "",
                      tag: str = "train/loss") -> Figure:
    """Training loss against step, one panel per learning rate, one median and band per value of ``toggle``.

    Args:
        runs: the runs to draw, indexed by run name, with ``diverged``, ``lr`` (one panel per value; one
            panel if absent) and the ``toggle`` column (``diverged_step`` is used when present).
        curves: long-format curves (:func:`stability.analysis.results.load_curves`), with ``tag`` among them.
        toggle: the column that groups the runs and styles them (:func:`palette.value_styles`); None: one group.
        title: what the runs are (the report gives the sweep's name); the figure's title is
            ``"{title}: {tag} by {toggle} (x = diverged)"``, without the prefix when empty.
    Per panel and value: every run as a faint line, the median over those runs and their interquartile band
    (:func:`quartiles`: a diverged run counts as an infinite loss after its divergence, so the median stops
    once half the group has diverged); a diverged run ends in a cross at its last finite point. The legend
    counts each value's diverged runs. The y axis is logarithmic when the losses span a decade or more, so
    early explosions and late small spikes both show.
    """
    data = curves[curves["tag"] == tag]
    by_run = {name: g for name, g in data.groupby("run", sort=False)}
    lrs = sorted(runs[LR].dropna().unique()) if LR in runs else [None]
    lrs = lrs or [None]
    ncols = min(len(lrs), 4)
    nrows = math.ceil(len(lrs) / ncols)
    fig = Figure(figsize=(PANEL[0] * ncols, PANEL[1] * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    values = toggle_values(runs, toggle)
    styles = palette.value_styles(toggle, values)  # a colour each; values that share one: their own line style
    drawn: list[np.ndarray] = []
    for ax, lr in zip(axes, lrs, strict=False):
        panel = runs if lr is None else runs[runs[LR] == lr]
        for value in values:
            group = panel if toggle is None else panel[_is(panel[toggle], value)]
            style = styles[palette.value_key(value)]
            series, diverged = {}, set()
            for name, run in group.iterrows():
                g = by_run.get(name, data.iloc[:0])
                step = pd.to_numeric(run.get("diverged_step"), errors="coerce")
                steps, loss = M.finite_prefix(g["step"], g["value"], step if bool(run["diverged"]) else None)
                if not len(steps):
                    continue
                series[name] = pd.Series(loss, index=steps)
                ax.plot(steps, loss, color=style.colour, lw=0.6, alpha=RAW_ALPHA)
                if bool(run["diverged"]):
                    diverged.add(name)
                    ax.plot(steps[-1], loss[-1], "x", color=style.colour, ms=7, mew=1.5, zorder=4)
                drawn.append(loss)
            if series:
                q = quartiles(series, diverged)
                ax.fill_between(q.index, q["q25"], q["q75"], color=style.colour, alpha=BAND_ALPHA, lw=0, gid="band")
                ax.plot(q.index, q["q50"], **style.line, lw=1.5, gid="median")
        ax.set_title("all runs" if lr is None else f"lr = {lr:g}", fontsize=9)
        ax.set_xlabel("step")
    for ax in axes[len(lrs):]:
        ax.set_visible(False)
    if spans_decades(np.concatenate(drawn) if drawn else np.array([])):
        axes[0].set_yscale("log")  # shared y: every panel
    axes[0].set_ylabel(tag)
    handles, labels = [], []
    for value in values:
        style = styles[palette.value_key(value)]
        sub = runs if toggle is None else runs[_is(runs[toggle], value)]
        handles.append((Patch(color=style.colour, alpha=BAND_ALPHA, lw=0), Line2D([], [], **style.line, lw=1.5)))
        what = f"{toggle}={format_value(value)}" if toggle else "all runs"
        labels.append(f"{what} ({int(sub['diverged'].astype(bool).sum())}/{len(sub)} diverged)")
    handles += [Line2D([], [], color=palette.NEUTRAL, lw=0.6, alpha=0.5),
                Line2D([], [], color=palette.NEUTRAL, ls="", marker="x", ms=7, mew=1.5)]
    labels += ["median, interquartile band; faint: each run", "diverged (last finite loss)"]
    ncols = min(max(len(values), 2), 4)  # the values on the first row, the key to the marks after them
    legend = fig.legend(row_major(handles, ncols), row_major(labels, ncols), loc="outside lower center",
                        ncols=ncols, fontsize=LEGEND_FONT, frameon=False)
    what = f"{tag} by {toggle or 'run'} (x = diverged)"
    fig.suptitle(f"{title}: {what}" if title else what, fontsize=10)
    make_room(fig, legend)
    return fig


def run_telemetry(curves: pd.DataFrame, runs: Sequence[str], mark: Mapping[str, float] | None = None,
                  window: int | None = None, *, labels: Mapping[str, str] | None = None, title: str = "",
                  panels: Sequence[str] | None = None) -> Figure:
    """Telemetry against step, a panel per quantity, a colour per run (:func:`palette.run_colours`), each run's
    failure step (``mark``) dashed and its last finite value by then crossed: what a run did before it failed
    (Wortsman et al. 2023, sec. 3: attention logits and gradient norm grow first). A ``panel`` column of the
    long-format ``curves`` (default: the tag) places each row, in the order of ``panels``
    (:func:`stability.report.failures.probe_panels`; one without curves says "not measured"); a panel's tags
    (layers) are drawn the first opaque. ``window``: steps that close to the mark; ``labels``: legend names; at most
    :data:`~stability.report.plot_layout.MAX_LINES` runs. Non-finite values are triangles on the top edge.
    """
    data = curves[curves["run"].isin(runs)].pipe(lambda d: d if "panel" in d else d.assign(panel=d["tag"]))
    panels = list(panels) if panels is not None else list(dict.fromkeys(data["panel"])) or ["(no curves)"]
    rows, cols = math.ceil(len(panels) / 3), min(len(panels), 3)
    fig = Figure(figsize=(PANEL[0] * cols, PANEL[1] * rows + (0.3 if title else 0.0)), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = palette.run_colours(len(runs))
    for ax, panel in zip(axes, panels, strict=False):
        sub = data[data["panel"] == panel]
        drawn = [_telemetry_lines(ax, sub[sub["run"] == run], colour, (mark or {}).get(run), window)
                 for run, colour in zip(runs, colours, strict=True)]
        values = np.concatenate(drawn) if drawn else np.array([])
        if not len(values):
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", color=palette.NEUTRAL)
        elif spans_decades(values):
            log_scale(ax)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("step")
        ax.locator_params(axis="x", integer=True)  # steps: no "1.5"
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    keys = [("--", "", "dashed: the step it stopped at"), ("", "x", "x: last finite value by then"),
            ("", "v", "v: a non-finite value (nan/inf)")]
    handles = [Line2D([], [], color=c, lw=1.2) for c in colours] + [
        Line2D([], [], color=palette.NEUTRAL, ls=ls, lw=0.8, marker=m, ms=6, mew=1.4) for ls, m, _ in keys]
    names = [(labels or {}).get(run, run) for run in runs] + [text for *_, text in keys]
    ncols = legend_columns(names, fig.get_figwidth(), fontsize=7)
    legend = fig.legend(row_major(handles, ncols), row_major(names, ncols), loc="outside lower center", fontsize=7,
                        frameon=False, ncols=ncols)
    fig.suptitle(title, fontsize=10)
    make_room(fig, legend)
    return fig


def _telemetry_lines(ax: Axes, curves: pd.DataFrame, colour: Any, step: float | None,
                     window: int | None) -> np.ndarray:
    """One run's curves in one panel (:func:`run_telemetry`); returns the finite values drawn (for the scale)."""
    marked = step is not None and math.isfinite(step)
    if window and marked:
        curves = curves[(curves["step"] >= step - window) & (curves["step"] <= step + window)]
    drawn = []
    for j, (_, g) in enumerate(curves.sort_values("step").groupby("tag", sort=True)):
        finite = np.isfinite(g["value"].to_numpy(dtype=float))
        ax.plot(g["step"][finite], g["value"][finite], color=colour, lw=1.0, alpha=1.0 if j == 0 else 0.5)
        if (~finite).any():
            ax.plot(g["step"][~finite], np.ones((~finite).sum()), "v", color=colour, ms=6, clip_on=False,
                    transform=ax.get_xaxis_transform(), gid="non-finite")  # x: a step, y: the panel's top
        drawn.append(g["value"][finite].to_numpy(dtype=float))
    if marked:
        ax.axvline(step, color=colour, ls="--", lw=0.8, gid="failure-step")
        before = curves[(curves["step"] <= step) & np.isfinite(curves["value"])].sort_values(["step", "value"])
        if len(before):  # the last step's largest value (of several layers)
            ax.plot(before["step"].iloc[-1], before["value"].iloc[-1], "x", color=colour, ms=6, mew=1.4, zorder=4)
    return np.concatenate(drawn) if drawn else np.array([])


def lr_curves(labels: pd.Series, runs: pd.DataFrame, metrics: Sequence[tuple[str, str]]) -> Figure:
    """Each metric against learning rate (log x), one line per configuration: median and quartiles over seeds.

    Args:
        labels: configuration label per run (same index as ``runs``), in the order the lines are drawn.
        runs: the runs, with ``lr``, ``diverged``, the metric columns and the toggle columns (which give
            each configuration its colour: :func:`stability.report.palette.config_styles`).
        metrics: (column, axis label) pairs, e.g. best validation accuracy and final loss.
    Per configuration and learning rate: the median over seeds (line and marker), the interquartile band
    clipped to the metric's range, each seed as a faint dot and each diverged run as a cross at its (capped)
    value, so a fall of the median has a visible cause. More than :data:`~stability.report.plot_layout.MAX_LINES`
    configurations are faceted (one row of panels per facet, :func:`~stability.report.plot_layout.facets`); each
    row has its key on its right.
    """
    configs = _configs(labels, runs)
    facet_toggles, groups = facets(configs)
    colour_toggles = [t for t in varying_toggles(configs) if t not in facet_toggles]
    lrs = sorted(pd.to_numeric(runs[LR], errors="coerce").dropna().unique())
    fig, grid, panels, keys = keyed_grid(len(groups), 1, len(metrics), extra_height=0.3)
    legends = []
    for row, (facet, members) in enumerate(groups):
        axes = panels[row]
        styles = palette.config_styles(configs.loc[members].to_dict("index"), colour_toggles)
        band_alpha = min(BAND_ALPHA, 0.6 / len(members))  # overlapping bands stay readable
        for label in members:
            g = runs[labels == label]
            style = styles[label]
            for ax, (col, _) in zip(axes, metrics, strict=True):
                y = pd.to_numeric(g[col], errors="coerce")
                lr = pd.to_numeric(g[LR], errors="coerce")
                q = y.groupby(lr).quantile([0.25, 0.5, 0.75]).unstack()
                if q.empty:
                    continue
                lo, hi = metric_range(col)
                ax.fill_between(q.index, q[0.25].clip(lo, hi), q[0.75].clip(lo, hi), color=style.colour,
                                alpha=band_alpha, lw=0, gid="band")
                ax.plot(q.index, q[0.5], color=style.colour, ls=style.linestyle, marker=style.marker, ms=4,
                        lw=1.4, gid="median")
                ax.plot(lr, y, ls="", marker=".", color=style.colour, alpha=0.45, ms=4)
                div = g["diverged"].astype(bool)
                if div.any():
                    ax.plot(lr[div], y[div], "x", color=style.colour, ms=7, mew=1.5)
        for ax, (col, name) in zip(axes, metrics, strict=True):
            ax.set_xscale("log")
            ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])  # the grid's own values, not a log axis' minor ticks
            ax.minorticks_off()
            ax.set_xlabel("peak learning rate")
            ax.set_ylabel(name)
            fit_range(ax, col, pd.to_numeric(runs[col], errors="coerce").to_numpy(dtype=float))
        if facet:
            axes[0].set_title(facet, fontsize=9, loc="left")
        legends.append(config_legend(keys[row, 0], styles, marker=True))
    fig.suptitle("median over seeds, interquartile band; dots: seeds, x: diverged", fontsize=9)
    fit_keys(fig, grid, legends, 1, len(metrics))
    return fig


def edf_plot(errors: dict[str, np.ndarray], title: str = "", configs: pd.DataFrame | None = None) -> Figure:
    """Error distribution functions (Xiao et al. 2021, Fig. 5): cumulative fraction of runs whose error
    is within x of the best; a curve that stays below 1 has that fraction of runs diverged/missing.

    Args:
        errors: configuration label -> its runs' errors (inf: diverged), in drawing order.
        title: the figure's title.
        configs: label -> toggle values (index: the labels of ``errors``; columns: toggles), which give
            the colours (:func:`stability.report.palette.config_styles`) and the facets when there are more than
            :data:`~stability.report.plot_layout.MAX_LINES` configurations; without it every line is neutral with
            its own style.
    """
    if configs is None:
        configs = pd.DataFrame(index=pd.Index(list(errors), dtype=object))
    configs = configs.loc[list(errors)]
    facet_toggles, groups = facets(configs)
    colour_toggles = [t for t in varying_toggles(configs) if t not in facet_toggles]
    ncols, nrows = 1, len(groups)  # facets stacked, as in lr_curves: a page is taller than wide
    fig, grid, panels, keys = keyed_grid(nrows, ncols, 1, extra_height=0.3 if title else 0.0)
    curves = {label: M.edf(err) for label, err in errors.items()}
    right = min(max((x[-1] for x, _ in curves.values() if len(x)), default=0.0) * 1.05 or 0.01, 1.0)
    legends = []
    for i, (facet, members) in enumerate(groups):
        ax = panels[i // ncols, i % ncols]
        styles = palette.config_styles(configs.loc[members].to_dict("index"), colour_toggles)
        for label in members:
            x, f = curves[label]
            if len(x) == 0:
                continue
            # Drawn on to the right edge: a curve that stays below 1 there has runs that diverged.
            ax.step(np.concatenate([[0.0], x, [right]]), np.concatenate([[0.0], f, [f[-1]]]), where="post",
                    color=styles[label].colour, ls=styles[label].linestyle, lw=1.4, clip_on=False)
        ax.set_xlim(0, right)
        ax.set_xlabel("error − best error")
        ax.set_ylabel("cumulative fraction of runs")
        ax.set_ylim(0, 1)
        if facet:
            ax.set_title(facet, fontsize=9, loc="left")
        counts = {label: f"{label} (n={len(errors[label])})" for label in members}
        legends.append(config_legend(keys[i // ncols, i % ncols], styles, names=counts))
    for i in range(len(groups), nrows * ncols):
        panels[i // ncols, i % ncols].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fit_keys(fig, grid, legends, ncols, 1)
    return fig


def certified_accuracy(data: pd.DataFrame, title: str = "", configs: pd.DataFrame | None = None) -> Figure:
    """Certified robust accuracy against the l2 radius, one line per configuration (LipShiFT, Menon et al. 2025,
    report it at one radius; the curve shows how fast certification falls off around it).

    Args:
        data: long format, one row per run and radius: ``configuration`` (label), ``radius`` (l2, pixels in
            [0, 1]), ``accuracy`` (:func:`stability.report.certificates.certified_long`).
        title: the figure's title.
        configs: label -> toggle values (index: the configuration labels; columns: toggles), which give the
            colours (:func:`stability.report.palette.config_styles`); without it, one colour per line in order.
    Each line is the median over the configuration's runs with a band from their minimum to their maximum
    (seeds are few: quantiles between would be one run's value); x is in grey levels (radius x 255, how
    radii are stated), y is clipped to [0, 1]. Lines at 0 (nothing certified) are drawn over the axis; lines
    drawn later are thinner with smaller markers, so configurations with the same numbers stay visible.
    """
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    markers = "osD^v<>p"
    labels = list(dict.fromkeys(data["configuration"]))
    styles = palette.config_styles(configs.loc[labels].to_dict("index"), varying_toggles(configs.loc[labels])) \
        if configs is not None else {}
    for i, label in enumerate(labels):
        colour = styles[label].colour if label in styles else f"C{i}"
        size = 3.0 + 4.0 * (len(labels) - 1 - i) / max(len(labels) - 1, 1)  # 7 for the first, 3 for the last
        g = data[data["configuration"] == label]
        stats = g.groupby("radius")["accuracy"].agg(["median", "min", "max", "count"]).sort_index()
        x = stats.index.to_numpy(dtype=float) * 255
        lo, mid, hi = (np.clip(stats[c].to_numpy(dtype=float), 0.0, 1.0) for c in ("min", "median", "max"))
        n = int(g["run"].nunique()) if "run" in g else int(stats["count"].max())
        ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0, clip_on=False)
        name = textwrap.fill(f"{label.replace(',', ', ')} (n={n})", 80, subsequent_indent="  ")  # long names wrap
        ax.plot(x, mid, color=colour, marker=markers[i % len(markers)], ms=size, lw=size / 3, clip_on=False,
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


# --------------------------------------------------------------------------------- shared by the figures
def quartiles(series: dict[str, pd.Series], diverged: set[str] | frozenset[str] = frozenset()) -> pd.DataFrame:
    """Quartiles over runs at each step: columns ``q25, q50, q75``, indexed by step.

    Args:
        series: run -> its finite losses indexed by step.
        diverged: the runs in ``series`` that diverged: after their last step they count as an infinite loss
            (a run that stopped early without diverging simply drops out).
    A quartile that an infinite loss enters (by interpolation or outright) is NaN, so the median line ends
    where half the runs have diverged and the band's top where a quarter have, instead of inventing a value.
    """
    frame = pd.DataFrame(series).sort_index()  # (steps, runs)
    values = frame.to_numpy(dtype=float, copy=True)
    finite_max = np.nanmax(values) if np.isfinite(values).any() else np.inf
    huge = 1e300
    for j, name in enumerate(frame.columns):
        if name in diverged:
            last = frame[name].last_valid_index()
            values[frame.index > last, j] = huge
    # Linear interpolation between order statistics, as np.nanquantile, vectorised over steps (nanquantile
    # loops over them in Python).
    ordered = np.sort(values, axis=1)  # NaN last
    n = np.isfinite(values).sum(axis=1)  # runs present at each step (huge counts: it is finite)
    rows = np.arange(len(values))
    q = np.full((len(values), 3), np.nan)  # (steps, 3)
    for j, p in enumerate((0.25, 0.5, 0.75)):
        pos = p * np.maximum(n - 1, 0)
        below = np.floor(pos).astype(int)
        above = np.ceil(pos).astype(int)
        q[:, j] = ordered[rows, below] + (ordered[rows, above] - ordered[rows, below]) * (pos - below)
    q[q > finite_max] = np.nan  # an infinite loss entered it (rows without runs are NaN already)
    return pd.DataFrame(q, index=frame.index, columns=["q25", "q50", "q75"])


def _configs(labels: pd.Series, runs: pd.DataFrame) -> pd.DataFrame:
    """Label -> the toggle values of its first run, labels in order of first appearance."""
    toggles = [t for t in TOGGLES if t in runs]
    first = runs.groupby(labels, sort=False).head(1)
    return pd.DataFrame(first[toggles].to_numpy(), index=pd.Index(labels.loc[first.index], dtype=object),
                        columns=toggles)


def _is(column: pd.Series, value: Any) -> pd.Series:
    return column.map(lambda x: M.same_value(x, value) or palette.value_key(x) == palette.value_key(value))
