"""The report touches only files it wrote (stability.report.output_folder): a user's files in the output folder
survive every report, a clash is one line before anything is written, and a linked plots folder is refused.

A report is replaced whole: a failure, a kill or a full disk while it is written leaves the earlier report
byte-identical (plus, after a kill, a staging folder that the next report removes), and a full disk is one
``error:`` line naming the file being written, exit 3.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fabricate as fab
import pytest
from sweep_helpers import ROOT, tree_digest

from stability.cli import main as cli_main
from stability.report import main
from stability.report.output_folder import MANIFEST, STAGING


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fab.make_sweep(tmp_path_factory.mktemp("out_folder"), unfinished=False)


def users_files(out: Path) -> dict[str, bytes]:
    """A user's folder: two figures of their own and a report.md that no stability report wrote."""
    files = {"plots/figure1.png": b"\x89PNG mine", "plots/figure2.pdf": b"%PDF mine", "report.md": b"# My notes\n"}
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return files


def test_a_report_never_deletes_or_replaces_a_users_files(sweep: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    files = users_files(out)
    assert main([str(sweep), "--out", str(out), "--no-plots", "--format", "csv"]) == 0  # no name in common
    assert all((out / name).read_bytes() == data for name, data in files.items())
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert main([str(sweep), "--out", str(out), "--format", "md,csv"]) == 2  # report.md is theirs
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out: ") and "report.md" in err[0] and "--overwrite" in err[0]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written
    assert main([str(sweep), "--out", str(out), "--format", "md,csv", "--overwrite"]) == 0
    assert (out / "report.md").read_text().startswith("# Report: ")  # told to: replaced
    assert (out / "plots" / "figure1.png").read_bytes() == files["plots/figure1.png"]  # never theirs to lose
    assert (out / "plots" / "figure2.pdf").read_bytes() == files["plots/figure2.pdf"]
    manifest = json.loads((out / MANIFEST).read_text())["files"]
    assert "report.md" in manifest and not any(name.startswith("plots/figure") for name in manifest)


def test_a_linked_plots_folder_is_refused_and_its_target_untouched(sweep: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.png").write_bytes(b"\x89PNG")
    out = tmp_path / "report"
    out.mkdir()
    (out / "plots").symlink_to(elsewhere)
    assert main([str(sweep), "--out", str(out)]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert [p.name for p in elsewhere.iterdir()] == ["keep.png"] and list(out.iterdir()) == [out / "plots"]


def test_a_rerun_removes_only_what_the_earlier_report_wrote(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--format", "md,csv", "--no-plots"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    (out / "old_table.csv").write_text("a\n1\n")  # a table an earlier report wrote and this sweep no longer has
    (out / "notes.csv").write_text("mine\n")  # the user's: not in the manifest
    (out / MANIFEST).write_text(json.dumps({"files": [*manifest["files"], "old_table.csv", "../outside.csv"]}))
    (tmp_path / "outside.csv").write_text("not the report's folder\n")
    assert main([str(sweep), "--out", str(out), "--format", "md,csv", "--no-plots"]) == 0
    assert not (out / "old_table.csv").exists()
    assert (out / "notes.csv").read_text() == "mine\n" and (tmp_path / "outside.csv").exists()


def test_a_report_from_before_manifests_is_recognised_by_its_report_md(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--format", "md,csv", "--no-plots"]) == 0
    (out / MANIFEST).unlink()  # as an older version left it
    (out / "edf.csv").write_text("stale\n")
    assert main([str(sweep), "--out", str(out), "--format", "md,csv", "--no-plots"]) == 0  # no refusal
    assert (out / MANIFEST).is_file()


# -- a report is replaced whole -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second sweep whose report differs from ``sweep``'s (it has unfinished runs): the new report."""
    return fab.make_sweep(tmp_path_factory.mktemp("other_sweep"), unfinished=True)


@pytest.fixture
def old_report(sweep: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A complete report with plots in ``tmp_path/report``, a user's file beside it, and the digest of both."""
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine\n")
    assert list(out.glob("plots/*.png")) and (out / "report.html").is_file()
    return out, tree_digest(out)


def staging_folders(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.name.startswith(STAGING)]


def test_a_report_that_fails_midway_leaves_the_old_report_byte_identical(
        old_report: tuple[Path, dict[str, str]], other_sweep: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The figures are written after the tables: a figure writer failing after one figure used to leave the
    new tables beside the old plots, report.md and report.html."""
    from stability.report import plots

    out, before = old_report
    real_save, saved = plots.save, []

    def save(fig: object, stem: Path) -> list[Path]:
        if saved:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(stem.with_suffix(".png")))
        saved.extend(real_save(fig, stem))
        return saved

    monkeypatch.setattr(plots, "save", save)
    capsys.readouterr()
    assert cli_main(["report", str(other_sweep), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Input/output error" in err[-1] and "Traceback" not in err[-1]
    assert len(saved) == 2 and tree_digest(out) == before and staging_folders(out) == []

    monkeypatch.undo()  # the cause is gone: the new report replaces the old one whole
    assert main([str(other_sweep), "--out", str(out)]) == 0
    after = tree_digest(out)
    assert after["runs.csv"] != before["runs.csv"] and after["notes.txt"] == before["notes.txt"]
    assert sorted(json.loads((out / MANIFEST).read_text())["files"]) == sorted(set(after) - {MANIFEST, "notes.txt"})


def test_a_killed_report_leaves_the_old_one_and_a_staging_folder_the_next_report_removes(
        old_report: tuple[Path, dict[str, str]], other_sweep: Path, tmp_path: Path) -> None:
    """SIGKILL while the second figure is drawn (a real kill: nothing of the report's runs after it)."""
    out, before = old_report
    script = tmp_path / "killed_report.py"
    script.write_text(
        "import os, signal, sys\n"
        "from stability.report import plots\n"
        "real_save, calls = plots.save, []\n"
        "def save(fig, stem):\n"
        "    calls.append(stem)\n"
        "    if len(calls) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real_save(fig, stem)\n"
        "plots.save = save\n"
        "from stability.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, str(script), "report", str(other_sweep), "--out", str(out)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    (stage,) = staging_folders(out)
    assert (stage / "runs.csv").is_file() and list(stage.glob("plots/*.png"))  # what the kill cut off
    assert {k: v for k, v in tree_digest(out).items() if not k.startswith(STAGING)} == before

    assert main([str(other_sweep), "--out", str(out)]) == 0
    assert staging_folders(out) == [] and tree_digest(out)["runs.csv"] != before["runs.csv"]


# -- a full disk ------------------------------------------------------------------------------------------------
needs_fsize_limit = pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE and SIGXFSZ (POSIX)")


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """The kernel refuses to grow any file this process writes past ``limit`` bytes: write() fails with EFBIG
    (a full-disk errno: stability.errors.FULL_ERRNOS) once SIGXFSZ, which would kill the process, is ignored."""
    import resource

    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def full_disk_line(err: str, out: Path) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {out}") and "no space left on the device while writing the report" in lines[0]
    return lines[0]


def test_a_full_disk_in_savefig_is_one_line_naming_the_figure_and_exit_3(
        old_report: tuple[Path, dict[str, str]], other_sweep: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The disk fills while matplotlib writes the third figure file: it has opened the file and written part
    of it when write() fails with ENOSPC, which names no file (what the report used to print as ``.``)."""
    from matplotlib.figure import Figure

    out, before = old_report
    real_savefig, calls = Figure.savefig, []

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(Path(fname))
        if len(calls) < 3:
            return real_savefig(self, fname, *args, **kwargs)
        with open(fname, "wb") as file:
            file.write(b"\x89PNG\r\n\x1a\n half an image")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", savefig)
    capsys.readouterr()
    assert cli_main(["report", str(other_sweep), "--out", str(out)]) == 3
    line = full_disk_line(capsys.readouterr().err, out)
    assert line.startswith(f"error: {out / 'plots' / calls[-1].name}: ")
    assert tree_digest(out) == before and staging_folders(out) == []


@needs_fsize_limit
@pytest.mark.parametrize(("limit", "kind"), [(1_000, "table"), (50_000, "figure")])
def test_a_real_write_limit_anywhere_in_the_report_is_one_line_and_exit_3(
        old_report: tuple[Path, dict[str, str]], other_sweep: Path, limit: int, kind: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A real write limit (:func:`file_size_limit`) met by the real pandas, Pillow and matplotlib writers."""
    out, before = old_report
    capsys.readouterr()
    with file_size_limit(limit):
        rc = cli_main(["report", str(other_sweep), "--out", str(out)])
    assert rc == 3
    line = full_disk_line(capsys.readouterr().err, out)
    named = Path(line.removeprefix("error: ").split(": no space left")[0])
    assert named.parent == (out / "plots" if kind == "figure" else out)
    assert named.suffix in ((".png", ".pdf") if kind == "figure" else (".csv", ".md", ".tex"))
    assert tree_digest(out) == before and staging_folders(out) == []


@needs_fsize_limit
def test_matplotlibs_pdf_writer_on_a_full_disk_names_its_file(tmp_path: Path) -> None:
    """Its zlib.error carries the OSError only as context, and neither names the file (the traceback users saw)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from stability.errors import OutOfSpace
    from stability.report.writes import naming_full_disk

    fig = Figure()
    fig.add_subplot().plot(range(2000), [i % 7 for i in range(2000)])
    target = tmp_path / "plots" / "curves.pdf"
    target.parent.mkdir()
    with file_size_limit(4_000), pytest.raises(OutOfSpace) as raised, naming_full_disk(tmp_path):
        fig.savefig(target)
    assert str(raised.value).startswith(f"{target}: no space left on the device while writing the report")


@needs_fsize_limit
def test_a_full_disk_while_comparing_sweeps_is_one_line_naming_the_file(
        sweep: Path, other_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a bad ``--out`` (exit 2, as it used to say): the disk, exit 3, and which file."""
    out = tmp_path / "compare"
    capsys.readouterr()
    with file_size_limit(300):
        rc = cli_main(["report", str(sweep), str(other_sweep), "--out", str(out)])
    assert rc == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out}{os.sep}") and "no space left on the device" in err[0]
