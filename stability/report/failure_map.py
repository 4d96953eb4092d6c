"""The failure map: for each configuration and learning rate, how many of its runs failed (diverged or
collapsed), as a table and as a heat map.

It answers the study's question at a glance: where along the learning rate each configuration stops
training, and which tricks move that edge. A configuration is every configuration column but the lr and the
seed (:func:`stability.report.configs.config_label`, the names the other tables use); its cells are its runs
over the seeds. A run that raised (``failed``) is not a result and is not counted here (the failures section
lists it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stability.analysis.results import Sweep
from stability.record.files import COLLAPSED, DIVERGED
from stability.record.identity import LR
from stability.report.configs import config_label, format_cell, group_key, sorted_keys

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLUMNS = ["configuration", LR, "n", "diverged", "collapsed", "failed", "rate"]


def failure_map_table(sweep: Sweep, finished: pd.DataFrame) -> pd.DataFrame:
    """Long format, one row per configuration and lr, configurations baseline first: ``n`` finished runs,
    ``diverged``, ``collapsed``, ``failed`` (their sum) and ``rate`` = failed / n."""
    if finished.empty or LR not in finished:
        return pd.DataFrame(columns=COLUMNS)
    cfg = [c for c in sweep.config_columns if c != LR]
    key = group_key(finished, cfg)
    rows = []
    for k in sorted_keys(finished, cfg, sweep, key):
        members = finished[key == k]
        label = config_label(sweep, members.iloc[0], cfg)
        for lr, g in sorted(members.groupby(LR), key=lambda item: float(item[0])):
            diverged, collapsed = int(g["status"].eq(DIVERGED).sum()), int(g["status"].eq(COLLAPSED).sum())
            rows.append({"configuration": label, LR: float(lr), "n": len(g), "diverged": diverged,
                         "collapsed": collapsed, "failed": diverged + collapsed,
                         "rate": (diverged + collapsed) / len(g)})
    return pd.DataFrame(rows, columns=COLUMNS)


def cell_text(row: pd.Series) -> str:
    """``2/3`` failed of run, with the collapsed ones named when there are any: ``3/3 (1 collapsed)``."""
    text = f"{int(row['failed'])}/{int(row['n'])}"
    return text + (f" ({int(row['collapsed'])} collapsed)" if row["collapsed"] else "")


def format_failure_map(table: pd.DataFrame) -> pd.DataFrame:
    """Wide: one row per configuration (in the table's order), one column per lr, cells ``failed/n``; a
    configuration not run at an lr shows a dash."""
    if table.empty:
        return pd.DataFrame(columns=["configuration"])
    lrs = sorted(table[LR].unique())
    order = list(dict.fromkeys(table["configuration"]))
    cells = table.assign(cell=table.apply(cell_text, axis=1))
    wide = cells.pivot(index="configuration", columns=LR, values="cell").reindex(index=order, columns=lrs)
    wide.columns = [f"lr={format_cell(lr)}" for lr in lrs]
    return wide.fillna("–").reset_index()


def failure_map_figure(table: pd.DataFrame, title: str = "") -> Figure:
    """A heat map: configurations down, learning rates across, colour = fraction failed (white 0, red 1),
    each cell labelled ``failed/n``; cells not run are left blank (grey). Configurations run at a single
    learning rate have no edge to show and are left out (the table keeps them)."""
    from matplotlib.figure import Figure  # the report's tables need no matplotlib

    n_lrs = table.groupby("configuration")[LR].nunique()
    table = table[table["configuration"].map(n_lrs) > 1] if (n_lrs > 1).any() else table
    order = list(dict.fromkeys(table["configuration"]))
    lrs = sorted(table[LR].unique())
    rate = table.pivot(index="configuration", columns=LR, values="rate").reindex(index=order, columns=lrs)
    text = table.assign(cell=table.apply(cell_text, axis=1)).pivot(
        index="configuration", columns=LR, values="cell").reindex(index=order, columns=lrs)
    names = [_wrapped(c) for c in _without_common_parts(order)]
    width = 2.4 + 1.1 * len(lrs) + 0.065 * max((len(line) for c in names for line in c.splitlines()), default=10)
    fig = Figure(figsize=(width, 0.9 + 0.42 * sum(c.count("\n") + 1 for c in names)), layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor("0.9")
    image = ax.imshow(np.ma.masked_invalid(rate.to_numpy(dtype=float)), cmap="Reds", vmin=0, vmax=1,
                      aspect="auto")
    for (i, j), cell in np.ndenumerate(text.to_numpy(dtype=object)):
        if isinstance(cell, str):
            dark = rate.iat[i, j] > 0.6
            ax.text(j, i, cell.replace(" (", "\n("), ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(lrs)), [format_cell(lr) for lr in lrs])
    ax.set_yticks(range(len(order)), names, fontsize=8)
    ax.set_xlabel("learning rate")
    ax.set_title(title or "runs failed (diverged or collapsed) of runs", fontsize=9)
    fig.colorbar(image, ax=ax, label="fraction failed", shrink=0.8)
    return fig


def _wrapped(label: str, width: int = 40) -> str:
    """A configuration label broken after its commas into lines of about ``width`` characters."""
    lines, line = [], ""
    for part in label.split(","):
        if line and len(line) + len(part) + 1 > width:
            lines.append(line + ",")
            line = part
        else:
            line = f"{line},{part}" if line else part
    return "\n".join([*lines, line])


def _without_common_parts(labels: list[str]) -> list[str]:
    """Labels without the ``key=value`` parts every one of them has (``max_epochs=12`` when every row drawn
    has it); a label left empty is the baseline's."""
    parts = [label.split(",") for label in labels]
    common = set.intersection(*(set(p) for p in parts)) if len(parts) > 1 else set()
    return [",".join(x for x in p if x not in common) or "baseline" for p in parts]
