"""The failure map (stability.report.failure_map): runs failed of runs by configuration and learning rate, on
fabricated run records in the real format."""

from __future__ import annotations

from pathlib import Path

import fabricate as fab
import pandas as pd
import pytest

from stability.analysis.results import load_sweep
from stability.report import build_report, main
from stability.report.failure_map import failure_map_figure, failure_map_table, format_failure_map


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeds 0-2 of the baseline at lr 1e-3 (all complete), 1e-2 (one diverges, one collapses) and 1e-1 (all
    diverge); centernorm at lr 1e-3 only (one collapses)."""
    root = tmp_path_factory.mktemp("failure_map") / "sweep"
    outcomes = {("layernorm", 1e-3): ["completed"] * 3, ("layernorm", 1e-2): ["diverged", "collapsed", "completed"],
                ("layernorm", 1e-1): ["diverged"] * 3, ("centernorm", 1e-3): ["collapsed", "completed", "completed"]}
    for (norm, lr), statuses in outcomes.items():
        for seed, status in enumerate(statuses):
            fab.write_record(root, seed, lr=lr, status=status, norm=norm)
    return root


def test_the_table_counts_failures_per_configuration_and_lr(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    table = failure_map_table(sweep, sweep.finished)
    assert table["configuration"].tolist() == ["baseline"] * 3 + ["norm=centernorm"]  # baseline first
    assert table["lr"].tolist() == [1e-3, 1e-2, 1e-1, 1e-3]
    assert table[["n", "diverged", "collapsed", "failed"]].values.tolist() == [[3, 0, 0, 0], [3, 1, 1, 2],
                                                                               [3, 3, 0, 3], [3, 0, 1, 1]]
    assert table["rate"].tolist() == pytest.approx([0, 2 / 3, 1, 1 / 3])
    text = format_failure_map(table)
    assert text.columns.tolist() == ["configuration", "lr=0.001", "lr=0.01", "lr=0.1"]
    assert text.values.tolist() == [["baseline", "0/3", "2/3 (1 collapsed)", "3/3"],
                                    ["norm=centernorm", "1/3 (1 collapsed)", "–", "–"]]


def test_the_heat_map_draws_configurations_with_an_edge(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    fig = failure_map_figure(failure_map_table(sweep, sweep.finished), "t")
    ax = fig.axes[0]
    # centernorm ran at one lr only: no edge to show, left out of the figure (the table keeps it)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["baseline"]
    assert sorted(t.get_text() for t in ax.texts) == ["0/3", "2/3\n(1 collapsed)", "3/3"]


def test_the_report_shows_the_map_after_the_failures(sweep_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main([str(sweep_dir), "--out", str(out), "--format", "md,csv,html"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("# Failed runs") < printed.index("# Failure map") < printed.index("# Per-configuration")
    md = (out / "report.md").read_text()
    assert md.index("## Failed runs") < md.index("## Failure map") < md.index("## Per-configuration")
    assert "![failure_map](plots/failure_map.png)" in md.split("## Failure map")[1].split("## ")[0]
    assert pd.read_csv(out / "failure_map.csv")["failed"].sum() == 6
    assert list(build_report(sweep_dir).tables)[:3] == ["failures", "failure_map", "configurations"]
