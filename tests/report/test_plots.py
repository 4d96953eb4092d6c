"""Real figures from fabricated runs: one colour per toggle value, bands, ranges, legends that leave room.

The curves come from the fabricated sweep of ``fabricate.py`` (real TensorBoard events, read by
``stability.analysis.results``); the 32-configuration tables (stem x norm x attention x pos_embed x warmup, 3 learning
rates, 3 seeds) are built in memory in the runs-table format the report hands to the plots.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import fabricate as fab
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from stability.analysis.results import Sweep, load_curves, load_sweep
from stability.record.identity import TOGGLES, baselines
from stability.report import palette, plot_layout, plots

FACTORIAL = {"stem": ["patchify", "conv"], "norm": ["layernorm", "centernorm"], "attention": ["dot", "cosine"],
             "pos_embed": ["default", "lape"], "warmup": [True, False]}
ACC = [("best_val_acc", "best val accuracy"), ("final_loss", "final train loss")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return load_sweep(fab.make_sweep(tmp_path_factory.mktemp("sweep")))


@pytest.fixture(scope="module")
def curves(sweep: Sweep) -> pd.DataFrame:
    return load_curves(sweep)


@pytest.fixture(scope="module")
def lr32() -> Figure:
    """lr_curves of the 32 configurations, accuracies spread wide enough that unclipped bands leave [0, 1]
    (drawn once: the slowest figure here)."""
    labels, runs = factorial_runs(accuracy_spread=0.9)
    return plots.lr_curves(labels, runs, ACC)


def factorial_runs(accuracy_spread: float = 0.3) -> tuple[pd.Series, pd.DataFrame]:
    """32 configurations x lr {1e-3, 1e-2, 1e-1} x 3 seeds: (labels, runs); accuracies near 1 with a wide
    spread, so an unclipped band would leave [0, 1]."""
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for combo in itertools.product(*FACTORIAL.values()):
        config = {**baselines(), **dict(zip(FACTORIAL, combo, strict=True))}
        label = ",".join(f"{k}={v}" for k, v in config.items() if k in FACTORIAL and v != baselines()[k])
        for lr, seed in itertools.product((1e-3, 1e-2, 1e-1), range(3)):
            acc = float(np.clip(0.99 - accuracy_spread * rng.random() * (lr > 1e-3), 0.0, 1.0))
            rows.append({**config, "lr": lr, "seed": seed, "best_val_acc": acc, "diverged": seed == 2 and lr > 0.05,
                         "final_loss": 2.3 * (1.0 - acc) + 1e-3})
            labels.append(label or "baseline")
    index = [f"run{i}" for i in range(len(rows))]
    return pd.Series(labels, index=index, dtype=object), pd.DataFrame(rows, index=index)


def data_axes(fig: Figure) -> list:
    """The panels (visible, with their axis on): not legend-only key columns."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


def medians(fig: Figure) -> dict[str, list[str]]:
    """Panel title (or index) -> colours of its median lines."""
    out = {}
    for i, ax in enumerate(data_axes(fig)):
        out[ax.get_title() or ax.get_title(loc="left") or str(i)] = \
            [to_hex(line.get_color()) for line in ax.lines if line.get_gid() == "median"]
    return out


def legend_colours(fig: Figure) -> dict[str, str]:
    """Legend label -> colour of its line, over every legend of the figure."""
    out = {}
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]:
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True):
            colour = handle.get_color() if hasattr(handle, "get_color") else handle.get_facecolor()  # band+line
            out[text.get_text()] = to_hex(colour, keep_alpha=False)
    return out


