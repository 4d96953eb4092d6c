"""A claim that can select no run (or no pair) is a grid error before anything runs, not "no pairs" after the
sweep (stability.sweep.claim_check, called by ``stability sweep`` right after the grid loads)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import ROOT, write_grid

from stability.errors import ConfigError
from stability.sweep.claim_check import check_claims
from stability.sweep.grid import load_grid

QKNORM = {"claim": "qk-norm keeps the logits bounded", "treatment": {"attention": "qknorm"},
          "metric": "max_attn_logit", "direction": "decrease", "min_effect": 0.3}
GRID = {"axes": {"model.vit.attention": ["dot", "cosine"], "model.lr": [1.0e-3, 3.0e-3]}, "seeds": [0, 1, 2]}


def _error(tmp_path: Path, claims: list[dict], body: dict | None = None) -> str:
    grid = write_grid(tmp_path, "g", {**(body or GRID), "claims": claims})
    with pytest.raises(ConfigError) as info:
        check_claims(load_grid(grid))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_treatment_value_the_grid_never_runs_is_one_line(tmp_path: Path) -> None:
    ok = {**QKNORM, "claim": "cosine keeps them bounded", "treatment": {"attention": "cosine"}}
    message = _error(tmp_path, [ok, QKNORM])
    assert message == (f"{tmp_path / 'g.yaml'}: claims[1] (\"qk-norm keeps the logits bounded\"): treatment "
                       "attention='qknorm' selects no run; the grid's attention values: dot, cosine")


@pytest.mark.parametrize(("change", "expected"), [
    ({"where": {"lr": [1.0e-3, 0.01]}}, "where lr=0.01 selects no run; the grid's lr values: 0.001, 0.003"),
    ({"treatment": {"lr": 3.0e-3}, "control": {"lr": 0.03}}, "control lr=0.03 selects no run"),
    ({"where": {"warmup": False}}, "where warmup=False selects no run; the grid's warmup values: True"),
])
def test_control_and_where_values_are_checked_too(tmp_path: Path, change: dict, expected: str) -> None:
    claim = {**QKNORM, "treatment": {"attention": "cosine"}, **change}
    assert expected in _error(tmp_path, [claim])


def test_a_claim_whose_runs_never_pair_is_an_error(tmp_path: Path) -> None:
    """LaPE only inside a bundle with CenterNorm: every value exists, but no LaPE run has a control that
    differs from it in pos_embed alone."""
    body = {**GRID, "include": [{"model.vit.pos_embed": "lape", "model.vit.norm": "centernorm"}]}
    lape = {**QKNORM, "treatment": {"pos_embed": "lape"}}
    assert "nothing pairs" in _error(tmp_path, [lape], body)


def test_numbers_match_as_numbers(tmp_path: Path) -> None:
    claim = {**QKNORM, "treatment": {"attention": "cosine"}, "where": {"lr": 0.001}}  # the grid says 1.0e-3
    check_claims(load_grid(write_grid(tmp_path, "g", {**GRID, "claims": [claim]})))


@pytest.mark.parametrize("grid", sorted(p.name for p in (ROOT / "ablations").glob("*.yaml")))
def test_every_shipped_grid_passes(grid: str) -> None:
    check_claims(load_grid(ROOT / "ablations" / grid))


def test_dry_run_stops_at_the_claim_with_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from stability.cli import main

    grid = write_grid(tmp_path / "grids", "g", {**GRID, "claims": [QKNORM]})
    out = tmp_path / "out"
    rc = main(["sweep", str(grid), "--dry-run", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "attention='qknorm' selects no run" in err[0]
    assert not out.exists()
