"""The layout the figures share: keyed grids, legends that take room of their own, facets, fitted axes.

A panel or row of panels has its key in a column of its own (:func:`keyed_grid`, :func:`fit_keys`) or below
the panels (:func:`make_room`), so a long legend never shrinks the panels; more than :data:`MAX_LINES`
configurations are split into facets (:func:`facets`); a y axis stays inside its metric's range
(:func:`metric_range`) and turns logarithmic when its values span a decade (:func:`fit_range`). Helpers on
matplotlib objects and on DataFrames of toggle values; :mod:`stability.report.plots` draws the figures with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from stability.record.identity import TOGGLES, format_value
from stability.report import palette

MAX_LINES = 8  # configurations per panel; more are faceted
PANEL = (3.6, 2.7)  # inches (width, height) of one panel, whatever the legend
LEGEND_FONT = 8


def toggle_values(runs: pd.DataFrame, toggle: str | None) -> list[Any]:
    """The values of ``toggle`` among ``runs``: those ``TOGGLES`` lists in its order (baseline first), then
    any other in order of appearance; ``[None]`` without a toggle (one group)."""
    if not toggle:
        return [None]
    seen: dict[str, Any] = {}
    for v in runs[toggle]:
        seen.setdefault(palette.value_key(v), v)
    known = [palette.value_key(v) for v in TOGGLES[toggle].values] if toggle in TOGGLES else []
    order = [k for k in known if k in seen] + [k for k in seen if k not in known]
    return [seen[k] for k in order]


def metric_range(column: str) -> tuple[float | None, float | None]:
    """(lowest, highest) value ``column`` can take: accuracies [0, 1], losses [0, inf), others unbounded."""
    if column == "acc" or column.endswith("_acc") or column.startswith("acc_"):
        return 0.0, 1.0
    if "loss" in column:
        return 0.0, None
    return None, None


def varying_toggles(configs: pd.DataFrame) -> list[str]:
    """The toggle columns of ``configs`` (label -> toggle values) with more than one value, ``TOGGLES`` order."""
    return [t for t in TOGGLES if t in configs and configs[t].map(palette.value_key).nunique() > 1]


def facets(configs: pd.DataFrame, limit: int = MAX_LINES) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Split configurations into panels of at most ``limit``: (facet toggles, [(title, labels)]).

    ``configs`` is indexed by label with one column per toggle. Up to ``limit`` configurations: one panel,
    no title. More: facet by the varying toggle that leaves the largest panel smallest (ties: ``TOGGLES``
    order), then by a second one, and so on while a panel still holds more than ``limit``; a panel that no
    toggle splits further (configurations that differ in other settings) is cut into numbered parts.
    Panels run in ``TOGGLES`` value order (baseline first); titles name the facet values, e.g.
    ``"stem=conv, warmup=False"``.
    """
    labels = list(configs.index)
    if len(labels) <= limit:
        return [], [("", labels)]
    keys = configs.map(palette.value_key) if len(configs.columns) else configs

    def largest(cols: list[str]) -> int:
        return int(keys.groupby(cols).size().max()) if cols else len(labels)

    chosen: list[str] = []
    candidates = varying_toggles(configs)
    while largest(chosen) > limit and candidates:
        best = min(candidates, key=lambda t: (largest([*chosen, t]), candidates.index(t)))
        chosen.append(best)
        candidates.remove(best)

    def rank(label: str) -> tuple[int, ...]:
        ranks = []
        for t in chosen:
            known = [palette.value_key(v) for v in TOGGLES[t].values]
            k = keys.at[label, t]
            ranks.append(known.index(k) if k in known else len(known))
        return tuple(ranks)

    panels: dict[tuple[int, ...], list[str]] = {}
    for label in sorted(labels, key=rank):  # stable: drawing order within a panel is kept
        panels.setdefault(rank(label), []).append(label)
    groups = []
    for members in panels.values():
        title = ", ".join(f"{t}={format_value(configs.at[members[0], t])}" for t in chosen)
        parts = [members[i:i + limit] for i in range(0, len(members), limit)]
        for i, part in enumerate(parts):
            suffix = f" ({i + 1}/{len(parts)})" if len(parts) > 1 else ""
            groups.append(((title + suffix).strip(), part))
    return chosen, groups


def spans_decades(values: np.ndarray) -> bool:
    """Whether positive values span a factor of 10 or more (then a log axis shows them best)."""
    v = values[np.isfinite(values)]
    return bool(len(v)) and bool((v > 0).all()) and v.max() / v.min() >= 10