# ------------------------------------------------------------------------------------------------ palette
def test_every_toggle_value_has_its_own_colour_and_baselines_are_neutral() -> None:
    colours, looks = {}, {}
    for name, toggle in TOGGLES.items():
        assert palette.colour(name, toggle.baseline) == palette.NEUTRAL, name
        alternatives = [palette.colour(name, v) for v in toggle.values[1:]]
        assert len(set(alternatives)) == len(alternatives), f"{name}: two values share a colour"
        assert palette.NEUTRAL not in alternatives
        colours.update({(name, v): c for v, c in zip(toggle.values[1:], alternatives, strict=True)})
        looks.update({(name, v): palette.look(name, v) for v in toggle.values[1:]})
    assert len(set(looks.values())) == len(looks)  # however many built-in values: colour, or colour + line style
    if len(colours) <= len(palette.COLOURS):
        assert len(set(colours.values())) == len(colours)  # while the palette lasts, no two share a colour
    # the same value read back from a table (numpy bool, text) is the same colour
    assert palette.colour("warmup", np.False_) == palette.colour("warmup", "False") == palette.colour("warmup", False)
    assert palette.colour("attention", "not-a-value") == palette.colour("attention", "not-a-value")  # stable


def test_a_configuration_takes_the_colour_of_its_first_non_baseline_value() -> None:
    configs = {"baseline": {"stem": "patchify", "warmup": True},
               "stem=conv": {"stem": "conv", "warmup": True},
               "stem=conv,warmup=False": {"stem": "conv", "warmup": False},
               "warmup=False": {"stem": "patchify", "warmup": False}}
    styles = palette.config_styles(configs, ["stem", "warmup"])
    assert styles["baseline"].colour == palette.NEUTRAL
    assert styles["stem=conv"].colour == styles["stem=conv,warmup=False"].colour == palette.colour("stem", "conv")
    assert styles["stem=conv"].linestyle != styles["stem=conv,warmup=False"].linestyle  # told apart
    assert styles["warmup=False"].colour == palette.colour("warmup", False)
    # a toggle the figure does not distinguish (a facet names it) does not colour
    assert palette.config_styles(configs, ["warmup"])["stem=conv"].colour == palette.NEUTRAL


def test_a_toggle_value_has_one_colour_across_figures_and_sweeps(sweep: Sweep, curves: pd.DataFrame) -> None:
    centernorm = palette.colour("norm", "centernorm")
    finished = sweep.runs.loc[sweep.finished.index]
    by_norm = plots.divergence_curves(finished, curves, "norm")
    only_centernorm = plots.divergence_curves(finished[finished["norm"] == "centernorm"], curves, "norm")
    assert legend_colours(by_norm)["norm=centernorm (0/4 diverged)"] == centernorm
    assert set(sum(medians(only_centernorm).values(), [])) == {centernorm}  # not "the first colour"
    assert set(sum(medians(by_norm).values(), [])) == {centernorm, palette.NEUTRAL}
    labels, runs = factorial_runs()
    few = ["baseline", "norm=centernorm", "attention=cosine", "norm=centernorm,attention=cosine", "stem=conv"]
    chosen = labels.isin(few)  # 5 configurations: one panel, no facet takes norm's colour away
    lr = legend_colours(plots.lr_curves(labels[chosen], runs[chosen], ACC))
    assert lr["norm=centernorm"] == lr["norm=centernorm,attention=cosine"] == centernorm
    assert lr["attention=cosine"] == palette.colour("attention", "cosine") != centernorm
    errors = {label: 1.0 - runs.loc[labels == label, "best_val_acc"].to_numpy() for label in dict.fromkeys(labels)}
    configs = runs.groupby(labels, sort=False).head(1)[list(FACTORIAL)].set_axis(list(errors))
    edf = legend_colours(plots.edf_plot({k: errors[k] for k in few[:3]}, configs=configs))
    assert edf["norm=centernorm (n=9)"] == centernorm and edf["baseline (n=9)"] == palette.NEUTRAL


USER_NORMS = ["mylab.norms.DyT", "mylab.norms.Other", "theirlab.layers.ScaleNorm"]


@pytest.mark.parametrize("count", [3, 5, 40])
def test_any_number_of_values_of_one_toggle_stay_apart(count: int) -> None:
    """Built-in and user values (class paths) of one toggle: every line of a figure has its own colour and
    line style or marker, even past the 19 colours of the palette (they cycle with the next style)."""
    values = [*TOGGLES["norm"].values, *USER_NORMS, *(f"lab{i}.norms.N{i}" for i in range(40))][:count]
    styles = palette.value_styles("norm", values)
    assert len(styles) == count and styles["layernorm"].colour == palette.NEUTRAL
    assert len({(s.colour, s.linestyle, s.marker) for s in styles.values()}) == count
    assert palette.value_styles("norm", values) == styles  # the same in every figure
    configs = {f"norm={v}": {"norm": v} for v in values}
    drawn = palette.config_styles(configs, ["norm"])
    assert len({(s.colour, s.linestyle, s.marker) for s in drawn.values()}) == count
    assert all(drawn[f"norm={v}"].colour == palette.colour("norm", v) for v in values)  # its colour is kept


