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

A report is replaced whole. It is written into a staging folder inside the output folder
(``.stability-report-tmp-XXXXXXXX``: on the same file system, so moving a file from it is a rename) and swapped
in only once every file is complete (:func:`swap_in`): a failure or a kill while it is written leaves the
earlier report as it was, plus at most that folder, which the next report removes
(:func:`remove_stale_staging`). The swap itself renames one file after another, a few milliseconds; the
manifest lists the files of both reports meanwhile, so even a kill inside it leaves nothing the next report
would take for the user's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from stability.errors import ConfigError
from stability.record.files import write_atomic

MANIFEST = ".stability-report.json"
STAGING = ".stability-report-tmp-"  # + 8 hex digits: where a report is written before it is swapped in
STAGING_NAME = re.compile(re.escape(STAGING) + r"[0-9a-f]{8}")
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
    _write_manifest(out, written)


def remove_stale_staging(out: Path) -> None:
    """Remove the staging folders that reports killed before their swap left in ``out`` (folders with the
    staging name only: nothing else in ``out`` is the report's to remove)."""
    if not out.is_dir() or out.is_symlink():
        return
    for path in out.iterdir():
        if STAGING_NAME.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A new, empty staging folder in ``out`` for a report to be written into; removed, with what it holds,
    if writing fails (a kill leaves it to :func:`remove_stale_staging`)."""
    stage = out / f"{STAGING}{secrets.token_hex(4)}"
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def swap_in(out: Path, stage: Path, staged: Sequence[Path], previous: set[Path]) -> list[Path]:
    """Move a complete report from ``stage`` into ``out``; returns its files' places in ``out``.

    First the manifest lists the earlier report's files and this one's together; then each file is renamed
    over its place (a reader sees the old file or the new one, never part of one); then what the earlier
    report wrote and this one did not is removed, the manifest lists this report alone, and the staging
    folder goes.
    """
    placed = [out / path.relative_to(stage) for path in staged]
    _write_manifest(out, [*(p for p in previous if _inside(out, p)), *placed])
    for source, target in zip(staged, placed, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    finish(out, placed, previous)
    shutil.rmtree(stage, ignore_errors=True)
    return placed


def place_of(out: Path, path: Path) -> Path:
    """Where a file being written ends up: a staged file's place in ``out``; any other path as it is."""
    try:
        parts = Path(os.path.abspath(path)).relative_to(os.path.abspath(out)).parts
    except ValueError:
        return path
    if parts and STAGING_NAME.fullmatch(parts[0]):
        return out.joinpath(*parts[1:])
    return path


def _write_manifest(out: Path, files: Iterable[Path]) -> None:
    names = sorted({str(p.relative_to(out)) for p in files if _inside(out, p)})
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
