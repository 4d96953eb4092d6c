"""Run records -> pandas: one row per run, and on request the per-step curves.

A sweep folder holds one folder per run (``<sweep>/<run_name>/``) with ``config.yaml`` (written first),
TensorBoard event files, ``checkpoints/`` and ``summary.json`` (written atomically, last). Everything
downstream (tables, plots, notebooks) starts here, so this module is deliberately forgiving about what
it finds and explicit about it: a run that has not finished is a row with status ``running``,
``incomplete`` or ``pending``, never a silently missing row, and whatever could not be read is listed in
``Sweep.problems`` so a report can name its gaps.

Statuses (column ``status``):
    completed, diverged, failed   as written by the run in ``summary.json``
    running      no summary yet, and a sweep worker holds the run's lock (``.sweep.lock``) or a file in the
                 run folder changed within ``stale_after_s``
    incomplete   no (readable) summary, not running, but it logged (events/checkpoint): it was cut off
    pending      the sweep planned the run (plan.json, config.yaml) but it never logged anything

The TensorBoard reader (tbparse) is used in one function, :func:`_read_scalars`, so it can be swapped
for TensorBoard's own ``EventAccumulator`` without touching anything else.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from stability.errors import ConfigError

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
PLAN_FILE = "plan.json"
EVENTS_GLOB = "events.out.tfevents.*"

FINISHED = ("completed", "diverged")  # runs whose numbers go into tables
NOT_FINISHED = ("failed", "running", "incomplete", "pending")

# Columns that describe the record rather than the experiment; an hparam with one of these names is
# renamed "hp_<name>" so it can never overwrite them.
RECORD_COLUMNS = ("run", "run_dir", "run_name", "run_id", "status", "diverged", "has_summary")

# Baselines of toggles that live in the training recipe rather than in the model (DESIGN.md: warmup is
# on in the baseline, the trick is to remove it). Model toggles take theirs from the run names or from
# stability.model.TOGGLES (see infer_baselines).
RECIPE_BASELINES: dict[str, Any] = {"warmup": True}

_HASH_SUFFIX = re.compile(r"-[0-9a-f]{4,16}$")


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
    """

    path: Path
    runs: pd.DataFrame
    toggles: list[str]
    hparams: list[str]
    baselines: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

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
        return list(self.toggles) + [h for h in self.varying_hparams if h != "seed"]

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
    if (path / SUMMARY_FILE).exists() or (path / CONFIG_FILE).exists():
        raise ConfigError(f"sweep folder: {str(path)!r} is a single run folder; pass the sweep folder that "
                          f"contains it ({str(path.parent)!r})")
    now = time.time() if now is None else now
    problems: list[str] = []
    planned = _planned_runs(path, problems)  # name -> resolved config (may be {})
    run_dirs = [d for d in sorted(path.iterdir()) if d.is_dir() and _is_run_dir(d)]
    if not run_dirs and not planned:
        has_plan = (path / PLAN_FILE).exists()
        if has_plan:
            raise ConfigError(f"sweep folder: {str(path)!r} is empty: plan.json names no runs and no run "
                              f"folder exists yet")
        if not any(path.iterdir()):
            raise ConfigError(f"sweep folder: {str(path)!r} is empty: no plan.json and no run folders")
        raise ConfigError(f"sweep folder: {str(path)!r} is not a sweep: it has no plan.json and no run "
                          f"folders (sub-folders with {CONFIG_FILE}, {SUMMARY_FILE} or TensorBoard events)")

    rows = [_read_run(d, now, stale_after_s, problems) for d in run_dirs]
    seen = {d.name for d in run_dirs}
    for name, config in planned.items():
        if name not in seen:
            rows.append({"run": name, "run_dir": str(path / name), "run_name": name, "status": "pending",
                         "has_summary": False, "_config": config})

    toggles: list[str] = []
    hparams: list[str] = []
    for row in rows:
        for t in row.pop("_toggles", {}):
            if t not in toggles:
                toggles.append(t)
        for h in row.pop("_hparams", {}):
            if h not in hparams:
                hparams.append(h)
    hparams = [_hparam_column(h, toggles) for h in hparams]

    _fill_unrecorded(rows, toggles, hparams, problems)
    for row in rows:
        row.pop("_config", None)
    runs = pd.DataFrame(rows)
    for col in ("run_id", "diverged_step", "divergence_reason", "error"):
        if col not in runs:
            runs[col] = None
    runs["diverged"] = runs["status"].eq("diverged")
    for col in runs.columns:
        if col not in toggles and col not in hparams and _numeric(runs[col]):
            runs[col] = pd.to_numeric(runs[col], errors="coerce").astype("float64")
    runs = runs.set_index("run", drop=False).rename_axis(None)
    baselines = infer_baselines(runs, toggles)
    # Runs without a summary (running, cut off, pending): toggles their config/name did not give are at
    # the baseline, because run names list exactly the toggles that differ from it.
    named = runs["run_name"].map(lambda n: _name_pairs(n) is not None)
    for t, base in baselines.items():
        fill = runs[t].isna() & ~runs["has_summary"] & named
        if fill.any():
            runs[t] = runs[t].astype(object)
            runs.loc[fill, t] = base
    return Sweep(path=path, runs=runs, toggles=toggles, hparams=hparams, baselines=baselines,
                 problems=problems)


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
        if not run_dir.is_dir() or not any(run_dir.glob(EVENTS_GLOB)):
            continue
        scalars = _read_scalars(run_dir)
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