def test_loss_curves_tell_apart_five_values_of_one_toggle_some_of_them_class_paths(
        sweep: Sweep, curves: pd.DataFrame) -> None:
    finished = sweep.runs.loc[sweep.finished.index].copy()
    values = ["layernorm", "centernorm", "rmsnorm", *USER_NORMS[:2]]
    finished["norm"] = [values[i % len(values)] for i in range(len(finished))]
    fig = plots.divergence_curves(finished, curves, "norm")
    legend = {text.get_text(): handle for lg in fig.legends for text, handle in zip(lg.get_texts(), lg.legend_handles)}
    for value in values:
        assert any(label.startswith(f"norm={value} (") for label in legend), (value, list(legend))
    medians_drawn = [(to_hex(line.get_color()), line.get_linestyle()) for ax in data_axes(fig) for line in ax.lines
                     if line.get_gid() == "median"]
    by_panel = [[(to_hex(line.get_color()), line.get_linestyle()) for line in ax.lines if line.get_gid() == "median"]
                for ax in data_axes(fig)]
    assert medians_drawn and all(len(set(panel)) == len(panel) for panel in by_panel)
    assert {c for c, _ in medians_drawn} >= {palette.colour("norm", v) for v in values[1:3]}


# ------------------------------------------------------------------------------------------------ curves
def test_loss_curves_draw_a_median_and_band_per_value_and_keep_the_divergence_cross(
        sweep: Sweep, curves: pd.DataFrame) -> None:
    finished = sweep.runs.loc[sweep.finished.index]
    fig = plots.divergence_curves(finished, curves, "norm")
    for ax in data_axes(fig):
        bands = [c for c in ax.collections if isinstance(c, PolyCollection) and c.get_gid() == "band"]
        assert len(bands) == 2, ax.get_title()  # layernorm and centernorm, in each lr panel
        assert ax.get_yscale() == "log"  # 2.3 down to ~0.15 and up to the explosion: over a decade
    lr_high = next(ax for ax in data_axes(fig) if ax.get_title() == "lr = 0.01")
    crosses = [line for line in lr_high.lines if line.get_marker() == "x"]
    assert len(crosses) == 1  # the diverged layernorm run, at its last finite step (19)
    assert crosses[0].get_xdata()[0] == fab.DIVERGED_STEP - 1
    assert to_hex(crosses[0].get_color()) == palette.NEUTRAL
    faint = [line for line in lr_high.lines if line.get_alpha() == plots.RAW_ALPHA]
    assert len(faint) == 4  # every run of the panel, behind the medians


def test_quartiles_count_a_diverged_run_as_infinite_after_it_diverged() -> None:
    steps = np.arange(10)
    series = {f"r{i}": pd.Series(1.0 + i + 0.0 * steps, index=steps) for i in range(5)}
    series["r2"] = series["r2"].iloc[:7]  # diverged after step 6
    series["r3"] = series["r3"].iloc[:5]  # diverged after step 4
    series["r4"] = series["r4"].iloc[:3]  # stopped after step 2 without diverging: drops out
    q = plots.quartiles(series, {"r2", "r3"})
    assert q.loc[0].tolist() == pytest.approx([2.0, 3.0, 4.0])  # quartiles of 1..5
    assert q.loc[3].tolist() == pytest.approx([1.75, 2.5, 3.25])  # r4 gone: 1..4
    assert q.loc[5, ["q25", "q50"]].tolist() == pytest.approx([1.75, 2.5])  # {1, 2, 3, inf}
    assert math.isnan(q.loc[5, "q75"])  # a diverged run entered the top quartile: no invented value
    assert q.loc[8, "q25"] == pytest.approx(1.75) and math.isnan(q.loc[8, "q50"])  # half diverged: no median


