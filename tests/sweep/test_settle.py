"""``stability sweep --settle``: seeds go only to the cells of open claims, rounds stop at the budget, re-runs
resume, and a real tiny sweep settles end to end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import fabricate as fab
import pytest

from stability import cli
from stability.analysis.results import load_sweep
from stability.record.identity import hparams_of, toggles_of
from stability.sweep.cells import expand
from stability.sweep.grid import load_grid
from stability.sweep.settle import SETTLE, load_rows, settle

GRID = """\
base: [{base}]
overrides: {{trainer.max_epochs: 1}}
axes:
  model.vit.stem: [patchify, conv]
  model.vit.norm: [layernorm, centernorm]
seeds: [0, 1, 2]
claims:
  - claim: centernorm raises accuracy
    treatment: {{norm: centernorm}}
    where: {{stem: patchify}}
    metric: final_val_acc
    direction: increase
    min_effect: 0.01
  - claim: the conv stem raises accuracy
    treatment: {{stem: conv}}
    where: {{norm: layernorm}}
    metric: final_val_acc
    direction: increase
    min_effect: 0.01
"""
CONV_SPREAD = [0.03, -0.03, 0.02, -0.02, 0.03, -0.03, 0.02, -0.02]  # mean 0.01 = the minimal effect: never settles


def _accuracy(stem: str, norm: str, seed: int) -> float:
    acc = 0.8 + 0.002 * seed
    if norm == "centernorm":
        acc += 0.1 + 0.002 * (seed % 2)  # clear: settles on the grid's seeds
    if stem == "conv":
        acc += 0.01 + CONV_SPREAD[seed]
    return acc


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"executor": "local", "shard": None, "max_seeds": None, "smoke": False, **kw})


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(base=Path("ablations/base/digits.yaml").resolve()))
    return path


def _fabricating_round(spec, out: Path, log: list[list[tuple]]):
    """A round that writes each planned cell's record (the training replaced by known numbers)."""
    def run_round(extra) -> int:
        cells = [*expand(spec), *extra]
        keys = []
        for cell in cells:
            t, h = toggles_of(cell.config), hparams_of(cell.config)
            key = (t["stem"], t["norm"], int(h["seed"]))
            keys.append(key)
            if not (out / _name(key)).exists():
                fab.write_record(out, key[2], lr=h["lr"], name=_name(key), stem=key[0], norm=key[1],
                                 final_val_acc=_accuracy(*key))
        log.append(keys)
        return 0
    return run_round


def _name(key: tuple) -> str:
    return f"stem={key[0]},norm={key[1]},seed={key[2]}-fab"