def _read_scalars(run_dir: Path) -> pd.DataFrame:
    """All scalars of the event files directly in ``run_dir``: columns tag, step, value, wall_time.

    The only place that knows about tbparse (see the module docstring).
    """
    from tbparse import SummaryReader  # imports tensorboard: only when curves are asked for

    reader = SummaryReader(str(run_dir), extra_columns={"wall_time", "dir_name"})
    scalars = reader.scalars
    if scalars is None or scalars.empty:
        return pd.DataFrame(columns=["tag", "step", "value", "wall_time"])
    if "dir_name" in scalars:  # events of sub-folders (another logger) are not this run's
        scalars = scalars[scalars["dir_name"].fillna("") == ""]
    return scalars[["tag", "step", "value", "wall_time"]].astype(
        {"step": "int64", "value": "float64", "wall_time": "float64"})


def parse_run_name(name: Any) -> dict[str, Any]:
    """``"stem=conv,norm=centernorm,lr=0.01,seed=0-3f2a9c"`` -> ``{"stem": "conv", ..., "seed": 0}``.

    Run names list the toggles that differ from the baseline, then lr and seed, then a short hash of the
    resolved config; booleans read ``on``/``off``. Returns {} for a name that does not follow that form
    (and for ``baseline-<hash>``, which has no pairs).
    """
    return _name_pairs(name) or {}


def _name_pairs(name: Any) -> dict[str, Any] | None:
    """parse_run_name, but None for a name that does not follow the convention ({} for the baseline)."""
    if not isinstance(name, str):
        return None
    body = _HASH_SUFFIX.sub("", name)
    if body == "baseline":
        return {}
    if "=" not in body:
        return None
    out: dict[str, Any] = {}
    for part in body.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            return None
        out[key.strip()] = _parse_scalar(value.strip())
    return out


def infer_baselines(runs: pd.DataFrame, toggles: Sequence[str]) -> dict[str, Any]:
    """The baseline ("off") value of each toggle, from the records themselves where possible.

    In order: (1) the run names: they list the toggles that differ from the baseline, so the value a
    toggle has in runs whose name does not mention it is its baseline; (2) ``stability.model.TOGGLES``
    (valid values, baseline first); (3) RECIPE_BASELINES (warmup); (4) the most common value, which is
    the baseline of a one-at-a-time ablation.
    """
    baselines: dict[str, Any] = {}
    parsed = runs["run_name"].map(_name_pairs) if "run_name" in runs else pd.Series(None, index=runs.index)
    recorded = runs["has_summary"] if "has_summary" in runs else pd.Series(True, index=runs.index)
    model_toggles: dict[str, Sequence[Any]] | None = None
    for t in toggles:
        values = runs.loc[recorded, t].dropna() if t in runs else pd.Series(dtype=object)
        unnamed = [v for v, p in zip(runs.loc[recorded, t], parsed[recorded], strict=True)
                   if p is not None and t not in p and not _isna(v)] if t in runs else []
        if len(set(map(repr, unnamed))) == 1:
            baselines[t] = unnamed[0]
            continue
        if model_toggles is None:
            model_toggles = _model_toggles()
        if t in model_toggles and model_toggles[t]:
            baselines[t] = model_toggles[t][0]
        elif t in RECIPE_BASELINES:
            baselines[t] = RECIPE_BASELINES[t]
        elif len(values):
            baselines[t] = values.value_counts().index[0]
    return baselines


def _model_toggles() -> dict[str, Sequence[Any]]:
    """stability.model.TOGGLES if the model package imports (it pulls in torch, so only when needed)."""
    try:
        from stability.model import TOGGLES
    except Exception:  # the model package is optional for reading records
        return {}
    return dict(TOGGLES)


def _read_run(run_dir: Path, now: float, stale_after_s: float, problems: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run_dir.name, "run_dir": str(run_dir), "run_name": run_dir.name,
                           "has_summary": False}
    config = _read_config(run_dir, problems)
    row["_config"] = config
    summary = None
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            problems.append(f"{run_dir.name}: {SUMMARY_FILE} unreadable ({exc}); counted as incomplete")
            summary = None
    if summary is None:
        # Running: a process holds the sweep's lock on the folder, or (runs outside the sweep runner, and
        # file systems where flock does not reach across machines) some file in it changed recently.
        active = _is_locked(run_dir) or _last_change(run_dir) >= now - stale_after_s
        logged = any(run_dir.glob(EVENTS_GLOB)) or (run_dir / "checkpoints").exists()
        if summary_path.exists():
            row["status"] = "incomplete"
        elif active:
            row["status"] = "running"
        else:  # never logged a step: planned only; logged but went quiet: cut off
            row["status"] = "incomplete" if logged else "pending"
        return row

    row["has_summary"] = True
    status = summary.get("status")
    if status not in ("completed", "diverged", "failed"):
        problems.append(f"{run_dir.name}: summary.json status {status!r} is not one of completed, diverged, "
                        f"failed; counted as incomplete")
        status = "incomplete"
    row["status"] = status
    row["_toggles"] = dict(summary.get("toggles") or {})
    row["_hparams"] = dict(summary.get("hparams") or {})
    for key, value in summary.items():
        if key in ("toggles", "hparams", "status"):
            continue
        if isinstance(value, dict):
            for sub, v in _flatten(value).items():
                row[f"{key}.{sub}"] = _cell(v)
        else:
            row[key] = _cell(value)
    row["run_name"] = summary.get("run_name") or run_dir.name
    for key, value in row["_toggles"].items():
        row[key] = _cell(value)
    for key, value in row["_hparams"].items():
        row[_hparam_column(key, row["_toggles"])] = _cell(value)
    return row


