"""The report's failures section: every run that diverged, collapsed or raised, where it stopped and why.

Runs that fail are this project's subject, so the report lists each one right after the claims instead of
leaving them to a status column: its configuration, learning rate and seed, its status, the step it stopped
at and the reason the run recorded (``divergence_reason``, ``collapse_reason`` or ``error``), with the last
values of its telemetry (:data:`PROBES`: loss, gradient norm, max attention logit). Rows run by configuration
(baseline first, as the other tables), then learning rate, then seed, and each says how many of its cell's
runs (same configuration and learning rate) failed, so a pattern ("every seed of layernorm at lr 1e-2")
reads down the table. A count line opens the section ("3 of 12 runs failed ..."); a sweep without failures
says so in one line, which is a result too.

The step a run stopped at, in order of trust: the divergence detector's ``diverged_step``; the summary's
``failure`` record (a diverged run's failing step, probed whatever the probe period, and a window of its last
steps; absent in older records and other statuses); the run's own failure marker in its events
(``Stability/diverged``, ``Stability/collapsed``); the last logged step of its telemetry; its step count. The
last telemetry values come from that record's failing step when it has them (``non_finite`` names the values
that were NaN or infinite), else from the curves; the record's ``window`` stands in for events that stop short.

Plain pandas (no matplotlib): the figure of the same telemetry is :func:`stability.report.plots.run_telemetry`,
through :func:`stability.report.figures.failure_telemetry`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import numpy as np
import pandas as pd

from stability.analysis.results import Sweep
from stability.record.files import COLLAPSED, DIVERGED, FAILED, RECORDED
from stability.record.identity import LR, SEED
from stability.report.configs import config_label, format_cell, group_key, is_finite, sorted_keys
from stability.report.formatting import fmt_measured

FAILED_STATUSES = (DIVERGED, COLLAPSED, FAILED)
FIGURE_STEM = "failure_telemetry"  # this section's figures: plots/failure_telemetry.png, failure_telemetry_2.png...
WINDOW_TAG = "failure/{}"  # the summary's failure window as curves (tag per probe) for runs whose events stop short
REASON_COLUMNS = {DIVERGED: "divergence_reason", COLLAPSED: "collapse_reason", FAILED: "error"}
MARKER_TAG = "Stability/{}"  # the failure marker a run writes at the step it was decided


@dataclass(frozen=True)
class Probe:
    """One quantity watched before a failure: its key (a column of the failures table, a key of the summary's
    ``failure`` record), its panel title, and the tags that hold it, in order of preference."""

    key: str
    title: str
    tags: tuple[str, ...]


# Loss, gradient norm and max attention logit (Wortsman et al. 2023, sec. 3: the logits and the gradient norm
# grow before the loss diverges). Per run, the tag whose curve reaches furthest is used (ties: the first), so a
# record that logs the diverging step's loss under one tag only still shows it; ``attn/max_logit/*`` (one curve
# per layer) and ``train/grad_norm`` stand in for older records without the Stability/ group.
PROBES: tuple[Probe, ...] = (
    Probe("loss", "training loss", ("train/loss", "Stability/loss", WINDOW_TAG.format("loss"))),
    Probe("grad_norm", "gradient norm (before clipping)",
          ("Stability/grad_norm", "train/grad_norm", WINDOW_TAG.format("grad_norm"))),
    Probe("max_attn_logit", "max attention logit",
          ("Stability/max_attn_logit", "attn/max_logit/*", WINDOW_TAG.format("max_attn_logit"))),
)
PROBE_LABELS = {"loss": "loss", "grad_norm": "grad norm", "max_attn_logit": "max attn logit"}  # table headers
TELEMETRY_TAGS: tuple[str, ...] = (*dict.fromkeys(t for p in PROBES for t in p.tags if not t.startswith("failure/")),
                                   MARKER_TAG.format(DIVERGED), MARKER_TAG.format(COLLAPSED))


# ------------------------------------------------------------------------------------------- which runs


def failed_names(runs: pd.DataFrame) -> list[str]:
    """The runs that diverged, collapsed or raised, in the runs table's order."""
    return list(runs.index[runs["status"].isin(FAILED_STATUSES)])


