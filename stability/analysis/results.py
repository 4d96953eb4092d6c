"""Run records -> pandas: one row per run, and on request the per-step curves.

A sweep folder holds one folder per run (``<sweep>/<run_name>/``) with ``config.yaml`` (written first),
TensorBoard event files, ``checkpoints/`` and ``summary.json`` (written atomically, last). Everything
downstream (tables, plots, notebooks) starts here, so this module is deliberately forgiving about what
it finds and explicit about it: a run that has not finished is a row with status ``running``,
``incomplete`` or ``pending``, never a silently missing row, and whatever could not be read is listed in
``Sweep.problems`` so a report can name its gaps. Nothing in the folder is trusted: records are read through
:mod:`stability.record.checked_read` (regular files inside the sweep folder only, bounded in size, every field
of summary.json checked), so a damaged or planted file is one line there, never a traceback or a hang.

Statuses (column ``status``) are :mod:`stability.record.status`'s: ``completed``, ``diverged``, ``failed`` as the
run recorded them; ``running``, ``incomplete``, ``pending`` inferred from the folder. Toggles and
hyperparameters come from the records (``summary.json``, else ``config.yaml``, else the plan's resolved
config) through :mod:`stability.record.identity`, never from run names; baselines are the toggles' own.

The TensorBoard reader (tbparse) is used in one function, :func:`_read_scalars`, so it can be swapped
for TensorBoard's own ``EventAccumulator`` without touching anything else.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pandas as pd

from stability.analysis.claims import Claim, parse_claims
from stability.errors import ConfigError
from stability.record import checked_read as checked
from stability.record.config_files import read_yaml
from stability.record.files import (
    COLLAPSED,
    CONFIG,
    DIVERGED,
    EVENTS_GLOB,
    FINISHED,
    INCOMPLETE,
    PENDING,
    PLAN,
    SUMMARY,
)
from stability.record.identity import SEED, TOGGLES, hparams_of, toggles_of
from stability.record.status import is_run_dir, status_and_summary

# Columns that describe the record rather than the experiment; an hparam with one of these names is
# renamed "hp_<name>" so it can never overwrite them.
RECORD_COLUMNS = ("run", "run_dir", "run_name", "run_id", "status", "diverged", "collapsed", "has_summary")


@dataclass
class Sweep:
    """A loaded sweep folder.

    Attributes:
        path: the sweep folder.
        runs: one row per run, indexed by the run folder's name (column ``run`` too). Columns: the record
            (``run_dir``, ``run_name``, ``run_id``, ``status``, ``diverged``, ``has_summary``), every toggle
            and every hparam (flat, by name), and every scalar of summary.json (``final_val_acc``, ...;
            nested dicts other than toggles/hparams are flattened as ``versions.torch``).
        toggles: the toggle columns, in summary order.
        hparams: the hyperparameter columns (``lr``, ``seed``, ...).
        baselines: toggle -> its baseline ("off") value (see :func:`infer_baselines`).
        problems: one line per thing that could not be read; reports print them as gaps.
        claims: the claims the sweep's grid file states (``plan.json``), for :mod:`stability.analysis.verdicts`.
    """

    path: Path
    runs: pd.DataFrame
    toggles: list[str]
    hparams: list[str]
    baselines: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)

    @property
    def varying_hparams(self) -> list[str]:
        """Hyperparameters that take more than one value over the runs that wrote a summary."""
        recorded = self.runs[self.runs["has_summary"]]
        frame = recorded if len(recorded) else self.runs
        return [h for h in self.hparams if h in frame and _nunique(frame[h]) > 1]

    @property
    def config_columns(self) -> list[str]:
        """A *configuration*: every toggle plus every hparam that varies across the sweep, except the seed.

        Runs that agree on these columns are repeats of one cell over seeds.
        """
        return list(self.toggles) + [h for h in self.varying_hparams if h != SEED]

    @property
    def finished(self) -> pd.DataFrame:
        """The runs whose numbers can be tabulated (status completed or diverged)."""
        return self.runs[self.runs["status"].isin(FINISHED)]


def load_sweep(sweep_dir: str | Path, *, stale_after_s: float = 900.0, now: float | None = None) -> Sweep:
    """Read every run record under ``sweep_dir`` (not the events; see :func:`load_curves`).

    Args:
        sweep_dir: the folder ``stability sweep`` wrote (``<sweep>/<run>/summary.json`` ...).
        stale_after_s: a run without summary is ``running`` if a sweep worker holds its lock or its folder
            changed less than this many seconds ago, otherwise ``incomplete``. The default (15 min) is
            several TensorBoard flush intervals (2 min), so a live run is not mistaken for a dead one.
        now: the clock for that test (seconds since the epoch); default: the current time.

    Raises:
        ConfigError: the folder does not exist, is not a sweep (no run folders) or a run folder.
    """
    path = Path(sweep_dir)
    if not path.exists():
        raise ConfigError(f"sweep folder: {str(path)!r} does not exist")
    if not path.is_dir():
        raise ConfigError(f"sweep folder: {str(path)!r} is a file, not a sweep folder")
    if (path / SUMMARY).exists() or (path / CONFIG).exists():
        raise ConfigError(f"sweep folder: {str(path)!r} is a single run folder; pass the sweep folder that "
                          f"contains it ({str(path.parent)!r})")
    now = time.time() if now is None else now
    problems: list[str] = []
    planned = _planned_runs(path, problems)  # name -> resolved config (may be {})
    run_dirs = [d for d in sorted(path.iterdir()) if d.is_dir() and is_run_dir(d)]
    if not run_dirs and not planned:
        if (path / PLAN).exists():
            raise ConfigError(f"sweep folder: {str(path)!r} is empty: plan.json names no runs and no run "
                              f"folder exists yet")
        if not any(path.iterdir()):
            raise ConfigError(f"sweep folder: {str(path)!r} is empty: no plan.json and no run folders")
        raise ConfigError(f"sweep folder: {str(path)!r} is not a sweep: it has no plan.json and no run "
                          f"folders (sub-folders with {CONFIG}, {SUMMARY} or TensorBoard events)")

    rows = [_read_run(d, planned.get(d.name, {}), now, stale_after_s, problems) for d in run_dirs]
    seen = {d.name for d in run_dirs}
    for name, config in planned.items():
        if name not in seen:
            rows.append(_unrecorded_row(name, path / name, PENDING, config, problems))

    toggles: list[str] = []
    hparams: list[str] = []
    for row in rows:
        for t in row.pop("_toggles"):
            if t not in toggles:
                toggles.append(t)
        for h in row.pop("_hparams"):
            if h not in hparams:
                hparams.append(h)
    toggles.sort(key=lambda t: list(TOGGLES).index(t) if t in TOGGLES else len(TOGGLES))
    hparams = [_hparam_column(h, toggles) for h in hparams]
    runs = pd.DataFrame(rows)
    for col in ("run_id", "diverged_step", "divergence_reason", "error", *toggles, *hparams):
        if col not in runs:
            runs[col] = None
    # A record from before a toggle existed ran at its baseline: say so, or configurations split in two. A run
    # with no record of its config at all stays unknown (never guessed).
    recorded = runs[[t for t in toggles if t in runs]].notna().any(axis=1) if toggles else None
    for col in toggles:
        if col in TOGGLES and recorded is not None:
            runs[col] = runs[col].where(runs[col].notna() | ~recorded, TOGGLES[col].baseline)
    runs["diverged"] = runs["status"].eq(DIVERGED)
    runs["collapsed"] = runs["status"].eq(COLLAPSED)
    for col in runs.columns:
        if col not in toggles and col not in hparams and _numeric(runs[col]):
            runs[col] = pd.to_numeric(runs[col], errors="coerce").astype("float64")
    runs = runs.set_index("run", drop=False).rename_axis(None)
    return Sweep(path=path, runs=runs, toggles=toggles, hparams=hparams,
                 baselines=infer_baselines(runs, toggles), problems=problems, claims=_planned_claims(path, problems))


def load_runs(sweep_dir: str | Path, **kwargs: Any) -> pd.DataFrame:
    """The run table of :func:`load_sweep` alone (one row per run)."""
    return load_sweep(sweep_dir, **kwargs).runs


def load_curves(sweep: Sweep | str | Path, tags: Iterable[str] | None = ("train/loss",),
                runs: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-step scalars from the TensorBoard events, long format.

    Args:
        sweep: a loaded :class:`Sweep` or a sweep folder.
        tags: tag names or shell patterns (``"attn/max_logit/*"``); None keeps every tag.
        runs: run folder names to read (default: every run that has event files).

    Returns:
        Columns ``run, tag, step, value, wall_time``, sorted by run, tag, step. A resumed run logs the steps
        between its last checkpoint and the crash twice (once per event file); the value with the latest
        ``wall_time`` is kept, because that is the history the finished run actually followed.
        Non-finite values (a diverging loss) are kept as they were logged.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    names = list(sweep.runs.index) if runs is None else list(runs)
    patterns = None if tags is None else list(tags)
    frames = []
    for name in names:
        run_dir = Path(sweep.runs.loc[name, "run_dir"])
        if not event_files(run_dir, sweep.path):
            continue
        scalars = _read_scalars(run_dir, sweep.path)
        if patterns is not None:
            keep = scalars["tag"].map(lambda tag: any(fnmatch(tag, p) for p in patterns))
            scalars = scalars[keep]
        if len(scalars):
            frames.append(scalars.assign(run=name))
    columns = ["run", "tag", "step", "value", "wall_time"]
    if not frames:
        return pd.DataFrame({"run": pd.Series(dtype=object), "tag": pd.Series(dtype=object),
                             "step": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                             "wall_time": pd.Series(dtype="float64")})
    curves = pd.concat(frames, ignore_index=True)[columns]
    return dedupe_steps(curves)


def dedupe_steps(curves: pd.DataFrame) -> pd.DataFrame:
    """Keep one value per (run, tag, step): the one with the latest wall_time (resumed runs log twice)."""
    curves = curves.sort_values(["run", "tag", "step", "wall_time"], kind="stable")
    curves = curves.drop_duplicates(["run", "tag", "step"], keep="last")
    return curves.reset_index(drop=True)


def event_files(run_dir: Path, sweep_dir: Path | None = None) -> list[Path]:
    """The run's TensorBoard event files: regular files directly in ``run_dir`` (a link only to one inside the
    run or sweep folder); dangling links, link loops, FIFOs and other loggers' sub-folders are not events."""
    roots = [] if sweep_dir is None else [sweep_dir]
    return checked.regular_entries(run_dir, lambda name: fnmatch(name, EVENTS_GLOB), roots)