def _fill_unrecorded(rows: list[dict[str, Any]], toggles: list[str], hparams: list[str],
                     problems: list[str]) -> None:
    """Runs without a summary: take toggles and hparams from config.yaml, else from the run name."""
    columns = toggles + hparams
    for row in rows:
        if row["has_summary"]:
            continue
        from_config = _config_values(row["_config"], columns)
        pairs = _name_pairs(row["run_name"])
        from_name = pairs or {}
        for col in columns:
            key = col[3:] if col.startswith("hp_") else col
            if col in from_config:
                row[col] = from_config[col]
            elif key in from_name:
                row[col] = from_name[key]
        if not row["_config"] and pairs is None:
            problems.append(f"{row['run']}: no config.yaml and a run name without key=value pairs; its "
                            f"configuration is unknown")


def _config_values(config: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """Find each column among the leaves of a nested LightningCLI config, by leaf name.

    ``seed`` is ``seed_everything``. A leaf name found at several places is used only when one of them is
    under ``model`` (where toggles and optimiser hparams live); otherwise it is ambiguous and skipped.
    """
    if not config:
        return {}
    flat = _flatten(config)
    by_leaf: dict[str, list[str]] = {}
    for dotted in flat:
        leaf = dotted.rsplit(".", 1)[-1]
        by_leaf.setdefault(leaf, []).append(dotted)
    out: dict[str, Any] = {}
    for col in columns:
        key = col[3:] if col.startswith("hp_") else col
        if key == "seed" and "seed_everything" in flat:
            out[col] = _cell(flat["seed_everything"])
            continue
        places = by_leaf.get(key, [])
        if len(places) > 1:
            places = [p for p in places if p.startswith("model.")]
        if len(places) == 1:
            out[col] = _cell(flat[places[0]])
    return out


def _read_config(run_dir: Path, problems: list[str]) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        problems.append(f"{run_dir.name}: {CONFIG_FILE} unreadable ({type(exc).__name__})")
        return {}
    return config if isinstance(config, dict) else {}


def _planned_runs(path: Path, problems: list[str]) -> dict[str, dict[str, Any]]:
    """Runs a plan.json lists, name -> resolved config (runs planned but not started are ``pending``).

    stability.sweep writes ``{"runs": [{"run_name", "run_id", "params", "config"}, ...]}``; a plain list of
    names, or objects with ``run_dir``/``name``, are read too. A plan in another form is ignored (the run
    folders still count).
    """
    plan_path = path / PLAN_FILE
    if not plan_path.exists():
        return {}
    try:
        plan = json.loads(plan_path.read_text())
    except (OSError, ValueError) as exc:
        problems.append(f"{PLAN_FILE} unreadable ({exc}); runs not started yet cannot be listed")
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
        if isinstance(entry, str) and entry:
            planned[Path(entry).name] = config if isinstance(config, dict) else {}
    return planned


def _is_locked(run_dir: Path) -> bool:
    """Whether a sweep worker holds this run's lock now (stability.sweep.store's flock protocol)."""
    try:
        from stability.sweep.store import is_locked
    except ImportError:  # no sweep package (or no fcntl): fall back on file times
        return False
    try:
        return is_locked(run_dir)
    except OSError:
        return False


def _is_run_dir(d: Path) -> bool:
    return (d / SUMMARY_FILE).exists() or (d / CONFIG_FILE).exists() or any(d.glob(EVENTS_GLOB))


def _last_change(run_dir: Path) -> float:
    times = [run_dir.stat().st_mtime]
    for p in run_dir.rglob("*"):
        try:
            times.append(p.stat().st_mtime)
        except OSError:  # a checkpoint being replaced as we look
            continue
    return max(times)


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


def _parse_scalar(text: str) -> Any:
    if text in ("True", "true", "on"):  # the sweep writes booleans as on/off (warmup=off)
        return True
    if text in ("False", "false", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _isna(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _numeric(column: pd.Series) -> bool:
    """True for a column of numbers and gaps (None/NaN), so missing metrics become NaN, not None."""
    values = [v for v in column if not _isna(v)]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _nunique(column: pd.Series) -> int:
    return len({repr(None if _isna(v) else v) for v in column})