def test_seeds_go_only_to_the_cells_of_open_claims_and_stop_at_the_budget(grid: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec, out, log = load_grid(grid), tmp_path / "sweep", []
    out.mkdir()
    fab.write_claims(out, spec.claims)
    assert settle(_args(max_seeds=6), spec, out, _fabricating_round(spec, out, log)) == 0
    state = json.loads((out / SETTLE).read_text())
    rows = state["rows"]
    centernorm, conv = rows["0|lr 0.003"], rows["1|lr 0.003"]
    assert [look["seeds"] for look in centernorm["looks"]] == [[0, 1, 2]]
    assert centernorm["stopped"] == "settled" and centernorm["looks"][0]["verdict"] == "supported"
    assert [len(look["seeds"]) for look in conv["looks"]] == [3, 5, 6]  # schedule 3, +2, +1: the budget
    assert conv["stopped"] == "budget spent" and conv["looks"][-1]["verdict"] == "inconclusive"
    # the added seeds went to the open claim's cells only: stem x layernorm; never to centernorm cells
    added = {key for keys in log for key in keys if key[2] >= 3}
    assert added == {(stem, "layernorm", seed) for stem in ("patchify", "conv") for seed in (3, 4, 5)}
    printed = capsys.readouterr().out
    assert "adding seeds 3, 4 to their cells" in printed and "budget spent" in printed
    # the report's rows: recomputed from the records, resting on the seeds each look had
    sweep = load_sweep(out)
    settled = {r.claim.claim: r for r in load_rows(out, sweep.claims, sweep.finished, sweep.config_columns)}
    assert settled["centernorm raises accuracy"].looks[-1].verdict.seeds == [0, 1, 2]
    assert settled["the conv stem raises accuracy"].looks[-1].verdict.seeds == [0, 1, 2, 3, 4, 5]

    # a re-run resumes: no look taken twice, no seed added
    before = (out / SETTLE).read_text()
    assert settle(_args(max_seeds=6), spec, out, _fabricating_round(spec, out, [])) == 0
    assert (out / SETTLE).read_text() == before


def test_an_unfinished_round_stops_and_the_rerun_takes_the_look(grid: Path, tmp_path: Path) -> None:
    spec, out = load_grid(grid), tmp_path / "sweep"
    out.mkdir()
    fab.write_claims(out, spec.claims)
    assert settle(_args(max_seeds=6), spec, out, lambda extra: 3) == 3  # killed: nothing looked at
    assert not (out / SETTLE).exists()
    assert settle(_args(max_seeds=6), spec, out, _fabricating_round(spec, out, [])) == 0
    assert json.loads((out / SETTLE).read_text())["rows"]["1|lr 0.003"]["stopped"] == "budget spent"


@pytest.mark.parametrize(("extra", "message"), [
    (["--max-seeds", "3"], "--max-seeds: got 3; give more than the grid's 3 seeds"),
    (["--max-seeds", "0"], "--max-seeds: got 0; give an integer >= 1"),
    (["--shard", "0/2"], "--settle: runs on the local executor, unsharded"),
])
def test_settle_options_are_checked_before_anything_runs(grid: Path, tmp_path: Path, extra: list[str],
                                                         message: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    assert cli.main(["sweep", str(grid), "--settle", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()


def test_max_seeds_needs_settle(grid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sweep", str(grid), "--max-seeds", "5", "--out", str(tmp_path / "s")]) == 2
    assert "--max-seeds: only with --settle" in capsys.readouterr().err


REAL_GRID = """\
base: [{base}]
overrides:
  model.vit.embed_dim: 16
  model.vit.depth: 1
  model.vit.num_heads: 2
  model.lr: 1.0
  model.warmup: false
  trainer.max_epochs: 1
  trainer.limit_train_batches: 3
  trainer.limit_val_batches: 1
  trainer.limit_test_batches: 1
axes:
  model.vit.norm: [layernorm, centernorm]
seeds: [0, 1, 2]
claims:
  - claim: centernorm lowers the failure rate at lr 1 without warmup
    treatment: {{norm: centernorm}}
    metric: failure_rate
    direction: decrease
    min_effect: 0.1
"""


def test_a_real_sweep_settles_end_to_end(tmp_path: Path) -> None:
    """Both sides diverge at lr 1 without warmup: 3/3 vs 3/3 is inconclusive, so a fourth seed is added to
    both cells, and the budget (4) stops it."""
    from sweep_helpers import run_sweep

    grid = tmp_path / "real.yaml"
    grid.write_text(REAL_GRID.format(base=Path("ablations/base/digits.yaml").resolve()))
    result = run_sweep([str(grid), "--settle", "--max-seeds", "4", "--workers", "2"], tmp_path / "sweep")
    assert result.rc == 0, result.stderr
    seeds = sorted(int(p.name.split("seed=")[1].split("-")[0]) for p in result.out.glob("*seed=*"))
    assert seeds == [0, 0, 1, 1, 2, 2, 3, 3]
    state = json.loads((result.out / SETTLE).read_text())
    [row] = state["rows"].values()
    assert [len(look["seeds"]) for look in row["looks"]] == [3, 4] and row["stopped"] == "budget spent"
    assert "INCONCLUSIVE on 4 seeds (0-3), look 2" in result.stdout


def test_the_report_shows_the_settled_verdicts(grid: Path, tmp_path: Path) -> None:
    from stability.report import build_report

    spec, out = load_grid(grid), tmp_path / "sweep"
    out.mkdir()
    fab.write_claims(out, spec.claims)
    settle(_args(max_seeds=6), spec, out, _fabricating_round(spec, out, []))
    report = build_report(out)
    claims = report.tables["claims"].set_index("claim")
    conv = claims.loc["the conv stem raises accuracy"]
    assert conv["n_seeds"] == 6 and conv["seeds_by_look"] == "3 → 5 → 6" and conv["stopped"].startswith("budget")
    centernorm = claims.loc["centernorm raises accuracy"]
    assert centernorm["n_seeds"] == 3 and centernorm["verdict"] == "supported"  # resting on its look's seeds
    text = report.text["claims"].set_index("claim")
    assert text.loc["centernorm raises accuracy", "settled"].startswith("settled at look 1 (3 seeds)")