def count_line(runs: pd.DataFrame) -> str:
    """The section's first line: "k of n runs failed (a diverged, b collapsed, c raised an error)", over the
    runs that ended (a run still running or pending has had no chance to fail, and is counted apart)."""
    ended = runs[runs["status"].isin(RECORDED)]
    counts = ended["status"].value_counts()
    k = int(sum(counts.get(s, 0) for s in FAILED_STATUSES))
    rest = len(runs) - len(ended)
    tail = f"; {rest} more {'has' if rest == 1 else 'have'} not ended" if rest else ""
    if not len(ended):
        return f"No run has ended yet ({len(runs)} not ended), so none has failed."
    if not k:
        return f"No run failed: none of the {len(ended)} runs that ended diverged, collapsed or raised{tail}."
    kinds = [f"{int(counts[s])} {what}" for s, what in ((DIVERGED, "diverged"), (COLLAPSED, "collapsed"),
                                                        (FAILED, "raised an error")) if counts.get(s, 0)]
    return f"{k} of {len(ended)} runs failed ({', '.join(kinds)}){tail}."


# ----------------------------------------------------------------------------------------- the table


def failures_table(sweep: Sweep, runs: pd.DataFrame, telemetry: pd.DataFrame) -> pd.DataFrame:
    """One row per failed run, numbers as numbers: ``run, configuration, lr, seed, status, step, reason,
    cell_failed, cell_runs`` and per probe its last value at or before the step and the step it was measured at
    (:func:`probe_value`: ``inf`` measured non-finite, NaN never measured). Ordered by configuration (baseline
    first), learning rate, seed."""
    names = failed_names(runs)
    columns = ["run", "configuration", LR, SEED, "status", "step", "reason", "cell_failed", "cell_runs",
               *(c for p in PROBES for c in (p.key, f"{p.key}_step"))]
    if not names:
        return pd.DataFrame(columns=columns)
    cfg = [c for c in sweep.config_columns if c != LR]
    ended = runs[runs["status"].isin(RECORDED)]
    cell = group_key(ended, [*cfg, LR])
    failed_in_cell = ended["status"].isin(FAILED_STATUSES).groupby(cell).sum()
    runs_in_cell = cell.value_counts()
    by_run = {name: g for name, g in telemetry.groupby("run")} if len(telemetry) else {}
    rows = []
    for name in names:
        row = runs.loc[name]
        record = failure_record(row)
        curves = by_run.get(name, telemetry.iloc[:0])
        step = stop_step(row, record, curves)
        key = cell[name]
        rows.append({
            "run": name, "configuration": config_label(sweep, row, cfg), LR: row.get(LR), SEED: row.get(SEED),
            "status": row["status"], "step": step, "reason": failure_reason(row),
            "cell_failed": int(failed_in_cell[key]), "cell_runs": int(runs_in_cell[key]),
        })
        for p in PROBES:
            rows[-1][p.key], rows[-1][f"{p.key}_step"] = probe_value(p, record, curves, step)
    return _reading_order(pd.DataFrame(rows, columns=columns), sweep, runs.loc[names], cfg)


def _reading_order(table: pd.DataFrame, sweep: Sweep, failed: pd.DataFrame, cfg: Sequence[str]) -> pd.DataFrame:
    """The table by configuration (in the configuration table's order: baseline first), lr, seed: a cell's
    failures stand together and a row's neighbours differ in one setting."""
    key = group_key(failed, cfg)
    rank = {k: i for i, k in enumerate(sorted_keys(failed, cfg, sweep, key))}
    order = pd.DataFrame({"cfg": key.map(rank).to_numpy(), "lr": pd.to_numeric(table[LR], errors="coerce"),
                          "seed": pd.to_numeric(table[SEED], errors="coerce"), "run": table["run"]})
    at = order.sort_values(["cfg", "lr", "seed", "run"], kind="stable", na_position="last").index
    return table.loc[at].reset_index(drop=True)


