"""``stability report SWEEP --curves FILE``: every run's TensorBoard scalar curves as one long, tidy table.

Why: the event files are the sweep's richest record (every logged step of the loss, learning rate, gradient
norm, attention logits, ...), but reading them takes TensorBoard's reader and one folder per run. One table with
a row per (run, tag, step) and the run's toggles, hyperparameters and status beside each row lets a user
group, filter and plot the curves in pandas, R, DuckDB or a spreadsheet, without this package.

Columns: ``run, tag, step, value, wall_time``, then the sweep's toggles, its hyperparameters and ``status``.
The curves are :func:`stability.analysis.results.load_curves`'s: a resumed run's repeated steps are kept once
(the history it followed), a diverged run's curves stop at its last logged step (a non-finite value kept as
logged), and a run without event files (pending, or failed before it logged) has no rows.

Formats, by the file's name: ``.parquet`` (pandas through pyarrow, when installed: the package does not depend
on it), ``.csv`` and ``.csv.gz`` (plain and gzip-compressed CSV). The file name, the tags and the sweep folder
are checked before anything is written, and the file is written whole or not at all (a temporary file beside
it, renamed into place).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd

from stability.analysis.results import Sweep, load_curves, load_sweep
from stability.errors import ConfigError
from stability.report.writes import naming_full_disk

CURVE_COLUMNS = ("run", "tag", "step", "value", "wall_time")
SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".csv.gz": "csv"}  # file name ending -> format


def curves_format(path: str | Path) -> str:
    """``parquet`` or ``csv``, from the name of the file to write.

    Raises:
        ConfigError: another ending, a folder, or Parquet without a Parquet engine installed.
    """
    name = Path(path).name.lower()
    suffix = next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s) and len(name) > len(s)),
                  None)
    if suffix is None:
        raise ConfigError(f"--curves: got {str(path)!r}; the file name must end in "
                          f"{', '.join(SUFFIXES)} (Parquet or CSV, gzip-compressed for .csv.gz)")
    if Path(path).is_dir():
        raise ConfigError(f"--curves: {str(path)!r} is a folder; give a file name ending in {', '.join(SUFFIXES)}")
    fmt = SUFFIXES[suffix]
    if fmt == "parquet" and not any(importlib.util.find_spec(m) for m in ("pyarrow", "fastparquet")):
        raise ConfigError(f"--curves: {str(path)!r}: writing Parquet needs pyarrow, which is not installed "
                          f"(pip install pyarrow); or give a .csv or .csv.gz file")
    return fmt


def parse_tags(text: str | None) -> list[str] | None:
    """``--curves-tags train/loss,attn/*`` -> the tag names or shell patterns; None (every tag) when not given.

    Raises:
        ConfigError: an option given without any tag in it.
    """
    if text is None:
        return None
    tags = [t.strip() for t in text.split(",") if t.strip()]
    if not tags:
        raise ConfigError(f"--curves-tags: got {text!r}; give comma-separated tag names or patterns "
                          f"(e.g. train/loss,attn/*)")
    return tags


def curves_table(sweep: Sweep, tags: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (run, tag, step): :data:`CURVE_COLUMNS`, then the run's toggles, hyperparameters and status.

    Raises:
        ConfigError: a tag (or pattern) that names no scalar of any run; the message lists the tags there are.
    """
    curves = load_curves(sweep, tags=None)
    if tags is not None:
        present = sorted(set(curves["tag"]))
        unknown = [t for t in tags if not any(fnmatch(p, t) for p in present)]
        if unknown:
            shown = ", ".join(present[:12]) + (f", ... ({len(present)} in all)" if len(present) > 12 else "")
            raise ConfigError(f"--curves-tags: {', '.join(unknown)} matches no scalar tag in {str(sweep.path)!r}; "
                              f"its tags: {shown or 'none (no run has events)'}")
        curves = curves[curves["tag"].map(lambda tag: any(fnmatch(tag, t) for t in tags))]
    attributes = [*sweep.toggles, *sweep.hparams, "status"]
    per_run = sweep.runs[attributes]
    # a toggle or hyperparameter named like a curve column would overwrite it: prefixed, as results does
    per_run = per_run.rename(columns={c: f"hp_{c}" for c in attributes if c in CURVE_COLUMNS})
    table = curves.join(per_run, on="run")
    return table.reset_index(drop=True)


def write_curves(table: pd.DataFrame, path: str | Path, fmt: str) -> Path:
    """Write ``table`` to ``path`` as ``fmt`` (``parquet`` or ``csv``, gzip for a ``.gz`` name), whole or not at
    all: into a temporary file beside it, then renamed over it. Creates the parent folder.

    Raises:
        ConfigError: the place cannot be written (a file where a folder should be, no permission);
        OutOfSpace: the disk filled up (naming ``path``).
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with naming_full_disk(path.parent, lambda _: path, during="writing the curves"):
            if fmt == "parquet":
                table.to_parquet(partial, index=False)
            else:
                table.to_csv(partial, index=False,
                             compression="gzip" if path.name.lower().endswith(".gz") else None)
        os.replace(partial, path)
    except OSError as exc:
        raise ConfigError(f"--curves: cannot write to {str(path)!r} ({exc.strerror or exc})") from exc
    finally:
        with contextlib.suppress(OSError):  # nothing there, or no folder to hold it: the error above says why
            partial.unlink(missing_ok=True)
    return path


def export_curves(sweeps: Sequence[str], file: str, tags_text: str | None) -> int:
    """``stability report SWEEP --curves FILE [--curves-tags TAG,TAG]``: check, read, write, say what was written.
    Returns the exit code: 0 written, 1 no run of the sweep has events (nothing written).

    Raises:
        ConfigError: bad input (more than one sweep, the file's name, the tags, not a sweep folder), before
            anything is written.
    """
    if len(sweeps) != 1:
        raise ConfigError(f"--curves: exports the curves of one sweep folder; got {len(sweeps)}")
    fmt = curves_format(file)
    tags = parse_tags(tags_text)
    sweep = load_sweep(sweeps[0])
    table = curves_table(sweep, tags)
    if table.empty:
        counts = ", ".join(f"{n} {s}" for s, n in sweep.runs["status"].value_counts().items())
        print(f"error: no curves to export in {sweeps[0]}: no run has TensorBoard events ({counts})", file=sys.stderr)
        return 1
    written = write_curves(table, file, fmt)
    absent = sweep.runs.loc[~sweep.runs.index.isin(set(table["run"]))]
    print(f"wrote {len(table)} rows ({table['run'].nunique()} runs, {table['tag'].nunique()} tags) to {written}")
    if len(absent):
        counts = ", ".join(f"{n} {s}" for s, n in absent["status"].value_counts().items())
        print(f"note: {len(absent)} run(s) without {'these tags' if tags else 'events'} are not in it ({counts})",
              file=sys.stderr)
    return 0


__all__ = ["CURVE_COLUMNS", "SUFFIXES", "curves_format", "curves_table", "export_curves", "parse_tags",
           "write_curves"]
