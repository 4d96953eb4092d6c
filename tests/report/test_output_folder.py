"""The report touches only files it wrote (stability.report.output_folder): a user's files in the output folder
survive every report, a clash is one line before anything is written, and a linked plots folder is refused."""

from __future__ import annotations

import json
from pathlib import Path

import fabricate as fab
import pytest

from stability.report import main
from stability.report.output_folder import MANIFEST


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