def test_accuracy_bands_and_limits_stay_in_0_1_and_lines_are_faceted(lr32: Figure) -> None:
    panels = data_axes(lr32)
    assert len(panels) == 4 * len(ACC)  # 32 configurations: 4 facets (two toggles) of 8
    for ax in panels:
        assert sum(line.get_gid() == "median" for line in ax.lines) <= plot_layout.MAX_LINES
        if ax.get_ylabel() == "best val accuracy":
            bottom, top = ax.get_ylim()
            assert 0.0 <= bottom < top <= 1.0
            for band in (c for c in ax.collections if c.get_gid() == "band"):
                y = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
                assert y.min() >= 0.0 and y.max() <= 1.0
        else:
            assert ax.get_yscale() == "log"  # final losses from 2.3e-3 to ~2: decades
    titles = {ax.get_title(loc="left") for ax in panels} - {""}
    assert titles == {"stem=patchify, norm=layernorm", "stem=patchify, norm=centernorm",
                      "stem=conv, norm=layernorm", "stem=conv, norm=centernorm"}


def test_facets_split_evenly_and_keep_small_figures_whole() -> None:
    labels, runs = factorial_runs()
    configs = runs.groupby(labels, sort=False).head(1)[list(FACTORIAL)].set_axis(list(dict.fromkeys(labels)))
    chosen, groups = plot_layout.facets(configs)
    assert chosen == ["stem", "norm"] and [len(m) for _, m in groups] == [8, 8, 8, 8]
    assert groups[0][1][0] == "baseline"  # the baseline facet first, drawing order kept inside it
    assert plot_layout.facets(configs.iloc[:8]) == ([], [("", list(configs.index[:8]))])
    same = pd.DataFrame({"stem": ["patchify"] * 10}, index=[f"wd={i}" for i in range(10)])
    assert [len(m) for _, m in plot_layout.facets(same)[1]] == [8, 2]  # no toggle splits them: numbered parts


# ------------------------------------------------------------------------------------------------ legends
@pytest.mark.parametrize("kind", ["curves", "lr_curves", "edf", "telemetry"])
def test_legends_sit_outside_the_panels_and_do_not_shrink_them(kind: str, sweep: Sweep, curves: pd.DataFrame,
                                                               lr32: Figure) -> None:
    labels, runs = factorial_runs()
    if kind == "curves":
        fig = plots.divergence_curves(sweep.runs.loc[sweep.finished.index], curves, "norm")
    elif kind == "lr_curves":
        fig = lr32
    elif kind == "edf":
        errors = {k: 1.0 - runs.loc[labels == k, "best_val_acc"].to_numpy() for k in dict.fromkeys(labels)}
        configs = runs.groupby(labels, sort=False).head(1)[list(FACTORIAL)].set_axis(list(errors))
        fig = plots.edf_plot(errors, "32 configurations", configs=configs)
    else:
        long_names = [f"{name}-with-a-long-suffix-{i}" for i, name in enumerate(curves["run"].unique())]
        fig = plots.run_telemetry(curves.assign(run=curves["run"].map(dict(zip(curves["run"].unique(),
                                                                                long_names, strict=True)))),
                                  long_names)
    fig.draw_without_rendering()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    assert legends
    for legend in legends:
        box = legend.get_window_extent()
        for ax in data_axes(fig):
            assert not box.overlaps(ax.get_window_extent()), (legend.get_texts()[0].get_text(), ax.get_title())
    for ax in data_axes(fig):  # panels keep their size whatever the legend (the figure grew instead)
        width, height = ax.get_window_extent().width / fig.dpi, ax.get_window_extent().height / fig.dpi
        assert width > 0.7 * plot_layout.PANEL[0] and height > 0.6 * plot_layout.PANEL[1], (width, height)


def test_png_gives_the_bytes_a_notebook_displays(sweep: Sweep, curves: pd.DataFrame, tmp_path: Path) -> None:
    fig = plots.divergence_curves(sweep.runs.loc[sweep.finished.index], curves, None)
    data = plots.png(fig)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