def log_scale(ax: Axes) -> None:
    """A logarithmic y axis labelled in plain numbers ("0.1", "1000"), not matplotlib's "10^3" and "6e-01"; within
    two decades the 2s and 5s between the powers of ten are labelled too."""
    def minor(value: float, _: int) -> str:
        low, high = ax.get_ylim()
        lead = round(value / 10 ** np.floor(np.log10(value)))
        return f"{value:g}" if high / low <= 100 and lead in (2, 5) else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def fit_range(ax: Axes, column: str, values: np.ndarray) -> None:
    """Log scale for unbounded values spanning decades (losses, not accuracies); y limits inside the range."""
    lo, hi = metric_range(column)
    if hi is None and spans_decades(values):
        ax.set_yscale("log")
        return
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom if lo is None else max(bottom, lo), top if hi is None else min(top, hi))


def config_legend(key: Axes, styles: dict[str, palette.Style], marker: bool = False,
                   names: dict[str, str] | None = None) -> Legend:
    """The key of one panel or row, in its own axes-less column (:func:`keyed_grid`)."""
    handles = [Line2D([], [], color=s.colour, ls=s.linestyle, marker=s.marker if marker else "", ms=4, lw=1.4)
               for s in styles.values()]
    labels = [(names or {}).get(label, label) for label in styles]
    return key.legend(handles, labels, loc="upper left", bbox_to_anchor=(0, 1), borderaxespad=0,
                      fontsize=LEGEND_FONT, frameon=False)


def keyed_grid(nrows: int, blocks: int, per_block: int,
                extra_height: float = 0.0) -> tuple[Figure, GridSpec, np.ndarray, np.ndarray]:
    """A figure of ``nrows`` x ``blocks`` blocks, each ``per_block`` panels and then a column for their key.

    Returns (figure, grid, panels ``(nrows, blocks * per_block)``, keys ``(nrows, blocks)``). The key
    columns are axes without axis; :func:`fit_keys` widens them to the widest legend once the legends
    exist, so a long legend takes room of its own instead of the panels'.
    """
    fig = Figure(figsize=(PANEL[0] * blocks * per_block, PANEL[1] * nrows + extra_height), layout="constrained")
    grid = fig.add_gridspec(nrows, blocks * (per_block + 1))
    panels = np.empty((nrows, blocks * per_block), dtype=object)
    keys = np.empty((nrows, blocks), dtype=object)
    for r in range(nrows):
        for b in range(blocks):
            for i in range(per_block):
                panels[r, b * per_block + i] = fig.add_subplot(grid[r, b * (per_block + 1) + i])
            keys[r, b] = fig.add_subplot(grid[r, b * (per_block + 1) + per_block])
            keys[r, b].axis("off")
    return fig, grid, panels, keys


def fit_keys(fig: Figure, grid: GridSpec, legends: Sequence[Legend], blocks: int, per_block: int) -> None:
    """Size the key columns of a :func:`keyed_grid` to the widest legend and grow the figure by as much."""
    renderer = FigureCanvasAgg(fig).get_renderer()  # a legend's size does not depend on where it goes
    key = max((legend.get_window_extent(renderer).width for legend in legends), default=0.0) / fig.dpi + 0.1
    widths = ([PANEL[0]] * per_block + [key]) * blocks  # inches
    grid.set_width_ratios(widths)
    fig.set_size_inches(sum(widths) + 0.2, fig.get_figheight())


def legend_columns(labels: Sequence[str], width: float, fontsize: float) -> int:
    """How many legend columns of ``labels`` fit in ``width`` inches (about 0.55 em per character)."""
    entry = max((len(s) for s in labels), default=1) * 0.55 * fontsize / 72 + 0.5
    return max(1, min(len(labels), int(width // entry)))


def row_major(items: Sequence[Any], ncols: int) -> list[Any]:
    """Reorder legend entries so they read by rows (matplotlib fills a legend's columns one after another)."""
    return [item for c in range(ncols) for item in items[c::ncols]]


def make_room(fig: Figure, legend: Legend) -> None:
    """Grow the figure by the height of its legend below the panels, so the panels keep their size.

    Constrained layout makes room for an outside legend by shrinking the axes; adding the legend's measured
    height to the figure's gives that room back.
    """
    renderer = FigureCanvasAgg(fig).get_renderer()  # a legend's size does not depend on where it goes
    fig.set_size_inches(fig.get_figwidth(), fig.get_figheight() + legend.get_window_extent(renderer).height
                        / fig.dpi + 0.1)
