"""The Lipschitz study grid and its base config: they build what they say, and the bench runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from stability.record.config_files import load_config_files
from stability.record.identity import config_hash
from stability.sweep.cells import expand
from stability.sweep.grid import load_grid
from stability.training.cli import parse

ROOT = Path(__file__).resolve().parents[2]


def resolved(config: dict) -> dict:
    """The fully resolved config ``stability fit`` would run (defaults filled in), without its run folder."""
    dump = parse(config).config_dump_dict()
    dump.pop("run_dir", None)
    return dump


def test_study_grid_has_four_configurations_times_three_seeds() -> None:
    cells = expand(load_grid(ROOT / "ablations" / "lipschitz.yaml"))
    assert len(cells) == 12 and len({config_hash(c.config) for c in cells}) == 12
    seeds = sorted({c.config["seed_everything"] for c in cells})
    assert seeds == [0, 1, 2]
    kinds = {(c.config["model"]["vit"]["attention"], c.config["model"].get("margin_eps", 0.0)) for c in cells}
    assert kinds == {("dot", 0.0), ("cosine_paper", 0.0), ("shift", 0.0), ("shift", 0.1412)}


@pytest.mark.parametrize("margin", [0.0, 0.1412])
def test_study_lipshift_cells_are_the_lipshift_base_config(margin: float) -> None:
    """The grid repeats ablations/base/lipshift.yaml key by key (a grid has one base): same resolved config."""
    cells = expand(load_grid(ROOT / "ablations" / "lipschitz.yaml"))
    cell = next(c.config for c in cells if c.config["model"]["vit"]["attention"] == "shift"
                and c.config["model"]["margin_eps"] == margin and c.config["seed_everything"] == 1)
    base = load_config_files([ROOT / "ablations" / "base" / "lipshift.yaml"])
    base["model"]["margin_eps"] = margin
    base["seed_everything"] = 1
    base["data"]["init_args"]["seed"] = 1
    assert resolved(cell) == resolved(base)


@pytest.mark.slow  # ~10 s unloaded: four digits models, a few steps and every measurement each
def test_bench_lipschitz_prints_every_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    from stability.bench.cli import main

    assert main(["lipschitz", "--reps", "1", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("baseline", "LipsFormer", "LipShiFT", "LipShiFT+margin"):
        assert f"\n{name} " in out
    assert "margin" in out and "% of run" in out