def failure_reason(row: pd.Series) -> str:
    """What the run recorded about its failure: the divergence reason, the collapse rule it met or its error."""
    column = REASON_COLUMNS.get(str(row.get("status")), "")
    value = row.get(column)
    if isinstance(value, str) and value.strip():
        return value.strip().splitlines()[0]
    return f"not recorded (no {column} in its summary)" if column else "not recorded"


def stop_step(row: pd.Series, record: dict[str, Any] | None, curves: pd.DataFrame) -> float:
    """The step the run stopped at (module docstring: which record is trusted first); NaN when none says."""
    status = str(row.get("status"))
    if status == DIVERGED and is_finite(row.get("diverged_step")):
        return float(row["diverged_step"])
    if record is not None and is_finite(record.get("step")):
        return float(record["step"])
    markers = curves[curves["tag"] == MARKER_TAG.format(status)] if len(curves) else curves
    if len(markers):
        return float(markers["step"].min())
    if len(curves):
        return float(curves["step"].max())
    steps = row.get("steps")
    return float(steps) - 1 if is_finite(steps) and float(steps) > 0 else math.nan


def probe_value(probe: Probe, record: dict[str, Any] | None, curves: pd.DataFrame,
                step: float) -> tuple[float, float]:
    """(value, step measured) of ``probe``'s last measurement at or before ``step``: the failing step's own, from
    the summary's ``failure`` record, when it has one; else the curves' last (over layers: the largest finite).

    A value measured non-finite (the diverging loss) is ``inf`` whatever it was (the record keeps NaN and inf
    alike as null, listed under ``non_finite``); never measured: ``(nan, nan)``.
    """
    if record is not None and is_finite(record.get("step")):
        at = float(record["step"])
        if is_finite(record.get(probe.key)):
            return float(record[probe.key]), at
        if probe.key in (record.get("non_finite") or ()):
            return math.inf, at
    series = probe_curves(probe, curves)
    if is_finite(step):
        series = series[series["step"] <= step]
    if not len(series):
        return math.nan, math.nan
    last = series[series["step"] == series["step"].max()]["value"].to_numpy(dtype=float)
    finite = last[np.isfinite(last)]
    return (float(finite.max()) if len(finite) else math.inf), float(series["step"].max())


def probe_curves(probe: Probe, curves: pd.DataFrame) -> pd.DataFrame:
    """One run's curves of ``probe``: those of the first of its tags whose curve reaches furthest (several
    tags when the pattern matches several, one per layer)."""
    best, reach = curves.iloc[:0], -math.inf
    for pattern in probe.tags:
        hit = curves[curves["tag"].map(lambda tag, p=pattern: fnmatch(tag, p))] if len(curves) else curves
        if len(hit) and hit["step"].max() > reach:
            best, reach = hit, float(hit["step"].max())
    return best


def format_failures(table: pd.DataFrame) -> pd.DataFrame:
    """The failures table as text: the step as a whole number, each probe with "not measured" where it was never
    logged, and ``failed in cell`` as "k/n" (of the runs of that configuration and learning rate that ended)."""
    if table.empty:
        return pd.DataFrame()
    out = pd.DataFrame({
        "configuration": table["configuration"],
        LR: table[LR].map(format_cell),
        SEED: table[SEED].map(format_cell),
        "status": table["status"],
        "stopped at step": table["step"].map(lambda v: f"{v:.0f}" if is_finite(v) else "unknown"),
        "why": table["reason"],
        "failed in cell": [f"{k}/{n}" for k, n in zip(table["cell_failed"], table["cell_runs"], strict=True)],
    })
    for probe in PROBES:
        out[f"last {PROBE_LABELS[probe.key]}"] = [_probe_text(v, at, stop) for v, at, stop in
                                                  zip(table[probe.key], table[f"{probe.key}_step"], table["step"],
                                                      strict=True)]
    out["run"] = table["run"]
    return out


