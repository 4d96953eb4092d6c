"""Run ids stay what they were when options are added: every committed run of the default study keeps its id."""

from __future__ import annotations

import csv
from pathlib import Path

from stability.record.identity import LATER_DEFAULTS, config_hash, drop_later_defaults, hparams_of
from stability.sweep.cells import expand
from stability.sweep.grid import load_grid
from stability.sweep.plan import resolve

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_study_keeps_its_committed_run_ids() -> None:
    """New options must not enter the resolved config at their defaults, or every finished sweep re-runs."""
    with (ROOT / "notebooks/results/digits/runs.csv").open() as file:
        committed = {row["run"].rsplit("-", 1)[-1] for row in csv.DictReader(file)}
    cells = expand(load_grid(ROOT / "ablations/digits.yaml"))
    for cell in (cells[0], cells[-1]):  # the baseline's first cell and LaPE's last
        assert config_hash(resolve(cell.config)) in committed


def test_a_later_option_set_away_from_its_default_is_kept() -> None:
    config = {"model": {"adam_eps": 1e-6, "agc": False}, "data": {"init_args": {"mixup": 0.8, "cutmix": 0.0}}}
    assert drop_later_defaults(config) == {"model": {"adam_eps": 1e-6}, "data": {"init_args": {"mixup": 0.8}}}
    assert set(LATER_DEFAULTS) == {"model", "data.init_args"}


def test_a_key_left_out_at_its_default_reads_back_as_that_default() -> None:
    """Claims and tables compare values: a run whose config left ``independent_wd: false`` out is a control."""
    hparams = hparams_of({"model": {"lr": 0.1}})
    assert hparams["independent_wd"] is False and hparams["adam_eps"] == 1e-8 and hparams["qk_clip"] is None
