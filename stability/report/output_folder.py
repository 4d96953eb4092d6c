"""A report's output folder: the report touches only files it wrote itself.

Each report writes a manifest, ``.stability-report.json``, listing the files it wrote (relative paths). A
later report into the same folder removes only the files of that list it does not write again (a table the
sweep no longer has, a figure it no longer draws), and never a file it did not write: a user's
``plots/figure1.png`` or ``report.md`` stays. Before anything is written, a folder that holds files under the
report's own names which no earlier report wrote is refused with one line, unless the user says
``--overwrite`` (then those files are replaced, and nothing else of theirs is touched). A ``plots`` folder
that is a symbolic link is refused too: the report would write (and clean) outside the folder it was given.

A folder written by a report from before manifests existed is recognised by its ``report.md``, which starts
with ``# Report: `` (what :func:`stability.report.markdown.render_markdown` writes): its files under the
report's names count as the report's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from stability.errors import ConfigError
from stability.record.files import write_atomic

MANIFEST = ".stability-report.json"
MAX_MANIFEST_BYTES = 1_000_000  # a report writes a few hundred names; anything larger is not ours
FIGURE_SUFFIXES = (".png", ".pdf")
REPORT_SIGNATURE = "# Report: "


def own_names(out: Path, tables: Iterable[str], formats: Sequence[str]) -> list[Path]:
    """The files a report with ``tables`` in ``formats`` writes under fixed names (figures aside)."""
    names = [out / f"{name}.{fmt}" for name in tables for fmt in ("csv", "md", "tex") if fmt in formats]
    return names + [out / f"report.{fmt}" for fmt in ("md", "html") if fmt in formats]


def existing_figures(out: Path) -> list[Path]:
    plots = out / "plots"
    if not plots.is_dir() or plots.is_symlink():
        return []
    return sorted(p for p in plots.iterdir() if p.suffix in FIGURE_SUFFIXES and p.is_file())


def previous_files(out: Path, all_tables: Iterable[str]) -> set[Path]:
    """The files an earlier report wrote into ``out``: its manifest's list, or, for a report from before
    manifests, every file under the report's names when its ``report.md`` says it is one."""
    manifest = out / MANIFEST
    if manifest.is_file() and not manifest.is_symlink() and manifest.stat().st_size <= MAX_MANIFEST_BYTES:
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            listed = []
        return {out / name for name in listed if isinstance(name, str) and _inside(out, out / name)}
    legacy = out / "report.md"
    if legacy.is_file() and not legacy.is_symlink() and _starts_with(legacy, REPORT_SIGNATURE):
        candidates = own_names(out, all_tables, ("csv", "md", "tex", "html")) + existing_figures(out)
        return {p for p in candidates if p.is_file()}
    return set()


def check_output_folder(out: Path, names: Sequence[Path], plots: bool, previous: set[Path],
                        overwrite: bool) -> None:
    """Raise ConfigError (nothing written) when ``out`` cannot take this report: not a folder, a ``plots``
    link, or files under the report's ``names`` (and, with ``plots``, figures) that no earlier report wrote."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file; give a folder (it is created if missing)")
    if (out / "plots").is_symlink():
        raise ConfigError(f"--out: {out / 'plots'} is a symbolic link; the report writes its figures into a folder "
                          "of its own: remove the link or choose another --out")
    if overwrite:
        return
    theirs = [p for p in names if (p.exists() or p.is_symlink()) and p not in previous]
    theirs += [p for p in existing_figures(out) if plots and p not in previous]
    if theirs:
        more = f" (and {len(theirs) - 1} more)" if len(theirs) > 1 else ""
        raise ConfigError(f"--out: {theirs[0]}{more} is not a file an earlier report wrote, and this report would "
                          "write under its name; choose another --out, or add --overwrite to replace such files "
                          "(nothing else in the folder is touched)")


def finish(out: Path, written: Sequence[Path], previous: set[Path]) -> None:
    """Remove what the earlier report wrote and this one did not, then record what this one wrote."""
    keep = {p.resolve() for p in written}
    for path in sorted(previous):
        if path.is_file() and not path.is_symlink() and path.resolve() not in keep and _inside(out, path):
            path.unlink()
    names = sorted(str(p.relative_to(out)) for p in written if _inside(out, p))
    write_atomic(out / MANIFEST, json.dumps({"files": names}, indent=1) + "\n")


def _inside(out: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(out.resolve())
    except ValueError:
        return False
    return True


def _starts_with(path: Path, text: str) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(text.encode())).decode("utf-8", "replace") == text
    except OSError:
        return False
