"""Execute every notebook (jupytext percent .py) with a real kernel against a sweep folder.

papermill runs the NotebookNode that jupytext reads, with the ``python3`` kernel of this venv
(ipykernel), injecting ``sweep_dir``/``out_dir`` into the cell tagged ``parameters``; then the files the
notebook wrote are checked against what the package computes.
"""

from __future__ import annotations

from pathlib import Path

import fabricate as fab
import pandas as pd
import pytest

jupytext = pytest.importorskip("jupytext")
papermill = pytest.importorskip("papermill")

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.py"))

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module", params=["fabricated", pytest.param("smoke", marks=pytest.mark.slow)])
def sweep_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fabricated sweep (tests/fabricate.py), and the real smoke sweep of conftest.py (read-only;
    slow here because executing both notebooks on it adds ~10 s)."""
    if request.param == "smoke":
        return request.getfixturevalue("smoke_sweep").out
    return fab.make_sweep(tmp_path_factory.mktemp("sweep"))


def _execute(notebook: Path, sweep_dir: Path, out_dir: Path):  # -> the executed NotebookNode
    nb = jupytext.read(notebook)
    assert any("parameters" in cell.metadata.get("tags", []) for cell in nb.cells), notebook.name
    return papermill.execute_notebook(nb, str(out_dir / f"{notebook.stem}.ipynb"),
                                      parameters={"sweep_dir": str(sweep_dir), "out_dir": str(out_dir)},
                                      kernel_name="python3", progress_bar=False, cwd=str(out_dir))


def _images(cell) -> int:
    """How many PNG images a code cell's outputs hold (what a reader of the executed notebook sees)."""
    return sum("image/png" in output.get("data", {}) for output in cell.get("outputs", []))


def test_every_notebook_is_tested() -> None:
    assert {p.name for p in NOTEBOOKS} == {"tables.py", "curves.py"}


def test_tables_notebook_writes_the_report_tables(sweep_dir: Path, tmp_path: Path) -> None:
    from stability.report import build_report, to_markdown

    _execute(Path(__file__).parents[2] / "notebooks" / "tables.py", sweep_dir, tmp_path)
    expected = build_report(sweep_dir)
    for name, table in expected.tables.items():
        written = pd.read_csv(tmp_path / f"{name}.csv")
        assert len(written) == len(table), name
        assert (tmp_path / f"{name}.md").read_text() == to_markdown(expected.text[name]) + "\n", name
    cfg = pd.read_csv(tmp_path / "configurations.csv")
    pd.testing.assert_series_equal(cfg["best_val_acc_mean"],
                                   expected.tables["configurations"]["best_val_acc_mean"], check_names=False)


def test_curves_notebook_finds_the_failures(sweep_dir: Path, tmp_path: Path) -> None:
    from stability.analysis.results import load_sweep
    from stability.report.failures import FAILED_STATUSES

    executed = _execute(Path(__file__).parents[2] / "notebooks" / "curves.py", sweep_dir, tmp_path)
    sweep = load_sweep(sweep_dir)
    expected = sweep.runs[sweep.runs["status"].isin(FAILED_STATUSES)]
    failed = pd.read_csv(tmp_path / "failed_runs.csv")
    assert sorted(failed["run"]) == sorted(expected.index)
    diverged = failed[failed["status"] == "diverged"]
    assert diverged["step"].tolist() == expected.loc[diverged["run"], "diverged_step"].tolist()
    varying = [t for t in sweep.toggles if sweep.finished[t].astype(str).nunique() > 1] or ["run"]
    for toggle in varying:
        assert (tmp_path / f"loss_by_{toggle}.png").stat().st_size > 1000
    assert (tmp_path / "failure_telemetry.png").exists() == bool(len(expected))
    # Every figure the notebook saved is displayed in it: Figures built without pyplot show as
    # "<Figure size ...>" text unless the notebook displays their image.
    figure_cells = [c for c in executed.cells if c.cell_type == "code" and "    show(" in c.source]
    assert len(figure_cells) == 2  # loss curves per toggle, telemetry of the failed runs
    assert _images(figure_cells[0]) == len(varying)
    assert _images(figure_cells[1]) == len(list(tmp_path.glob("failure_telemetry*.png"))) >= bool(len(expected))
    assert sum(_images(c) for c in executed.cells) == len(list(tmp_path.glob("*.png")))
    assert not any("<Figure size" in str(o.get("data", {}).get("text/plain", "")) for c in executed.cells
                   if c.cell_type == "code" for o in c.outputs)