def _read_scalars(run_dir: Path, sweep_dir: Path | None = None) -> pd.DataFrame:
    """All scalars of the run's event files (:func:`event_files`): columns tag, step, value, wall_time.

    The only place that knows about tbparse (see the module docstring). Each file is read on its own: given a
    folder, tbparse walks everything under it and stops at the first link it cannot follow. A file it cannot
    read is left out with a warning (the run's other files still count).
    """
    from tbparse import SummaryReader  # imports tensorboard: only when curves are asked for

    frames = []
    for path in event_files(run_dir, sweep_dir):
        try:
            scalars = SummaryReader(str(path), extra_columns={"wall_time"}).scalars
        except (OSError, ValueError) as error:
            warnings.warn(f"{path}: events unreadable ({error}); left out of the curves", stacklevel=2)
            continue
        if scalars is not None and not scalars.empty:
            frames.append(scalars[["tag", "step", "value", "wall_time"]])
    if not frames:
        return pd.DataFrame(columns=["tag", "step", "value", "wall_time"])
    return pd.concat(frames, ignore_index=True).astype(
        {"step": "int64", "value": "float64", "wall_time": "float64"})


def infer_baselines(runs: pd.DataFrame, toggles: Sequence[str]) -> dict[str, Any]:
    """The baseline ("off") value of each toggle: its own (:data:`stability.record.identity.TOGGLES`); for a column
    that is no known toggle, the most common value among the recorded runs (the baseline of a
    one-at-a-time ablation)."""
    out: dict[str, Any] = {}
    recorded = runs[runs["has_summary"]] if "has_summary" in runs else runs
    for t in toggles:
        if t in TOGGLES:
            out[t] = TOGGLES[t].baseline
        elif t in recorded and recorded[t].notna().any():
            out[t] = recorded[t].dropna().value_counts().index[0]
    return out


