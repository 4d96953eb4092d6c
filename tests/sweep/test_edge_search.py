"""``stability sweep --edge-search``: bisection of the largest stable lr, probes common to both sides of a claim,
and a verdict that reads the finer edges (training replaced by records whose outcome is known)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import fabricate as fab
import pytest

from stability import cli
from stability.analysis.results import load_sweep
from stability.analysis.verdicts import claims_table
from stability.record.identity import hparams_of, toggles_of
from stability.sweep.cells import expand
from stability.sweep.edge_search import EDGES, edge_table, read_edges, search_edges
from stability.sweep.grid import load_grid

GRID = """\
base: [{base}]
axes:
  model.lr: [1.0e-3, 1.0e-2, 0.1, 1.0]
  model.vit.stem: [patchify, conv]
seeds: [0, 1, 2]
claims:
  - claim: the conv stem raises the largest stable learning rate
    treatment: {{stem: conv}}
    metric: largest_stable_lr
    direction: increase
    min_effect: 0.3
"""
TRUE_EDGE = {"patchify": 0.05, "conv": 0.2}  # a run fails above its configuration's edge


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"executor": "local", "shard": None, "settle": False, "smoke": False,
                                 "edge_rounds": 3, "edge_resolution": 0.1, **kw})


def _fabricating_round(spec, out: Path, planned: list):
    def run_round(extra) -> int:
        for cell in [*expand(spec), *extra]:
            t, h = toggles_of(cell.config), hparams_of(cell.config)
            planned.append((t["stem"], float(h["lr"]), int(h["seed"])))
            name = f"stem={t['stem']},lr={h['lr']:g},seed={h['seed']}-fab"
            if not (out / name).exists():
                failed = h["lr"] > TRUE_EDGE[t["stem"]]
                fab.write_record(out, int(h["seed"]), lr=float(h["lr"]), name=name, stem=t["stem"],
                                 status="diverged" if failed else "completed",
                                 final_val_acc=None if failed else 0.9)
        return 0
    return run_round


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(base=Path("ablations/base/digits.yaml").resolve()))
    return path


def test_bisection_narrows_each_edge_and_the_verdict_reads_it(grid: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    spec, out, planned = load_grid(grid), tmp_path / "sweep", []
    out.mkdir()
    fab.write_claims(out, spec.claims)
    ladder = claims_table(*_claims_and_runs(out, spec, planned))
    assert ladder["effect"][0] == pytest.approx(1.0)  # on the ladder: 0.1 vs 0.01, a whole decade

    assert search_edges(_args(), spec, out, _fabricating_round(spec, out, planned)) == 0
    state = read_edges(out)
    assert state["rounds_done"] == 3 and state["range"] == [1e-3, 1.0]
    sweep = load_sweep(out)
    # every probe ran on both sides of the claim at its seed: the lrs stay common
    for probe in state["probes"]:
        assert {("patchify", probe["lr"], probe["seed"]), ("conv", probe["lr"], probe["seed"])} <= set(planned)
    table = edge_table(sweep.claims, sweep.finished, state)
    edges = dict(zip(table["side"], table["edge (median lr)"].astype(float), strict=True))
    assert 0.03 <= edges["control"] <= 0.05 and 0.13 <= edges["treatment"] <= 0.2
    verdict = claims_table(sweep.claims, sweep.finished, sweep.config_columns)
    assert abs(verdict["effect"][0] - math.log10(0.2 / 0.05)) < 0.25  # the truth is 0.60 decades, not 1
    assert "edge search (" in capsys.readouterr().out

    before = (out / EDGES).read_text()
    assert search_edges(_args(), spec, out, _fabricating_round(spec, out, [])) == 0  # resumes: nothing new
    assert json.loads((out / EDGES).read_text())["probes"] == json.loads(before)["probes"]


def _claims_and_runs(out: Path, spec, planned: list):
    _fabricating_round(spec, out, planned)([])
    sweep = load_sweep(out)
    return sweep.claims, sweep.finished, sweep.config_columns


@pytest.mark.parametrize(("body", "extra", "message"), [
    (GRID.replace("largest_stable_lr", "final_val_acc"), [], "states no largest_stable_lr claim"),
    (GRID, ["--edge-resolution", "0"], "--edge-resolution: got 0.0"),
    (GRID, ["--edge-rounds", "0"], "--edge-rounds: got 0; give an integer >= 1"),
    (GRID, ["--settle"], "not with --settle"),
])
def test_edge_search_options_are_checked_before_anything_runs(tmp_path: Path, body: str, extra: list[str],
                                                              message: str, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(body.format(base=Path("ablations/base/digits.yaml").resolve()))
    out = tmp_path / "sweep"
    assert cli.main(["sweep", str(grid), "--edge-search", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()