def _probe_text(value: float, at: float, stop: float) -> str:
    """A probe's last value: 3 decimals below 10 (a loss of 2.303), 1 above (a logit of 41.7), "non-finite" or
    "not measured"; with the step it was measured at when that is not the step the run stopped at (a probe
    sampled every n steps may be old news: "5.61 (step 15)")."""
    if value == math.inf:
        text = "non-finite"
    else:
        text = fmt_measured(value, 3 if is_finite(value) and abs(float(value)) < 10 else 1)
    return text + (f" (step {at:.0f})" if is_finite(at) and is_finite(stop) and at != stop else "")


def probe_panels(telemetry: pd.DataFrame, runs: Sequence[str]) -> pd.DataFrame:
    """The curves :func:`stability.report.plots.run_telemetry` draws for ``runs``: per run and probe the tags of
    :func:`probe_curves`, with a ``panel`` column (the probe's title), the runs in their order."""
    frames = []
    for name in runs:
        mine = telemetry[telemetry["run"] == name]
        frames += [probe_curves(p, mine).assign(panel=p.title) for p in PROBES]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else telemetry.iloc[:0].assign(panel=None)


# ------------------------------------------------------------------------------ the summary's failure record


def failure_record(row: pd.Series) -> dict[str, Any] | None:
    """The summary's ``failure`` field, whole again, or None in a record that has none.

    The runs table flattens a nested summary field into dotted columns (``failure.step``,
    ``failure.probes.loss``) and keeps lists as JSON text (``failure.window``); this undoes both.
    """
    whole = row.get("failure")
    if isinstance(whole, str):
        whole = _json(whole)
    record: dict[str, Any] = dict(whole) if isinstance(whole, dict) else {}
    for column, value in row.items():
        if not isinstance(column, str) or not column.startswith("failure.") or _missing(value):
            continue
        *parents, leaf = column.removeprefix("failure.").split(".")
        node = record
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = _json(value) if isinstance(value, str) else value
    return record or None


def window_curves(name: str, record: dict[str, Any] | None) -> pd.DataFrame:
    """The windows of a ``failure`` record (:meth:`stability.training.telemetry.StabilityTelemetry.failure_at`:
    ``window``, the last steps' ``loss``, ``grad_norm``...; ``probes``, the last probes' ``max_attn_logit``...;
    each a list of objects with their ``step``, ending at the failing step) as long-format curves, one tag per
    probe (:data:`WINDOW_TAG`), for runs whose events stop short of their failure. A value listed under the
    object's ``non_finite`` becomes NaN (drawn as non-finite); one not measured (null) is left out.
    """
    record = record or {}
    entries = [entry for key in ("window", "probes") if isinstance(record.get(key), list) for entry in record[key]]
    rows = []
    for entry in entries:
        if not isinstance(entry, dict) or not is_finite(entry.get("step")):
            continue
        non_finite = entry.get("non_finite") or ()
        for probe in PROBES:
            value = math.nan if probe.key in non_finite else _number(entry.get(probe.key))
            if value is not None:
                rows.append({"run": name, "tag": WINDOW_TAG.format(probe.key), "step": int(entry["step"]),
                             "value": value, "wall_time": math.nan})
    return pd.DataFrame(rows, columns=["run", "tag", "step", "value", "wall_time"])


def with_windows(telemetry: pd.DataFrame, runs: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """``telemetry`` plus the failure windows of ``names`` (:func:`window_curves`) where their records have one."""
    frames = [telemetry, *(window_curves(n, failure_record(runs.loc[n])) for n in names)]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else telemetry


def _json(text: str) -> Any:
    """JSON text (a list or an object the runs table kept as text) decoded; anything else as it was."""
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _number(value: Any) -> float | None:
    """A probe value as a float, non-finite ones included (``"nan"``, ``"inf"`` as JSON writers spell them)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def names_text(names: Sequence[str], limit: int = 8) -> str:
    """``a, b, c and 5 more``: run names in a gap line."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