def _read_run(run_dir: Path, planned_config: dict[str, Any], now: float, stale_after_s: float,
              problems: list[str]) -> dict[str, Any]:
    status, summary, unreadable = status_and_summary(run_dir, stale_after_s=stale_after_s, now=now,
                                                     root=run_dir.parent)
    verb = "unreadable"
    if summary is not None and (absurd := checked.implausible(summary.hparams)):  # valid, finished, absurd
        status, summary, unreadable, verb = INCOMPLETE, None, f"{run_dir / SUMMARY}: {absurd}", "not used"
    if unreadable:
        problems.append(f"{run_dir.name}: {SUMMARY} {verb} ({unreadable}); counted as incomplete and left out of "
                        "the tables")
    if summary is None:
        config = _read_config(run_dir, problems) or planned_config
        return _unrecorded_row(run_dir.name, run_dir, status, config, problems)
    row: dict[str, Any] = {}
    for key, value in summary.to_dict().items():
        if key in ("toggles", "hparams", "status"):
            continue
        if isinstance(value, dict):
            for sub, v in _flatten(value).items():
                row[f"{key}.{sub}"] = _cell(v)
        else:
            row[key] = _cell(value)
    # the record's own columns last: no key of summary.json (a newer version's, or a hand edit) replaces them
    row.update({"run": run_dir.name, "run_dir": str(run_dir), "has_summary": True, "status": status,
                "run_name": summary.run_name or run_dir.name})
    for name in ("diverged", "collapsed"):  # derived from the status in load_sweep
        row.pop(name, None)
    return _with_values(row, summary.toggles or {}, summary.hparams or {})


def _unrecorded_row(name: str, run_dir: Path, status: str, config: dict[str, Any],
                    problems: list[str]) -> dict[str, Any]:
    """A run without a summary: its toggles and hparams from its resolved config (config.yaml or plan.json)."""
    row = {"run": name, "run_dir": str(run_dir), "run_name": name, "status": status, "has_summary": False}
    if not config:
        problems.append(f"{name}: no {CONFIG} and no plan entry; its configuration is unknown")
        return _with_values(row, {}, {})
    toggles, hparams = toggles_of(config), hparams_of(config)
    for key, value in {**toggles, **hparams}.items():
        if checked.scalar(value) is not None:  # a hand-edited config: a list or mapping where a toggle's value goes
            problems.append(f"{name}: {CONFIG}: {key}: got {checked.shown(value)}; expected text, true/false, a finite "
                            "number or null; its configuration is unknown")
            return _with_values(row, {}, {})
    return _with_values(row, toggles, hparams)


def _with_values(row: dict[str, Any], toggles: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
    for key, value in toggles.items():
        row[key] = _cell(value)
    for key, value in hparams.items():
        row[_hparam_column(key, toggles)] = _cell(value)
    return {**row, "_toggles": list(toggles), "_hparams": list(hparams)}


def _read_config(run_dir: Path, problems: list[str]) -> dict[str, Any]:
    path = run_dir / CONFIG
    try:
        if checked.regular_file(path, [run_dir.parent]) is None:
            return {}
        config = read_yaml(path)  # bounded, strict, and safe from alias bombs
    except (checked.RecordError, ConfigError) as exc:
        problems.append(f"{run_dir.name}: {CONFIG} unreadable ({exc})")
        return {}
    return config if isinstance(config, dict) else {}


def _read_plan(path: Path) -> Any:
    """plan.json's content (see :func:`stability.record.checked_read.read_json`); raises FileNotFoundError,
    RecordError."""
    return checked.read_json(path / PLAN, [path], checked.MAX_PLAN_BYTES)


def _planned_claims(path: Path, problems: list[str]) -> list[Claim]:
    """The claims plan.json carries (the grid file's ``claims:``); a claim that no longer parses is a problem."""
    try:
        plan = _read_plan(path)
    except (OSError, checked.RecordError):
        return []
    try:
        return parse_claims(plan.get("claims") if isinstance(plan, dict) else None, str(path / PLAN))
    except ConfigError as error:
        problems.append(f"claims not checked: {error}")
        return []


def _planned_runs(path: Path, problems: list[str]) -> dict[str, dict[str, Any]]:
    """Runs a plan.json lists, name -> resolved config (runs planned but not started are ``pending``).

    stability.sweep writes ``{"runs": [{"run_name", "run_id", "params", "config"}, ...]}``; a plain list of
    names, or objects with ``run_dir``/``name``, are read too. A plan in another form is ignored (the run
    folders still count).
    """
    try:
        plan = _read_plan(path)
    except FileNotFoundError:
        return {}
    except (OSError, checked.RecordError) as exc:
        problems.append(f"{PLAN} unreadable ({exc}); runs not started yet cannot be listed")
        return {}
    entries = plan.get("runs", []) if isinstance(plan, dict) else plan
    if isinstance(entries, dict):
        entries = list(entries)
    planned: dict[str, dict[str, Any]] = {}
    for entry in entries if isinstance(entries, list) else []:
        config: Any = {}
        if isinstance(entry, dict):
            config = entry.get("config") or {}
            entry = entry.get("run_name") or entry.get("run_dir") or entry.get("name")
        if isinstance(entry, str) and Path(entry).name not in ("", ".", ".."):
            planned[Path(entry).name] = config if isinstance(config, dict) else {}
    return planned


def _hparam_column(name: str, toggles: Iterable[str]) -> str:
    return f"hp_{name}" if name in RECORD_COLUMNS or name in toggles else name


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _cell(value: Any) -> Any:
    """A value that fits one hashable DataFrame cell: lists/dicts become JSON text; None stays None."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def _isna(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _numeric(column: pd.Series) -> bool:
    """True for a column of numbers and gaps (None/NaN), so missing metrics become NaN, not None."""
    values = [v for v in column if not _isna(v)]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _nunique(column: pd.Series) -> int:
    return len({repr(None if _isna(v) else v) for v in column})
